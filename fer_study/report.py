"""Tables 1-4 from the runs that were trained: our numbers (mean ± std over seeds, n), the paper's
numbers in adjacent columns, both protocols, and paired significance against each cell's baseline.

Which runs: with ``overrides`` (the same ``--set`` values given to ``fer-study run``) the run ids
are derived exactly as the runner derived them; without, the grid manifests of the profile say
which run filled each cell for each seed (the newest manifest that lists the cell wins), so the
report needs no overrides. Only finished runs (metrics and model present) are reported.

Significance: exact McNemar test on per-image test predictions (clean protocol), pairing the
setting and its baseline run of the same seed and pooling the discordant counts over seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_study.config import make_config
from fer_study.io import write_text
from fer_study.runs import Run, RunStore
from fer_study.tables import DEMO_BACKBONE, PROFILE_BACKBONES, TABLES, Cell, TableSpec, cell_config


def as_seeds(seeds: object) -> list[int]:
    """Seeds as given by a notebook parameter or the CLI: ``[0, 1]``, ``0``, ``"0 1"``, ``"0,1"``, ``None``/``[]``
    (= every seed the manifests list)."""
    if seeds is None or seeds == "" or seeds == []:
        return []
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        return [int(s) for s in seeds.replace(",", " ").split()]
    return [int(s) for s in seeds]  # type: ignore[union-attr]


def store_for(profile: str, overrides: list[str] | None = None) -> RunStore:
    """The run store of ``profile`` (``runs_dir`` may be overridden)."""
    return RunStore.of(make_config(profile, [o for o in overrides or [] if o.startswith("runs_dir=")]))


@dataclass
class CellRuns:
    """The finished runs of one cell, one per seed."""

    seeds: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    clean: list[float] = field(default_factory=list)
    authors: list[float] = field(default_factory=list)
    dataset: str | None = None

    def run_of(self, seed: int) -> Run:
        return self.runs[self.seeds.index(seed)]


def resolve(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, dict[int, Run]]:
    """cell key -> {seed: run} for the cells of ``spec`` (finished or not)."""
    store = store_for(profile, overrides)
    overrides = [o for o in overrides or [] if not o.startswith("runs_dir=")]
    seeds = list(seeds or [])
    out: dict[str, dict[int, Run]] = {c.key: {} for c in spec.cells}
    if overrides:
        for c in spec.cells:
            for s in seeds or [make_config(profile).seed]:
                out[c.key][s] = store.run_for(cell_config(c, profile, s, overrides + [f"runs_dir={store.root}"]))
        return out
    manifests = store.manifests(profile)
    for c in spec.cells:
        label = f"{spec.name}:{c.key}"
        for m in manifests:
            for r in m.runs:
                if label in r.cells and (not seeds or r.seed in seeds) and r.seed not in out[c.key]:
                    out[c.key][r.seed] = store.run(r.run_id)
        for s in seeds:  # no manifest lists it: the run id of the profile's defaults
            if s not in out[c.key]:
                out[c.key][s] = store.run_for(cell_config(c, profile, s))
    if not seeds and not manifests:
        s = make_config(profile).seed
        for c in spec.cells:
            out[c.key][s] = store.run_for(cell_config(c, profile, s))
    return out


def collect(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, CellRuns]:
    """Both protocols' accuracies (%) of the finished runs of each cell, per seed."""
    res: dict[str, CellRuns] = {}
    for key, by_seed in resolve(spec, profile, seeds, overrides).items():
        cr = CellRuns()
        for s in sorted(by_seed):
            run = by_seed[s]
            if not run.is_finished():
                continue
            m = run.metrics()
            cr.seeds.append(s)
            cr.runs.append(run)
            cr.clean.append(100 * m["protocols"]["clean"]["test_acc"])
            cr.authors.append(100 * m["protocols"]["authors"]["test_acc"])
            cr.dataset = (("SynthFER (synthetic)" if m["dataset"] == "synthfer" else
                           f"SynthFER (synthetic, {m['dataset']} layout)") if m.get("synthetic") else m["dataset"])
        res[key] = cr
    return res


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test: b = a right & b wrong, c = a wrong & b right."""
    from scipy.stats import binomtest

    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p": p}


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f} (n=1)"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f} (n={len(vals)})"


def _paired(a: CellRuns, b: CellRuns) -> str:
    """McNemar of ``b`` against baseline ``a`` over the seeds both have (discordant counts pooled)."""
    common = [s for s in a.seeds if s in b.seeds]
    if not common:
        return "–"
    if a.run_of(common[0]).run_id == b.run_of(common[0]).run_id:
        return "same run"
    bb = cc = 0
    for s in common:
        ya, pa = a.run_of(s).predictions()
        yb, pb = b.run_of(s).predictions()
        r = mcnemar(pa == ya, pb == yb)
        bb, cc = bb + r["b"], cc + r["c"]
    from scipy.stats import binomtest

    p = 1.0 if bb + cc == 0 else float(binomtest(bb, bb + cc, 0.5).pvalue)
    return f"p={p:.3g} ({cc}+/{bb}-)"


def _pairs(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    first = next(iter(spec.cells[0].labels))
    groups: dict[str, list[Cell]] = {}
    for c in spec.cells:
        groups.setdefault(c.labels[first], []).append(c)
    recs = []
    for name, cells in groups.items():
        rec: dict[str, str] = {first: name}
        for c in cells:
            rec[f"{c.column}: ours clean"] = _fmt(res[c.key].clean)
            rec[f"{c.column}: ours authors'"] = _fmt(res[c.key].authors)
            rec[f"{c.column}: paper"] = f"{c.paper:.2f}"
        for c in cells:
            if c.baseline:
                base = spec.cell(c.baseline)
                rec[f"{c.column} vs {base.column}: McNemar"] = _paired(res[base.key], res[c.key])
        recs.append(rec)
    return recs


def _rows(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    recs = []
    for c in spec.cells:
        base = next(b for b in spec.cells if b.baseline is None)
        recs.append({**c.labels, "Acc. ours clean": _fmt(res[c.key].clean),
                     "Acc. ours authors'": _fmt(res[c.key].authors), "Acc. paper": f"{c.paper:.2f}",
                     f"vs ({base.key}): McNemar": "baseline" if c.baseline is None else
                     _paired(res[c.baseline], res[c.key])})
    return recs


def _sota(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    recs = [{"Type": t, "Method": meth, "FERPlus": "–" if fp is None else f"{fp:.2f}",
             "RAF-DB": "–" if rf is None else f"{rf:.2f}", "Source": "cited in the paper"}
            for t, meth, fp, rf in spec.cited]
    fer, raf = spec.cells
    recs.append({"Type": "Transformer", "Method": "ours (paper)", "FERPlus": f"{fer.paper:.2f}",
                 "RAF-DB": f"{raf.paper:.2f}*", "Source": "paper (* Swin-L)"})
    for proto in ("clean", "authors"):
        tag = {"clean": "clean", "authors": "authors'"}[proto]
        data = [d for d in (res[fer.key].dataset, res[raf.key].dataset) if d]
        dl = f" on {' / '.join(dict.fromkeys(data))}" if data else ""
        recs.append({"Type": "Transformer", "Method": f"ours (this study, {tag}{dl})",
                     "FERPlus": _fmt(getattr(res[fer.key], proto)), "RAF-DB": _fmt(getattr(res[raf.key], proto)),
                     "Source": "run store (this study)"})
    return recs


LAYOUTS = {"pairs": _pairs, "rows": _rows, "sota": _sota}


def build_table(table: str, profile: str, seeds: object = None,
                overrides: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Render ``table`` from its runs (see the module docstring for which runs)."""
    spec = TABLES[table]
    seeds_l = as_seeds(seeds)
    res = collect(spec, profile, seeds_l, overrides)
    found = sorted({s for r in res.values() for s in r.seeds})
    datasets = sorted({v.dataset for v in res.values() if v.dataset})
    df = pd.DataFrame(LAYOUTS[spec.layout](spec, res))
    stand_in = ", ".join(f"{k}→{v}" for k, v in DEMO_BACKBONE.items())
    notes = [f"{table}: profile `{profile}`, seeds {seeds_l or found} (finished runs found for seeds {found}).",
             f"Our data: {', '.join(datasets) or 'no finished runs yet'}. Paper numbers: real FERPlus/RAF-DB, "
             "copied from the paper, shown beside ours, never computed here.",
             "Protocols: clean = model chosen on validation, deterministic transform, full test set; authors' = best "
             "test epoch under the random training transform (optimistic; the authors' code).",
             "McNemar: exact test on per-image clean-protocol predictions vs the row's baseline, discordant "
             "counts pooled over matched seeds (k+/m- = images only the setting / only the baseline got right)."]
    notes += list(spec.notes)
    if PROFILE_BACKBONES.get(profile) is DEMO_BACKBONE:
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
    out_dir = Path(out_dir or os.environ.get("FER_STUDY_TABLES_DIR", "results/tables"))
    paths = [write_text(out_dir / f"{name}.csv", df.to_csv(index=False)),
             write_text(out_dir / f"{name}.md", to_markdown(df) + "\n\n"
                        + "\n".join(f"- {n}" for n in notes.splitlines()) + "\n"),
             write_text(out_dir / f"{name}.tex", to_latex(df, notes.splitlines()[0] + " " + notes.splitlines()[1]))]
    return paths


def figure_run(figure: str, profile: str, seeds: object = None, overrides: list[str] | None = None) -> Run:
    """The finished run a figure draws (its source cell, first seed with a finished run)."""
    from fer_study.tables import FIGURES

    spec = FIGURES[figure]
    if spec.source is None:
        raise ValueError(f"{figure} draws no single run")
    table, key = spec.source
    by_seed = resolve(TABLES[table], profile, as_seeds(seeds), overrides)[key]
    for s in sorted(by_seed):
        if by_seed[s].is_finished():
            return by_seed[s]
    from fer_study.errors import RunError

    raise RunError(f"{figure} draws {table} cell {key!r}, which has no finished run for profile {profile!r} "
                   f"(seeds {sorted(by_seed) or 'none planned'}); train it first: fer-study run {table} --profile {profile}")
