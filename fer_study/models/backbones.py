"""timm vision-transformer backbones of the paper (ViT, DeiT, ConViT, XCiT, Swin-T/S/B/L) and
CPU-sized stand-ins of each family, plus the two classification heads.

``build_backbone`` returns a :class:`Backbone`: the feature extractor (``num_classes=0``: timm
pools), its feature width and the normalisation of its pretrained configuration (ViT augreg uses
mean/std 0.5, the others ImageNet's), never a hard-coded constant.

Weights: ``pretrained=True`` downloads through timm/huggingface (set ``HF_HUB_OFFLINE=1`` before
importing timm to forbid it); ``checkpoint=PATH`` loads a local file (``.pth``/``.bin``/
``.safetensors`` state dict, or an augreg ``.npz``) through timm's ``pretrained_cfg_overlay``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

#: Paper backbones (Table 1-4): alias -> (timm ``name.tag``, extra kwargs). Expected input 224.
#: Each tag pins the weights the bare name pointed to in the 2021 timm the authors used (their
#: code calls ``timm.create_model("swin_base_patch4_window7_224", pretrained=True)``), not timm
#: 1.0's defaults (swin_small's default became ms_in22k_ft_in1k). Evidence, timm v0.4.12
#: (2021-06-30) default_cfgs: vision_transformer.py:70-72 vit_small augreg S_16-i21k ... imagenet2012
#: (mean/std 0.5, _cfg line 48), :136-138 deit_small_patch16_224-cd65a155.pth; convit.py:52-53
#: convit_small.pth; swin_transformer.py:49-50 swin_base ..._22kto1k.pth, :57-58 swin_large
#: ..._22kto1k.pth, :61-62 swin_small_patch4_window7_224.pth (ImageNet-1k), :65-66 swin_tiny (1k).
#: XCiT is not in 0.4.12 (added 2021-07-11); the 2021 master and v0.5.4 xcit.py:54 point
#: xcit_small_12_p16_224 at xcit_small_12_p16_224.pth (ImageNet-1k, not the distilled one).
PAPER_BACKBONES: dict[str, tuple[str, dict]] = {
    "vit_s": ("vit_small_patch16_224.augreg_in21k_ft_in1k", {}),
    "deit_s": ("deit_small_patch16_224.fb_in1k", {}),
    "convit_s": ("convit_small.fb_in1k", {}),
    "xcit_s": ("xcit_small_12_p16_224.fb_in1k", {}),
    "swin_t": ("swin_tiny_patch4_window7_224.ms_in1k", {}),
    "swin_s": ("swin_small_patch4_window7_224.ms_in1k", {}),
    "swin_b": ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", {}),
    "swin_l": ("swin_large_patch4_window7_224.ms_in22k_ft_in1k", {}),
}
#: CPU-sized stand-ins of the same families (random init, 64x64 input), for the demo profile.
TINY_BACKBONES: dict[str, tuple[str, dict]] = {
    "tiny_vit": ("vit_tiny_patch16_224", dict(patch_size=8, depth=4, embed_dim=96, num_heads=3)),
    "tiny_deit": ("deit_tiny_patch16_224", dict(patch_size=8, depth=4, embed_dim=96, num_heads=3)),
    "tiny_convit": ("convit_tiny", dict(patch_size=8, depth=4, embed_dim=24, num_heads=4, local_up_to_layer=3)),
    "tiny_xcit": ("xcit_nano_12_p8_224", dict(depth=4, embed_dim=96, num_heads=4)),
    "tiny_swin_t": ("swin_tiny_patch4_window7_224", dict(patch_size=8, window_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6))),
    "tiny_swin_s": ("swin_tiny_patch4_window7_224", dict(patch_size=8, window_size=4, embed_dim=48, depths=(2, 4), num_heads=(3, 6))),
    "tiny_swin_b": ("swin_tiny_patch4_window7_224", dict(patch_size=8, window_size=4, embed_dim=64, depths=(2, 4), num_heads=(4, 8))),
    "tiny_swin_l": ("swin_tiny_patch4_window7_224", dict(patch_size=8, window_size=4, embed_dim=96, depths=(2, 4), num_heads=(6, 12))),
}
BACKBONES = {**PAPER_BACKBONES, **TINY_BACKBONES}


def paper_backbone_tags() -> dict[str, str]:
    """alias -> the exact timm ``name.tag`` of each paper backbone (the weights ``pretrained=True`` loads)."""
    return {alias: name for alias, (name, _) in PAPER_BACKBONES.items()}


@dataclass
class Backbone:
    model: nn.Module
    num_features: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    timm_name: str
    img_size: int


def conv_stem(cin: int, cout: int, stride: int) -> nn.Sequential:
    """A convolutional stem replacing a ``stride`` x ``stride`` patchify convolution: log2(stride)
    stages of [3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU], then a 1x1 projection to the
    embedding width (Xiao et al. 2021, "Early convolutions help transformers see better"). Same
    output grid and width as the patch embedding it replaces."""
    n = int(stride).bit_length() - 1
    if 2 ** n != stride or n < 1:
        raise ValueError(f"conv stem needs a power-of-two patch size, not {stride}")
    layers: list[nn.Module] = []
    c = cin
    for i in range(n):
        w = min(cout, 16 * 2 ** i)
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c = w
    layers.append(nn.Conv2d(c, cout, 1))
    return nn.Sequential(*layers)


def _add_conv_stem(model: nn.Module) -> bool:
    pe = getattr(model, "patch_embed", None)
    proj = getattr(pe, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride or proj.kernel_size[0] < 2:
        return False  # e.g. XCiT, whose patch embedding is already convolutional
    pe.proj = conv_stem(proj.in_channels, proj.out_channels, proj.stride[0])
    return True


def build_backbone(name: str, pretrained: bool = False, checkpoint: str | Path | None = None,
                   img_size: int | None = None, stem: str = "patch", **kwargs) -> Backbone:
    """Create a backbone by alias (:data:`BACKBONES`) or any timm model name, without classifier.

    ``stem="conv"`` replaces the patchify convolution by :func:`conv_stem` (random-init CPU stand-ins
    only: it does not match pretrained weights).
    """
    import timm

    timm_name, extra = BACKBONES.get(name, (name, {}))
    kw = {**extra, **kwargs}
    if img_size is not None:
        kw["img_size"] = img_size
    elif name in TINY_BACKBONES:
        kw["img_size"] = 64
    if checkpoint is not None:
        checkpoint = checkpoint_file(checkpoint, timm_name)
        overlay = {"file": str(checkpoint)}
        if checkpoint.suffix != ".npz":
            overlay["custom_load"] = False
        model = timm.create_model(timm_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kw)
    else:
        if pretrained and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            _force_hub_offline()  # honour the variable even when huggingface_hub was imported first
        try:
            model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **kw)
        except Exception as e:  # noqa: BLE001 - hub errors come in many types
            if not pretrained:
                raise
            raise RuntimeError(
                f"pretrained weights for {timm_name} cannot be had ({type(e).__name__}: {e}). Offline, download "
                "them elsewhere and pass checkpoint=PATH (or `--set checkpoint=PATH`), or use pretrained=False.") from e
    if stem == "conv":
        if pretrained or checkpoint is not None:
            raise ValueError("stem='conv' changes the patch embedding and cannot take pretrained weights")
        _add_conv_stem(model)
    elif stem != "patch":
        raise ValueError(f"stem must be 'patch' or 'conv', not {stem!r}")
    cfg = model.pretrained_cfg
    size = kw.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1]
    return Backbone(model, model.num_features, tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                    tuple(cfg.get("std", (0.229, 0.224, 0.225))), timm_name, int(size))


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".npz")


def checkpoint_file(checkpoint: str | Path, timm_name: str) -> Path:
    """``checkpoint`` itself when it is a file; for a folder, the file in it named by the timm model
    (``swin_base_patch4_window7_224.ms_in22k_ft_in1k.safetensors``, or without the tag), so one folder
    serves every backbone of a grid."""
    p = Path(checkpoint)
    if p.is_file():
        return p
    if p.is_dir():
        names = [timm_name, timm_name.split(".")[0]]
        for n in dict.fromkeys(names):
            for suf in WEIGHT_SUFFIXES:
                if (p / f"{n}{suf}").is_file():
                    return p / f"{n}{suf}"
        raise FileNotFoundError(f"backbone checkpoint folder {p} has no weights for {timm_name}: looked for "
                                f"{' or '.join(dict.fromkeys(names))} with suffix {', '.join(WEIGHT_SUFFIXES)}")
    raise FileNotFoundError(f"backbone checkpoint not found: {p}")


def _force_hub_offline() -> None:
    """Make huggingface_hub use only its local cache (fast failure instead of network time-outs)."""
    try:
        import huggingface_hub.constants as c

        c.HF_HUB_OFFLINE = True
        import huggingface_hub.file_download as fd

        if hasattr(fd, "HF_HUB_OFFLINE"):
            fd.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def make_head(kind: str, num_features: int, num_classes: int) -> nn.Module:
    """``mlp``: the authors' Linear(F,512)-BN-ReLU-Dropout(0.5)-Linear(512,C); ``linear``: Linear(F,C)."""
    if kind == "mlp":
        return nn.Sequential(nn.Linear(num_features, 512), nn.BatchNorm1d(512), nn.ReLU(True), nn.Dropout(0.5),
                             nn.Linear(512, num_classes))
    if kind == "linear":
        return nn.Linear(num_features, num_classes)
    raise ValueError(f"head must be 'mlp' or 'linear', not {kind!r}")


def count_parameters(m: nn.Module | None, trainable_only: bool = False) -> int:
    if m is None:
        return 0
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)


def save_backbone_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write a state-dict checkpoint that ``build_backbone(checkpoint=...)`` reads."""
    from fer_study.io import atomic_write

    return atomic_write(path, lambda p: torch.save(model.state_dict(), p))
