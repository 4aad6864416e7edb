"""fer-study compare: two results/tables directories, verdicts against baselines and mean changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fer_study.compare import DEMO_TOLERANCE, compare_dirs

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "results" / "tables"


def _copy(tmp: Path, name: str) -> Path:
    d = tmp / name
    shutil.copytree(TABLES, d)
    return d


def test_identical_tables_agree_and_every_cell_is_compared(tmp_path):
    c = compare_dirs(TABLES, _copy(tmp_path, "b"))
    assert c.agree and c.max_delta == 0 and not c.missing
    assert c.tables == ["table1", "table2", "table3", "table4"]
    # every run-backed clean cell: 10 + 6 + 6 + 2 (Table 4's clean row: FERPlus and RAF-DB)
    assert len(c.means) == 24
    assert len(c.verdicts) == 5 + 5 + 3  # every row with a baseline


def test_a_moved_mean_or_a_changed_verdict_disagrees(tmp_path):
    b = _copy(tmp_path, "b")
    t2 = pd.read_csv(b / "table2.csv")
    col = next(c for c in t2.columns if c.endswith("clean: mean (%)"))
    t2.loc[1, col] += DEMO_TOLERANCE + 0.5
    t2.to_csv(b / "table2.csv", index=False)
    c = compare_dirs(TABLES, b)
    assert not c.agree and [m["row"].split(" / ")[0] for m in c.beyond_tolerance] == ["b"]
    assert not c.changed_verdicts

    b2 = _copy(tmp_path, "b2")
    t1 = pd.read_csv(b2 / "table1.csv")
    sig = next(c for c in t1.columns if c.endswith("significant"))
    t1[sig] = 1 - t1[sig].fillna(0)  # every verdict flips between + / - and n.s.
    t1.to_csv(b2 / "table1.csv", index=False)
    c = compare_dirs(TABLES, b2)
    assert not c.agree and len(c.changed_verdicts) == 5 and not c.beyond_tolerance


def test_cli_exit_codes(tmp_path):
    b = _copy(tmp_path, "b")
    run = [sys.executable, "-m", "fer_study.cli", "compare"]
    r = subprocess.run([*run, str(TABLES), str(b)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "AGREE" in r.stdout
    t3 = pd.read_csv(b / "table3.csv")
    col = next(c for c in t3.columns if c.endswith("clean: mean (%)"))
    t3.loc[0, col] -= 10
    t3.to_csv(b / "table3.csv", index=False)
    r = subprocess.run([*run, str(TABLES), str(b)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "DISAGREE" in r.stdout
    r = subprocess.run([*run, str(tmp_path), str(b)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no table*.csv" in r.stderr


def test_rows_match_when_only_the_gap_column_differs(tmp_path):
    """Table 2's gap-recovered column is "–" in one run (oracle gap <= 1 point) and numbers in another:
    it is a result, not part of a row's name, so the rows still match."""
    b = _copy(tmp_path, "b")
    t2 = pd.read_csv(b / "table2.csv")
    gap = next(c for c in t2.columns if c.startswith("gap "))
    t2[gap] = ["0.00", "0.10", "-0.20", "0.50", "0.60", "1.00"][: len(t2)]
    t2.to_csv(b / "table2.csv", index=False)
    c = compare_dirs(TABLES, b)
    assert not c.missing and c.agree


def test_largest_seed_std_and_did_not_learn_notes_are_reported(tmp_path):
    b = _copy(tmp_path, "b")
    t3 = pd.read_csv(b / "table3.csv")
    col = next(c for c in t3.columns if c.endswith("clean: std (%)"))
    t3.loc[2, col] = 7.5
    t3.to_csv(b / "table3.csv", index=False)
    md = b / "table3.md"
    md.write_text(md.read_text() + "- Did not learn: 1 run(s) predict one class ...: PDLS|Vanilla seed 1 (100.0 % 'neutral').\n")
    c = compare_dirs(TABLES, b)
    assert c.largest_std("b")["b"] == 7.5 and c.largest_std("b")["table"] == "table3"
    committed = max(m["a"] for m in c.stds)
    assert c.largest_std("a")["a"] == committed <= 2.7  # the committed demo's stability, as measured
    assert c.did_not_learn == ["B table3: 1 run(s) predict one class ...: PDLS|Vanilla seed 1 (100.0 % 'neutral')."]
    text = c.markdown()
    assert "Largest seed std (clean) in B: 7.50 (table3" in text and "Did not learn in B table3" in text
    assert c.agree  # information only: verdicts and means decide
    assert len(c.stds) == 24  # every run-backed clean cell has its std beside its mean


def test_largest_std_skips_a_single_seed_cell(tmp_path):
    b = _copy(tmp_path, "b")
    t1 = pd.read_csv(b / "table1.csv")
    col = next(c for c in t1.columns if c.endswith("clean: std (%)"))
    t1.loc[0, col] = float("nan")  # n=1: no standard deviation
    t1.to_csv(b / "table1.csv", index=False)
    c = compare_dirs(TABLES, b)
    assert c.largest_std("b")["b"] == max(m["b"] for m in c.stds if m["b"] == m["b"])
    assert c.largest_std("a") == max(c.stds, key=lambda m: m["a"])
