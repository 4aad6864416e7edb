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
    cfg = AugmentConfig(hflip=1.0, rotation=0, affine_rotation=0, scale=(1, 1), brightness=0, contrast=0,
                        saturation=0)
    y = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(y, x.flip(-1))


def test_device_data_rgb_from_memmap_in_chunks(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (7, 3, 20, 20), dtype=np.uint8)  # an RGB SR cache entry
    np.save(tmp_path / "c.npy", imgs)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    d = DeviceData(mm, np.arange(7) % 8, np.eye(8)[np.arange(7) % 8], chunk_bytes=2 * 3 * 20 * 20)  # 2 a chunk
    assert d.images.shape == (7, 3, 20, 20) and torch.equal(d.images, torch.from_numpy(imgs))
    nhwc = DeviceData(imgs.transpose(0, 2, 3, 1), np.zeros(7), np.zeros((7, 8)))
    assert torch.equal(nhwc.images, torch.from_numpy(imgs))
    assert d.fetch(torch.tensor([2, 5])).shape == (2, 3, 20, 20)
