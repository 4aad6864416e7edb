from __future__ import annotations

import numpy as np
import torch

from fer_study.data.tensors import AugmentConfig, DeviceData, augment, to_float


def _data(n=10):
    rng = np.random.default_rng(0)
    return DeviceData(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), np.arange(n) % 8, np.eye(8)[np.arange(n) % 8])


def test_device_data_layout_and_batches():
    d = _data(10)
    assert d.images.shape == (10, 1, 48, 48) and d.images.dtype == torch.uint8
    g = torch.Generator().manual_seed(0)
    b = list(d.batches(4, shuffle=True, generator=g))
    assert [len(x) for x in b] == [4, 4, 2]
    assert sorted(torch.cat(b).tolist()) == list(range(10))
    assert [len(x) for x in d.batches(4, shuffle=False, drop_last=True)] == [4, 4]


def test_augment_deterministic_under_seed_and_eval_identity():
    x = to_float(_data(6).images)
    cfg = AugmentConfig()
    a = augment(x, cfg, torch.Generator().manual_seed(5))
    b = augment(x, cfg, torch.Generator().manual_seed(5))
    c = augment(x, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(augment(x, AugmentConfig.none(), torch.Generator()), x, atol=1e-6)


def test_flip_only_mirrors():
    x = torch.rand(3, 1, 8, 8)
    cfg = AugmentConfig(hflip=1.0, rotation=0, affine_rotation=0, scale=(1, 1), brightness=0, contrast=0)
    y = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.flip(-1), atol=1e-5)
