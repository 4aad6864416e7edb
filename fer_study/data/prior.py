"""Prior class-confusion distributions d for PDLS / F-PDLS (Eq. 3; Vo et al., PSR, IEEE Access 2020).

``d[k]`` is the prior distribution of annotators' votes for images whose true class is ``k``.
"""

from __future__ import annotations

import numpy as np

from fer_study.classes import RAFDB_TO_FERPLUS

#: The PSR paper's published FERPlus prior, rows = true class, FERPlus order, verbatim.
PSR_FERPLUS_PRIOR = np.array([
    [0.777334, 0.03261, 0.017447, 0.114091, 0.026224, 0.007145, 0.004379, 0.020772],
    [0.042842, 0.917618, 0.023221, 0.004816, 0.004217, 0.001969, 0.001755, 0.003563],
    [0.058354, 0.035775, 0.787254, 0.01037, 0.014319, 0.003015, 0.088513, 0.0024],
    [0.170124, 0.013292, 0.008632, 0.747902, 0.022808, 0.011237, 0.015923, 0.010082],
    [0.074781, 0.02535, 0.060215, 0.031924, 0.740551, 0.034938, 0.023251, 0.008989],
    [0.08959, 0.017445, 0.016911, 0.088629, 0.125152, 0.620813, 0.007788, 0.033671],
    [0.042815, 0.012239, 0.169483, 0.072557, 0.027228, 0.013045, 0.658964, 0.003671],
    [0.147933, 0.022174, 0.00989, 0.042923, 0.033551, 0.059924, 0.005507, 0.678099],
], dtype=np.float64)


def prior_from_votes(votes: np.ndarray, labels: np.ndarray, num_classes: int = 8) -> np.ndarray:
    """Recompute a prior: per true class, the mean of each image's L1-normalised emotion votes.

    ``votes`` (N, >= num_classes): only the first ``num_classes`` columns count (unknown and
    not-a-face are excluded); ``labels`` (N,) are the true (e.g. majority) classes. A class with no
    images gets a one-hot row (no confusion information).
    """
    votes = np.asarray(votes, dtype=np.float64)[:, :num_classes]
    labels = np.asarray(labels)
    s = votes.sum(1, keepdims=True)
    norm = np.divide(votes, s, out=np.zeros_like(votes), where=s > 0)
    prior = np.eye(num_classes)
    for k in range(num_classes):
        sel = (labels == k) & (s[:, 0] > 0)
        if sel.any():
            prior[k] = norm[sel].mean(0)
    return prior


def rafdb_prior(renormalise: bool = False, base: np.ndarray | None = None) -> np.ndarray:
    """PSR's RAF-DB prior: FERPlus rows/columns re-indexed to RAF-DB's native order, contempt dropped.

    PSR does not renormalise the rows (they then sum to slightly less than 1); whether the paper
    did is unconfirmed, hence the flag.
    """
    base = PSR_FERPLUS_PRIOR if base is None else np.asarray(base)
    idx = np.asarray(RAFDB_TO_FERPLUS)
    p = base[np.ix_(idx, idx)].copy()
    if renormalise:
        p /= p.sum(1, keepdims=True)
    return p


def seven_class_prior(base: np.ndarray | None = None, renormalise: bool = True) -> np.ndarray:
    """FERPlus prior for the 7-class setting (contempt row and column dropped)."""
    base = PSR_FERPLUS_PRIOR if base is None else np.asarray(base)
    p = base[:7, :7].copy()
    if renormalise:
        p /= p.sum(1, keepdims=True)
    return p
