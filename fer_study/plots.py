"""Figures of the data notebook (00_data): class distribution, vote ambiguity, samples, priors.

Figures are saved with fixed metadata so that re-running produces byte-stable PNG/PDF files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fer_study.data.ferplus import FERSplit  # noqa: E402

STABLE_META = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save_figure(fig: plt.Figure, path: str | Path, formats: tuple[str, ...] = ("png",), dpi: int = 120) -> list[Path]:
    """Save ``fig`` as each format with metadata stripped (byte-stable outputs)."""
    from fer_study.io import atomic_write

    out = []
    path = Path(path)
    for fmt in formats:
        p = path.with_suffix("." + fmt)
        atomic_write(p, lambda t, fmt=fmt: fig.savefig(t, format=fmt, dpi=dpi, metadata=STABLE_META[fmt],
                                                         bbox_inches="tight"))
        out.append(p)
    return out


def class_distribution(split: FERSplit, ax: plt.Axes | None = None) -> plt.Axes:
    """Majority labels vs. the share of all emotion votes per class."""
    ax = ax or plt.subplots(figsize=(7, 3))[1]
    k = len(split.classes)
    maj = np.bincount(split.label, minlength=k) / len(split)
    v = split.votes[:, :k].astype(float)
    votes = v.sum(0) / max(v.sum(), 1)
    xs = np.arange(k)
    ax.bar(xs - 0.2, maj, 0.4, label="majority label")
    ax.bar(xs + 0.2, votes, 0.4, label="share of votes")
    ax.set_xticks(xs, split.classes, rotation=30)
    ax.set_ylabel("fraction")
    ax.set_title(f"{split.name} {split.split}: class distribution (n={len(split)})")
    ax.legend()
    return ax


def vote_ambiguity(split: FERSplit, ax: plt.Axes | None = None) -> plt.Axes:
    """Histogram of the winning class's share of the votes (1.0 = unanimous)."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    v = split.votes[:, :len(split.classes)].astype(float)
    share = v.max(1) / np.maximum(v.sum(1), 1)
    ax.hist(share, bins=np.linspace(0, 1, 21), color="tab:purple")
    ax.set_xlabel("winning class's share of votes")
    ax.set_ylabel("images")
    ax.set_title("vote ambiguity")
    return ax


def sample_grid(split: FERSplit, per_class: int = 6, seed: int = 0) -> plt.Figure:
    """A grid of images, one row per class."""
    rng = np.random.default_rng(seed)
    k = len(split.classes)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9, k * 0.95))
    for c in range(k):
        idx = np.flatnonzero(split.label == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(pick):
                ax.imshow(split.images[pick[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_title(split.classes[c], fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def prior_heatmaps(ours: np.ndarray, reference: np.ndarray, classes: tuple[str, ...],
                   titles: tuple[str, str] = ("prior recomputed from votes", "PSR published prior")) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, m, t in zip(axes, (ours, reference), titles):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < 0.5 else "black")
        ax.set_title(t)
        ax.set_xlabel("voted class")
        ax.set_ylabel("true class")
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig
