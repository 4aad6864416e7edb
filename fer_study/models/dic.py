"""DIC: Deep Iterative Collaboration face super-resolution (Ma et al., CVPR 2020), the paper's f_sr.

A faithful re-implementation of the x8 DIC generator so that the authors' released checkpoints
load strictly: the same ``state_dict`` key names and shapes (296 keys, 21,803,849 parameters for
the paper's configuration: 48 features, 6 groups, 4 steps, 68 landmarks, hourglass width 256).

Structure: ``conv_in`` (3x3 conv + PReLU to 4*F channels) and a pixel shuffle (x2) give LR
features; an SRFBN-style feedback block of up/down projection groups (kernel 12, stride 8)
refines them; ``out`` (deconv x4) + ``conv_out`` reconstruct a residual added to the bilinear x8
upsampling of the input. Step 1 uses ``first_block``; steps 2..T use ``block``, which fuses the
features with attention from the landmark heatmaps (``fusion_block``) predicted on the previous
step's SR image by a recurrent hourglass (``HG``). The last step's image is the output.

Input: RGB in [0, 1] minus :data:`DIC_MEAN` (grayscale repeated to 3 channels) -- use
:func:`normalise` / :func:`denormalise`, or :class:`fer_study.models.sr.SuperResolver` which does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_study.errors import ConfigError

DIC_MEAN = (0.509, 0.424, 0.378)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(B, 1|3, H, W) in [0, 1] -> DIC input (3 channels, mean removed)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x - x.new_tensor(DIC_MEAN).view(1, 3, 1, 1)


def denormalise(y: torch.Tensor) -> torch.Tensor:
    return (y + y.new_tensor(DIC_MEAN).view(1, 3, 1, 1)).clamp(0, 1)


def _conv_act(cin: int, cout: int, k: int, act: str | None = "prelu", stride: int = 1,
              padding: int | None = None, groups: int = 1) -> nn.Sequential:
    """Conv (+ activation) as ``Sequential``: keys ``.0.weight``, ``.0.bias`` (``.1.weight`` for PReLU)."""
    pad = (k - 1) // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups)]
    if act == "prelu":
        layers.append(nn.PReLU(num_parameters=1, init=0.2))
    elif act == "lrelu":
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _deconv_prelu(cin: int, cout: int, k: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=padding),
                         nn.PReLU(num_parameters=1, init=0.2))


class FeedbackBlock(nn.Module):
    """Up/down projection groups with dense transitions (SRFBN), x8: kernel 12, stride 8, pad 2."""

    def __init__(self, nf: int, groups: int, in_features: int, k: int = 12, stride: int = 8, pad: int = 2) -> None:
        super().__init__()
        self.num_groups = groups
        self.compress_in = _conv_act(in_features, nf, 1)
        self.upBlocks = nn.ModuleList([_deconv_prelu(nf, nf, k, stride, pad) for _ in range(groups)])
        self.downBlocks = nn.ModuleList([_conv_act(nf, nf, k, stride=stride, padding=pad) for _ in range(groups)])
        self.uptranBlocks = nn.ModuleList([_conv_act(nf * (i + 1), nf, 1) for i in range(1, groups)])
        self.downtranBlocks = nn.ModuleList([_conv_act(nf * (i + 1), nf, 1) for i in range(1, groups)])
        self.compress_out = _conv_act(groups * nf, nf, 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        lr, hr = [x], []
        for i in range(self.num_groups):
            lo = torch.cat(lr, 1)
            if i > 0:
                lo = self.uptranBlocks[i - 1](lo)
            hi = self.upBlocks[i](lo)
            hr.append(hi)
            hi = torch.cat(hr, 1)
            if i > 0:
                hi = self.downtranBlocks[i - 1](hi)
            lr.append(self.downBlocks[i](hi))
        return self.compress_out(torch.cat(lr[1:], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.compress_in(x))


class _ResBlock(nn.Module):
    """Conv3x3-LReLU-Conv3x3 (grouped) + identity; keys ``res.0`` and ``res.2``."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, groups=groups), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Conv2d(ch, ch, 3, padding=1, groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class FeatureHeatmapFusingBlock(nn.Module):
    """Split features into one group per facial part and weight them by the softmaxed heatmaps."""

    def __init__(self, nf: int, num_heatmap: int, num_block: int) -> None:
        super().__init__()
        self.num_heatmap = num_heatmap
        ch = nf * num_heatmap
        self.conv_in = _conv_act(nf, ch, 1, act="lrelu")
        self.resnet = nn.Sequential(*[_ResBlock(ch, num_heatmap) for _ in range(num_block)])

    def forward(self, feature: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feature.shape
        f = self.resnet(self.conv_in(feature)).view(b, self.num_heatmap, -1, h, w)
        att = F.softmax(heatmap, dim=1).unsqueeze(2)
        return (f * att).sum(1)


class HeatmapAttentionBlock(FeedbackBlock):
    """The feedback block of steps 2..T: [LR features, last hidden] -> fuse with heatmaps -> project."""

    def __init__(self, nf: int, groups: int, num_heatmap: int = 5, num_fusion_block: int = 7) -> None:
        super().__init__(nf, groups, 2 * nf)
        self.fusion_block = FeatureHeatmapFusingBlock(nf, num_heatmap, num_fusion_block)

    def forward(self, x: torch.Tensor, last_hidden: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.project(self.fusion_block(self.compress_in(torch.cat((x, last_hidden), 1)), heatmap))


class HGResidual(nn.Module):
    """Hourglass residual block without BN: 1x1 -> ReLU -> 3x3 -> 1x1 (+ 1x1 skip when widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.conv_block = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(mid, mid, 3, padding=1), nn.Conv2d(mid, cout, 1))
        self.skip_layer = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv_block(x)
        return (x if self.skip_layer is None else self.skip_layer(x)) + r


class HourGlass(nn.Module):
    """Recursive hourglass of depth ``n`` (keys ``res{n}_1``, ``res{n}_2``, ``res{n}_3``, ``res_center``)."""

    def __init__(self, n: int, f: int) -> None:
        super().__init__()
        self.n = n
        for level in range(n, 0, -1):
            setattr(self, f"res{level}_1", HGResidual(f, f))
            setattr(self, f"res{level}_2", HGResidual(f, f))
            setattr(self, f"res{level}_3", HGResidual(f, f))
        self.res_center = HGResidual(f, f)

    def _level(self, x: torch.Tensor, n: int) -> torch.Tensor:
        up1 = getattr(self, f"res{n}_1")(x)
        low = getattr(self, f"res{n}_2")(F.max_pool2d(x, 2, 2))
        low = self._level(low, n - 1) if n > 1 else self.res_center(low)
        low = getattr(self, f"res{n}_3")(low)
        return up1 + F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(x, self.n)


class FeedbackHourGlass(nn.Module):
    """Recurrent landmark estimator: half of the hourglass output predicts heatmaps, half is carried."""

    def __init__(self, nf: int = 256, num_keypoints: int = 68) -> None:
        super().__init__()
        self.num_feature = nf
        self.pre_conv_block = nn.Sequential(
            nn.Conv2d(3, nf // 4, 7, 2, 3), nn.ReLU(inplace=True), HGResidual(nf // 4, nf // 2),
            nn.MaxPool2d(2, 2), HGResidual(nf // 2, nf // 2), HGResidual(nf // 2, nf))
        self.compress_in = nn.Conv2d(2 * nf, 2 * nf, 1)
        self.hg = HourGlass(4, 2 * nf)
        self.hg_conv_out = nn.Sequential(HGResidual(nf, nf), _Lin(nf), nn.Conv2d(nf, num_keypoints, 1))

    def forward(self, x: torch.Tensor, last_hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.pre_conv_block(x)
        f = self.compress_in(torch.cat((f, f if last_hidden is None else last_hidden), 1))
        f = self.hg(f)
        return self.hg_conv_out(f[:, :self.num_feature]), f[:, self.num_feature:]


class _Lin(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(nf, nf, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


def merge_heatmap_5(heatmap: torch.Tensor) -> torch.Tensor:
    """68 landmark heatmaps -> 5 part maps (left eye, right eye, nose, mouth, silhouette), each
    heatmap first scaled by its maximum (at least 0.05)."""
    m = heatmap.amax(dim=(2, 3), keepdim=True).clamp_min(0.05)
    h = heatmap / m
    if h.shape[1] == 5:
        return h
    if h.shape[1] != 68:
        raise ValueError(f"heatmap merging is defined for 68 or 5 landmarks, not {h.shape[1]}")
    parts = (slice(36, 42), slice(42, 48), slice(27, 36), slice(48, 68), slice(0, 27))
    return torch.stack([h[:, p].sum(1) for p in parts], 1)


class DIC(nn.Module):
    """DIC generator, x8. ``DIC()`` is the configuration the paper used (Helen weights)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_features: int = 48, num_groups: int = 6,
                 num_steps: int = 4, hg_num_feature: int = 256, hg_num_keypoints: int = 68,
                 num_fusion_block: int = 7, scale: int = 8) -> None:
        super().__init__()
        if scale != 8:
            raise NotImplementedError("DIC is defined here for x8 (the released face models)")
        self.num_steps, self.scale = num_steps, scale
        nf = num_features
        self.conv_in = _conv_act(in_channels, 4 * nf, 3)
        self.feat_in = nn.PixelShuffle(2)
        self.first_block = FeedbackBlock(nf, num_groups, nf)
        self.block = HeatmapAttentionBlock(nf, num_groups, 5, num_fusion_block)
        self.out = _deconv_prelu(nf, nf, 8, 4, 2)
        self.conv_out = _conv_act(nf, out_channels, 3, act=None)
        self.HG = FeedbackHourGlass(hg_num_feature, hg_num_keypoints)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """x: normalised (B, 3, H, W) -> SR (B, 3, 8H, 8W) of the last step.

        With ``return_all=True`` returns ``(sr_steps, heatmap_steps)``, one entry per step.
        """
        inter = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        feat = self.feat_in(self.conv_in(x))
        srs, heats = [], []
        hidden, hg_hidden, heatmap = None, None, None
        for step in range(self.num_steps):
            if step == 0:
                hidden = self.first_block(feat)
            else:
                hidden = self.block(feat, hidden, merge_heatmap_5(heatmap))
            sr = inter + self.conv_out(self.out(hidden))
            if step < self.num_steps - 1 or return_all:
                heatmap, hg_hidden = self.HG(sr, hg_hidden)
                heats.append(heatmap)
            srs.append(sr)
        return (srs, heats) if return_all else srs[-1]


def extract_state_dict(ckpt: Mapping) -> dict[str, torch.Tensor]:
    """A bare state_dict, or one under ``state_dict`` / ``netG``; ``module.`` prefixes stripped."""
    sd = ckpt
    for key in ("state_dict", "netG"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    return {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in sd.items()}


DIC_EXPECTED = ("the Helen x8 DIC checkpoint released with github.com/Maclory/Deep-Iterative-Collaboration "
                "(e.g. best_ckp.pth)")


def read_dic_state_dict(path: str | Path, label: str = "sr_weights", **kwargs) -> dict[str, torch.Tensor]:
    """The state dict of a DIC checkpoint, checked key by key against ``DIC(**kwargs)`` (built on the
    meta device: nothing is allocated). A file that is not a checkpoint or not DIC's is a
    :class:`~fer_study.errors.ConfigError` naming ``label``, the file and how many of the expected keys it
    has (``DIC checkpoint with 0 of 296 expected keys``)."""
    from fer_study.models.weights import diff_keys, read_weights_file, shapes

    path = Path(path)
    obj = read_weights_file(path, label, DIC_EXPECTED)
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{label} {path}: holds a {type(obj).__name__}, not a state dict; expected {DIC_EXPECTED}")
    sd = {k: v for k, v in extract_state_dict(obj).items() if isinstance(v, torch.Tensor)}
    with torch.device("meta"):
        own = shapes(DIC(**kwargs).state_dict())
    diff = diff_keys(own, shapes(sd))
    if not diff.exact:
        raise ConfigError(f"{label} {path}: DIC checkpoint with {len(diff.matched)} of {diff.expected} expected keys "
                          f"({diff.counts()}: {diff.details()}); expected {DIC_EXPECTED}")
    return sd


def load_dic(path: str | Path, map_location: str | torch.device = "cpu", label: str = "sr_weights", **kwargs) -> DIC:
    """Build ``DIC(**kwargs)`` and load a checkpoint strictly: a missing file is a FileNotFoundError, a file
    that is not a DIC checkpoint (missing, unexpected or wrong-shape keys) a ConfigError
    (:func:`read_dic_state_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DIC weights not found: {path}. Download the Helen x8 DIC checkpoint released with "
            "github.com/Maclory/Deep-Iterative-Collaboration (e.g. best_ckp.pth) and pass its path.")
    sd = read_dic_state_dict(path, label, **kwargs)
    model = DIC(**kwargs)
    model.load_state_dict(sd, strict=True)
    return model.to(map_location).eval()
