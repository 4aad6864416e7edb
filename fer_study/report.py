"""Tables 1-4 from run directories: our numbers (mean ± std over seeds, n), the paper's numbers in
adjacent columns, both protocols, and paired significance against each row's baseline.

Significance: exact McNemar test on per-image test predictions (clean protocol), pairing the
setting and its baseline run of the same seed and pooling the discordant counts over seeds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from fer_study.engine import is_finished, load_metrics
from fer_study.experiments import DEMO_BACKBONE, TABLE4_CITED, Row, grid, row_config
from fer_study.io import write_text


def _predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with (run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["label"]) for r in rows]), np.array([int(r["pred"]) for r in rows])


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test: b = a right & b wrong, c = a wrong & b right."""
    from scipy.stats import binomtest

    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p": p}


def collect(row: Row, profile: str, seeds: list[int], extra: dict | None = None) -> dict:
    """Finished runs of a grid row (with the same ``extra`` overrides the runner used): per seed, both
    protocols' accuracies and the run directory."""
    out = {"seeds": [], "clean": [], "authors": [], "dirs": [], "dataset": None}
    for s in seeds:
        cfg = row_config(row, profile, s, extra)
        d = Path(cfg.runs_dir) / cfg.run_id()
        if not is_finished(d):
            continue
        m = load_metrics(d)
        out["seeds"].append(s)
        out["clean"].append(100 * m["protocols"]["clean"]["test_acc"])
        out["authors"].append(100 * m["protocols"]["authors"]["test_acc"])
        out["dirs"].append(d)
        out["dataset"] = "SynthFER (synthetic)" if m["synthetic"] else m["dataset"]
    return out


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f} (n=1)"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f} (n={len(vals)})"


def _paired(a: dict, b: dict) -> str:
    """McNemar of ``b`` against baseline ``a`` over the seeds both have."""
    common = [s for s in a["seeds"] if s in b["seeds"]]
    if not common:
        return "–"
    bb = cc = 0
    for s in common:
        ya, pa = _predictions(a["dirs"][a["seeds"].index(s)])
        yb, pb = _predictions(b["dirs"][b["seeds"].index(s)])
        r = mcnemar(pa == ya, pb == yb)
        bb, cc = bb + r["b"], cc + r["c"]
    from scipy.stats import binomtest

    p = 1.0 if bb + cc == 0 else float(binomtest(bb, bb + cc, 0.5).pvalue)
    return f"p={p:.3g} ({cc}+/{bb}-)"


def build_table(table: str, profile: str, seeds: list[int], extra: dict | None = None) -> tuple[pd.DataFrame, str]:
    """``extra``: the config overrides given to ``fer-study run --set`` (e.g. data_root, runs_dir)."""
    rows = grid(table)
    res = {r.key: collect(r, profile, seeds, extra) for r in rows}
    datasets = sorted({v["dataset"] for v in res.values() if v["dataset"]})
    recs = []
    if table in ("table1", "table3"):
        first = "Models" if table == "table1" else "Loss"
        groups: dict[str, dict[str, Row]] = {}
        for r in rows:
            name, col = r.key.split("|")
            groups.setdefault(name, {})[col] = r
        for name, cols in groups.items():
            rec = {first: name}
            (c0, r0), (c1, r1) = list(cols.items())
            for col, r in ((c0, r0), (c1, r1)):
                rec[f"{col}: ours clean"] = _fmt(res[r.key]["clean"])
                rec[f"{col}: ours authors'"] = _fmt(res[r.key]["authors"])
                rec[f"{col}: paper"] = f"{r.paper:.2f}"
            rec[f"{c1} vs {c0}: McNemar"] = _paired(res[r0.key], res[r1.key])
            recs.append(rec)
    elif table == "table2":
        base = res["a"]
        for r in rows:
            m = r.meta
            recs.append({"Setting": r.key, "model": m["model"], "STN": "✓" if m["STN"] else "-", "Up.": m["Up."],
                         "Down.": m["Down."], "Acc. ours clean": _fmt(res[r.key]["clean"]),
                         "Acc. ours authors'": _fmt(res[r.key]["authors"]), "Acc. paper": f"{r.paper:.2f}",
                         "vs (a): McNemar": "baseline" if r.key == "a" else _paired(base, res[r.key])})
    elif table == "table4":
        for t, meth, fp, rf in TABLE4_CITED:
            recs.append({"Type": t, "Method": meth, "FERPlus": "–" if fp is None else f"{fp:.2f}",
                         "RAF-DB": "–" if rf is None else f"{rf:.2f}", "Source": "cited in the paper"})
        fer, raf = rows
        recs.append({"Type": "Transformer", "Method": "ours (paper)", "FERPlus": f"{fer.paper:.2f}",
                     "RAF-DB": f"{raf.paper:.2f}*", "Source": "paper (* Swin-L)"})
        dl = f" on {res[fer.key]['dataset']}" if res[fer.key]["dataset"] and "Synth" in res[fer.key]["dataset"] else ""
        recs.append({"Type": "Transformer", "Method": f"ours (this study, clean{dl})", "FERPlus": _fmt(res[fer.key]["clean"]),
                     "RAF-DB": _fmt(res[raf.key]["clean"]), "Source": "results/runs (this study)"})
        recs.append({"Type": "Transformer", "Method": f"ours (this study, authors'{dl})",
                     "FERPlus": _fmt(res[fer.key]["authors"]), "RAF-DB": _fmt(res[raf.key]["authors"]),
                     "Source": "results/runs (this study)"})
    df = pd.DataFrame(recs)
    stand_in = ", ".join(f"{k}→{v}" for k, v in DEMO_BACKBONE.items())
    notes = [f"{table}: profile `{profile}`, seeds {seeds}.",
             f"Our data: {', '.join(datasets) or 'no finished runs yet'}. Paper numbers: real FERPlus/RAF-DB, "
             "copied from the paper, shown beside ours, never computed here.",
             "Protocols: clean = model chosen on validation, deterministic transform, full test set; authors' = best "
             "test epoch under the random training transform (optimistic; the authors' code).",
             "McNemar: exact test on per-image clean-protocol predictions vs the row's baseline, discordant "
             "counts pooled over matched seeds (k+/m- = images only the setting / only the baseline got right)."]
    if profile == "demo":
        notes.insert(1, f"DEMO: SynthFER and CPU-sized random-init stand-ins ({stand_in}) with a conv stem "
                        "at 48 px, 3 epochs; facesr x2 (48->96) instead of DIC x8 (48->384); LTR n=8. These numbers "
                        "say nothing about real FER accuracy.")
    return df, "\n".join(notes)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def to_latex(df: pd.DataFrame, caption: str) -> str:
    def esc(s: str) -> str:
        return (str(s).replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%")
                .replace("_", r"\_").replace("±", r"$\pm$").replace("✓", r"\checkmark").replace("#", r"\#")
                .replace("→", r"$\to$"))
    cols = list(df.columns)
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\hline",
           " & ".join(esc(c) for c in cols) + r" \\", r"\hline"]
    out += [" & ".join(esc(v) for v in r) + r" \\" for r in df.itertuples(index=False)]
    out += [r"\hline", r"\end{tabular}", r"\caption{" + esc(caption) + "}", r"\end{table}"]
    return "\n".join(out) + "\n"


def export(df: pd.DataFrame, notes: str, name: str, out_dir: str | Path | None = None) -> list[Path]:
    """Write NAME.csv/.md/.tex to ``out_dir`` (default ``$FER_STUDY_TABLES_DIR`` or results/tables;
    the test suite points the variable elsewhere so that nbval never overwrites committed tables)."""
    import os

    out_dir = Path(out_dir or os.environ.get("FER_STUDY_TABLES_DIR", "results/tables"))
    paths = []
    paths.append(write_text(out_dir / f"{name}.csv", df.to_csv(index=False)))
    paths.append(write_text(out_dir / f"{name}.md", to_markdown(df) + "\n\n" + "\n".join(f"- {n}" for n in notes.splitlines()) + "\n"))
    paths.append(write_text(out_dir / f"{name}.tex", to_latex(df, notes.splitlines()[0] + " " + notes.splitlines()[1])))
    return paths
