"""Compare two sets of exported tables (``results/tables/*.csv`` of two ``make demo`` runs, e.g. the
committed one and a fresh clone's): did each table's conclusions survive, and how far did its means move?

A row's *conclusion* against its baseline is the verdict of the seed-aware test
(:mod:`fer_study.significance`): ``+`` (significantly better), ``-`` (significantly worse) or
``n.s.``. Two runs of the study agree when every verdict is the same and every cell's mean moved by
at most ``tolerance`` points. Signs of non-significant differences are listed too (a flip there is
within the noise the test already accounts for), and, for information, each side's largest seed
standard deviation and its tables' "Did not learn" notes (runs that predict one class).
``fer-study compare A B`` prints the comparison and exits 1 when they do not agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: The tolerance the demo's cell means hold to between two runs of ``make demo`` (points of clean
#: test accuracy): different thread counts or machines change float rounding, which re-draws each
#: short training run like a new seed; with a seed std of at most 2 points and 3 seeds, the mean
#: of a cell moves with a standard deviation of at most 2 * sqrt(2/3) = 1.6 points.
DEMO_TOLERANCE = 3.0
MEAN = "mean (%)"
STD = "std (%)"
#: The first words of a table's note naming runs that predict one class (:data:`fer_study.report.COLLAPSE_SHARE`);
#: the report writes it, compare reads it back from the exported ``.md`` (each note a ``- `` line there).
DID_NOT_LEARN = "Did not learn"
DIFF = "diff (points)"
SIG = "significant"


@dataclass
class Comparison:
    tables: list[str] = field(default_factory=list)
    means: list[dict] = field(default_factory=list)  # table, row, column, a, b, delta
    verdicts: list[dict] = field(default_factory=list)  # table, row, column, a, b (+ / - / n.s.), diff_a, diff_b
    missing: list[str] = field(default_factory=list)
    tolerance: float = DEMO_TOLERANCE
    stds: list[dict] = field(default_factory=list)  # table, row, column, a, b: clean seed std (points)
    did_not_learn: list[str] = field(default_factory=list)  # "A|B table: note" (for information: no verdict)

    def largest_std(self, side: str) -> dict | None:
        """The cell with the largest clean-protocol seed standard deviation on side ``a`` or ``b``."""
        rows = [m for m in self.stds if m[side] == m[side]]  # NaN: a single seed
        return max(rows, key=lambda m: m[side], default=None)

    @property
    def max_delta(self) -> float:
        return max((abs(m["delta"]) for m in self.means), default=0.0)

    @property
    def changed_verdicts(self) -> list[dict]:
        return [v for v in self.verdicts if v["a"] != v["b"]]

    @property
    def beyond_tolerance(self) -> list[dict]:
        return [m for m in self.means if abs(m["delta"]) > self.tolerance]

    @property
    def agree(self) -> bool:
        return not self.changed_verdicts and not self.beyond_tolerance and not self.missing

    def markdown(self) -> str:
        lines = [f"Tables compared: {', '.join(self.tables)}; tolerance {self.tolerance:g} points", "",
                 "| table | row | column | A | B | Δ |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['table']} | {m['row']} | {m['column']} | {m['a']:.2f} | {m['b']:.2f} | {m['delta']:+.2f} |"
                  for m in self.means]
        lines += ["", "| table | row | against baseline | verdict A (Δ) | verdict B (Δ) |", "|---|---|---|---|---|"]
        lines += [f"| {v['table']} | {v['row']} | {v['column']} | {v['a']} ({v['diff_a']:+.2f}) | "
                  f"{v['b']} ({v['diff_b']:+.2f}) |" for v in self.verdicts]
        flips = [v for v in self.verdicts if v["a"] == v["b"] == "n.s." and v["diff_a"] * v["diff_b"] < 0]
        lines += ["", f"Largest |Δ mean|: {self.max_delta:.2f} points; means beyond tolerance: "
                  f"{len(self.beyond_tolerance)}; verdicts changed: {len(self.changed_verdicts)} of "
                  f"{len(self.verdicts)}; sign flips among non-significant differences: {len(flips)}"]
        for side in ("a", "b"):
            m = self.largest_std(side)
            if m is not None:
                lines.append(f"Largest seed std (clean) in {side.upper()}: {m[side]:.2f} ({m['table']} {m['row']}: "
                             f"{m['column']})")
        lines += [f"Did not learn in {n}" for n in self.did_not_learn]
        if self.missing:
            lines.append(f"Missing: {', '.join(self.missing)}")
        lines.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(lines)


def _label_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name a row: text columns other than results (``...: ...`` fields, Table 2's
    gap-recovered fraction, which is "–" or a number depending on the run) and Table 4's source."""
    return [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) and ":" not in c and c != "Source"
            and not c.startswith("gap ")]


def _row_key(df: pd.DataFrame, i: int, labels: list[str]) -> str:
    return " / ".join(str(df.iloc[i][c]) for c in labels)


def _verdict(diff: float, sig: float) -> str:
    if sig is None or (isinstance(sig, float) and math.isnan(sig)):
        return "n.s."
    return ("+" if diff > 0 else "-") if bool(sig) else "n.s."


def compare_dirs(a: str | Path, b: str | Path, tolerance: float = DEMO_TOLERANCE) -> Comparison:
    """Compare every ``table*.csv`` present in both directories (rows matched by their label columns)."""
    a, b = Path(a), Path(b)
    out = Comparison(tolerance=tolerance)
    for pa in sorted(a.glob("table*.csv")):
        pb = b / pa.name
        if not pb.is_file():
            out.missing.append(str(pb))
            continue
        name = pa.stem
        out.tables.append(name)
        for side, p in (("A", pa), ("B", pb)):
            md = p.with_suffix(".md")
            notes = md.read_text(encoding="utf-8").splitlines() if md.is_file() else []
            head = f"- {DID_NOT_LEARN}:"
            out.did_not_learn += [f"{side} {name}: {n.removeprefix(head).strip()}" for n in notes if n.startswith(head)]
        da, db = pd.read_csv(pa), pd.read_csv(pb)
        labels = _label_columns(da)
        rows_b = {_row_key(db, i, labels): i for i in range(len(db))}
        for i in range(len(da)):
            key = _row_key(da, i, labels)
            if key not in rows_b:
                out.missing.append(f"{name}: row {key}")
                continue
            j = rows_b[key]
            for col in da.columns:
                if col.endswith(MEAN) and "authors'" not in col and "paper" not in col and col in db.columns:
                    x, y = da.iloc[i][col], db.iloc[j][col]  # clean-protocol means (Table 4: its only protocol)
                    if pd.isna(x) and pd.isna(y):
                        continue
                    if str(da.iloc[i].get("Source", "")).startswith(("cited", "paper")) or "authors'" in key:
                        continue  # cited numbers; Table 4's authors'-protocol row
                    if pd.isna(x) or pd.isna(y):
                        out.missing.append(f"{name}: {key}: {col}")
                        continue
                    cell = {"table": name, "row": key, "column": col.removesuffix(f": {MEAN}")}
                    out.means.append({**cell, "a": float(x), "b": float(y), "delta": float(y) - float(x)})
                    sd = col.removesuffix(MEAN) + STD
                    if sd in da.columns and sd in db.columns:
                        out.stds.append({**cell, "a": float(da.iloc[i][sd]), "b": float(db.iloc[j][sd])})
                if col.endswith(DIFF) and col in db.columns:
                    x, y = da.iloc[i][col], db.iloc[j][col]
                    if pd.isna(x) and pd.isna(y):
                        continue
                    stem = col.removesuffix(DIFF)
                    sa, sb = da.iloc[i].get(stem + SIG), db.iloc[j].get(stem + SIG)
                    out.verdicts.append({"table": name, "row": key, "column": stem.rstrip(": "),
                                         "a": _verdict(float(x), sa), "b": _verdict(float(y), sb),
                                         "diff_a": float(x), "diff_b": float(y)})
    return out
