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
A weights file that is not the backend's network (text, random bytes, empty, truncated, another
network's state dict) is a :class:`~fer_study.errors.ConfigError` naming the file and what was expected;
:func:`check_sr_weights` is the cheap form config validation runs before any data is read.

``precision``: ``fp32`` (default; on CUDA cuDNN's default TF32 convolutions) or ``bf16`` (autocast,
for the cache build on a GPU: DIC costs about 764 GFLOP per 48 -> 384 image). It is part of
:meth:`SuperResolver.identity`, hence of the SR cache key, when it is not ``fp32``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_study.errors import ConfigError
from fer_study.io import file_sha256

BACKENDS = ("dic", "spandrel", "facesr", "bicubic", "bilinear")
#: The backends that load a weights file (``weights`` / ``sr_weights``).
WEIGHTED_BACKENDS = ("dic", "spandrel", "facesr")
PRECISIONS = ("fp32", "bf16")
FACESR_EXPECTED = "a facesr checkpoint written by `fer-study sr train`"
SPANDREL_EXPECTED = "a single-image SR checkpoint spandrel loads (e.g. a SwinIR x8 .pth)"


def save_facesr(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    from fer_study.io import torch_save_atomic

    obj = {"kind": "facesr", "config": model.config, "state_dict": model.state_dict(), **(extra or {})}
    return torch_save_atomic(obj, path)


def read_facesr(path: str | Path, label: str = "sr_weights") -> dict[str, Any]:
    """A facesr checkpoint (``kind``, ``config``, ``state_dict``), its keys checked against
    ``FaceSR(**config)`` on the meta device; anything else is a :class:`ConfigError` naming the file."""
    from fer_study.models.facesr import FaceSR
    from fer_study.models.weights import diff_keys, few_names, read_weights_file, shapes

    obj = read_weights_file(path, label, FACESR_EXPECTED)
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{label} {path}: holds a {type(obj).__name__}, not a facesr checkpoint; "
                          f"expected {FACESR_EXPECTED}")
    if obj.get("kind") != "facesr" or not isinstance(obj.get("config"), Mapping) \
            or not isinstance(obj.get("state_dict"), Mapping):
        raise ConfigError(f"{label} {path}: not a facesr checkpoint (kind {obj.get('kind')!r}; keys "
                          f"{few_names([str(k) for k in obj])}); expected {FACESR_EXPECTED}")
    try:
        with torch.device("meta"):
            own = shapes(FaceSR(**obj["config"]).state_dict())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{label} {path}: facesr config {dict(obj['config'])} is not FaceSR's ({e}); "
                          f"expected {FACESR_EXPECTED}") from None
    sd = {k: v for k, v in obj["state_dict"].items() if isinstance(v, torch.Tensor)}
    diff = diff_keys(own, shapes(sd))
    if not diff.exact:
        raise ConfigError(f"{label} {path}: facesr checkpoint with {len(diff.matched)} of {diff.expected} expected "
                          f"keys ({diff.counts()}: {diff.details()}); expected {FACESR_EXPECTED}")
    return dict(obj)


def read_spandrel(path: str | Path, label: str = "sr_weights") -> Any:
    """spandrel's model descriptor of ``path``; a file it cannot load is a :class:`ConfigError`."""
    import spandrel

    path = Path(path)
    if path.stat().st_size == 0:
        raise ConfigError(f"{label} {path}: empty file (0 bytes); expected {SPANDREL_EXPECTED}")
    try:
        return spandrel.ModelLoader().load_from_file(str(path))
    except Exception as e:  # noqa: BLE001 - unpickling, unsupported architecture, ...
        from fer_study.models.weights import error_reason

        raise ConfigError(f"{label} {path}: not a checkpoint spandrel can load ({error_reason(e)}); "
                          f"expected {SPANDREL_EXPECTED}") from None


_CHECKED: set[tuple] = set()


def check_sr_weights(backend: str, path: str | Path, label: str = "sr_weights") -> None:
    """Validation of ``sr_weights`` before any data is read: for a backend with weights, the file holds
    that network's weights (DIC and facesr: its keys and shapes are read and compared; spandrel: it
    loads). Errors: :class:`ConfigError` naming the file and what was expected. Nothing to check for
    ``bicubic`` / ``bilinear``; a checked file is remembered by path, size and mtime."""
    if backend not in WEIGHTED_BACKENDS:
        return
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{label}={path}: no such file")
    st = path.stat()
    key = (backend, str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return
    if backend == "dic":
        from fer_study.models.dic import read_dic_state_dict

        read_dic_state_dict(path, label)
    elif backend == "facesr":
        read_facesr(path, label)
    else:
        read_spandrel(path, label)
    _CHECKED.add(key)


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
                    "facesr": "train one with `fer-study sr train` (the ferplus-cpu profile's: `fer-study sr train "
                              "--folder FERPLUS/FER2013Train --lr-size 24 --holdout 0 --out "
                              "cache/facesr/facesr_ferplus.pt`, or `make ferplus-cpu`)",
                }[backend]
                raise FileNotFoundError(f"SR weights for backend '{backend}' not found: {self.weights}; {hint}")
            if backend == "dic":
                from fer_study.models.dic import load_dic

                self.net = load_dic(self.weights)
                self.net_out_channels = 3
            elif backend == "spandrel":
                desc = read_spandrel(self.weights)
                self.net = desc.model
                self.channels = desc.input_channels
                self.net_out_channels = desc.output_channels
            else:
                from fer_study.models.facesr import FaceSR

                ck = read_facesr(self.weights)
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
