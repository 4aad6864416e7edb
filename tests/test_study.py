from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_study.compare import compare_dirs
from fer_study.report import as_seeds, build_table, export, mcnemar, one_class_share
from fer_study.runner import plan, run_grid
from fer_study.runs import RunStore
from fer_study.tables import DEMO_BACKBONE, FIGURES, TABLES, nbval_notebooks, report_notebooks

ROOT = Path(__file__).resolve().parents[1]


def test_tables_declare_the_papers_tables():
    t2 = TABLES["table2"]
    assert [c.key for c in t2.cells] == ["a", "b", "c", "d", "e", "oracle"]
    assert [len(TABLES[t].cells) for t in ("table1", "table2", "table3", "table4")] == [10, 6, 6, 2]
    assert t2.cell("oracle").datasets == ("synthfer",) and t2.cell("oracle").overrides["sr_backend"] == "oracle"
    assert t2.cell("e").overrides["model.stn"] and t2.cell("e").overrides["model.backbone"] == "swin_b"
    assert t2.cell("a").overrides["model.up"] == "bilinear" and t2.cell("a").overrides["model.down"] == "none"
    assert {c.paper for c in t2.cells} == {88.69, 88.53, 89.03, 89.28, 89.50, None}  # None: the oracle
    assert all(c.baseline == "a" for c in t2.cells[1:]) and t2.cell("a").baseline is None
    assert t2.varies >= {"model.up", "model.down", "model.stn", "model.backbone"}
    # shared cells are one run: Table 2 (d) is Table 1's Swin-S proposed cell
    jobs = plan("all", "demo", [0])
    assert any({t.name for t, _ in j.cells} >= {"table1", "table2"} for j in jobs if len(j.cells) > 1)
    assert all(j.config.model.backbone in DEMO_BACKBONE.values() for j in jobs)
    paper = plan("table2", "paper", [1111])
    assert {j.config.model.backbone for j in paper} == {"swin_s", "swin_b"}


def test_everything_else_is_derived_from_the_specs():
    from fer_study.cli import build_parser

    nbs = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {t.notebook for t in TABLES.values()} | {f.notebook for f in FIGURES.values()} <= nbs
    assert report_notebooks() == [t.notebook for t in TABLES.values()] + [f.notebook for f in FIGURES.values()]
    assert set(nbval_notebooks()) >= {t.notebook for t in TABLES.values()}
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # noqa: SLF001
    table_arg = next(a for a in run._actions if a.dest == "table")  # noqa: SLF001
    assert list(table_arg.choices) == [*TABLES, "all"]
    makefile = (ROOT / "Makefile").read_text()
    assert "fer_study.tables --nbval" in makefile and "02_table1" not in makefile
    out = subprocess.run([sys.executable, "-m", "fer_study.tables", "--nbval"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert out == [f"notebooks/{n}.ipynb" for n in nbval_notebooks()]
    assert not (ROOT / "scripts" / "build_notebooks.py").exists()  # the .ipynb files are the source


def test_cli_dry_run_lists_five_settings_and_the_synthetic_oracle():
    def planned(profile: str) -> str:
        return subprocess.run([sys.executable, "-m", "fer_study.cli", "run", "table2", "--dry-run", "--seeds", "0",
                               "--profile", profile], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    out = planned("demo")
    assert sum("table2:" in line for line in out.splitlines()) == 6
    for k in [*"abcde", "oracle"]:
        assert f"table2:{k}" in out
    out = planned("paper")  # real FERPlus has no high-resolution originals: no oracle row
    assert sum("table2:" in line for line in out.splitlines()) == 5 and "oracle" not in out


def test_mcnemar_exact():
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([True] * 5 + [False] * 5 + [True] * 5)
    r = mcnemar(a, b)
    assert (r["b"], r["c"]) == (5, 5) and r["p"] == pytest.approx(1.0)
    r = mcnemar(np.ones(20, bool), np.r_[np.zeros(8, bool), np.ones(12, bool)])
    assert r["b"] == 8 and r["c"] == 0 and r["p"] == pytest.approx(2 * 0.5 ** 8)


def test_seeds_parameter_forms():
    assert as_seeds([0, 1]) == [0, 1] and as_seeds(0) == [0] and as_seeds("0 1") == [0, 1]
    assert as_seeds("3,4") == [3, 4] and as_seeds(None) == [] and as_seeds([]) == []


def test_table2_runs_then_rerun_skips_and_report_finds_runs_through_the_manifest(synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    overrides = [f"synthfer_root={synth_root}", f"runs_dir={runs}", f"cache_dir={tmp_path / 'cache'}",
                 "sr_backend=bicubic", "sr_weights=none", "epochs=1", "max_train=96", "progress=false"]
    s = run_grid("table2", "demo", [0], overrides=overrides, log=lambda *_: None)
    assert len(s["done"]) == 5 and not s["failed"], s  # sr_backend=bicubic: the oracle cell is (d)'s run
    s2 = run_grid("table2", "demo", [0], overrides=overrides, log=lambda *_: None)
    assert len(s2["skipped"]) == 5 and not s2["done"]
    assert all((runs / rid / "01_train.executed.ipynb").exists() for rid in s["done"])
    manifests = RunStore(runs).manifests("demo")
    assert len(manifests) == 2 and {r.state for r in manifests[-1].runs} == {"done"}
    assert {r.state for r in manifests[0].runs} == {"skipped"}
    assert sorted(c for r in manifests[0].runs for c in r.cells) == [f"table2:{k}" for k in [*"abcde", "oracle"]]
    # the report needs no overrides besides where the runs are: the manifest says which runs
    df, notes = build_table("table2", "demo", None, [f"runs_dir={runs}"])
    assert list(df["Setting"]) == [*"abcde", "oracle"]
    assert all("(n=1)" in v for v in df["Acc. ours clean"]), df
    assert "SynthFER" in notes and "DEMO" in notes
    # with the same overrides as the runner, the same run ids
    df2, _ = build_table("table2", "demo", [0], overrides)
    assert df2.equals(df)
    paths = export(df, notes, "table2", tmp_path / "tables")
    assert {p.suffix for p in paths} == {".csv", ".md", ".tex"}
    assert "88.69" in (tmp_path / "tables" / "table2.md").read_text()
    # a run that predicts one class for (nearly) every test image is named in the notes, kept in the cell
    # (1 epoch on 96 images: these runs sit at the majority-class plateau)
    store = RunStore(runs)

    def one_class(run_id: str) -> bool:
        cols = np.asarray(json.loads(store.run(run_id).file("metrics.json").read_text())
                          ["protocols"]["clean"]["confusion"]).sum(0)
        return cols.max() >= 0.98 * cols.sum()

    keys = lambda r: {c.split(":")[1] for c in r.cells}  # noqa: E731 - (d)'s run also fills the oracle row here
    flat = {k for r in manifests[0].runs if one_class(r.run_id) for k in keys(r)}
    assert flat, "expected the 1-epoch runs to sit at the plateau"
    listed = lambda notes: {k for k in [*"abcde", "oracle"] if f" {k} seed 0 (" in notes}  # noqa: E731
    n_flat = sum(one_class(r.run_id) for r in manifests[0].runs)  # runs, not cells: (d)'s run fills two
    assert listed(notes) == flat and f"Did not learn: {n_flat} run(s)" in notes
    assert "\n- Did not learn: " in (tmp_path / "tables" / "table2.md").read_text()  # the export keeps it
    assert len(compare_dirs(tmp_path / "tables", tmp_path / "tables").did_not_learn) == 2  # and compare reads it
    rec = next(r for r in manifests[0].runs if keys(r) <= flat)
    f = store.run(rec.run_id).file("metrics.json")
    m = json.loads(f.read_text())
    conf = np.asarray(m["protocols"]["clean"]["confusion"])
    m["protocols"]["clean"]["confusion"] = np.diag(conf.sum(1)).tolist()  # as if every image were right
    f.write_text(json.dumps(m))
    df3, notes3 = build_table("table2", "demo", None, [f"runs_dir={runs}"])
    assert listed(notes3) == flat - keys(rec)
    assert df3.equals(df)  # the numbers are as measured (the accuracy field is untouched): only the note moved


def test_one_class_share():
    assert one_class_share([[5, 0], [3, 0]]) == (0, 1.0)
    assert one_class_share([[1, 4], [0, 5]]) == (1, 0.9)
    assert one_class_share([[0, 0], [0, 0]]) == (0, 0.0)


def test_notebooks_prepare_with_typed_parameters(tmp_path):
    import papermill as pm

    params = {"00_data": {"synth_n": 100}, "01_train": {"overrides": {"epochs": 1}},
              **{t.notebook: {"seeds": [0], "profile": "demo", "overrides": []} for t in TABLES.values()},
              "06_figure2_resizer": {"seeds": [0]}, "07_explore": {"profile": "demo"}}
    for name, p in params.items():
        nb = pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                 parameters=p, prepare_only=True, kernel_name="python3")
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert ["parameters"] in tags and ["injected-parameters"] in tags, name
        declared = pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
        assert set(p) <= set(declared), (name, set(p) - set(declared))
        assert all(v["inferred_type_name"] != "None" for v in declared.values()), (name, declared)


def test_data_synth_defaults_make_the_demos_data_set():
    """`fer-study data synth --out data/synthfer` (the first-run hint) writes what `make demo` would."""
    import inspect

    from fer_study.cli import build_parser
    from fer_study.data.synth import DEMO_SPLIT, ensure
    from fer_study.study import demo

    a = build_parser().parse_args(["data", "synth", "--out", "x"])
    n_demo = inspect.signature(demo).parameters["n"].default
    assert (a.n, tuple(a.split)) == (n_demo, DEMO_SPLIT) == (n_demo, inspect.signature(ensure).parameters[
        "split_fractions"].default)


def test_worker_pool_trains_runs_like_papermill_and_records_failures(synth_root, tmp_path, monkeypatch):
    """--executor workers: persistent processes; same run directories and metrics as the papermill path
    (same run id, same thread count: identical accuracies); a run that raises fails with its traceback
    in failed.log; a worker that dies fails its run and the pool restarts for the next."""
    import json

    from fer_study.config import make_config
    from fer_study.runner import Job, WorkerPool

    monkeypatch.chdir(ROOT)
    base = [f"synthfer_root={synth_root}", f"cache_dir={tmp_path / 'cache'}", "sr_backend=bicubic",
            "sr_weights=none", "epochs=1", "max_train=64", "progress=false"]
    cli = [sys.executable, "-m", "fer_study.cli", "run", "table2", "--seeds", "0", "--jobs", "1"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, extra in (("pm", []), ("wk", ["--executor", "workers"])):
        args = [*cli, *extra, *(a for o in [*base, f"runs_dir={tmp_path / name}", "model.down=none",
                                           "model.up=bilinear"] for a in ("--set", o))]
        r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    names = [sorted(p.name for p in (tmp_path / n).iterdir() if p.name != "manifests") for n in ("pm", "wk")]
    assert names[0] == names[1] and len(names[0]) >= 2  # the same run ids
    for name in names[0]:
        pm, wk = tmp_path / "pm" / name, tmp_path / "wk" / name
        assert (pm / "01_train.executed.ipynb").exists() and not (wk / "01_train.executed.ipynb").exists()
        assert (wk / "train.log").exists() and (wk / "model_best.pt").exists()
        acc = [json.loads((d / "metrics.json").read_text())["protocols"]["clean"]["test_acc"] for d in (pm, wk)]
        assert acc[0] == acc[1]
        assert json.loads((wk / "env.json").read_text())["torch_threads"] == 1

    def job(over: dict) -> Job:
        cfg = make_config("demo", {**dict(o.split("=", 1) for o in base), "runs_dir": str(tmp_path / "bad"),
                                   **over})
        return Job(cfg, cfg.seed)

    with WorkerPool(1, threads=1) as pool:
        missing = job({"seed": 1})
        missing.config.synthfer_root = str(tmp_path / "nowhere")  # fails inside the worker
        ok, where = pool(missing, {})
        assert not ok and "nowhere" in (Path(where) / "failed.log").read_text()
        killer = job({"seed": 2})
        killer.config.lr = float("nan")  # not a crash: the NaN guard stops the run with an error
        ok, where = pool(killer, {})
        assert not ok and (Path(where) / "failed.log").exists()
        ex = pool._ex  # noqa: SLF001
        pid = next(iter(ex._processes))  # noqa: SLF001
        __import__("os").kill(pid, 9)
        ok, where = pool(job({"seed": 3}), {})  # the dead worker fails this run ...
        assert not ok and "died" in (Path(where) / "failed.log").read_text()
        ok, _ = pool(job({"seed": 4}), {})  # ... and a fresh pool trains the next
        assert ok


def test_notebook_training_under_a_scratch_folder_never_writes_the_run_store(tmp_path, monkeypatch):
    """make test's nbval pass executes 01_train with its defaults: the run goes to the scratch folder."""
    from fer_study.notebooks import train_config

    monkeypatch.setenv("FER_STUDY_SCRATCH", str(tmp_path))
    for ov in ({"epochs": 1}, ["epochs=1"]):
        assert train_config("demo", ov).runs_dir == str(tmp_path / "runs")
    assert train_config("demo", {"runs_dir": str(tmp_path / "mine")}).runs_dir == str(tmp_path / "mine")
    monkeypatch.delenv("FER_STUDY_SCRATCH")
    assert Path(train_config("demo", {"epochs": 1}).runs_dir).resolve() == (ROOT / "results" / "runs").resolve()


def test_gpu_workers_never_share_a_device(tmp_path):
    """``--devices cuda:0 cuda:1``: a run takes a device that is free, not the device of its submission
    slot. Here the runs on one device finish at once and the other's run is slow; with slot-based
    assignment the third run would join the busy device."""
    import threading
    import time

    from fer_study.runner import run_grid

    over = [f"runs_dir={tmp_path / 'runs'}"]
    busy: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()
    slow_taken = threading.Event()

    def fake(job, env):  # trains nothing; the first run to start holds its device for 0.5 s
        d = job.config.device
        with lock:
            busy[d] = busy.get(d, 0) + 1
            if busy[d] > 1:
                overlaps.append(f"{job.run_id} on {d}")
            slow = not slow_taken.is_set()
            slow_taken.set()
        time.sleep(0.5 if slow else 0.01)
        with lock:
            busy[d] -= 1
        return False, str(tmp_path)

    summary = run_grid("table2", "demo", [0], over, devices=["cuda:0", "cuda:1"], log=lambda *_: None, train=fake)
    assert len(summary["failed"]) == 6 and not overlaps, overlaps


def test_rafdb_twin_is_rewritten_when_its_source_changes(tmp_path):
    """The demo's RAF-DB-layout twin (Table 4's RAF-DB row) follows its source's settings: a second call
    with the same n keeps it, another n rewrites source and layout (no stale copy is read)."""
    from fer_study.data.rafdb import load_rafdb
    from fer_study.study import ensure_rafdb_twin

    basic = ensure_rafdb_twin(tmp_path / "twin", n=160)
    label = basic / "EmoLabel" / "list_patition_label.txt"
    first = label.read_text()
    n_first = len(first.splitlines())
    assert 0 < n_first <= 160 and (basic / "twin.json").is_file()
    mtime = label.stat().st_mtime_ns
    assert ensure_rafdb_twin(tmp_path / "twin", n=160) == basic and label.stat().st_mtime_ns == mtime
    ensure_rafdb_twin(tmp_path / "twin", n=240)
    n_second = len(label.read_text().splitlines())
    assert n_second > n_first
    tr, te = load_rafdb(basic, "train", downscale_to=48), load_rafdb(basic, "test", downscale_to=48)
    assert len(tr) + len(te) == n_second
    import inspect

    from fer_study.study import demo

    assert inspect.signature(demo).parameters["rafdb_n"].default == 1500


def test_two_workers_start_on_different_sr_caches():
    """The demo's grid with 2 workers: the two runs started first read different SR caches (the RAF-DB
    twin's and SynthFER's), so neither waits for the other's cache to be built; after them the order is
    by decreasing cost; one worker keeps plain longest-first order."""
    from fer_study.runner import longest_first, relative_cost, sr_cache_input
    from fer_study.runs import PlannedRun

    jobs = plan("all", "demo", [0, 1, 2])
    items = [(i, j, PlannedRun(j.run_id, j.seed, j.labels)) for i, j in enumerate(jobs, 1)]
    one = longest_first(items)
    two = longest_first(items, workers=2)
    assert sorted(i for i, _, _ in two) == sorted(i for i, _, _ in one) == list(range(1, len(jobs) + 1))
    keys = [sr_cache_input(j.config) for _, j, _ in two[:2]]
    assert None not in keys and keys[0] != keys[1], keys
    assert {k[0] for k in keys} == {"rafdb", "synthfer"}
    assert one == sorted(items, key=lambda it: -relative_cost(it[1].config))  # one worker: plain longest first
    assert sr_cache_input(one[0][1].config) == sr_cache_input(one[1][1].config)  # what two workers avoid
    assert longest_first(items[:1], workers=2) == items[:1] and longest_first([], workers=2) == []
    same = [it for it in items if sr_cache_input(it[1].config) == keys[1]]  # all on one cache: plain order
    assert longest_first(same, workers=2) == longest_first(same)
    assert longest_first(items, workers=0) == one
    costs = [relative_cost(j.config) for _, j, _ in two[2:]]
    assert costs == sorted(costs, reverse=True)
    oracle = next(j for j in jobs if j.config.sr_backend == "oracle")
    assert sr_cache_input(oracle.config) is None


def test_report_runs_notebooks_two_at_a_time_and_fails_when_one_fails(monkeypatch):
    """fer-study report: every notebook of the profile is executed once, two at a time, the figure
    notebooks first; one failing notebook makes the report fail (the others still run)."""
    import threading
    import time

    from fer_study import study

    names = report_notebooks("demo")
    ran: list[str] = []
    running, peak = [0], [0]
    lock = threading.Lock()

    def fake(name, params, log=print, output=None, publish=True):
        with lock:
            ran.append(name)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return name != names[0]

    monkeypatch.setattr(study, "run_notebook", fake)
    assert study.report("demo", [0], log=lambda *_: None, jobs=2) is False
    assert sorted(ran) == sorted(names) and peak[0] == 2 and set(ran[:2]) == set(names[-2:])
    monkeypatch.setattr(study, "run_notebook", lambda *a, **k: True)
    assert study.report("demo", [0], log=lambda *_: None, jobs=2) is True
