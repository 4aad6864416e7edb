"""Learn-to-resize (Talebi & Milanfar, ICCV 2021): the g_phi, T, g_theta and skip of Eq. 1.

    f(I) = g_theta(T(g_phi(I))) + T(I)

g_phi  = Conv7x7(C->n) - LeakyReLU(0.2) - Conv1x1(n->n) - LeakyReLU(0.2) - BN
T      = bilinear resize to the explicit ``out_size`` (features and, for the skip, the image)
g_theta= r x [Conv3x3-BN-LeakyReLU-Conv3x3-BN, + skip] - Conv3x3-BN (+ the resized features)
         - Conv7x7(n->C)

Every convolution has a bias (as in the authors' PyTorch port): 12,083 trainable parameters with
the defaults (C=3, n=16, r=1); the Keras reference omits the 3x3 biases (12,035).

Speed: the module is meant to run in channels_last memory (``NeuralResizerClassifier.cnn_channels_last_``);
on a 2-core CPU a training step of it at 8 x 3 x 384^2 -> 224^2 takes about 0.58 s channels_last vs
1.10 s NCHW, BatchNorm included (PyTorch's channels_last BatchNorm kernel is used as is).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Res(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.BatchNorm2d(n), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(n, n, 3, padding=1), nn.BatchNorm2d(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LearnToResize(nn.Module):
    """Trainable resizer to ``out_size`` x ``out_size`` (Eq. 1 of the paper without f_sr)."""

    def __init__(self, in_channels: int = 3, n: int = 16, r: int = 1, out_size: int = 224) -> None:
        super().__init__()
        self.out_size = out_size
        self.g_phi = nn.Sequential(nn.Conv2d(in_channels, n, 7, padding=3), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Conv2d(n, n, 1), nn.LeakyReLU(0.2, inplace=True), nn.BatchNorm2d(n))
        self.res = nn.Sequential(*[_Res(n) for _ in range(r)])
        self.post = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.BatchNorm2d(n))
        self.out = nn.Conv2d(n, in_channels, 7, padding=3)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic T of Eq. 1 (bilinear)."""
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False,
                             antialias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.resize(self.g_phi(x))
        g = self.post(self.res(f)) + f
        return self.out(g) + self.resize(x)
