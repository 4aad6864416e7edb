"""Tables 1-4 from the runs that were trained: our numbers (mean ± std over seeds, n), the paper's
numbers in adjacent columns, both protocols, and paired significance against each cell's baseline.

Which runs: with ``overrides`` (the same ``--set`` values given to ``fer-study run``) the run ids
are derived exactly as the runner derived them; without, the grid manifests of the profile say
which run filled each cell for each seed (the newest manifest that lists the cell wins), so the
report needs no overrides. Only finished runs (metrics and model present) are reported, and only
while their data and weights files are those they were trained on (:mod:`fer_study.inputs`).

Significance: :mod:`fer_study.significance` (a two-level bootstrap over seeds and test images of the
clean-protocol accuracy difference against the cell's baseline), per-seed McNemar beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_study.config import make_config
from fer_study.inputs import StaleRunError, run_inputs, stale_message
from fer_study.io import write_text
from fer_study.paths import rooted
from fer_study.runs import Run, RunStore
from fer_study.significance import MIN_SEEDS, TEST_NAME, compare, mcnemar  # noqa: F401 - mcnemar re-exported
from fer_study.tables import (
    DEMO_BACKBONE,
    PROFILE_BACKBONES,
    TABLES,
    Cell,
    TableSpec,
    cell_applies,
    cell_config,
)


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
    unverified: list[str] = field(default_factory=list)  # runs without inputs.json (older versions)

    def run_of(self, seed: int) -> Run:
        return self.runs[self.seeds.index(seed)]


def resolve(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, dict[int, Run]]:
    """cell key -> {seed: run} for the cells of ``spec`` (finished or not)."""
    store = store_for(profile, overrides)
    overrides = [o for o in overrides or [] if not o.startswith("runs_dir=")]
    seeds = list(seeds or [])
    cells = [c for c in spec.cells if cell_applies(c, profile, overrides)]
    out: dict[str, dict[int, Run]] = {c.key: {} for c in cells}
    if overrides:
        for c in cells:
            for s in seeds or [make_config(profile).seed]:
                out[c.key][s] = store.run_for(cell_config(c, profile, s, overrides + [f"runs_dir={store.root}"]))
        return out
    manifests = store.manifests(profile)
    for c in cells:
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
        for c in cells:
            out[c.key][s] = store.run_for(cell_config(c, profile, s))
    return out


def collect(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, CellRuns]:
    """Both protocols' accuracies (%) of the finished runs of each cell, per seed."""
    res: dict[str, CellRuns] = {}
    fingerprints: dict = {}
    for key, by_seed in resolve(spec, profile, seeds, overrides).items():
        cr = CellRuns()
        for s in sorted(by_seed):
            run = by_seed[s]
            if not run.is_finished():
                continue
            changed = run.input_changes(run_inputs(rooted(run.config()), fingerprints))
            if run.inputs() is None:  # trained before inputs were recorded: reported, marked unverified
                cr.unverified.append(run.run_id)
            elif changed:
                raise StaleRunError(stale_message(run.run_id, changed, f"It fills {spec.name} {key}, seed {s}; "
                                                  "retrain it (fer-study run ... --retrain-stale) or restore the "
                                                  "inputs before reporting."))
            m = run.metrics()
            cr.seeds.append(s)
            cr.runs.append(run)
            cr.clean.append(100 * m["protocols"]["clean"]["test_acc"])
            cr.authors.append(100 * m["protocols"]["authors"]["test_acc"])
            cr.dataset = (("SynthFER (synthetic)" if m["dataset"] == "synthfer" else
                           f"SynthFER (synthetic, {m['dataset']} layout)") if m.get("synthetic") else m["dataset"])
        res[key] = cr
    return res


class Value(str):
    """A table cell: its text (shown in notebooks and Markdown) and the numbers behind it. ``fields``
    become numeric CSV columns named ``<column>: <field>``; ``latex`` is the compact form the .tex
    table shows (default: the text)."""

    fields: dict[str, float | int | str | None]
    latex: str | None

    def __new__(cls, text: str, fields: dict | None = None, latex: str | None = None) -> Value:
        v = super().__new__(cls, text)
        v.fields = dict(fields or {})
        v.latex = latex
        return v


def _fmt(vals: list[float], seeds: list[int] | None = None) -> str:
    """Accuracies (%) of one cell over seeds: ``mean ± std (n=k)``, with mean, std, n and the value of
    each seed (``seeds``, in the order of ``vals``) kept for the numeric CSV."""
    if not vals:
        return "–"
    names = [f"seed {s}" for s in seeds] if seeds is not None and len(seeds) == len(vals) else \
        [f"run {k + 1}" for k in range(len(vals))]
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    fields = {"mean (%)": round(mean, 4), "std (%)": None if std is None else round(std, 4), "n": len(vals),
              **{f"{k} (%)": round(float(v), 4) for k, v in zip(names, vals)}}
    if std is None:
        return Value(f"{mean:.2f} (n=1)", fields, latex=f"{mean:.2f}")
    return Value(f"{mean:.2f} ± {std:.2f} (n={len(vals)})", fields, latex=f"{mean:.2f} ± {std:.2f}")


def _paired(a: CellRuns, b: CellRuns) -> str:
    """``b`` against baseline ``a`` over the seeds both have (:func:`fer_study.significance.compare`:
    the accuracy difference, its two-level bootstrap interval over seeds and test images, and the
    verdict; per-seed McNemar p-values in brackets)."""
    common = [s for s in a.seeds if s in b.seeds]
    if not common:
        return "–"
    if a.run_of(common[0]).run_id == b.run_of(common[0]).run_id:
        return "same run"
    ca, cb = [], []
    for s in common:
        ya, pa = a.run_of(s).predictions()
        yb, pb = b.run_of(s).predictions()
        if not np.array_equal(ya, yb):
            from fer_study.errors import RunError

            raise RunError(f"runs {a.run_of(s).run_id} and {b.run_of(s).run_id} (seed {s}) were tested on different "
                           "images or labels: they cannot be compared image by image")
        ca.append(pa == ya)
        cb.append(pb == yb)
    c = compare(ca, cb, common)
    fields: dict[str, float | int | str | None] = {
        "diff (points)": round(c.diff, 4), "CI low (points)": round(c.ci[0], 4), "CI high (points)": round(c.ci[1], 4),
        "p (bootstrap)": round(c.p, 6), "significant": int(c.significant), "seeds": len(c.seeds),
        **{f"McNemar p seed {s}": round(p, 6) for s, p in zip(c.seeds, c.mcnemar_p)}}
    verdict = "*" if c.significant else ""
    return Value(f"{c.label()}; McNemar per seed p={', '.join(f'{p:.2g}' for p in c.mcnemar_p)}", fields,
                 latex=f"{c.diff:+.2f} [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]{verdict}")


def _pairs(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    first = next(iter(spec.cells[0].labels))
    groups: dict[str, list[Cell]] = {}
    for c in spec.cells:
        groups.setdefault(c.labels[first], []).append(c)
    recs = []
    for name, cells in groups.items():
        rec: dict[str, str] = {first: name}
        for c in cells:
            rec[f"{c.column}: ours clean"] = _fmt(res[c.key].clean, res[c.key].seeds)
            rec[f"{c.column}: ours authors'"] = _fmt(res[c.key].authors, res[c.key].seeds)
            rec[f"{c.column}: paper"] = f"{c.paper:.2f}"
        for c in cells:
            if c.baseline:
                base = spec.cell(c.baseline)
                rec[f"{c.column} vs {base.column}: Δ clean [95% CI]"] = _paired(res[base.key], res[c.key])
        recs.append(rec)
    return recs


def _gap(res: dict[str, CellRuns], key: str, base: str, oracle: str) -> str:
    """Fraction of the gap between the baseline and the oracle that ``key`` recovers, over the seeds all
    three have; "–" unless the oracle is ahead of the baseline by more than 1 point (a smaller gap
    makes the fraction noise)."""
    common = [s for s in res[base].seeds if s in res[oracle].seeds and s in res[key].seeds]
    if not common:
        return "–"

    def mean(k: str) -> float:
        return float(np.mean([res[k].clean[res[k].seeds.index(s)] for s in common]))

    a, o, x = mean(base), mean(oracle), mean(key)
    if o - a <= 1.0:
        return "–"
    return f"{(x - a) / (o - a):.2f}"


def _rows(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    recs = []
    cells = [c for c in spec.cells if c.key in res]
    base = next(b for b in cells if b.baseline is None)
    oracle = "oracle" if "oracle" in res else None
    for c in cells:
        rec = {**c.labels, "Acc. ours clean": _fmt(res[c.key].clean, res[c.key].seeds),
               "Acc. ours authors'": _fmt(res[c.key].authors, res[c.key].seeds),
               "Acc. paper": "–" if c.paper is None else f"{c.paper:.2f}",
               f"vs ({base.key}): Δ clean [95% CI]": "baseline" if c.baseline is None else
               _paired(res[c.baseline], res[c.key])}
        if oracle:
            rec[f"gap ({base.key})→oracle recovered"] = _gap(res, c.key, base.key, oracle)
        recs.append(rec)
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
                     "FERPlus": _fmt(getattr(res[fer.key], proto), res[fer.key].seeds), "RAF-DB": _fmt(getattr(res[raf.key], proto), res[raf.key].seeds),
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
    df = pd.DataFrame(LAYOUTS[spec.layout](spec, res), dtype=object)  # object: cells keep their numbers (Value)
    stand_in = ", ".join(f"{k}→{v}" for k, v in DEMO_BACKBONE.items())
    notes = [f"{table}: profile `{profile}`, seeds {seeds_l or found} (finished runs found for seeds {found}).",
             f"Our data: {', '.join(datasets) or 'no finished runs yet'}. Paper numbers: real FERPlus/RAF-DB, "
             "copied from the paper, shown beside ours, never computed here.",
             "Protocols: clean = model chosen on validation, deterministic transform, full test set; authors' = best "
             "test epoch under the random training transform (optimistic; the authors' code).",
             f"Significance: {TEST_NAME} of the clean-protocol accuracy difference (points) against the row's "
             f"baseline, over matched seeds; significant only with >= {MIN_SEEDS} seeds and an interval excluding "
             "0 (a difference that should survive a re-run with other seeds). Per-seed exact McNemar p-values "
             "for information: they count test images only."]
    notes += list(spec.notes)
    unverified = sorted({r for v in res.values() for r in v.unverified})
    if unverified:
        notes.append(f"Inputs unverified: {len(unverified)} run(s) were trained before fer-study recorded the "
                     "fingerprints of their data and weights (inputs.json), so nothing shows they match the files "
                     f"now ({', '.join(unverified[:3])}{' ...' if len(unverified) > 3 else ''}).")
    if PROFILE_BACKBONES.get(profile) is DEMO_BACKBONE:
        notes.insert(1, f"DEMO: SynthFER and CPU-sized random-init stand-ins ({stand_in}) with a conv stem "
                        "at 48 px, 3 epochs; facesr x2 (48->96) instead of DIC x8 (48->384); LTR n=8. These numbers "
                        "say nothing about real FER accuracy.")
    return df, "\n".join(notes)


#: Column headers that hold accuracies (%) besides the cells made by :func:`_fmt`.
_ACC_HEADER = re.compile(r"(^Acc\.|\bpaper$|^FERPlus$|^RAF-DB$)")
#: Text width of the .tex tables' targets, points: one column and the full page of a two-column
#: paper (IEEE: 3.5 in and 7.16 in).
COLUMN_PT, TEXT_PT = 252.0, 516.0
#: (LaTeX size command, font size pt, \tabcolsep pt), tried in order until the table fits.
_LATEX_SIZES = ((r"\small", 9.0, 6.0), (r"\footnotesize", 8.0, 4.0), (r"\scriptsize", 7.0, 3.0))


def _is_number(s: object) -> bool:
    try:
        float(str(s).rstrip("*"))
        return True
    except ValueError:
        return False


def accuracy_columns(df: pd.DataFrame) -> list[str]:
    """The columns that hold accuracies in %: cells made by :func:`_fmt`, or a paper/data-set header
    whose cells are numbers."""
    out = []
    for c in df.columns:
        vals = list(df[c])
        if any(isinstance(v, Value) and "mean (%)" in v.fields for v in vals) or (
                _ACC_HEADER.search(str(c)) and all(_is_number(v) or v in ("–", "") for v in vals)):
            out.append(c)
    return out


def with_units(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``(%)`` after the header of each accuracy column (for display and Markdown)."""
    return df.rename(columns={c: f"{c} (%)" for c in accuracy_columns(df)})


def to_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The numeric form of a table: each accuracy cell becomes its mean, std, n and per-seed values in
    columns (``<column>: mean (%)``, ...; seeds in order), paper numbers become numbers (``*`` marks
    moved to the text columns' notes), other cells stay text."""
    acc = set(accuracy_columns(df))
    out: dict[str, list] = {}
    n = len(df)
    for c in df.columns:
        vals = list(df[c])
        keys: list[str] = []
        for v in vals:
            for k in getattr(v, "fields", {}):
                if k not in keys:
                    keys.append(k)
        seeds = sorted((k for k in keys if k.startswith("seed ")), key=lambda k: int(k.split()[1]))
        keys = [k for k in keys if not k.startswith("seed ")] + seeds
        if keys:
            for k in keys:
                out[f"{c}: {k}"] = [getattr(v, "fields", {}).get(k) for v in vals]
            plain = [None if isinstance(v, Value) or v in ("–", "") else
                     (float(str(v).rstrip("*")) if _is_number(v) else str(v)) for v in vals]
            if any(p is not None for p in plain):  # rows without numbers behind them (cited, paper)
                first = f"{c}: mean (%)" if f"{c}: mean (%)" in out else f"{c}: {keys[0]}"
                if all(p is None or isinstance(p, float) for p in plain):
                    out[first] = [p if isinstance(p, float) else o for p, o in zip(plain, out[first])]
                else:
                    out[f"{c}: text"] = [p if p is not None else "" for p in plain]
        elif c in acc or (vals and all(_is_number(v) or v in ("–", "") for v in vals) and any(_is_number(v) for v in vals)):
            out[f"{c} (%)" if c in acc else str(c)] = [float(str(v).rstrip("*")) if _is_number(v) else None
                                                       for v in vals]
        else:
            out[str(c)] = [str(v) for v in vals]
    return pd.DataFrame(out, index=range(n))


def to_markdown(df: pd.DataFrame) -> str:
    """A Markdown table (accuracy headers with ``(%)``; ``|`` in cells escaped)."""
    df = with_units(df)
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(c.replace("|", r"\|") for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v).replace("|", r"\|") for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


_LATEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"$<$", ">": r"$>$", "±": r"$\pm$", "✓": r"$\surd$", "→": r"$\to$", "Δ": r"$\Delta$",
                "−": "$-$", "–": "--", "—": "---", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$",
                "·": r"$\cdot$", "’": "'", "“": "``", "”": "''", "α": r"$\alpha$", "γ": r"$\gamma$"}


def latex_escape(s: object) -> str:
    """Text as LaTeX that needs no package (plain ASCII; symbols in math mode)."""
    out = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(s))
    return out.encode("ascii", "replace").decode("ascii")


def _header_lines(text: str, width: int = 16) -> list[str]:
    words, lines = str(text).split(), [""]
    for w in words:
        if lines[-1] and len(lines[-1]) + 1 + len(w) > width:
            lines.append(w)
        else:
            lines[-1] = f"{lines[-1]} {w}".strip()
    return lines


def _stack(lines: list[str], align: str = "c") -> str:
    if len(lines) == 1:
        return latex_escape(lines[0])
    return r"\begin{tabular}[b]{@{}" + align + "@{}}" + r" \\ ".join(latex_escape(x) for x in lines) + \
        r"\end{tabular}"


def _latex_cell(v: object) -> str:
    return latex_escape(v.latex if isinstance(v, Value) and v.latex else v)


def _groups(cols: list[str]) -> list[tuple[str, list[int]]]:
    """Consecutive columns ``"group: name"`` sharing a group (pairs tables): [(group, [indices])]."""
    out: list[tuple[str, list[int]]] = []
    for i, c in enumerate(cols):
        g = c.split(": ", 1)[0] if ": " in c else ""
        if out and out[-1][0] == g and g:
            out[-1][1].append(i)
        else:
            out.append((g, [i]))
    return out


def _chars(text: str) -> float:
    """Width of ``text`` in digit widths (half an em): capitals and ± are wider than a digit."""
    return len(text) + 0.3 * sum(ch.isupper() for ch in text) + 0.6 * text.count("±")


#: Text cells longer than this (digit widths) wrap in a paragraph of this width.
WRAP_CHARS = 28


def _wrapped(df: pd.DataFrame) -> set[str]:
    """Text columns with a cell longer than :data:`WRAP_CHARS` (their cells wrap)."""
    acc = set(accuracy_columns(df))
    return {c for c in df.columns if c not in acc and any(
        _chars(str(v.latex if isinstance(v, Value) and v.latex else v)) > WRAP_CHARS for v in df[c])}


def _column_chars(df: pd.DataFrame) -> list[float]:
    """Per column of :func:`with_units`'s frame: the widest cell or header line, in digit widths."""
    units = with_units(df)
    wrapped = _wrapped(df)
    out = []
    for c, orig in zip(units.columns, df.columns):
        sub = str(c).split(": ", 1)[-1]
        cells = [str(v.latex if isinstance(v, Value) and v.latex else v) for v in df[orig]]
        widest = max([_chars(x) for x in _header_lines(sub)] + [_chars(x) for x in cells])
        out.append(min(widest, WRAP_CHARS) if orig in wrapped else widest)
    return out


def latex_width(df: pd.DataFrame, font_pt: float, sep_pt: float) -> float:
    """Estimated width (pt) of the tabular :func:`to_latex` writes (a digit is half an em; group
    headers wrap within their columns)."""
    return sum(c * 0.5 * font_pt + 2 * sep_pt for c in _column_chars(df)) - 2 * sep_pt  # @{} at both ends


def to_latex(df: pd.DataFrame, caption: str, label: str | None = None) -> str:
    """A booktabs table (``\\usepackage{booktabs}``, no other package): ``table`` when it fits one
    column of a two-column paper, else ``table*``, in the largest of small/footnotesize/scriptsize
    that fits; accuracy headers with (%); grouped headers for ``"group: name"`` columns."""
    units = with_units(df)
    cols = [str(c) for c in units.columns]
    env, size, sep, width = "table*", _LATEX_SIZES[-1][0], _LATEX_SIZES[-1][2], None
    for target, env_name in ((COLUMN_PT, "table"), (TEXT_PT, "table*")):
        for cmd, font, colsep in _LATEX_SIZES:
            w = latex_width(df, font, colsep)
            if w * 1.05 <= target:  # 5 % margin: the estimate is within a few points of TeX's widths
                env, size, sep, width = env_name, cmd, colsep, w
                break
        if width is not None:
            break
    width = width if width is not None else latex_width(df, _LATEX_SIZES[-1][1], _LATEX_SIZES[-1][2])
    numeric = set(accuracy_columns(df))
    align = "".join("r" if c in numeric else "l" for c in df.columns)
    out = [f"% {label or 'table'}: needs \\usepackage{{booktabs}} (no other package); "
           f"estimated width {width:.0f} pt ({env}).",
           rf"\begin{{{env}}}[t]", r"\centering", size, rf"\setlength{{\tabcolsep}}{{{sep:g}pt}}",
           rf"\caption{{{latex_escape(caption)}}}"]
    if label:
        out.append(rf"\label{{{label}}}")
    out += [rf"\begin{{tabular}}{{@{{}}{align}@{{}}}}", r"\toprule"]
    groups = _groups(cols)
    chars = _column_chars(df)
    if any(g for g, _ in groups):
        top, rules = [], []
        for g, idx in groups:
            if g:
                wrap = max(10, int(sum(chars[i] for i in idx) + 2.5 * (len(idx) - 1)))
                top.append(rf"\multicolumn{{{len(idx)}}}{{c}}{{{_stack(_header_lines(g, wrap))}}}")
                rules.append(rf"\cmidrule(lr){{{idx[0] + 1}-{idx[-1] + 1}}}")
            else:
                top += [""] * len(idx)
        out += [" & ".join(top) + r" \\", " ".join(rules)]
        subs = [c.split(": ", 1)[1] if ": " in c else c for c in cols]
    else:
        subs = cols
    out.append(" & ".join(_stack(_header_lines(s), "c") for s in subs) + r" \\")
    out.append(r"\midrule")
    wrapped = [c in _wrapped(df) for c in df.columns]
    wrap_em = WRAP_CHARS / 2

    ns = [v.fields["n"] for c in df.columns for v in df[c] if isinstance(v, Value) and "n" in v.fields]
    most = max(set(ns), key=ns.count) if ns else None

    def cell(v: object, wrap: bool) -> str:
        text = _latex_cell(v)
        if isinstance(v, Value) and v.fields.get("n", most) != most:  # the caption gives the usual n
            text += f" (n={v.fields['n']})"
        return rf"\parbox[t]{{{wrap_em:g}em}}{{\raggedright {text}}}" if wrap else text

    out += [" & ".join(cell(v, w) for v, w in zip(r, wrapped)) + r" \\" for r in df.itertuples(index=False)]
    out += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(out) + "\n"


def table_caption(name: str, df: pd.DataFrame, notes: str) -> str:
    """A caption for readers: what the table shows, over how many seeds, under which protocols, on
    which data (the demo's synthetic data said plainly), and what the significance column is."""
    spec = TABLES.get(name)
    title = spec.title.split(": ", 1)[-1] if spec else name
    ns, seeds = [], set()
    for c in df.columns:
        for v in df[c]:
            if isinstance(v, Value) and "n" in v.fields:
                ns.append(v.fields["n"])
                seeds |= {int(k.split()[1]) for k in v.fields if k.startswith("seed ")}
    most = max(set(ns), key=ns.count) if ns else None
    seed_txt = f" ({', '.join(map(str, sorted(seeds)))})" if seeds else ""
    if not ns:
        over = "no finished runs yet"
    elif most == 1:
        over = f"one seed{seed_txt}"
    else:
        over = f"mean ± std over {most} seeds{seed_txt}"
    if len(set(ns)) > 1:
        over += "; a cell over another number of seeds gives it (n=...)"
    lines = notes.splitlines()
    parts = [f"{title[:1].upper()}{title[1:]}." if title else "",
             f"Test accuracy (%) of this study, {over}, under the clean protocol (model chosen on validation) "
             "and the authors' protocol (best test epoch; optimistic), beside the numbers the paper reports "
             "on real FERPlus/RAF-DB."]
    if any(x.startswith("DEMO:") for x in lines):
        parts.append("Demo run: SynthFER, a synthetic data set, and CPU-sized stand-in backbones; "
                     "these numbers say nothing about real FER accuracy.")
    else:
        data = next((x for x in lines if x.startswith("Our data:")), "")
        if data:
            parts.append(data.split(". Paper numbers")[0].rstrip(".") + ".")
    sig = next((x for x in lines if x.startswith(("Significance:", "McNemar:"))), "")
    if sig:
        parts.append(sig.split("; ")[0].split(" (")[0].rstrip(".") + ".")
    return " ".join(p for p in parts if p)


def export(df: pd.DataFrame, notes: str, name: str, out_dir: str | Path | None = None, publish: bool = False,
           caption: str | None = None) -> list[Path]:
    """Write NAME.csv (numeric: mean, std, n and per-seed columns), NAME.md (with the notes) and
    NAME.tex (booktabs, ``\\label{tab:NAME}``, a caption for readers) to ``out_dir``; by default to the
    committed ``results/tables`` only when ``publish`` (``fer-study report``), else to the scratch
    folder (:func:`fer_study.paths.output_dir`), so that interactive and nbval runs never overwrite
    the committed tables. The files are world-readable."""
    from fer_study.paths import make_readable, output_dir

    out_dir = Path(out_dir) if out_dir else output_dir("tables", publish)
    md = to_markdown(df) + "\n\n" + "\n".join(f"- {n}" for n in notes.splitlines()) + "\n"
    tex = to_latex(df, caption or table_caption(name, df, notes), label=f"tab:{name}")
    paths = [write_text(out_dir / f"{name}.csv", to_csv_frame(df).to_csv(index=False)),
             write_text(out_dir / f"{name}.md", md), write_text(out_dir / f"{name}.tex", tex)]
    return [make_readable(p) for p in paths]


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
