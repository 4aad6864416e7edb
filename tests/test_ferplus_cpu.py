"""The ``ferplus-cpu`` profile (Table 2 on real FERPlus at CPU scale): it resolves, plans the grid,
publishes to its own folder, and one miniature resizer run trains on the real FERPlus copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_study.config import FERPLUS_CPU_FACESR, make_config
from fer_study.paths import figure_name, output_dir, project_root
from fer_study.runner import plan
from fer_study.sr_train import folder_pairs, split_pairs
from fer_study.tables import FIGURES, TABLES, report_notebooks, tables_for

ROOT = project_root()


def test_the_profile_resolves_to_real_ferplus_with_its_stand_ins_and_own_run_store() -> None:
    c = make_config("ferplus-cpu")
    assert (c.dataset, c.label_mode, c.prior, c.model.num_classes) == ("ferplus", "majority", "psr", 8)
    assert (c.sr_backend, c.sr_weights, c.model.sr_size, c.model.img_size) == ("facesr", FERPLUS_CPU_FACESR, 96, 48)
    assert (c.model.backbone, c.model.stem) == ("cpu_swin_s", "conv_wide")
    assert c.runs_dir == "results/ferplus_cpu/runs"
    # the demo's outputs are not this profile's
    assert make_config("demo").runs_dir == "results/runs"


def test_the_stand_ins_are_the_demo_s_tiny_swins_under_their_own_names() -> None:
    """cpu_swin_s / cpu_swin_b are tiny_swin_s / tiny_swin_b (one definition: they cannot drift apart),
    built as the profile builds them (its ``conv_wide`` stem, 48 px input) with the backbone parameter
    counts its committed runs recorded (results/ferplus_cpu/run_records/*/metrics.json: 821,758 and
    1,227,832; README: 0.82 M and 1.23 M)."""
    from fer_study.models.backbones import BACKBONES, build_backbone, count_parameters

    assert BACKBONES["cpu_swin_s"] == BACKBONES["tiny_swin_s"] and BACKBONES["cpu_swin_b"] == BACKBONES["tiny_swin_b"]
    m = make_config("ferplus-cpu").model
    counts = {n: count_parameters(build_backbone(n, img_size=m.img_size, stem=m.stem).model)
              for n in ("cpu_swin_s", "cpu_swin_b")}
    assert counts == {"cpu_swin_s": 821_758, "cpu_swin_b": 1_227_832}
    records = sorted((Path(__file__).parents[1] / "results/ferplus_cpu/run_records").glob("*/metrics.json"))
    assert len(records) == 15
    for f in records:
        backbone = json.loads(f.with_name("config.json").read_text())["model"]["backbone"]
        assert json.loads(f.read_text())["parameters"]["backbone"]["total"] == counts[backbone], f


def test_the_grid_is_table2_settings_a_to_e_times_three_seeds() -> None:
    jobs = plan("all", "ferplus-cpu", [0, 1, 2], ["ferplus_root=/nowhere/ferplus"])
    assert [t.name for t in tables_for("all", "ferplus-cpu")] == ["table2"]
    assert len(jobs) == 15  # the oracle cell needs SynthFER's renders: not planned on real faces
    cells = sorted({label for j in jobs for label in j.labels})
    assert cells == [f"table2:{k}" for k in "abcde"]
    by_cell = {(j.labels[0], j.seed): j.config for j in jobs}
    a, b, c, d, e = (by_cell[(f"table2:{k}", 0)] for k in "abcde")
    assert (a.model.up, a.model.down, a.model.backbone) == ("bilinear", "none", "cpu_swin_s")
    assert (b.model.up, b.model.down) == ("bilinear", "ltr")
    assert (c.model.up, c.model.down) == ("sr", "bilinear")
    assert (d.model.up, d.model.down, d.model.stn) == ("sr", "ltr", False)
    assert (e.model.backbone, e.model.stn) == ("cpu_swin_b", True)
    assert {j.config.ferplus_root for j in jobs} == {"/nowhere/ferplus"}
    assert len({j.run_id for j in jobs}) == 15
    # a named table still plans alone
    assert len(plan("table2", "ferplus-cpu", [0])) == 5


def test_dry_run_plans_the_grid_from_the_command_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "fer_study.cli", "run", "table2", "--profile", "ferplus-cpu",
                        "--seeds", "0", "1", "2", "--set", f"ferplus_root={tmp_path}", "--set",
                        f"runs_dir={tmp_path / 'runs'}", "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ids = [line for line in r.stdout.splitlines() if "ferplus-cpu_swin_" in line]
    assert len(ids) == 15, r.stdout
    assert "no manifest written" in r.stdout
    assert list(tmp_path.rglob("*")) == []  # no run directory, no manifest: nothing under runs_dir (or the root)


def test_reports_publish_to_their_own_folder_and_figure_name() -> None:
    assert output_dir("tables", True, ROOT, "ferplus-cpu") == ROOT / "results/ferplus_cpu"
    assert output_dir("tables", True, ROOT, "demo") == ROOT / "results/tables"
    assert output_dir("tables", False, ROOT, "ferplus-cpu") != ROOT / "results/ferplus_cpu"  # scratch
    assert figure_name("figure2", "ferplus-cpu") == "figure2_ferplus_cpu"
    assert figure_name("figure2", "demo") == "figure2"
    assert report_notebooks("ferplus-cpu") == [TABLES["table2"].notebook, FIGURES["figure2"].notebook]
    assert report_notebooks("demo") == report_notebooks()


def test_sr_pairs_from_48px_faces_learn_24_to_48(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
    lr, hr = folder_pairs(tmp_path, lr_size=24, scale=2)
    assert lr.shape == (5, 24, 24) and hr.shape == (5, 48, 48)
    # the HR target is the face itself (no resampling at its own size)
    assert np.array_equal(hr[0], np.asarray(Image.open(tmp_path / "f0.png")))
    tr, ho = split_pairs(5, 0.0)
    assert len(tr) == 5 and len(ho) == 0
    tr, ho = split_pairs(5, 1.0)
    assert len(tr) == 0 and len(ho) == 5
    with pytest.raises(ValueError, match="holdout=1.5"):
        split_pairs(5, 1.5)
    tr, ho = split_pairs(5, 0.99)  # rounds to every pair held out, though below 1
    assert len(tr) == 0 and len(ho) == 5
    from fer_study.errors import ConfigError
    from fer_study.sr_train import train_facesr

    with pytest.raises(ConfigError, match=r"no training pairs left: holdout=0.99 holds out 5 of 5 pairs"):
        train_facesr(lr[tr], hr[tr], tmp_path / "x.pt", holdout=0.99, n_pairs=len(lr), progress=False)
    with pytest.raises(ConfigError, match="no training pairs left: 0 pairs given"):
        train_facesr(lr[tr], hr[tr], tmp_path / "x.pt", progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_scoring_facesr_on_its_training_folder_warns_unless_on_its_own_held_out_pairs(tmp_path: Path) -> None:
    """``sr eval`` of a facesr on the folder it was trained on: silent on the very pairs training held out
    (same holdout and seed, recorded in the weights), a warning otherwise (they include training pairs)."""
    from fer_study.study import sr_eval, sr_train

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(faces / f"f{i}.png")
    w = tmp_path / "fsr.pt"
    info = sr_train(str(w), folder=str(faces), lr_size=24, holdout=0.5, seed=3, steps=2, batch_size=2, nf=4,
                    blocks=1)
    assert info["holdout"] == 0.5 and info["seed"] == 3
    logs: list[str] = []
    sr_eval([f"facesr={w}"], folder=str(faces), lr_size=24, holdout=0.5, seed=3, log=logs.append)
    assert not [m for m in logs if m.startswith("warning")]
    sr_eval([f"facesr={w}"], folder=str(faces), lr_size=24, holdout=1.0, log=logs.append)
    assert [m for m in logs if m.startswith("warning") and "holdout 0.5, seed 3" in m]


def test_a_miniature_resizer_run_trains_on_real_ferplus(ferplus_root: Path, tmp_path: Path) -> None:
    """Setting (d) (facesr 48 -> 96, LTR back to 48) on 300 real training faces, 1 epoch, with a small facesr
    trained here on 24 -> 48 pairs of real training faces; evaluated on the full valid and test splits."""
    from fer_study.study import sr_train
    from fer_study.training import train

    w = tmp_path / "facesr.pt"
    info = sr_train(w, folder=str(ferplus_root / "FER2013Train"), scale=2, lr_size=24, holdout=0.0, steps=5,
                    batch_size=4, nf=8, blocks=1)
    assert info["lr_size"] == 24 and info["scale"] == 2 and info["train_pairs"] > 20000
    ov = {"ferplus_root": str(ferplus_root), "sr_weights": str(w), "runs_dir": str(tmp_path / "runs"),
          "cache_dir": str(tmp_path / "sr"), "max_train": 300, "epochs": 1, "warmup_steps": 2,
          "progress": False, "model.ltr_n": 4}
    cfg = make_config("ferplus-cpu", ov)
    assert (cfg.model.up, cfg.model.down) == ("sr", "ltr")
    run = Path(train(cfg))
    m = json.loads((run / "metrics.json").read_text())
    assert m["finished"] and m["dataset"] == "ferplus" and not m.get("synthetic")
    assert m["n"]["train"] == 300 and m["n"]["test"] > 3000
    acc = m["protocols"]["clean"]["test_acc"]
    assert 0.0 < acc <= 1.0


def test_a_parallel_grid_starts_its_longest_runs_first(tmp_path: Path) -> None:
    """With 2 workers the grid queues the costliest runs first (the STN + LTR setting (e), then the LTR
    settings), so the runs left at the end are the short ones; one worker runs them in plan order."""
    from fer_study.runner import longest_first, relative_cost
    from fer_study.runs import PlannedRun

    over = [f"ferplus_root={tmp_path}", f"runs_dir={tmp_path / 'runs'}"]
    jobs = plan("table2", "ferplus-cpu", [0, 1], over)
    items = [(i, j, PlannedRun(j.run_id, j.seed, j.labels)) for i, j in enumerate(jobs, 1)]
    order = [j.labels[0] for _, j, _ in longest_first(items)]
    assert order == ["table2:e"] * 2 + ["table2:b"] * 2 + ["table2:d"] * 2 + ["table2:a"] * 2 + ["table2:c"] * 2
    costs = {j.labels[0]: relative_cost(j.config) for j in jobs}
    assert costs["table2:e"] > costs["table2:d"] == costs["table2:b"] > costs["table2:c"] == costs["table2:a"]

    started: list[str] = []

    def fake(job, env):  # records the start order; trains nothing
        started.append(job.labels[0])
        return False, str(tmp_path)

    from fer_study.runner import run_grid

    run_grid("table2", "ferplus-cpu", [0], over, jobs=1, log=lambda *_: None, train=fake)
    assert started == [f"table2:{k}" for k in "abcde"]  # one worker: plan order


def test_two_workers_start_the_two_costliest_runs_first(tmp_path: Path) -> None:
    """``run_grid(jobs=2)`` itself (not only :func:`longest_first`) hands its two workers the two
    costliest runs first: setting (e) and one of the LTR settings (b, d), not plan order's (a, b)."""
    import threading

    from fer_study.runner import relative_cost, run_grid

    over = [f"ferplus_root={tmp_path}", f"runs_dir={tmp_path / 'runs'}"]
    started: list[str] = []
    lock = threading.Lock()
    both_started = threading.Barrier(2)

    def fake(job, env):  # records the start order; trains nothing
        with lock:
            started.append(job.labels[0])
            n = len(started)
        if n <= 2:  # the first two wait for each other: no third run starts before both are recorded
            both_started.wait(timeout=30)
        return False, str(tmp_path)

    summary = run_grid("table2", "ferplus-cpu", [0], over, jobs=2, log=lambda *_: None, train=fake)
    assert sorted(started) == [f"table2:{k}" for k in "abcde"] and len(summary["failed"]) == 5
    first_two = set(started[:2])
    assert "table2:e" in first_two and first_two - {"table2:e"} <= {"table2:b", "table2:d"}, started
    cost = {j.labels[0]: relative_cost(j.config) for j in plan("table2", "ferplus-cpu", [0], over)}
    assert min(cost[k] for k in first_two) >= max(cost[k] for k in started[2:])


def test_the_profile_refuses_tables_it_is_not_sized_for() -> None:
    from fer_study.errors import ConfigError

    with pytest.raises(ConfigError, match="ferplus-cpu profile runs table2 only"):
        plan("table1", "ferplus-cpu", [0])
    r = subprocess.run([sys.executable, "-m", "fer_study.cli", "run", "table3", "--profile", "ferplus-cpu",
                        "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "table2 only" in r.stderr and "Traceback" not in r.stderr


def test_a_custom_tables_folder_keeps_the_profiles_apart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_STUDY_TABLES_DIR", str(tmp_path))
    assert output_dir("tables", True, ROOT, "demo") == tmp_path
    assert output_dir("tables", True, ROOT, "ferplus-cpu") == tmp_path / "ferplus_cpu"


def test_bad_sr_pair_settings_are_clear_errors(tmp_path: Path) -> None:
    from fer_study.errors import ConfigError, DataError
    from fer_study.sr_train import check_holdout

    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "face_a.png")
    with pytest.raises(ConfigError, match=r"face_a.png: 48x48 px, smaller than the 96 px HR target"):
        folder_pairs(tmp_path, lr_size=48, scale=2)  # would train facesr to imitate an upsampling
    with pytest.raises(ConfigError, match="--lr-size 0"):
        folder_pairs(tmp_path, lr_size=0, scale=2)
    with pytest.raises(ConfigError, match="SSIM"):
        folder_pairs(tmp_path, lr_size=4, scale=2)
    with pytest.raises(DataError, match="no such folder"):
        folder_pairs(tmp_path / "missing", lr_size=24, scale=2)
    with pytest.raises(ConfigError, match="none left to train on"):
        check_holdout(1.0, "train")
    with pytest.raises(ConfigError, match="no pair is held out"):
        check_holdout(0.0, "eval")
    r = subprocess.run([sys.executable, "-m", "fer_study.cli", "sr", "eval", "--folder", str(tmp_path), "--lr-size",
                        "24", "--holdout", "0"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--holdout 0" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "fer_study.cli", "sr", "eval", "--folder", str(tmp_path / "missing"),
                        "--lr-size", "24", "--holdout", "1", "--model", f"facesr={tmp_path / 'no.pt'}"],
                       capture_output=True, text=True, cwd=ROOT)  # the weights are checked before the folder
    assert r.returncode == 2 and "weights file" in r.stderr and "no.pt not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_records_keep_a_stores_results_without_weights(tmp_path: Path) -> None:
    """The report of a profile with its own outputs copies each finished run's small files (config, env,
    inputs, metrics, history, predictions) and the manifests beside the table; weights stay behind."""
    from fer_study.runs import RECORD_FILES, Manifest, PlannedRun, RunStore

    store = RunStore(tmp_path / "runs")
    done, partial = store.run("r-done"), store.run("r-partial")
    for run in (done, partial):
        run.path.mkdir(parents=True)
        for name in RECORD_FILES:
            (run.path / name).write_text(f"{run.run_id} {name}")
    (done.path / "model_best.pt").write_bytes(b"weights")
    partial.file("metrics.json").unlink()  # not finished: no metrics
    store.write_manifest(Manifest("table2", "ferplus-cpu", [0], [], runs=[PlannedRun("r-done", 0, ["table2:a"]),
                                                                             PlannedRun("r-partial", 1, ["table2:a"])]))
    store.write_manifest(Manifest("table2", "demo", [0], [], runs=[PlannedRun("r-demo", 0, ["table2:a"])]))
    out = tmp_path / "records"
    assert store.export_records(out, "ferplus-cpu") == ["r-done"]
    assert sorted(p.name for p in (out / "r-done").iterdir()) == sorted(RECORD_FILES)
    assert (out / "r-done" / "metrics.json").read_text() == "r-done metrics.json"
    assert not (out / "r-partial").exists() and not list(out.rglob("*.pt"))
    assert len(list((out / "manifests").glob("*.json"))) == 1  # the demo's manifest is not this profile's
    assert store.export_records(out, "ferplus-cpu", seeds=[1]) == []  # r-done is seed 0
    assert not (out / "r-done").exists()  # replaced as a whole: no record of a run the export does not list
    done.file("metrics.json").unlink()  # e.g. retrained with --retrain-stale: unfinished again
    assert store.export_records(out, "ferplus-cpu") == [] and not (out / "r-done").exists()
    assert not list(tmp_path.glob(".records*"))  # no temporary folder left beside it
