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
synth_n = 1500
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

NOTEBOOKS["01_train.ipynb"] = [
    md("""
# 01 · Train one experiment

One row of a grid (or any config) trained by `fer_study.engine.train`; the batch runner
(`fer-study run ...`) executes this notebook once per row and seed with papermill and saves the
executed copy in the run directory. A finished run is recognised by its run id and skipped.
"""),
    code("""
profile = "demo"  # "demo" (SynthFER, CPU-sized) or "paper"
overrides = "epochs=2,max_train=300,sr_backend=bicubic,sr_weights=null"  # key=value,... (model keys: model.KEY)
config_json = ""  # a full config (the batch runner passes this instead)
repo_root = ".."
""", "parameters"),
    code("""
import json
import os

import pandas as pd

from fer_study.config import TrainConfig, make_config
from fer_study.engine import load_metrics, train

os.chdir(repo_root)
if config_json:
    cfg = TrainConfig.from_dict(json.loads(config_json))
else:
    cfg = make_config(profile, [o for o in overrides.split(",") if o])
print("run id:", cfg.run_id())
"""),
    code("""
run_dir = train(cfg)
m = load_metrics(run_dir)
print(f"clean test acc {m['protocols']['clean']['test_acc']:.4f} | authors' {m['protocols']['authors']['test_acc']:.4f}"
      + ("  [SynthFER: synthetic data]" if m["synthetic"] else ""))
"""),
    code("""
hist = pd.read_csv(run_dir / "history.csv")
ax = hist.plot(x="epoch", y=["train_acc", "valid_acc", "test_authors_acc"], figsize=(6, 3), marker="o")
ax.set_ylabel("accuracy");
"""),
]


def _table_nb(n: int, table: str, title: str) -> list:
    return [
        md(f"""
# {n:02d} · {title}

Reads the finished run directories of `{table}`, renders our numbers (mean ± std over seeds, n)
beside the paper's, under both protocols, with paired McNemar tests against each row's baseline,
and exports CSV, Markdown and LaTeX to `results/tables/`. Run the grid first:
`fer-study run {table} --profile PROFILE --seeds ...`.
"""),
        code("""
profile = "demo"
seeds = "0 1"  # space-separated
repo_root = ".."
""", "parameters"),
        code(f"""
import os

import pandas as pd

from fer_study.report import build_table, export

os.chdir(repo_root)
pd.set_option("display.max_colwidth", 60)
df, notes = build_table("{table}", profile, [int(s) for s in seeds.split()])
print(notes)
df
"""),
        code(f"""
paths = export(df, notes, "{table}")
print("table shape:", df.shape)
print("exported:", ", ".join(p.name for p in paths))
""", "nbval-check-output"),
    ]


NOTEBOOKS["02_table1_backbones.ipynb"] = _table_nb(2, "table1", "Table 1: transformer backbones, vanilla vs. proposed")
NOTEBOOKS["03_table2_ablation.ipynb"] = _table_nb(3, "table2", "Table 2: ablation of STN, up- and down-scaling")
NOTEBOOKS["04_table3_losses.ipynb"] = _table_nb(4, "table3", "Table 3: CE, PDLS and F-PDLS, vanilla vs. proposed")
NOTEBOOKS["05_table4_sota.ipynb"] = _table_nb(5, "table4", "Table 4: our best setting beside the cited state of the art")

NOTEBOOKS["06_figure2_resizer.ipynb"] = [
    md("""
# 06 · Figure 2: what the trained resizer changes

For a trained Neural Resizer run: (a) the deterministic bilinear resize, (b) the trained resizer's
output and (c) their absolute difference, then more difference maps. Exported metadata-free to
`figures/figure2.png` and `.pdf` (byte-stable).
"""),
    code("""
profile = "demo"
seed = 0
run_dir = ""  # empty: Table 2 setting (d) (SR + LTR) of this profile and seed
n_more = 4
repo_root = ".."
""", "parameters"),
    code("""
import os
from pathlib import Path

from fer_study.experiments import grid, row_config
from fer_study.figures import figure2
from fer_study.plots import save_figure

os.chdir(repo_root)
if not run_dir:
    row = next(r for r in grid("table2") if r.key == "d")
    cfg = row_config(row, profile, seed)
    run_dir = str(Path(cfg.runs_dir) / cfg.run_id())
print("run:", run_dir)
"""),
    code("""
fig = figure2(run_dir, n_more=n_more)
paths = save_figure(fig, "figures/figure2", formats=("png", "pdf"))
print("exported:", ", ".join(str(p) for p in paths))
"""),
]

NOTEBOOKS["07_explore.ipynb"] = [
    md("""
# 07 · Explore runs (JupyterLab)

Choose a run, a class and an image: the 48x48 input, the model input (SR image for SR settings),
the resizer output, its difference from a bilinear resize, the predicted distribution against the
annotators' votes, and the run's confusion matrix.
"""),
    code("""
runs_dir = "results/runs"
repo_root = ".."
""", "parameters"),
    code("""
import os

from fer_study.explorer import explorer, finished_runs, render

os.chdir(repo_root)
runs = finished_runs(runs_dir)
print(len(runs), "finished runs")
"""),
    code("""
explorer(runs_dir)
"""),
    md("A static view of the first run (for readers without a live kernel):"),
    code("""
if runs:
    render(runs[0], None, 0);
"""),
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
