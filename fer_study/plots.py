"""Figures of the data notebook (00_data): class distribution, vote ambiguity, samples, priors; and
:func:`save_figure`, which every exported figure goes through.

No backend is chosen here: in a notebook figures show inline (the kernel's backend), and where no
display exists (``fer-study`` on a server, CI) matplotlib falls back to Agg by itself. Exported
figures are metadata-free (byte-stable PNG/PDF), embed TrueType (Type 42) fonts, not Type 3 (IEEE PDF
eXpress rejects Type 3), and are world-readable.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fer_study.data.ferplus import FERSplit

STABLE_META = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
               "svg": {"Creator": None, "Date": None}, "eps": {"Creator": None}}
#: rcParams of every export: TrueType fonts in PDF/PS, a fixed SVG hash salt (byte-stable ids).
EXPORT_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "fer-study"}


def save_figure(fig: plt.Figure, path: str | Path, formats: tuple[str, ...] = ("png",), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as each format (metadata stripped, Type 42 fonts, mode 0644); returns the paths."""
    from fer_study.io import atomic_write
    from fer_study.paths import make_readable

    out = []
    path = Path(path)
    with plt.rc_context(EXPORT_RC):
        for fmt in formats:
            p = path.with_suffix("." + fmt)
            atomic_write(p, lambda t, fmt=fmt: fig.savefig(t, format=fmt, dpi=dpi, metadata=STABLE_META.get(fmt),
                                                             bbox_inches="tight"))
            out.append(make_readable(p))
    return out


def data_label(name: str) -> str:
    """How a data set is named to readers: SynthFER is always marked synthetic."""
    return {"synthfer": "SynthFER (synthetic)", "ferplus": "FERPlus", "rafdb": "RAF-DB"}.get(name, name)


def class_distribution(split: FERSplit, ax: plt.Axes | None = None, label: str | None = None) -> plt.Axes:
    """Majority labels vs. the share of all emotion votes per class (``label``: the data set's name
    for readers, default from the split)."""
    ax = ax or plt.subplots(figsize=(7, 3), layout="constrained")[1]
    k = len(split.classes)
    maj = np.bincount(split.label, minlength=k) / len(split)
    v = split.votes[:, :k].astype(float)
    votes = v.sum(0) / max(v.sum(), 1)
    xs = np.arange(k)
    ax.bar(xs - 0.2, maj, 0.4, label="majority label")
    ax.bar(xs + 0.2, votes, 0.4, label="share of votes")
    ax.set_xticks(xs, split.classes, rotation=30)
    ax.set_ylabel("fraction")
    ax.set_title(f"{label or data_label(split.name)}, {split.split} split: classes (n={len(split)})")
    ax.legend(frameon=False)
    return ax


def vote_ambiguity(split: FERSplit, ax: plt.Axes | None = None) -> plt.Axes:
    """Histogram of the winning class's share of the votes (1.0 = unanimous)."""
    ax = ax or plt.subplots(figsize=(5, 3), layout="constrained")[1]
    v = split.votes[:, :len(split.classes)].astype(float)
    share = v.max(1) / np.maximum(v.sum(1), 1)
    ax.hist(share, bins=np.linspace(0, 1, 21), color="tab:purple")
    ax.set_xlabel("winning class's share of votes")
    ax.set_ylabel("images")
    ax.set_title("vote ambiguity (10 annotators)" if v.sum(1).max() == 10 else "vote ambiguity")
    return ax


def sample_grid(split: FERSplit, per_class: int = 6, seed: int = 0, label: str | None = None) -> plt.Figure:
    """A grid of random images, one row per class (class names at the left, never over an image)."""
    rng = np.random.default_rng(seed)
    k = len(split.classes)
    fig, axes = plt.subplots(k, per_class, figsize=(1.0 + per_class * 0.85, 0.5 + k * 0.85), layout="constrained",
                             squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(split.label == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if j < len(pick):
                ax.imshow(split.images[pick[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_ylabel(f"{split.classes[c]}\n({len(idx)})", rotation=0, ha="right", va="center", fontsize=9)
        if not len(idx):
            axes[c, 0].text(0.05, 0.5, "no images", transform=axes[c, 0].transAxes, fontsize=8, va="center")
    fig.suptitle(f"{label or data_label(split.name)}, {split.split} split: {per_class} random images per class "
                 "(images in the class)", fontsize=10)
    return fig


def prior_heatmaps(ours: np.ndarray, reference: np.ndarray, classes: tuple[str, ...],
                   titles: tuple[str, str] = ("prior recomputed from votes", "PSR published prior")) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    for ax, m, t in zip(axes, (ours, reference), titles):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < 0.5 else "black")
        ax.set_title(t)
        ax.set_xlabel("voted class")
        ax.set_ylabel("true class")
    fig.colorbar(im, ax=axes, shrink=0.8, label="probability")
    return fig
