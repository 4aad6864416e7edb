"""The composed classifier of the paper (Fig. 1b/c, Eq. 1, Table 2).

    input -> [STN before SR] -> up (bilinear | f_sr) -> [STN after SR] -> down (LTR | bilinear | none)
          -> normalise -> backbone -> head

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

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_study.models.backbones import build_backbone, count_parameters, make_head
from fer_study.models.resizer import LearnToResize
from fer_study.models.stn import STN


@dataclass
class ModelConfig:
    backbone: str = "swin_s"
    num_classes: int = 8
    up: str = "sr"  # "bilinear" | "sr"
    down: str = "ltr"  # "ltr" | "bilinear" | "none"
    stn: bool = False
    stn_placement: str = "after_sr"  # "after_sr" (authors' code) | "before_sr"
    input_size: int = 48
    sr_size: int = 384
    img_size: int | None = None  # backbone input; None: the backbone's own (224, tiny: 64)
    head: str = "mlp"  # "mlp" (authors') | "linear"
    ltr_n: int = 16
    ltr_r: int = 1
    pretrained: bool = False
    checkpoint: str | None = None
    stem: str = "patch"  # "patch" (the backbone's own) | "conv" (conv stem, CPU stand-ins)
    backbone_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.up not in ("bilinear", "sr"):
            raise ValueError(f"up must be bilinear or sr, not {self.up!r}")
        if self.down not in ("ltr", "bilinear", "none"):
            raise ValueError(f"down must be ltr, bilinear or none, not {self.down!r}")
        if self.down == "none" and self.up == "sr":
            raise ValueError("up=sr needs a downsizer (ltr or bilinear) to reach the backbone size")
        if self.stn_placement not in ("after_sr", "before_sr"):
            raise ValueError(f"stn_placement must be after_sr or before_sr, not {self.stn_placement!r}")

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
                            img_size=cfg.img_size, stem=cfg.stem, **cfg.backbone_kwargs)
        self.img_size = bb.img_size
        self.backbone = bb.model
        self.head = make_head(cfg.head, bb.num_features, cfg.num_classes)
        self.register_buffer("mean", torch.tensor(bb.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(bb.std).view(1, 3, 1, 1), persistent=False)
        self.resizer = LearnToResize(3, cfg.ltr_n, cfg.ltr_r, self.img_size) if cfg.down == "ltr" else None
        self.stn = None
        if cfg.stn:
            self.stn = STN(3, cfg.input_size if cfg.stn_placement == "before_sr" else
                           (cfg.sr_size if cfg.up == "sr" or cfg.down == "ltr" else self.img_size))
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

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before normalisation: the image the backbone sees (B, 3, img, img) in ~[0, 1]."""
        c = self.cfg
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.stn is not None and c.stn_placement == "before_sr":
            x = self.stn(x)
        x = self._up(x)
        if self.stn is not None and c.stn_placement == "after_sr":
            x = self.stn(x)
        if self.resizer is not None:  # channels_last inside the CNN, plain NCHW for the transformer
            return self.resizer(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.resize(x) - self.mean) / self.std
        return self.head(self.backbone(x))

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
