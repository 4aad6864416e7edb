"""Write the study's notebooks from their cell sources (keeps them thin and consistent).

Run: python scripts/build_notebooks.py  (outputs are then produced by papermill via `make demo`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NB = Path(__file__).resolve().parents[1] / "notebooks"


def md(s: str):
    return new_markdown_cell(s.strip())


def code(s: str, *tags: str):
    c = new_code_cell(s.strip())
    if tags:
        c.metadata["tags"] = list(tags)
    return c


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["00_data.ipynb"] = [
    md("""
# 00 · Data: class distribution, vote ambiguity, samples and the PDLS prior

Parameterised with papermill. By default it shows **SynthFER**, the study's *synthetic* data set
(generated here when missing); pass `dataset="ferplus"` and `root=...` for real FERPlus.
"""),
    code("""
dataset = "synthfer"  # "synthfer" (synthetic, generated if missing) or "ferplus"
root = "../data/synthfer"
label_mode = "majority"
synth_n = 3000
synth_seed = 0
figures_dir = "../figures"
""", "parameters"),
    code("""
from pathlib import Path

import matplotlib.pyplot as plt

from fer_study import plots
from fer_study.data.ferplus import ferplus_counts, load_ferplus
from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes
from fer_study.data.synth import ensure

if dataset == "synthfer":
    ensure(root, n=synth_n, seed=synth_seed)
FIG = Path(figures_dir)
FIG.mkdir(parents=True, exist_ok=True)
label = "SynthFER (synthetic)" if dataset == "synthfer" else "FERPlus"
"""),
    md("## Counts per split and class"),
    code("""
counts = ferplus_counts(root, label_mode)
for split, d in counts["splits"].items():
    print(f"{label} {split:5s} n={d['total']:5d}", d["per_class"])
""", "nbval-check-output"),
    code("""
train = load_ferplus(root, "train", label_mode)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [2, 1]})
plots.class_distribution(train, axes[0])
plots.vote_ambiguity(train, axes[1])
fig.suptitle(label)
plots.save_figure(fig, FIG / f"data_{dataset}_distribution")
"""),
    code("""
fig = plots.sample_grid(train, per_class=8)
plots.save_figure(fig, FIG / f"data_{dataset}_samples")
"""),
    md("## The PDLS prior d: recomputed from the votes beside the PSR constant"),
    code("""
prior = prior_from_votes(train.votes, train.label, 8)
fig = plots.prior_heatmaps(prior, PSR_FERPLUS_PRIOR, train.classes,
                           (f"prior from {label} votes", "PSR published FERPlus prior"))
plots.save_figure(fig, FIG / f"data_{dataset}_prior")
print("max |ours - PSR| =", round(float(abs(prior - PSR_FERPLUS_PRIOR).max()), 3))
""", "nbval-check-output"),
]


def build(names: list[str] | None = None) -> None:
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, NB / name)
        print("wrote", NB / name)


if __name__ == "__main__":
    build(sys.argv[1:] or None)
