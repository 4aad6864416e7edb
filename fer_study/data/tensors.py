"""Device-resident data and batched on-device augmentation.

The whole split lives as one uint8 tensor (N, C, H, W) on the training device (the SR cache for
SR settings); a batch is indexed, converted to float and augmented on that device in one
``affine_grid``/``grid_sample`` call. The training transform follows the authors' code: random
horizontal flip, rotation, affine rotation with scale, brightness/contrast jitter; the evaluation
transform is deterministic (identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """The authors' training transform: flip, rotation +-45, affine +-15 with scale up to 1.2,
    colour jitter 0.4 (brightness and contrast: the images are grayscale)."""

    hflip: float = 0.5
    rotation: float = 45.0
    affine_rotation: float = 15.0
    scale: tuple[float, float] = (1.0, 1.2)
    translate: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(hflip=0.0, rotation=0.0, affine_rotation=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0)


class DeviceData:
    """A split as uint8 tensors on ``device``: images (N, C, H, W), labels (N,), targets (N, K).

    On CUDA the images move to the GPU when they fit (at most ``max_fraction`` of the free memory);
    otherwise they stay in pinned CPU memory and :meth:`fetch` copies each batch over.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray, targets: np.ndarray,
                 device: torch.device | str = "cpu", max_fraction: float = 0.6) -> None:
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, copy=True))
        if x.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {x.dtype}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        self.device = torch.device(device)
        self.image_device = self.device
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if x.numel() > max_fraction * free:
                self.image_device = torch.device("cpu")
        self.images = x.contiguous().to(self.image_device)
        if self.image_device != self.device:
            self.images = self.images.pin_memory()
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=self.device)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.device)
        if not (len(self.images) == len(self.labels) == len(self.targets)):
            raise ValueError("images, labels and targets differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def on_device(self) -> bool:
        return self.image_device == self.device

    def fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images of ``idx`` on the compute device."""
        if self.on_device:
            return self.images[idx]
        return self.images[idx.cpu()].to(self.device, non_blocking=True)

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False, indices: torch.Tensor | None = None):
        """Yield index tensors of each batch (on the data's device)."""
        idx = torch.arange(len(self), device=self.device) if indices is None else indices.to(self.device)
        if shuffle:
            perm = torch.randperm(len(idx), generator=generator, device="cpu").to(self.device)
            idx = idx[perm]
        n = len(idx)
        stop = n - (n % batch_size) if drop_last else n
        for s in range(0, stop, batch_size):
            yield idx[s:s + batch_size]


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1]."""
    return x.float().div_(255.0)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (B, C, H, W) in [0, 1] on its device; deterministic given ``generator``.

    All random draws come from ``generator`` (a CPU generator, so the draws do not depend on the
    device; on CUDA they travel in one pinned non-blocking copy, so the step never waits for the GPU)
    and geometry is applied in one ``grid_sample`` (bilinear, zero padding, like
    torchvision's RandomRotation/RandomAffine).
    """
    b = x.shape[0]
    r = torch.rand(b, 6, generator=generator)
    flip_any = bool((r[:, 0] < cfg.hflip).any())  # decided on the host: no device sync
    theta_needed = flip_any or bool(cfg.rotation or cfg.affine_rotation or cfg.scale != (1.0, 1.0))
    if x.device.type == "cuda":  # one small pinned, asynchronous copy; the rest is computed on the GPU
        r = r.pin_memory().to(x.device, non_blocking=True)
    if theta_needed:
        flip = torch.where(r[:, 0] < cfg.hflip, -1.0, 1.0)
        angle = (r[:, 1] * 2 - 1) * cfg.rotation + (r[:, 2] * 2 - 1) * cfg.affine_rotation
        scale = cfg.scale[0] + r[:, 3] * (cfg.scale[1] - cfg.scale[0])
        a = angle * math.pi / 180.0
        cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin * flip, cos, torch.zeros_like(cos)], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness or cfg.contrast:
        bf = (1.0 + (r[:, 4] * 2 - 1) * cfg.brightness).to(x.dtype).view(b, 1, 1, 1)
        cf = (1.0 + (r[:, 5] * 2 - 1) * cfg.contrast).to(x.dtype).view(b, 1, 1, 1)
        x = (x * bf).clamp(0, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * cf + mean).clamp(0, 1)
    return x
