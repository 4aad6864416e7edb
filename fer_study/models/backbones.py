"""timm vision-transformer backbones of the paper (ViT, DeiT, ConViT, XCiT, Swin-T/S/B/L) and
CPU-sized stand-ins of each family, plus the two classification heads.

``build_backbone`` returns a :class:`Backbone`: the feature extractor (``num_classes=0``: timm
pools), its feature width and the normalisation of its pretrained configuration (ViT augreg uses
mean/std 0.5, the others ImageNet's), never a hard-coded constant.

Weights: ``pretrained=True`` downloads through timm/huggingface or takes them from the local Hugging
Face cache; offline and not cached it fails within seconds (:func:`check_pretrained`; with
``HF_HUB_OFFLINE=1`` only the cache is used). ``checkpoint=PATH`` loads a local file (``.pth``/``.bin``/
``.safetensors`` state dict, or an augreg ``.npz``) with timm's converter of the model's family, key by
key: strictly by default (:func:`load_backbone_weights`), the counts of what loaded in
``Backbone.load_report``. :func:`check_backbone_checkpoint` and :func:`check_pretrained` are the cheap
checks config validation runs before any data is read. Those and the rest of the weights-file handling
live in :mod:`fer_study.models.weights`; their names stay importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from fer_study.models.weights import (  # noqa: F401 - re-exported: callers of this module keep working
    _CHECKED,
    _PROBES,
    WEIGHT_SUFFIXES,
    KeyDiff,
    _force_hub_offline,
    check_backbone_checkpoint,
    check_pretrained,
    checkpoint_file,
    diff_keys,
    error_reason,
    few_names,
    hub_offline,
    hub_unreachable,
    load_backbone_weights,
    pretrained_cached,
    read_weights_file,
    save_backbone_checkpoint,
    shapes,
    state_dict_in,
)

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
#: Stand-ins of the ``ferplus-cpu`` profile (real FERPlus, random init, 48 px, ``stem="conv_wide"``):
#: Swin-S and Swin-B of Table 2 as a narrower and a wider Swin of the same depth, the demo's
#: ``tiny_swin_s`` and ``tiny_swin_b`` under their own names (run ids use the names; the stem and
#: the input size are the profile's).
TINY_BACKBONES.update({"cpu_swin_s": TINY_BACKBONES["tiny_swin_s"], "cpu_swin_b": TINY_BACKBONES["tiny_swin_b"]})
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
    #: what ``checkpoint`` loaded (:meth:`KeyDiff.report`: file, strict, counts loaded / missing /
    #: unexpected / mismatched and their first names); None for random init and timm's pretrained weights
    load_report: dict[str, Any] | None = None


#: Convolutional stems: (first stage's width, widths capped at the embedding width, width of a 3x3
#: convolution at full resolution before the stages, 0: none). ``conv``: stages of 16, 32, ... capped
#: (the demo's stand-ins); ``conv_wide``: a 16-wide full-resolution 3x3 convolution, then stages of 32,
#: 64, 128 (the ``ferplus-cpu`` stand-ins: on real FERPlus the narrow stem left a 48-wide tiny Swin
#: under-fitting, 79 % training accuracy and 75.52 % clean test accuracy after 10 epochs; with this
#: stem, 8 epochs gave 78.87 %, seed 0).
STEMS: dict[str, tuple[int, bool, int]] = {"conv": (16, True, 0), "conv_wide": (32, False, 16)}


def conv_stem(cin: int, cout: int, stride: int, kind: str = "conv") -> nn.Sequential:
    """A convolutional stem replacing a ``stride`` x ``stride`` patchify convolution: log2(stride)
    stages of [3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU], then a 1x1 projection to the
    embedding width (Xiao et al. 2021, "Early convolutions help transformers see better"); ``conv_wide``
    first has one [3x3 conv, BN, ReLU] at full resolution. Same output grid and width as the patch
    embedding it replaces; widths from :data:`STEMS`."""
    n = int(stride).bit_length() - 1
    if 2 ** n != stride or n < 1:
        raise ValueError(f"conv stem needs a power-of-two patch size, not {stride}")
    first, capped, full_res = STEMS[kind]
    layers: list[nn.Module] = []
    c = cin
    if full_res:
        layers += [nn.Conv2d(c, full_res, 3, padding=1, bias=False), nn.BatchNorm2d(full_res), nn.ReLU(inplace=True)]
        c = full_res
    for i in range(n):
        w = min(cout, first * 2 ** i) if capped else first * 2 ** i
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c = w
    layers.append(nn.Conv2d(c, cout, 1))
    return nn.Sequential(*layers)


def _add_conv_stem(model: nn.Module, kind: str = "conv") -> bool:
    pe = getattr(model, "patch_embed", None)
    proj = getattr(pe, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride or proj.kernel_size[0] < 2:
        return False  # e.g. XCiT, whose patch embedding is already convolutional
    pe.proj = conv_stem(proj.in_channels, proj.out_channels, proj.stride[0], kind)
    return True


def _timm_args(name: str, img_size: int | None, kwargs: dict) -> tuple[str, dict]:
    """The timm name and keyword arguments of the backbone ``name`` (alias or timm name)."""
    timm_name, extra = BACKBONES.get(name, (name, {}))
    kw = {**extra, **kwargs}
    if img_size is not None:
        kw["img_size"] = img_size
    elif name in TINY_BACKBONES:
        kw["img_size"] = 64
    return timm_name, kw


def build_backbone(name: str, pretrained: bool = False, checkpoint: str | Path | None = None,
                   img_size: int | None = None, stem: str = "patch", checkpoint_strict: bool = True,
                   **kwargs) -> Backbone:
    """Create a backbone by alias (:data:`BACKBONES`) or any timm model name, without classifier.

    ``checkpoint``: local weights, loaded by :func:`load_backbone_weights` (strict unless
    ``checkpoint_strict=False``; what was loaded is ``Backbone.load_report``). ``pretrained``: timm's
    weights from the hub or its local cache; offline and not cached this is a :class:`ConfigError` within
    seconds (:func:`check_pretrained`). ``stem="conv"`` or ``"conv_wide"`` replaces the patchify
    convolution by :func:`conv_stem` (random-init CPU stand-ins only: it does not match pretrained weights).
    """
    import timm

    if stem not in ("patch", *STEMS):
        raise ValueError(f"stem must be one of patch, {', '.join(STEMS)}, not {stem!r}")
    if stem != "patch" and (pretrained or checkpoint is not None):
        raise ValueError(f"stem={stem!r} changes the patch embedding and cannot take pretrained weights")
    timm_name, kw = _timm_args(name, img_size, kwargs)
    report = None
    if checkpoint is not None:
        path = checkpoint_file(checkpoint, timm_name)
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, **kw)
        report = load_backbone_weights(model, path, timm_name, strict=checkpoint_strict)
    else:
        if pretrained and check_pretrained(timm_name) == "cache" and (hub_offline() or hub_unreachable()):
            _force_hub_offline()  # the cached file, without a minute of retries against an unreachable hub
        try:
            model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **kw)
        except Exception as e:  # noqa: BLE001 - hub errors come in many types
            if not pretrained:
                raise
            raise RuntimeError(
                f"pretrained weights for {timm_name} cannot be had ({type(e).__name__}: {e}). Offline, download "
                "them elsewhere and pass `--set model.checkpoint=PATH`, or use model.pretrained=false.") from e
    if stem != "patch":
        _add_conv_stem(model, stem)
    cfg = model.pretrained_cfg
    size = kw.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1]
    return Backbone(model, model.num_features, tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                    tuple(cfg.get("std", (0.229, 0.224, 0.225))), timm_name, int(size), report)


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
