from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_study.experiments import DEMO_BACKBONE, grid, plan, run_grid
from fer_study.report import build_table, export, mcnemar

ROOT = Path(__file__).resolve().parents[1]


def test_grids_declare_the_papers_tables():
    assert [r.key for r in grid("table2")] == ["a", "b", "c", "d", "e"]
    assert len(grid("table1")) == 10 and len(grid("table3")) == 6 and len(grid("table4")) == 2
    t2 = {r.key: r.overrides for r in grid("table2")}
    assert t2["e"]["model.stn"] and t2["e"]["model.backbone"] == "swin_b"
    assert t2["a"]["model.up"] == "bilinear" and t2["a"]["model.down"] == "none"
    assert {r.paper for r in grid("table2")} == {88.69, 88.53, 89.03, 89.28, 89.50}
    # shared cells are one run: Table 2 (d) is Table 1's Swin-S proposed row
    jobs = plan("all", "demo", [0])
    shared = [j for j in jobs if len(j.rows) > 1]
    assert any({r.table for r in j.rows} >= {"table1", "table2"} for j in shared)
    assert all(j.config.model.backbone in DEMO_BACKBONE.values() for j in jobs)
    paper = plan("table2", "paper", [1111])
    assert {j.config.model.backbone for j in paper} == {"swin_s", "swin_b"}


def test_cli_dry_run_lists_five_settings():
    out = subprocess.run([sys.executable, "-m", "fer_study.cli", "run", "table2", "--dry-run", "--seeds", "0"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert sum("table2:" in line for line in out.splitlines()) == 5
    for k in "abcde":
        assert f"table2:{k}" in out


def test_mcnemar_exact():
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([True] * 5 + [False] * 5 + [True] * 5)
    r = mcnemar(a, b)
    assert (r["b"], r["c"]) == (5, 5) and r["p"] == pytest.approx(1.0)
    r = mcnemar(np.ones(20, bool), np.r_[np.zeros(8, bool), np.ones(12, bool)])
    assert r["b"] == 8 and r["c"] == 0 and r["p"] == pytest.approx(2 * 0.5 ** 8)


def test_table2_runs_then_rerun_skips_and_table_renders(synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    extra = {"data_root": str(synth_root), "runs_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
             "sr_backend": "bicubic", "sr_weights": "null", "epochs": "1", "max_train": "96", "progress": "false"}
    s = run_grid("table2", "demo", [0], extra=extra, log=lambda *_: None)
    assert len(s["done"]) == 5 and not s["failed"], s
    s2 = run_grid("table2", "demo", [0], extra=extra, log=lambda *_: None)
    assert len(s2["skipped"]) == 5 and not s2["done"]
    assert all((tmp_path / "runs" / rid / "01_train.executed.ipynb").exists() for rid in s["done"])
    df, notes = build_table("table2", "demo", [0], extra)
    assert list(df["Setting"]) == list("abcde") and "(n=1)" in df["Acc. ours clean"].iloc[0]
    assert "SynthFER" in notes and "DEMO" in notes
    paths = export(df, notes, "table2", tmp_path / "tables")
    assert {p.suffix for p in paths} == {".csv", ".md", ".tex"}
    assert "88.69" in (tmp_path / "tables" / "table2.md").read_text()


def test_notebooks_prepare_with_declared_parameters(tmp_path):
    import papermill as pm

    params = {"00_data": {"synth_n": 100}, "01_train": {"overrides": "epochs=1"}, "02_table1_backbones": {"seeds": "0"},
              "03_table2_ablation": {"seeds": "0"}, "04_table3_losses": {"seeds": "0"}, "05_table4_sota": {"seeds": "0"},
              "06_figure2_resizer": {"seed": 0}, "07_explore": {"runs_dir": "results/runs"}}
    for name, p in params.items():
        nb = pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                 parameters=p, prepare_only=True, kernel_name="python3")
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert ["parameters"] in tags and ["injected-parameters"] in tags, name
