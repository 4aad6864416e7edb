"""Learn-to-resize (Talebi & Milanfar, ICCV 2021): the g_phi, T, g_theta and skip of Eq. 1.

    f(I) = g_theta(T(g_phi(I))) + T(I)

g_phi  = Conv7x7(C->n) - LeakyReLU(0.2) - Conv1x1(n->n) - LeakyReLU(0.2) - BN
T      = bilinear resize to the explicit ``out_size`` (features and, for the skip, the image)
g_theta= r x [Conv3x3-BN-LeakyReLU-Conv3x3-BN, + skip] - Conv3x3-BN (+ the resized features)
         - Conv7x7(n->C)

Every convolution has a bias (as in the authors' PyTorch port): 12,083 trainable parameters with
the defaults (C=3, n=16, r=1); the Keras reference omits the 3x3 biases (12,035).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that runs on NCHW memory on the CPU (PyTorch's CPU kernel is ~3x slower on
    channels_last input here, while the convolutions are ~2x faster on it); same parameters and
    state_dict as ``nn.BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous():
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _Res(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), BatchNorm2d(n), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(n, n, 3, padding=1), BatchNorm2d(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LearnToResize(nn.Module):
    """Trainable resizer to ``out_size`` x ``out_size`` (Eq. 1 of the paper without f_sr)."""

    def __init__(self, in_channels: int = 3, n: int = 16, r: int = 1, out_size: int = 224) -> None:
        super().__init__()
        self.out_size = out_size
        self.g_phi = nn.Sequential(nn.Conv2d(in_channels, n, 7, padding=3), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Conv2d(n, n, 1), nn.LeakyReLU(0.2, inplace=True), BatchNorm2d(n))
        self.res = nn.Sequential(*[_Res(n) for _ in range(r)])
        self.post = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), BatchNorm2d(n))
        self.out = nn.Conv2d(n, in_channels, 7, padding=3)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic T of Eq. 1 (bilinear)."""
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False,
                             antialias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.resize(self.g_phi(x))
        g = self.post(self.res(f)) + f
        return self.out(g) + self.resize(x)
