"""Exports a paper can take: numeric CSV (mean, std, n, per-seed columns), Markdown with units,
booktabs LaTeX that fits a column (or is a table*), with a label and a caption for readers and no
package beyond booktabs; Figure 2 with colorbars, a readable title and TrueType fonts; data figures
whose titles do not overlap and that call SynthFER synthetic; every exported file world-readable."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_study.exports import (
    COLUMN_PT,
    TEXT_PT,
    Value,
    accuracy_columns,
    export,
    latex_width,
    table_caption,
    to_csv_frame,
    to_latex,
    to_markdown,
    with_units,
)
from fer_study.report import _fmt

ROOT = Path(__file__).resolve().parents[1]
NOTES = "\n".join([
    "table2: profile `demo`, seeds [0, 1] (finished runs found for seeds [0, 1]).",
    "DEMO: SynthFER and CPU-sized random-init stand-ins (vit_s→tiny_vit) at 48 px. These numbers say nothing.",
    "Our data: SynthFER (synthetic). Paper numbers: real FERPlus/RAF-DB, copied from the paper.",
    "Protocols: clean = model chosen on validation; authors' = best test epoch.",
    "McNemar: exact test on per-image clean-protocol predictions vs the row's baseline (k+/m-).",
])


def _table2_like() -> pd.DataFrame:
    rows = []
    for k, stn, vals, paper in (("a", "-", [59.85, 55.7], 88.69), ("d", "✓", [69.7, 70.2], 89.28),
                                ("e", "✓", [], 89.50)):
        rows.append({"Setting": k, "model": "Swin-S", "STN": stn, "Up.": "SR", "Down.": "LTR",
                     "Acc. ours clean": _fmt(vals, [0, 1][:len(vals)]), "Acc. ours authors'": _fmt(vals[:1], [0][:len(vals[:1])]),
                     "Acc. paper": f"{paper:.2f}", "vs (a): McNemar": "baseline" if k == "a" else "p=0.0027 (18+/42-)"})
    return pd.DataFrame(rows)


def _table1_like() -> pd.DataFrame:
    rows = []
    for m in ("ViT", "DeiT", "ConViT", "XCiT", "Swin-S"):
        rec = {"Models": m}
        for col, v in (("CE + Vanilla", [51.2, 50.0]), ("F-PDLS + Proposed", [60.1, 58.3])):
            rec[f"{col}: ours clean"] = _fmt(v, [0, 1])
            rec[f"{col}: ours authors'"] = _fmt(v, [0, 1])
            rec[f"{col}: paper"] = "88.84"
        rec["F-PDLS + Proposed vs CE + Vanilla: McNemar"] = "p=0.5 (3+/1-)"
        rows.append(rec)
    return pd.DataFrame(rows)


def test_fmt_keeps_the_numbers_behind_the_text():
    v = _fmt([50.0, 52.0], [3, 7])
    assert isinstance(v, Value) and v == "51.00 ± 1.41 (n=2)"
    assert v.fields == {"mean (%)": 51.0, "std (%)": pytest.approx(1.4142, abs=1e-4), "n": 2, "seed 3 (%)": 50.0,
                        "seed 7 (%)": 52.0}
    assert _fmt([]) == "–" and _fmt([70.0], [0]) == "70.00 (n=1)" and _fmt([70.0], [0]).fields["std (%)"] is None
    assert _fmt([1.0, 2.0]).fields["run 2 (%)"] == 2.0  # seeds unknown: numbered runs


def test_csv_is_numeric_with_mean_std_n_and_per_seed_columns():
    df = _table2_like()
    csv = to_csv_frame(df)
    assert list(csv.columns[:5]) == ["Setting", "model", "STN", "Up.", "Down."]
    for c in ("Acc. ours clean: mean (%)", "Acc. ours clean: std (%)", "Acc. ours clean: n",
              "Acc. ours clean: seed 0 (%)", "Acc. ours clean: seed 1 (%)", "Acc. paper (%)"):
        assert c in csv.columns, (c, list(csv.columns))
    back = pd.read_csv(pd.io.common.StringIO(csv.to_csv(index=False)))
    assert back["Acc. ours clean: mean (%)"].dtype == float and back["Acc. paper (%)"].tolist() == [88.69, 89.28, 89.5]
    assert back["Acc. ours clean: n"].tolist()[:2] == [2, 2] and np.isnan(back["Acc. ours clean: n"].iloc[2])
    assert back["Acc. ours clean: seed 1 (%)"].tolist()[:2] == [55.7, 70.2]
    assert not back.map(lambda x: isinstance(x, str) and "±" in x).any().any()


def test_markdown_and_display_say_percent():
    df = _table2_like()
    assert accuracy_columns(df) == ["Acc. ours clean", "Acc. ours authors'", "Acc. paper"]
    assert "Acc. ours clean (%)" in with_units(df).columns
    md = to_markdown(df)
    assert "| Acc. ours clean (%) |" in md and "59.85" not in md.splitlines()[0]


def _latex_ok(tex: str) -> None:
    assert tex.isascii(), [ch for ch in tex if not ch.isascii()]
    for bad in (r"\checkmark", r"\hline", r"\resizebox", r"\usepackage", "amssymb"):
        assert bad not in tex.replace("needs \\usepackage{booktabs}", ""), bad
    for need in (r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:"):
        assert need in tex, need
    cap = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    assert not cap.startswith("table") and "profile `" not in cap and "\\%" in cap


def test_latex_fits_a_column_or_is_a_table_star():
    t2 = _table2_like()
    tex = to_latex(t2, table_caption("table2", t2, NOTES), "tab:table2")
    _latex_ok(tex)
    env = "table" if r"\begin{table}[t]" in tex else "table*"
    limit = COLUMN_PT if env == "table" else TEXT_PT
    size = {r"\small": (9, 6), r"\footnotesize": (8, 4), r"\scriptsize": (7, 3)}
    cmd = next(k for k in size if f"\n{k}\n" in tex)
    assert latex_width(t2, *size[cmd]) <= limit
    assert r"$\surd$" in tex and r"57.78 $\pm$ 2.93" in tex
    # clean over 2 seeds, authors' over 1 here: the caption names the usual n, other cells say theirs
    assert "a cell over another number of seeds gives it (n=...)" in tex and tex.count("(n=") == 1 + 2
    t1 = _table1_like()
    tex1 = to_latex(t1, table_caption("table1", t1, NOTES), "tab:table1")
    _latex_ok(tex1)
    assert r"\begin{table*}" in tex1 and r"\multicolumn{3}{c}{CE + Vanilla}" in tex1 and r"\cmidrule(lr){2-4}" in tex1
    cap = table_caption("table1", t1, NOTES)
    assert cap.startswith("Transformer backbones, vanilla vs. proposed.") and "over 2 seeds (0, 1)" in cap
    assert "synthetic" in cap and "Test accuracy (%)" in cap


def test_export_defaults_to_scratch_publish_to_committed_readable(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDY_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("FER_STUDY_TABLES_DIR", str(tmp_path / "published"))
    df = _table2_like()
    paths = export(df, NOTES, "table2")
    assert {p.parent for p in paths} == {tmp_path / "scratch" / "tables"}
    paths = export(df, NOTES, "table2", publish=True)
    assert {p.parent for p in paths} == {tmp_path / "published"}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)  # umask 022 in the test environment
    assert (tmp_path / "published" / "table2.md").read_text().count("- ") >= 4


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed (texlive-latex-recommended)")
def test_latex_compiles_with_booktabs_only_and_fits(tmp_path):
    narrow = pd.DataFrame([{"Setting": k, "Acc. ours clean": _fmt([50.1, 52.3], [0, 1]), "Acc. paper": "88.69"}
                           for k in "abcde"])
    sig = _table2_like().drop(columns=["vs (a): McNemar"])
    sig["vs (a): Δ clean [95% CI]"] = ["baseline", "+9.12 [−0.50, +12.90] p=0.041 n.s. (2 seeds < 3); McNemar "
                                       "per seed p=0.01, 0.2", "–"]
    body = []
    for name, df in (("table2", _table2_like()), ("table1", _table1_like()), ("narrow", narrow), ("sig", sig)):
        body.append(to_latex(df, table_caption(name, df, NOTES), f"tab:{name}"))
    assert r"\begin{table}[t]" in body[2] and r"\begin{table*}[t]" in body[1]
    # IEEE's two-column geometry: 7.16 in text, 3.5 in columns (IEEEtran.cls itself is rarely installed)
    doc = ("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
           "\\setlength{\\textwidth}{516pt}\\setlength{\\columnsep}{12pt}\\setlength{\\hoffset}{-1in}\n"
           "\\begin{document}\n" + "\n".join(body) + "\nSee Table~\\ref{tab:table2}.\n\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    over = [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
    assert not [o for o in over if o > 1.0], over


# ---- from real (tiny) runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_root):
    from test_notebooks_ui import tiny_runs

    tmp = tmp_path_factory.mktemp("export_runs")
    tiny_runs(tmp, synth_root, ("a", "d"), seed=0)
    return tiny_runs(tmp, synth_root, ("a", "d"), seed=1)


def test_exports_from_runs_and_figure2(runs, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from fer_study.figures import figure2
    from fer_study.plots import save_figure
    from fer_study.report import build_table

    runs_dir, overrides = runs
    df, notes = build_table("table2", "demo", [0, 1], overrides)
    csv = to_csv_frame(df)
    a = csv.set_index("Setting").loc["a"]
    assert a["Acc. ours clean: n"] == 2 and {"Acc. ours clean: seed 0 (%)", "Acc. ours clean: seed 1 (%)"} <= set(csv)
    assert np.isclose(a["Acc. ours clean: mean (%)"], np.mean([a["Acc. ours clean: seed 0 (%)"],
                                                               a["Acc. ours clean: seed 1 (%)"]]))
    paths = export(df, notes, "table2", tmp_path)
    _latex_ok((tmp_path / "table2.tex").read_text())
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths)

    d = next(p for p in runs_dir.iterdir() if "-sr-ltr-" in p.name and p.name.endswith(tuple("0123456789abcdef"))
             and "-s0-" in p.name)
    fig = figure2(d, n_more=4)
    title = fig.subfigs[0].get_suptitle() if fig.subfigs else fig.get_suptitle()
    assert d.name not in title and "SynthFER (synthetic)" in title
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert any("|resizer − bilinear|" in lab for lab in labels), "difference maps have a colorbar"
    assert all(ax.images for ax in fig.get_axes() if not ax.get_ylabel()), "no empty panel"
    out = save_figure(fig, tmp_path / "figure2", formats=("png", "pdf"))
    plt.close(fig)
    pdf = (tmp_path / "figure2.pdf").read_bytes()
    assert b"/Type3" not in pdf and b"/FontFile2" in pdf  # TrueType (Type 42), not Type 3
    assert b"CreationDate" not in pdf
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out)


def test_data_figures_name_synthfer_and_titles_do_not_overlap(synth_root):
    import matplotlib.pyplot as plt

    from fer_study import plots
    from fer_study.data.ferplus import load_ferplus

    train = load_ferplus(synth_root, "train")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=[2, 1], layout="constrained")
    plots.class_distribution(train, axes[0], "SynthFER (synthetic)")
    plots.vote_ambiguity(train, axes[1])
    assert axes[0].get_title().startswith("SynthFER (synthetic), train split") and "ferplus" not in axes[0].get_title()
    grid = plots.sample_grid(train, per_class=4, label="SynthFER (synthetic)")
    assert grid.get_suptitle().startswith("SynthFER (synthetic)")
    for f in (fig, grid):
        f.canvas.draw()
        r = f.canvas.get_renderer()
        boxes = [t.get_window_extent(r) for ax in f.get_axes() for t in (ax.title, ax.yaxis.label) if t.get_text()]
        if f._suptitle is not None:  # noqa: SLF001
            boxes.append(f._suptitle.get_window_extent(r))  # noqa: SLF001
        for i, b in enumerate(boxes):
            for c in boxes[i + 1:]:
                assert not b.overlaps(c), (b, c)
        plt.close(f)
