"""f_sr, the frozen super-resolution of Eq. 1, behind one interface: :class:`SuperResolver`.

Backends
--------
``dic``       DIC x8 (the paper's choice); ``weights`` = a released DIC checkpoint (required).
``spandrel``  any single-image SR checkpoint the spandrel library loads (SwinIR x8, RCAN, HAT,
              ESRGAN ...); a scale mismatch is resized to ``out_size``.
``facesr``    the project's own compact face SR (:mod:`fer_study.models.facesr`), a checkpoint
              written by ``fer-study sr train``.
``bicubic`` / ``bilinear``  the deterministic T of the ablations (no weights).

Input: (B, 1|3, H, W) uint8 or float in [0, 1]. Output: float in [0, 1] at ``out_size``. An RGB-output
network (DIC, most spandrel models) keeps its three channels, as the authors fed DIC's RGB output to
the classifier (grayscale input is repeated to RGB for it); grayscale-output backends (bicubic /
bilinear on grayscale input, a 1-channel ``facesr``) give one channel (three for RGB input):
:meth:`SuperResolver.output_channels`. RGB-output backends carry ``rgb_output`` in
:meth:`SuperResolver.identity`, so SR cache entries written when their output was averaged to gray
are never reused.
The network is frozen (``requires_grad=False``, eval mode) and never trained by the classifier.

``precision``: ``fp32`` (default; on CUDA cuDNN's default TF32 convolutions) or ``bf16`` (autocast,
for the cache build on a GPU: DIC costs about 764 GFLOP per 48 -> 384 image). It is part of
:meth:`SuperResolver.identity`, hence of the SR cache key, when it is not ``fp32``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKENDS = ("dic", "spandrel", "facesr", "bicubic", "bilinear")
PRECISIONS = ("fp32", "bf16")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def save_facesr(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    from fer_study.io import atomic_write

    obj = {"kind": "facesr", "config": model.config, "state_dict": model.state_dict(), **(extra or {})}
    return atomic_write(path, lambda p: torch.save(obj, p))


class SuperResolver(nn.Module):
    def __init__(self, backend: str = "bicubic", weights: str | Path | None = None, out_size: int = 384,
                 device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown SR backend {backend!r}; choose from {BACKENDS}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown SR precision {precision!r}; choose from {PRECISIONS}")
        self.backend, self.out_size, self.precision = backend, out_size, precision
        self.weights = None if weights is None else Path(weights)
        self.net: nn.Module | None = None
        self.channels = 3  # the network's input channels
        self.net_out_channels: int | None = None  # the network's output channels (None: no network)
        if backend in ("dic", "spandrel", "facesr"):
            if self.weights is None or not self.weights.is_file():
                hint = {
                    "dic": "download the Helen x8 DIC checkpoint (github.com/Maclory/Deep-Iterative-Collaboration)",
                    "spandrel": "give any checkpoint spandrel can load (e.g. a SwinIR x8 .pth)",
                    "facesr": "train one with `fer-study sr train`",
                }[backend]
                raise FileNotFoundError(f"SR weights for backend '{backend}' not found: {self.weights}; {hint}")
            if backend == "dic":
                from fer_study.models.dic import load_dic

                self.net = load_dic(self.weights)
                self.net_out_channels = 3
            elif backend == "spandrel":
                import spandrel

                desc = spandrel.ModelLoader().load_from_file(str(self.weights))
                self.net = desc.model
                self.channels = desc.input_channels
                self.net_out_channels = desc.output_channels
            else:
                from fer_study.models.facesr import FaceSR

                ck = torch.load(self.weights, map_location="cpu", weights_only=False)
                if ck.get("kind") != "facesr":
                    raise ValueError(f"{self.weights} is not a facesr checkpoint")
                self.net = FaceSR(**ck["config"])
                self.net.load_state_dict(ck["state_dict"])
                self.channels = self.net_out_channels = ck["config"]["channels"]
            self.net.eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
        self.to(device)

    def identity(self) -> dict:
        """What determines the output: part of the SR cache key."""
        ident = {"backend": self.backend, "out_size": self.out_size,
                 "weights_sha256": None if self.weights is None else file_sha256(self.weights)}
        if self.precision != "fp32" and self.net is not None:  # fp32 entries keep their original key
            ident["precision"] = self.precision
        if self.net_out_channels == 3:  # was averaged to gray before: a new key (gray entries keep theirs)
            ident["rgb_output"] = True
        return ident

    def output_channels(self, in_channels: int) -> int:
        """Channels of the output for ``in_channels`` input channels."""
        if self.net_out_channels is None:
            return in_channels
        return 3 if self.net_out_channels == 3 or in_channels == 3 else self.net_out_channels

    def train(self, mode: bool = True) -> SuperResolver:  # frozen: the network stays in eval mode
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        in_ch = x.shape[1]
        size = (self.out_size, self.out_size)
        if self.net is None:
            y = F.interpolate(x, size=size, mode=self.backend, align_corners=False)
        else:
            xin = x
            if self.channels == 3 and in_ch == 1:
                xin = x.expand(-1, 3, -1, -1)
            elif self.channels == 1 and in_ch == 3:
                xin = x.mean(1, keepdim=True)
            bf16 = self.precision == "bf16"
            with torch.autocast(xin.device.type, dtype=torch.bfloat16, enabled=bf16):
                if self.backend == "dic":
                    from fer_study.models.dic import denormalise, normalise

                    y = denormalise(self.net(normalise(xin)).float())
                else:
                    y = self.net(xin.to(next(self.net.parameters()).dtype))
            if y.shape[-2:] != size:
                y = F.interpolate(y.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
            if y.shape[1] == 1 and in_ch == 3:  # a grayscale network on RGB input
                y = y.expand(-1, 3, -1, -1)
        return y.float().clamp(0, 1)
