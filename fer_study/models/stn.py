"""Spatial transformer (Jaderberg et al. 2015), the PyTorch-tutorial localisation network.

Conv(C,8,7)-MaxPool2-ReLU-Conv(8,10,5)-MaxPool2-ReLU-Linear(.,32)-ReLU-Linear(32,6); the last layer
starts at zero weights and the identity bias, so an untrained STN is the identity warp.
``align_corners=True`` (default) as the authors' models/STN.py (``affine_grid`` and ``grid_sample``);
with it the identity warp returns the input exactly.
23,904 parameters at 48x48x3; at 384x384 most parameters sit in the first Linear (2.71 M).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class STN(nn.Module):
    def __init__(self, in_channels: int = 3, size: int = 48, align_corners: bool = True) -> None:
        super().__init__()
        self.size = size
        self.align_corners = align_corners
        self.loc = nn.Sequential(nn.Conv2d(in_channels, 8, 7), nn.MaxPool2d(2), nn.ReLU(True),
                                 nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(True))
        s = ((size - 6) // 2 - 4) // 2
        self.fc = nn.Sequential(nn.Linear(10 * s * s, 32), nn.ReLU(True), nn.Linear(32, 6))
        nn.init.zeros_(self.fc[2].weight)
        with torch.no_grad():
            self.fc[2].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.loc(x).flatten(1)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(f"STN built for {self.size}x{self.size}, got {tuple(x.shape[-2:])}")
        grid = F.affine_grid(self.theta(x), list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(x, grid, align_corners=self.align_corners)
