from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fer_study.data.prior import PSR_FERPLUS_PRIOR
from fer_study.losses import FPDLS, PDLS, CrossEntropy, FocalLoss, build_loss

PRIOR = torch.tensor(PSR_FERPLUS_PRIOR, dtype=torch.float32)


def test_hand_computed_two_classes():
    z = torch.tensor([[0.0, math.log(3.0)]])  # p = (0.25, 0.75)
    prior = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    a, g = 0.8, 2.0
    # target 1: w = 0.8*(0,1) + 0.2*(0.2,0.8) = (0.04, 0.96); factors (0.75^2, 0.25^2)
    want = -(0.04 * 0.75 ** 2 * math.log(0.25) + 0.96 * 0.25 ** 2 * math.log(0.75))
    assert FPDLS(prior, a, g)(z, torch.tensor([1])).item() == pytest.approx(want, rel=1e-6)
    want_pdls = -(0.04 * math.log(0.25) + 0.96 * math.log(0.75))
    assert PDLS(prior, a)(z, torch.tensor([1])).item() == pytest.approx(want_pdls, rel=1e-6)
    assert FocalLoss(2.0)(z, torch.tensor([0])).item() == pytest.approx(-(0.75 ** 2) * math.log(0.25), rel=1e-6)


def test_identities():
    torch.manual_seed(0)
    z, y = torch.randn(16, 8) * 3, torch.randint(0, 8, (16,))
    torch.testing.assert_close(FPDLS(PRIOR, 0.8, 0.0)(z, y), PDLS(PRIOR, 0.8)(z, y))
    torch.testing.assert_close(FPDLS(PRIOR, 1.0, 2.0)(z, y), FocalLoss(2.0)(z, y))
    torch.testing.assert_close(FPDLS(PRIOR, 1.0, 0.0)(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(CrossEntropy()(z, y), F.cross_entropy(z, y))


def test_soft_targets_pick_mixture_of_prior_rows():
    torch.manual_seed(1)
    z, y = torch.randn(5, 8), torch.randint(0, 8, (5,))
    torch.testing.assert_close(FPDLS(PRIOR)(z, F.one_hot(y, 8).float()), FPDLS(PRIOR)(z, y))
    soft = torch.softmax(torch.randn(5, 8), -1)
    torch.testing.assert_close(CrossEntropy()(z, soft), F.cross_entropy(z, soft))
    t = soft
    w = 0.8 * t + 0.2 * t @ PRIOR
    manual = -(w * (1 - z.softmax(-1)) ** 2 * z.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(FPDLS(PRIOR)(z, soft), manual)


def test_reductions_and_float32_under_bf16():
    z, y = torch.randn(4, 8).bfloat16(), torch.randint(0, 8, (4,))
    loss = FPDLS(PRIOR, reduction="none")
    per = loss(z, y)
    assert per.dtype == torch.float32 and per.shape == (4,)
    torch.testing.assert_close(FPDLS(PRIOR, reduction="sum")(z, y), per.sum())
    with pytest.raises(ValueError):
        FPDLS(PRIOR, reduction="avg")


def test_gradients_finite_for_extreme_logits():
    z = torch.tensor([[1e4, -1e4, 0, 0, 0, 0, 0, 0], [-1e4] * 7 + [1e4]], requires_grad=True)
    for name in ("ce", "focal", "pdls", "fpdls"):
        z.grad = None
        build_loss(name, PRIOR)(z, torch.tensor([1, 0])).backward()
        assert torch.isfinite(z.grad).all(), name
