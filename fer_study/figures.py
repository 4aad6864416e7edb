"""Figure 2 of the paper: the deterministic resize, the trained Neural Resizer output and their
absolute difference, for test faces of a trained run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from fer_study.config import TrainConfig
from fer_study.runs import Run
from fer_study.training.data import load_splits, model_inputs


def run_inputs(run_dir: str | Path, split: str = "test") -> tuple[torch.nn.Module, TrainConfig, dict, object]:
    """(model, config, {split: FERSplit}, DeviceData of ``split``) of a finished run (CPU). Only
    ``split`` is read (FERPlus layouts; RAF-DB's valid split is carved from train, so all are read)."""
    from fer_study.paths import rooted

    model, cfg = Run(Path(run_dir)).load_model()
    cfg = rooted(cfg)  # its data and weights paths are relative to the project root, not to notebooks/
    if cfg.dataset in ("ferplus", "synthfer") and split != "train":
        from fer_study.data.ferplus import load_ferplus

        splits = {split: load_ferplus(cfg.data_root, split, cfg.label_mode, cfg.model.num_classes)}
    else:
        splits = load_splits(cfg)
    data = model_inputs(cfg, {split: splits[split]}, torch.device("cpu"), progress=False)[split]
    return model, cfg, splits, data


@torch.no_grad()
def resizer_views(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    """For float inputs (B, C, H, W) in [0, 1] (the model's input: cached SR images or 48 px faces),
    grayscale views in [0, 1] image space:

    ``bilinear``  the bilinear resize of the model input to the backbone size: for SR settings this is
                  the resizer's own skip path (Eq. 1), so (c) = |resizer - skip| is its learned residual;
    ``face48``    the bilinear resize of the 48 px face itself (the other reading of the paper's (a));
    ``resizer``   the trained resizer's output (the backbone's input, de-normalised);
    ``diff``      |resizer - bilinear|."""
    size = model.img_size
    xin = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    bil = F.interpolate(xin, size=(size, size), mode="bilinear", align_corners=False)
    small = F.interpolate(xin, size=(model.cfg.input_size,) * 2, mode="area") if xin.shape[-1] != model.cfg.input_size \
        else xin
    face48 = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    ours = model.denormalise(model.resize(x))
    diff = (ours - bil).abs().mean(1)
    return {"input": x.mean(1).numpy(), "bilinear": bil.mean(1).clamp(0, 1).numpy(),
            "face48": face48.mean(1).clamp(0, 1).numpy(), "resizer": ours.mean(1).clamp(0, 1).numpy(),
            "diff": diff.numpy()}


def describe_run(cfg: TrainConfig) -> str:
    """A run's setting in words, for titles (no run id): data, backbone, up- and down-scaling."""
    from fer_study.data.synth import is_synthetic
    from fer_study.plots import data_label
    from fer_study.tables import PROFILE_BACKBONES

    synthetic = cfg.dataset == "synthfer" or is_synthetic(cfg.data_root)
    data = data_label(cfg.dataset) if cfg.dataset == "synthfer" or not synthetic else \
        f"SynthFER (synthetic, {data_label(cfg.dataset)} layout)"
    m = cfg.model
    paper = {v: k for mapping in PROFILE_BACKBONES.values() for k, v in mapping.items()}.get(m.backbone)
    backbone = f"{m.backbone} (CPU stand-in for {paper})" if paper else m.backbone
    up = f"SR ({cfg.sr_backend})" if m.up == "sr" else m.up
    down = {"ltr": "learn-to-resize", "none": "no resizer"}.get(m.down, m.down)
    return f"{data}, {backbone}, {up} + {down}{' + STN' if m.stn else ''}"


def figure2(run_dir: str | Path, n_more: int = 4, seed: int = 0, title: str | None = None) -> plt.Figure:
    """(a) the bilinear resize, (b) the trained resizer's output, (c) their absolute difference and
    (a') the bilinear resize of the 48 px face for one test face; below, the difference maps of
    ``n_more`` other test faces. All difference maps share one colour scale and its colorbar."""
    model, cfg, splits, data = run_inputs(run_dir)
    if model.resizer is None:
        raise ValueError(f"run {Path(run_dir).name} has no learned resizer (down={cfg.model.down}); "
                         "Figure 2 needs a Neural Resizer run")
    rng = np.random.default_rng(seed)
    n_more = max(0, min(n_more, len(data) - 1))
    idx = rng.choice(len(data), size=1 + n_more, replace=False)
    x = data.images[torch.as_tensor(idx)].float() / 255
    v = resizer_views(model, x)
    vmax = float(np.quantile(v["diff"], 0.995)) or 1.0
    classes = splits["test"].classes
    fig = plt.figure(figsize=(7.0, 4.6 if n_more else 2.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1]) if n_more else (fig, None)
    skip = "bilinear of the SR image\n(the resizer's skip path)" if cfg.model.up == "sr" else "bilinear of the input"
    panels = (("bilinear", f"(a) {skip}"), ("resizer", "(b) trained resizer"), ("diff", "(c) |(a) − (b)|"),
              ("face48", "(a') bilinear of the\n48 px face"))
    diff_axes = []
    im = None
    for ax, (key, name) in zip(top.subplots(1, 4), panels):
        shown = ax.imshow(v[key][0], cmap="magma" if key == "diff" else "gray", vmin=0,
                          vmax=vmax if key == "diff" else 1)
        if key == "diff":
            im = shown
            diff_axes.append(ax)
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    if bottom is not None:
        axes = np.atleast_1d(bottom.subplots(1, n_more))
        for j, ax in enumerate(axes):
            ax.imshow(v["diff"][1 + j], cmap="magma", vmin=0, vmax=vmax)
            name = classes[int(data.labels[idx[1 + j]])]
            ax.set_title(f"(c) of {'an' if name[0] in 'aeiou' else 'a'} {name} face", fontsize=8)
            ax.set_axis_off()
        bottom.colorbar(im, ax=list(axes), shrink=0.9, label="every (c): |resizer − bilinear|\n(grey levels; 1 = black to white)")
    else:
        top.colorbar(im, ax=diff_axes, shrink=0.9, label="|resizer − bilinear|")
    top.suptitle(title or f"Figure 2 (this study): what the trained resizer changes\n{describe_run(cfg)}, test faces",
                 fontsize=9)
    return fig
