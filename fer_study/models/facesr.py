"""``facesr``: a compact face super-resolution network the project trains itself.

Used where DIC weights cannot be had (here, and the SynthFER demo). Grayscale in, grayscale out:
Conv3x3 -> ``blocks`` residual blocks -> x2 pixel-shuffle upsamplers (log2 scale of them) ->
Conv3x3, plus the bicubic upsampling of the input (global residual). Trained with L1 on
(low-res, high-res) pairs (:func:`fer_study.sr_train.train_facesr`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class FaceSR(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 32, blocks: int = 4, channels: int = 1) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, not {scale}")
        self.scale = scale
        self.config = {"scale": scale, "nf": nf, "blocks": blocks, "channels": channels}
        self.head = nn.Conv2d(channels, nf, 3, padding=1)
        self.body = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(True), nn.Conv2d(nf, nf, 3, padding=1))
             for _ in range(blocks)])
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(True)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(nf, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1], (B, C, H, W) -> (B, C, scale*H, scale*W) (not clamped)."""
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        f = self.head(x)
        h = f
        for blk in self.body:
            h = h + blk(h)
        return base + self.tail(self.up(h + f))
