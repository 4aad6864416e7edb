"""An ipywidgets explorer for JupyterLab: pick a run, a class and an image; see the 48x48 input, the
model input (the SR image for SR settings), the resizer output and its difference from a bilinear
resize, the predicted distribution against the annotators' votes, and the run's confusion matrix.

A reader without a kernel still sees it: the figure is a PNG inside an ``Image`` widget, so it is
part of the saved widget state, and the notebook shows a static view of the first run below it.
While a view is drawn the controls are disabled and a status line says so; a class without test
images and a run without a learned resizer are said in words, never drawn as something else.
"""

from __future__ import annotations

import functools
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fer_study.notebooks import VOLATILE

#: Figure size (inches) of one view: legible at a normal notebook width (about 900 px).
FIGSIZE = (9.6, 6.4)


def finished_runs(runs_dir: str | Path = "results/runs") -> list[Path]:
    """Finished runs (metrics and model present) of a run store, by run id (``runs_dir`` relative to
    the project root)."""
    from fer_study.paths import at_root
    from fer_study.runs import RunStore

    return [r.path for r in RunStore(at_root(runs_dir)).finished()]


def _inputs(run_dir: str | Path, cache: dict) -> tuple:
    """(model, cfg, test split, DeviceData, metrics) of a run, kept for the last two runs shown."""
    from fer_study.figures import run_inputs
    from fer_study.runs import Run

    key = str(run_dir)
    if key not in cache:
        while len(cache) >= 2:
            cache.pop(next(iter(cache)))
        model, cfg, splits, data = run_inputs(run_dir)
        cache[key] = (model, cfg, splits["test"], data, Run(Path(run_dir)).metrics())
    return cache[key]


def image_title(test, j: int, synthetic: bool) -> str:
    """How an image is named to readers: SynthFER images by their index (they are drawn, not files of
    FER2013), real images by their file or row."""
    if synthetic:
        return f"SynthFER test image #{j} (synthetic)"
    return f"test image {test.source[j]}"


def _message(ax: plt.Axes, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes,
            bbox={"boxstyle": "round", "facecolor": "#f3f3f3", "edgecolor": "#bbbbbb"})


def _confusion(ax: plt.Axes, fig: plt.Figure, conf: np.ndarray, classes: tuple[str, ...]) -> None:
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    k = len(classes)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class", fontsize=9)
    ax.set_title("test confusion (clean protocol)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85, label="share of the true class's images")


def render(run_dir: str | Path, cls: int | None, i: int, cache: dict | None = None) -> plt.Figure:
    """One explorer view (also usable without widgets): image ``i`` of class ``cls`` (None: any
    class) of the run's test split."""
    from fer_study.figures import describe_run, resizer_views

    cache = {} if cache is None else cache
    model, cfg, test, data, metrics = _inputs(run_dir, cache)
    classes = tuple(test.classes)
    k = len(classes)
    synthetic = bool(metrics.get("synthetic")) or cfg.dataset == "synthfer"
    conf = np.asarray(metrics["protocols"]["clean"]["confusion"])
    fig = plt.figure(figsize=FIGSIZE, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.25])
    fig.suptitle(f"{Path(run_dir).name}\n{describe_run(cfg)}", fontsize=9)
    pool = np.flatnonzero(test.label == cls) if cls is not None else np.arange(len(test))
    ax_p, ax_c = bottom.subplots(1, 2, width_ratios=[1.3, 1])
    _confusion(ax_c, bottom, conf, classes)
    if len(pool) == 0:
        _message(top.subplots(), f"No test image has the label {classes[cls]!r} in this run's test split "
                                 f"({len(test)} images).\nPick another class.")
        _message(ax_p, "no image to classify")
        return fig
    j = int(pool[i % len(pool)])
    x = data.images[j:j + 1].float() / 255
    v = resizer_views(model, x)
    with torch.no_grad():
        p = model(x).softmax(-1)[0].numpy()
    ax = top.subplots(1, 4)
    raw = test.images[j] if test.images is not None else None
    panels = ((ax[0], raw, "input (48x48)"), (ax[1], v["input"][0], f"model input ({cfg.model.up}, "
                                                                    f"{x.shape[-1]} px)"))
    for a, img, t in panels:
        if img is None:
            _message(a, "image not loaded")
        else:
            a.imshow(img, cmap="gray", vmin=0, vmax=255 if a is ax[0] else 1)
            a.set_title(t, fontsize=9)
            a.set_axis_off()
    if model.resizer is None:
        _message(ax[2], f"no learned resizer in this run\n(down={cfg.model.down}): the backbone\nsees the "
                        f"{'bilinear resize' if cfg.model.down != 'none' else 'model input'}\nat "
                        f"{model.img_size} px")
        _message(ax[3], "no difference map:\nnothing was learned\nbetween input and backbone")
    else:
        ax[2].imshow(v["resizer"][0], cmap="gray", vmin=0, vmax=1)
        ax[2].set_title(f"resizer output ({model.img_size} px)", fontsize=9)
        ax[2].set_axis_off()
        im = ax[3].imshow(v["diff"][0], cmap="magma", vmin=0, vmax=max(float(v["diff"][0].max()), 1e-6))
        ax[3].set_title("|resizer − bilinear|", fontsize=9)
        ax[3].set_axis_off()
        top.colorbar(im, ax=ax[3], shrink=0.8, label="grey level")
    votes = test.votes[j, :k].astype(float)
    votes = votes / max(votes.sum(), 1)
    xs = np.arange(k)
    ax_p.bar(xs - 0.2, p, 0.4, label="predicted probability")
    ax_p.bar(xs + 0.2, votes, 0.4, label="annotators' votes" if cfg.dataset != "rafdb" else "label")
    ax_p.set_xticks(xs, classes, rotation=45, ha="right", fontsize=8)
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel("share", fontsize=9)
    ax_p.legend(fontsize=8, frameon=False)
    pred = classes[int(p.argmax())]
    ax_p.set_title(f"{image_title(test, j, synthetic)}: true {classes[test.label[j]]}, predicted {pred}"
                   + (f"\n(image {i % len(pool) + 1} of {len(pool)} in this class)" if cls is not None else ""),
                   fontsize=9)
    return fig


def figure_png(fig: plt.Figure, dpi: int = 96) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def explorer(runs_dir: str | Path = "results/runs"):
    """The interactive widget (JupyterLab). Its figure is an ``Image`` widget (PNG), so a saved
    notebook keeps the last view in its widget state."""
    import ipywidgets as W

    from fer_study.runs import Run

    runs = finished_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs with a saved model under {runs_dir}; train some first: "
                                "fer-study run table2 --profile demo (or make demo; "
                                "ferplus-cpu: make ferplus-cpu)")
    run_w = W.Dropdown(options=[(p.name, str(p)) for p in runs], description="run", layout=W.Layout(width="95%"))
    cls_w = W.Dropdown(options=[("any", -1)], description="class")
    img_w = W.BoundedIntText(0, min=0, max=10_000, description="image #", layout=W.Layout(width="14em"))
    status = W.HTML()
    fig_w = W.Image(format="png", layout=W.Layout(width="100%", max_width="960px"))
    cache: dict = {}
    state = {"busy": False}
    controls = (run_w, cls_w, img_w)

    def classes_for(run: str) -> None:
        cl = Run(Path(run)).metrics()["classes"]
        cls_w.options = [("any", -1)] + [(c, i) for i, c in enumerate(cl)]
        cls_w.value = -1

    def update(*_):
        if state["busy"]:
            return
        state["busy"] = True
        for c in controls:
            c.disabled = True
        status.value = f"<span class='fer-busy'>⏳ drawing {Path(run_w.value).name} …</span>"
        t = time.perf_counter()
        try:
            fig = render(run_w.value, None if cls_w.value == -1 else cls_w.value, img_w.value, cache)
            fig_w.value = figure_png(fig)
            status.value = (f"<span class='fer-done'>shown in <span class='{VOLATILE}'>{time.perf_counter() - t:.1f}"
                            "</span> s</span>")
        except Exception as e:  # noqa: BLE001 - shown to the reader instead of a silent stale view
            status.value = f"<span class='fer-error' style='color:#b00'>could not draw: {type(e).__name__}: {e}</span>"
        finally:
            for c in controls:
                c.disabled = False
            state["busy"] = False

    def run_changed(ch):
        state["busy"] = True  # one redraw for the run and its class list, not two
        try:
            classes_for(ch["new"])
            img_w.value = 0
        finally:
            state["busy"] = False
        update()

    run_w.observe(run_changed, names="value")
    cls_w.observe(update, names="value")
    img_w.observe(update, names="value")
    state["busy"] = True
    classes_for(run_w.value)
    state["busy"] = False
    update()
    return Explorer([run_w, W.HBox([cls_w, img_w, status]), fig_w])


@functools.cache
def _explorer_class():
    import ipywidgets as W

    class _Explorer(W.VBox):
        """The explorer's box; without a kernel its text form says what it is instead of ``VBox(...)``."""

        def __repr__(self) -> str:
            return "fer-study run explorer (interactive, needs a running kernel; a static view is below)"

    return _Explorer


def Explorer(children):  # noqa: N802 - a widget class, built lazily (ipywidgets is imported on use)
    return _explorer_class()(children)
