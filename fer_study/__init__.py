"""fer-study: a reproducible study of "Vision Transformer Equipped with Neural Resizer on Facial
Expression Recognition Task" (Hwang et al., ICASSP 2022).

Subpackages: :mod:`fer_study.data` (FERPlus, RAF-DB, SynthFER, priors, device tensors),
:mod:`fer_study.models` (Neural Resizer, DIC, SR, STN, backbones), :mod:`fer_study.losses`
(CE, focal, PDLS, F-PDLS), :mod:`fer_study.training` (training loop and step),
:mod:`fer_study.runs` (run directories).
"""

__version__ = "0.1.0"
