"""An ipywidgets explorer for JupyterLab: pick a run, a class and an image; see the input, the SR
image, the resizer output, the difference map, the predicted distribution against the annotators'
votes, and the run's confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch


def finished_runs(runs_dir: str | Path = "results/runs") -> list[Path]:
    """Finished runs (metrics and model present) of a run store, by run id."""
    from fer_study.runs import RunStore

    return [r.path for r in RunStore(runs_dir).finished()]


def render(run_dir: str | Path, cls: int | None, i: int, cache: dict | None = None) -> plt.Figure:
    """One explorer view (also usable without widgets)."""
    from fer_study.figures import resizer_views, run_inputs
    from fer_study.runs import Run

    cache = {} if cache is None else cache
    key = str(run_dir)
    if key not in cache:
        cache.clear()
        cache[key] = run_inputs(run_dir)
    model, cfg, splits, data = cache[key]
    test = splits["test"]
    pool = np.flatnonzero(test.label == cls) if cls is not None else np.arange(len(test))
    if len(pool) == 0:
        pool = np.arange(len(test))
    j = int(pool[i % len(pool)])
    x = data.images[j:j + 1].float() / 255
    v = resizer_views(model, x)
    with torch.no_grad():
        p = model(x).softmax(-1)[0].numpy()
    k = len(test.classes)
    votes = test.votes[j, :k].astype(float)
    votes = votes / max(votes.sum(), 1)
    conf = np.asarray(Run(Path(run_dir)).metrics()["protocols"]["clean"]["confusion"])
    fig, ax = plt.subplots(1, 6, figsize=(18, 3.2), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.6, 1.4]})
    raw = test.images[j] if test.images is not None else None
    for a, img, t in ((ax[0], raw, "input 48x48"), (ax[1], v["input"][0], f"model input ({cfg.model.up})"),
                      (ax[2], v["resizer"][0], "resizer output"), (ax[3], v["diff"][0], "|resizer - bilinear|")):
        if img is not None:
            a.imshow(img, cmap="magma" if "|" in t else "gray")
        a.set_title(t, fontsize=8)
        a.axis("off")
    xs = np.arange(k)
    ax[4].bar(xs - 0.2, p, 0.4, label="predicted")
    ax[4].bar(xs + 0.2, votes, 0.4, label="annotators")
    ax[4].set_xticks(xs, test.classes, rotation=60, fontsize=7)
    ax[4].legend(fontsize=7)
    ax[4].set_title(f"image {test.source[j]}: true {test.classes[test.label[j]]}", fontsize=8)
    ax[5].imshow(conf / np.maximum(conf.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax[5].set_xticks(xs, test.classes, rotation=60, fontsize=6)
    ax[5].set_yticks(xs, test.classes, fontsize=6)
    ax[5].set_title("confusion (clean protocol, row-normalised)", fontsize=8)
    fig.tight_layout()
    return fig


def explorer(runs_dir: str | Path = "results/runs"):
    """The interactive widget (JupyterLab)."""
    import ipywidgets as W
    from IPython.display import display

    runs = finished_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs with a saved model under {runs_dir}")
    run_w = W.Dropdown(options=[(p.name, str(p)) for p in runs], description="run", layout=W.Layout(width="80%"))
    cls_w = W.Dropdown(options=[("all", -1)], description="class")
    img_w = W.IntSlider(0, 0, 200, description="image")
    out = W.Output()
    cache: dict = {}

    def classes_for(run: str) -> None:
        from fer_study.runs import Run

        cl = Run(Path(run)).metrics()["classes"]
        cls_w.options = [("all", -1)] + [(c, i) for i, c in enumerate(cl)]

    def update(*_):
        with out:
            out.clear_output(wait=True)
            fig = render(run_w.value, None if cls_w.value == -1 else cls_w.value, img_w.value, cache)
            display(fig)
            plt.close(fig)

    run_w.observe(lambda ch: (classes_for(ch["new"]), update()), names="value")
    cls_w.observe(update, names="value")
    img_w.observe(update, names="value")
    classes_for(run_w.value)
    update()
    return W.VBox([run_w, W.HBox([cls_w, img_w]), out])
