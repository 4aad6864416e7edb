"""Table exports: a table's cells as numbers and text (:class:`Value`), and the files a paper takes:
numeric CSV (mean, std, n and per-seed columns), Markdown with the notes, and booktabs LaTeX that fits
a column (or ``table*``) with a ``\\label`` and a caption written for readers. Written to the scratch
folder unless ``publish`` (``fer-study report``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fer_study.io import write_text
from fer_study.tables import TABLES


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


#: Column headers that hold accuracies (%) besides the cells made by ``report._fmt``.
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
    authors = "" if "authors' protocol was not run" in notes else \
        " and the authors' protocol (best test epoch; optimistic)"
    parts = [f"{title[:1].upper()}{title[1:]}." if title else "",
             f"Test accuracy (%) of this study, {over}, under the clean protocol (model chosen on validation)"
             f"{authors}, beside the numbers the paper reports on real FERPlus/RAF-DB."]
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
           caption: str | None = None, profile: str | None = None) -> list[Path]:
    """Write NAME.csv (numeric: mean, std, n and per-seed columns), NAME.md (with the notes) and
    NAME.tex (booktabs, ``\\label{tab:NAME}``, a caption for readers) to ``out_dir``; by default to the
    committed ``results/tables`` only when ``publish`` (``fer-study report``), else to the scratch
    folder (:func:`fer_study.paths.output_dir`), so that interactive and nbval runs never overwrite
    the committed tables; a profile with its own outputs publishes to its folder (``ferplus-cpu``:
    ``results/ferplus_cpu``). The files are world-readable."""
    from fer_study.paths import make_readable, output_dir

    out_dir = Path(out_dir) if out_dir else output_dir("tables", publish, profile=profile)
    md = to_markdown(df) + "\n\n" + "\n".join(f"- {n}" for n in notes.splitlines()) + "\n"
    tex = to_latex(df, caption or table_caption(name, df, notes), label=f"tab:{name}")
    paths = [write_text(out_dir / f"{name}.csv", to_csv_frame(df).to_csv(index=False)),
             write_text(out_dir / f"{name}.md", md), write_text(out_dir / f"{name}.tex", tex)]
    return [make_readable(p) for p in paths]
