"""Stale inputs (issue: reliability): a finished run is reused only while its data files and weights
files are those it was trained on. The trainer, the grid runner and the report share the check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fer_study.cli import main
from fer_study.config import make_config
from fer_study.data.synth import SynthConfig, generate
from fer_study.inputs import StaleRunError, changes, data_fingerprint, run_inputs
from fer_study.models.facesr import FaceSR
from fer_study.models.sr import save_facesr
from fer_study.report import build_table
from fer_study.runner import run_grid
from fer_study.runs import Run
from fer_study.training import train

FAST = {"model.backbone": "tiny_swin_t", "sr_backend": "bicubic", "sr_weights": "none", "model.ltr_n": 8,
        "epochs": 1, "progress": False, "batch_size": 32, "max_train": 64}


def _overrides(root: Path, tmp: Path, **over) -> list[str]:
    d = {"synthfer_root": root, "runs_dir": tmp / "runs", "cache_dir": tmp / "cache", **FAST, **over}
    return [f"{k}={v}" for k, v in d.items()]


def _in_process(job, env):  # the grid runner's executor, without papermill
    train(job.config)
    return job.run.is_finished(), str(job.run.path)


def test_changes_counts_what_can_be_checked(tmp_path):
    rec = {"data": {"sha256": "a", "files": 2}, "weights": {"sr_weights": {"path": "w.pt", "sha256": "x"}}}
    assert changes(rec, {"data": {"sha256": "a", "files": 2}, "weights": {"sr_weights": {"sha256": "x"}}}) == []
    assert changes(None, {"data": {}}) == ["its inputs were not recorded (trained by an older fer-study)"]
    # an absent data root or weights file cannot be checked: not a change
    assert changes(rec, {"data": {"missing": "/x"}, "weights": {"sr_weights": {"path": "w.pt", "missing": True}}}) == []
    ch = changes(rec, {"data_root": "/d", "data": {"sha256": "b", "files": 3},
                       "weights": {"sr_weights": {"path": "w.pt", "sha256": "y"}}})
    assert ch == ["the data at /d changed: 2 files then, 3 now", "sr_weights (w.pt) changed"]
    assert data_fingerprint("ferplus", tmp_path / "nope") == {"missing": str(tmp_path / "nope")}


def test_fingerprint_follows_content_not_time(tmp_path):
    root = tmp_path / "d"
    generate(root, SynthConfig(n=120, seed=1, hr_size=64, n_hr=0))
    a = data_fingerprint("synthfer", root)
    assert a["files"] == 3  # fer2013.csv + fer2013new.csv (csv form) + the renders hr_64.npy
    generate(root, SynthConfig(n=120, seed=1, hr_size=64, n_hr=0))  # same content rewritten
    assert data_fingerprint("synthfer", root)["sha256"] == a["sha256"]
    new = root / "fer2013new.csv"
    new.write_text(new.read_text().replace(",0,", ",1,", 1))
    assert data_fingerprint("synthfer", root)["sha256"] != a["sha256"]


def test_regenerated_data_stops_train_grid_and_report(tmp_path, monkeypatch, capsys):
    root = tmp_path / "synth"
    generate(root, SynthConfig(n=240, seed=1, hr_size=64, n_hr=0))
    over = _overrides(root, tmp_path)
    cfg = make_config("demo", over)
    d = Run(train(cfg))
    assert d.inputs()["data"]["sha256"] == data_fingerprint("synthfer", root)["sha256"]
    assert train(cfg) == d.path  # unchanged inputs: skipped
    s = run_grid("table2", "demo", [cfg.seed], over, log=lambda *_: None, train=_in_process)
    assert not s["failed"] and len(s["done"]) + len(s["skipped"]) == 5  # sr_backend=bicubic: the oracle cell is (d)'s run
    build_table("table2", "demo", [cfg.seed], over)

    generate(root, SynthConfig(n=200, seed=1, hr_size=64, n_hr=0))  # regenerated at the same root
    with pytest.raises(StaleRunError, match=r"trained on other inputs: the data at .* changed.*--force"):
        train(cfg)
    assert main(["train", "--profile", "demo", *sum((["--set", o] for o in over), [])]) == 2
    assert "error: run " in capsys.readouterr().err
    lines: list[str] = []
    with pytest.raises(StaleRunError, match=r"5 finished or partly trained run\(s\) were trained on other inputs.*--retrain-stale"):
        run_grid("table2", "demo", [cfg.seed], over, log=lines.append, train=_in_process)
    assert sum("STALE" in x for x in lines) == 5
    with pytest.raises(StaleRunError, match="fills table2"):
        build_table("table2", "demo", [cfg.seed], over)
    dry = run_grid("table2", "demo", [cfg.seed], over, dry_run=True, log=lambda *_: None)
    assert len(dry["stale"]) == 5 and not dry["skipped"]

    s = run_grid("table2", "demo", [cfg.seed], over, log=lambda *_: None, train=_in_process, retrain_stale=True)
    assert len(s["done"]) == 5 and not s["failed"]
    assert Run(d.path).metrics()["n"]["train"] + Run(d.path).metrics()["n"]["test"] < 200
    build_table("table2", "demo", [cfg.seed], over)  # fresh runs: reported
    assert train(cfg) == d.path


def test_retrained_sr_weights_make_the_run_stale(tmp_path, synth_root):
    w = tmp_path / "facesr.pt"
    torch.manual_seed(0)
    save_facesr(FaceSR(scale=2, nf=8, blocks=1), w)
    over = _overrides(synth_root, tmp_path, **{"model.up": "sr", "model.down": "ltr", "sr_backend": "facesr",
                                               "sr_weights": w})
    cfg = make_config("demo", over)
    assert set(run_inputs(cfg)["weights"]) == {"sr_weights"}
    train(cfg)
    torch.manual_seed(1)
    save_facesr(FaceSR(scale=2, nf=8, blocks=1), w)  # retrained into the same path
    with pytest.raises(StaleRunError, match=r"sr_weights \(.*facesr.pt\) changed"):
        train(cfg)
    assert Path(train(cfg, force=True)).is_dir()
    assert Run(Path(cfg.runs_dir) / cfg.run_id()).input_changes(run_inputs(cfg)) == []


def test_partly_trained_run_with_changed_inputs_is_stale_too(tmp_path):
    """A run interrupted with a checkpoint, then its data regenerated: resuming would mix two data sets.
    train refuses; the grid lists it and, with --retrain-stale, trains it from scratch."""
    from fer_study.training import TrainHooks

    root = tmp_path / "synth"
    generate(root, SynthConfig(n=240, seed=1, hr_size=64, n_hr=0))
    over = _overrides(root, tmp_path, epochs=2)
    cfg = make_config("demo", over)

    def stop(epoch: int) -> None:
        raise KeyboardInterrupt("killed after epoch 1")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, hooks=TrainHooks(after_epoch=stop))
    run = Run(Path(cfg.runs_dir) / cfg.run_id())
    assert run.state() == "partial" and run.file("checkpoint.pt").is_file()
    generate(root, SynthConfig(n=200, seed=1, hr_size=64, n_hr=0))
    with pytest.raises(StaleRunError, match="It is partly trained"):
        train(cfg)
    lines: list[str] = []
    with pytest.raises(StaleRunError, match=r"1 finished or partly trained run\(s\)"):
        run_grid("table2", "demo", [cfg.seed], over, log=lines.append, train=_in_process)
    assert not (tmp_path / "runs" / "manifests").exists()  # stopped before anything ran
    s = run_grid("table2", "demo", [cfg.seed], over, log=lambda *_: None, train=_in_process, retrain_stale=True)
    assert len(s["done"]) == 5 and run.is_finished() and run.input_changes(run_inputs(cfg)) == []
    assert len(run.history()) == 2  # trained from scratch: both epochs on the new data
