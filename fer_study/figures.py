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
    """(model, config, {split: FERSplit}, DeviceData of ``split``) of a finished run (CPU)."""
    model, cfg = Run(Path(run_dir)).load_model()
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


def figure2(run_dir: str | Path, n_more: int = 4, seed: int = 0, title: str | None = None) -> plt.Figure:
    model, cfg, splits, data = run_inputs(run_dir)
    if model.resizer is None:
        raise ValueError(f"run {Path(run_dir).name} has no learned resizer (down={cfg.model.down}); "
                         "Figure 2 needs a Neural Resizer run")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data), size=1 + n_more, replace=False)
    x = data.images[torch.as_tensor(idx)].float() / 255
    v = resizer_views(model, x)
    vmax = float(np.quantile(v["diff"], 0.995)) or 1.0
    cols = max(4, n_more)
    fig = plt.figure(figsize=(2.2 * cols, 5.0))
    gs = fig.add_gridspec(2, cols)
    skip = "bilinear of the SR image\n(the resizer's skip path)" if cfg.model.up == "sr" else "bilinear of the input"
    panels = (("bilinear", f"(a) {skip}"), ("resizer", "(b) trained resizer"), ("diff", "(c) |(a) - (b)|"),
              ("face48", "(a') bilinear of the 48 px face\n(the other reading of (a))"))
    for j, (key, name) in enumerate(panels):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(v[key][0], cmap="magma" if key == "diff" else "gray",
                  vmin=0, vmax=vmax if key == "diff" else 1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    for j in range(n_more):
        ax = fig.add_subplot(gs[1, j])
        ax.imshow(v["diff"][1 + j], cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{splits['test'].classes[int(data.labels[idx[1 + j]])]}", fontsize=8)
        ax.axis("off")
    from fer_study.data.synth import is_synthetic

    synthetic = cfg.dataset == "synthfer" or is_synthetic(cfg.data_root)
    fig.suptitle(title or f"Figure 2 (ours): {cfg.dataset}{' (synthetic)' if synthetic else ''}, "
                 f"{cfg.model.backbone}, up={cfg.model.up}, down={cfg.model.down}, run {Path(run_dir).name}",
                 fontsize=8)
    fig.tight_layout()
    return fig
