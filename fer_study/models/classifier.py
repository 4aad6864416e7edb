"""The composed classifier of the paper (Fig. 1b/c, Eq. 1, Table 2).

    input -> [STN before SR] -> up (bilinear | f_sr) -> [STN after SR] -> down (LTR | bilinear | none)
          -> backbone -> head

Normalisation (``normalise``) with the backbone's mean/std (from its pretrained config):
``input`` (default, the authors' order): the image their data loader normalised is normalised
first, so the STN and the resizer see normalised images and the resizer's output goes straight
into the backbone. That image is the cached SR image (``up=sr``) or the 48 px input (``up=bilinear``;
normalising commutes with the bilinear upscaling up to rounding). Where SR runs inside the model
(raw input with an ``sr`` module, e.g. an STN before SR), SR consumes [0, 1] images and the
normalisation follows SR. ``backbone``: everything runs on [0, 1] images and the normalisation sits
just before the backbone (this project's earlier order; it divides the resizer's residual by std,
i.e. amplifies it about 4.4x). :meth:`NeuralResizerClassifier.resize` returns the backbone's input
either way; :meth:`NeuralResizerClassifier.denormalise` maps it back to [0, 1] image space.

Table 2 settings as :class:`ModelConfig` values:
(a) up=bilinear, down=none    vanilla: bilinear upscaling straight to the backbone size
(b) up=bilinear, down=ltr     bilinear to ``sr_size``, learned resize to the backbone size
(c) up=sr,       down=bilinear
(d) up=sr,       down=ltr     the Neural Resizer
(e) (d) + stn=True            (the authors' code places the STN after SR, at ``sr_size``)

With ``up=sr`` the input is normally the cached SR image (``sr_size``); raw images can be given
when an ``sr`` module is attached (required for an STN placed before SR). SR never trains: its
parameters are frozen and, unless an STN sits before it, it runs under ``no_grad``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_study.errors import ConfigError
from fer_study.models.backbones import BACKBONES, STEMS, build_backbone, count_parameters, make_head
from fer_study.models.resizer import LearnToResize
from fer_study.models.stn import STN
from fer_study.models.weights import check_backbone_checkpoint, check_pretrained
from fer_study.overrides import check_fields, check_paths, option

HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _check_backbone(name: str) -> None:
    """An alias of :data:`BACKBONES` or a model name timm knows (hub references are not looked up)."""
    if name in BACKBONES or name.startswith(HUB_PREFIXES):
        return
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, list(BACKBONES) + timm.list_models(), n=3, cutoff=0.6)
    hint = "; did you mean " + " or ".join(map(repr, close)) + "?" if close else ""
    raise ConfigError(f"model.backbone={name}: expected an alias ({', '.join(BACKBONES)}) or a timm model name{hint}")


@dataclass
class ModelConfig:
    # allowed values are declared per field (fer_study.overrides.option) and checked by validate()
    backbone: str = "swin_s"  # an alias of models.backbones.BACKBONES or a timm model name
    num_classes: int = option(8, choices=(7, 8))
    up: str = option("sr", choices=("bilinear", "sr"))
    down: str = option("ltr", choices=("ltr", "bilinear", "none"))
    stn: bool = False
    stn_placement: str = option("after_sr", choices=("after_sr", "before_sr"))  # after_sr: the authors' code
    input_size: int = option(48, ge=1)
    sr_size: int = option(384, ge=1)
    img_size: int | None = option(None, ge=1)  # backbone input; None: the backbone's own (224, tiny: 64)
    head: str = option("mlp", choices=("mlp", "linear"))  # mlp: the authors'
    ltr_n: int = option(16, ge=1)
    ltr_r: int = option(1, ge=1)
    pretrained: bool = False
    checkpoint: str | None = option(None, path="file_or_dir")  # a weights file, or a folder of them
    # false: a checkpoint that fits only in part loads what matches (counts in the run's load report)
    checkpoint_strict: bool = True
    # patch: the backbone's own; conv / conv_wide: CPU stand-ins (models.backbones.STEMS)
    stem: str = option("patch", choices=("patch", *STEMS))
    backbone_kwargs: dict = field(default_factory=dict)
    normalise: str = option("input", choices=("input", "backbone"))  # input: the authors' (see the module doc)
    stn_align_corners: bool = True  # the authors' STN grid convention; False: the other one

    def validate(self, check_files: bool | Collection[str] = True) -> None:
        """Types, choices and ranges of every field (:class:`ConfigError` naming ``model.KEY``, the value
        and what was expected), the backbone name, a conv stem given weights, then the weights selected by
        ``check_files`` (True, False or the keys to check, e.g. ``{"model.checkpoint"}``): see
        :meth:`check_weights`."""
        check_fields(self, "model.")
        if self.down == "none" and self.up == "sr":
            raise ConfigError("model.down=none: up=sr needs a downsizer (ltr or bilinear) to reach the backbone size")
        _check_backbone(self.backbone)
        # (a checkpoint that does not exist is reported as such, by the path check, when files are checked)
        if self.stem != "patch" and (self.pretrained or (self.checkpoint is not None and Path(self.checkpoint).exists())):
            given = "model.pretrained=true" if self.pretrained else f"model.checkpoint={self.checkpoint}"
            raise ConfigError(f"model.stem={self.stem}: the convolutional stem replaces the patch embedding and cannot take "
                              f"pretrained weights ({given}); use model.stem=patch")
        self.check_weights(check_files)

    def check_weights(self, which: bool | Collection[str] = True) -> None:
        """Of the keys selected by ``which`` (True, False or keys such as ``model.checkpoint``): the
        checkpoint exists and holds weights of this backbone (key by key, strictly unless
        ``checkpoint_strict=false``; :func:`~fer_study.models.backbones.check_backbone_checkpoint`), and
        ``pretrained`` weights without a checkpoint are in the local cache or the hub is reachable
        (:func:`~fer_study.models.backbones.check_pretrained`, seconds). Errors: :class:`ConfigError`."""
        check_paths(self, "model.", which)

        def wanted(key: str) -> bool:
            return which is True or (not isinstance(which, bool) and key in which)

        if self.checkpoint is not None and wanted("model.checkpoint"):
            check_backbone_checkpoint(self.checkpoint, self.backbone, img_size=self.img_size,
                                      strict=self.checkpoint_strict, **self.backbone_kwargs)
        elif self.pretrained and self.checkpoint is None and wanted("model.pretrained"):
            check_pretrained(self.backbone)

    @property
    def input_kind(self) -> str:
        """What the model is fed: ``sr`` (cached SR images at sr_size) or ``raw`` (48x48)."""
        if self.up == "sr" and not (self.stn and self.stn_placement == "before_sr"):
            return "sr"
        return "raw"


class NeuralResizerClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, sr: nn.Module | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        bb = build_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                            img_size=cfg.img_size, stem=cfg.stem, checkpoint_strict=cfg.checkpoint_strict,
                            **cfg.backbone_kwargs)
        #: what ``cfg.checkpoint`` loaded into the backbone (counts loaded / missing / unexpected /
        #: mismatched, :attr:`~fer_study.models.backbones.Backbone.load_report`); None without a checkpoint
        self.weights_report = bb.load_report
        self.img_size = bb.img_size
        self.backbone = bb.model
        self.head = make_head(cfg.head, bb.num_features, cfg.num_classes)
        self.register_buffer("mean", torch.tensor(bb.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(bb.std).view(1, 3, 1, 1), persistent=False)
        self.resizer = LearnToResize(3, cfg.ltr_n, cfg.ltr_r, self.img_size) if cfg.down == "ltr" else None
        self.stn = None
        if cfg.stn:
            self.stn = STN(3, cfg.input_size if cfg.stn_placement == "before_sr" else
                           (cfg.sr_size if cfg.up == "sr" or cfg.down == "ltr" else self.img_size),
                           align_corners=cfg.stn_align_corners)
        self.sr = sr
        if sr is not None:
            for p in sr.parameters():
                p.requires_grad_(False)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.up == "bilinear":
            if c.down == "none":
                return x
            return F.interpolate(x, size=(c.sr_size, c.sr_size), mode="bilinear", align_corners=False)
        if x.shape[-1] == c.sr_size:  # already super-resolved (the cache)
            return x
        if self.sr is None:
            raise ValueError(f"input is {x.shape[-1]}px but up=sr expects cached {c.sr_size}px SR images "
                             "(or attach an sr module)")
        if self.stn is not None and c.stn_placement == "before_sr":
            return self.sr(x)  # gradients flow through the frozen SR to the STN
        with torch.no_grad():
            return self.sr(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image space -> the backbone's normalised space, ``(x - mean) / std``."""
        return (x - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """A backbone input (:meth:`resize`) -> [0, 1] image space (not clamped), for figures."""
        return x * self.std + self.mean

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the backbone: its input (B, 3, img, img), normalised (see ``normalise``
        in the module doc). ``x``: (B, 1|3, H, W) in [0, 1]."""
        c = self.cfg
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        early = c.normalise == "input"
        online_sr = c.up == "sr" and x.shape[-1] != c.sr_size  # SR inside the model: it needs [0, 1]
        if early and not online_sr:
            x = self.normalise(x)
        if self.stn is not None and c.stn_placement == "before_sr":
            x = self.stn(x)
        x = self._up(x)
        if early and online_sr:
            x = self.normalise(x)
        if self.stn is not None and c.stn_placement == "after_sr":
            x = self.stn(x)
        if self.resizer is not None:  # channels_last inside the CNN, plain NCHW for the transformer
            x = self.resizer(x.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return x if early else self.normalise(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.resize(x)))

    def cnn_channels_last_(self) -> NeuralResizerClassifier:
        """channels_last memory for the convolutional parts (resizer, STN); the transformer stays NCHW."""
        for part in (self.resizer, self.stn):
            if part is not None:
                part.to(memory_format=torch.channels_last)
        return self

    def parameter_summary(self) -> dict[str, dict[str, int]]:
        parts = {"sr": self.sr, "stn": self.stn, "resizer": self.resizer, "backbone": self.backbone, "head": self.head}
        return {k: {"total": count_parameters(m), "trainable": count_parameters(m, True)} for k, m in parts.items()}

    def config_dict(self) -> dict:
        return asdict(self.cfg)
