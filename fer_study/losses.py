"""Losses of the study: cross-entropy, focal, PDLS and F-PDLS (Eq. 2-3 of the paper).

    L_F-PDLS = - sum_c (1 - p_c)^gamma * (alpha * t_c + (1 - alpha) * d_kc) * log p_c,   p = softmax(z)

``t`` is the target distribution and ``d_k`` row ``k`` of the prior (PSR's class-confusion
distribution). gamma = 0 gives PDLS (Vo et al. 2020); alpha = 1 gives the focal loss
(Lin et al. 2017); alpha = 1 and gamma = 0 give cross-entropy.

Targets: a class-index tensor (B,) (t = one-hot, d = prior[k]) or a soft distribution (B, C)
(FERPlus probability/crossentropy label modes): t is the soft target and the prior row is the
target-weighted mixture ``target @ prior``, which equals ``prior[k]`` for a one-hot target.
Computed from ``log_softmax`` in float32 whatever the autocast dtype; p is not detached in the
modulating factor (as in the authors' code).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REDUCTIONS = ("none", "mean", "sum")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")


def _target_dist(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.ndim == 1:
        return F.one_hot(target.long(), num_classes).float()
    if target.shape[-1] != num_classes:
        raise ValueError(f"soft target has {target.shape[-1]} classes, logits {num_classes}")
    return target.float()


def fpdls(logits: torch.Tensor, target: torch.Tensor, prior: torch.Tensor | None, alpha: float, gamma: float,
          reduction: str = "mean") -> torch.Tensor:
    """Eq. 2-3 for a batch (B, C); see the module docstring for target forms."""
    logp = F.log_softmax(logits.float(), dim=-1)
    t = _target_dist(target, logits.shape[-1])
    if alpha < 1.0:
        if prior is None:
            raise ValueError("alpha < 1 needs a prior")
        w = alpha * t + (1.0 - alpha) * (t @ prior.to(logp))
    else:
        w = t
    if gamma != 0.0:
        w = w * (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)
    return _reduce(-(w * logp).sum(-1), reduction)


class _Base(nn.Module):
    def __init__(self, prior: np.ndarray | torch.Tensor | None, alpha: float, gamma: float, reduction: str) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        self.alpha, self.gamma, self.reduction = float(alpha), float(gamma), reduction
        if prior is not None:
            self.register_buffer("prior", torch.as_tensor(np.asarray(prior), dtype=torch.float32))
        else:
            self.prior = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fpdls(logits, target, self.prior, self.alpha, self.gamma, self.reduction)


class CrossEntropy(_Base):
    """Cross-entropy (alpha = 1, gamma = 0)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(None, 1.0, 0.0, reduction)


class FocalLoss(_Base):
    """Focal loss, -(1 - p_c)^gamma t_c log p_c (alpha = 1)."""

    def __init__(self, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__(None, 1.0, gamma, reduction)


class PDLS(_Base):
    """Prior distribution label smoothing (gamma = 0; Eq. 3 summed over classes)."""

    def __init__(self, prior, alpha: float = 0.8, reduction: str = "mean") -> None:
        super().__init__(prior, alpha, 0.0, reduction)


class FPDLS(_Base):
    """Focal PDLS, the paper's loss (Eq. 2); defaults alpha 0.8, gamma 2 as in the authors' code."""

    def __init__(self, prior, alpha: float = 0.8, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__(prior, alpha, gamma, reduction)


def build_loss(name: str, prior=None, alpha: float = 0.8, gamma: float = 2.0) -> nn.Module:
    """``ce`` | ``focal`` | ``pdls`` | ``fpdls``."""
    if name == "ce":
        return CrossEntropy()
    if name == "focal":
        return FocalLoss(gamma)
    if name == "pdls":
        return PDLS(prior, alpha)
    if name == "fpdls":
        return FPDLS(prior, alpha, gamma)
    raise ValueError(f"unknown loss {name!r}; choose ce, focal, pdls or fpdls")
