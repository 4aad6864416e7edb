"""Fault injection into a run (issue: reliability): a real SIGKILL at a random moment of training,
and an interruption between any two steps of the finishing sequence. Each time the re-run
completes, its results equal those of an uninterrupted run, and the best model is there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_study.config import make_config
from fer_study.runs import Run
from fer_study.training import train

OVER = {"model.backbone": "tiny_swin_t", "model.up": "bilinear", "model.down": "ltr", "model.sr_size": 64,
        "model.ltr_n": 8, "epochs": 3, "progress": False, "batch_size": 32, "max_train": 160}


def _over(root: Path, runs: Path) -> list[str]:
    return [f"{k}={v}" for k, v in {"synthfer_root": root, "runs_dir": runs, "cache_dir": runs.parent / "cache",
                                     **OVER}.items()]


def _same_results(a: Run, b: Run) -> None:
    assert b.is_finished() and b.file("model_best.pt").stat().st_size > 0
    assert a.metrics()["protocols"] == b.metrics()["protocols"]
    assert a.file("predictions.csv").read_text() == b.file("predictions.csv").read_text()
    assert not b.file("checkpoint.pt").exists()


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory) -> Run:
    runs = tmp_path_factory.mktemp("ref") / "runs"
    return Run(train(make_config("demo", _over(synth_root, runs))))


@pytest.mark.parametrize("step", ["model", "predictions", "metrics"])
def test_interrupted_finish_is_completed_by_a_rerun(synth_root, tmp_path, reference, monkeypatch, step):
    """Stop right after ``step`` of Run.finish (model -> predictions -> metrics -> checkpoint removed)."""
    import fer_study.runs as runs_mod

    cfg = make_config("demo", _over(synth_root, tmp_path / "runs"))
    real_json, real_text, real_save = runs_mod.write_json, runs_mod.write_text, runs_mod.torch_save_atomic

    def stop_after(fn, name):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            if any(isinstance(x, Path) and x.name == name for x in a):
                raise KeyboardInterrupt(f"killed after {name}")
            return out
        return wrapped

    target = {"model": "model_best.pt", "predictions": "predictions.csv", "metrics": "metrics.json"}[step]
    monkeypatch.setattr(runs_mod, "torch_save_atomic", stop_after(real_save, target))
    monkeypatch.setattr(runs_mod, "write_text", stop_after(real_text, target))
    monkeypatch.setattr(runs_mod, "write_json", stop_after(real_json, target))
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    run = Run(Path(cfg.runs_dir) / cfg.run_id())
    # before metrics.json the run is not finished and resumes; after it, it is finished and complete
    assert run.is_finished() == (step == "metrics")
    assert run.file("model_best.pt").is_file()
    train(cfg)
    _same_results(reference, run)


def test_sigkill_at_a_random_moment_then_rerun_equals_uninterrupted(synth_root, tmp_path, reference):
    """A real ``kill -9`` of ``fer-study train`` at a (seeded) random moment of its training."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "fer_study.cli", "train", "--profile", "demo"]
    for o in _over(synth_root, runs):
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads())}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    full = time.perf_counter() - t0
    cfg = make_config("demo", _over(synth_root, runs))
    run = Run(runs / cfg.run_id())
    _same_results(reference, run)  # the subprocess itself reproduces the reference
    import shutil

    shutil.rmtree(run.path)
    delay = random.Random(12345).uniform(0.5, 0.9) * full
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_state = run.state()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _same_results(reference, run)
    assert killed_state in ("partial", "finished", "absent")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class _Boom:
    """Unpickling this would run code (os.getpid stands in for anything worse)."""

    def __reduce__(self):
        return (os.getpid, ())


def test_checkpoint_numbers_plain_and_loaded_without_running_code(tmp_path):
    """Checkpoints are read with torch's weights_only unpickler: numpy scalars are stored as Python
    numbers (and older checkpoints holding numpy scalars still load), while a file holding anything
    else - an object whose unpickling would run code, or bytes that are no checkpoint - is refused
    with an error naming the file."""
    import numpy as np
    import torch

    from fer_study.errors import RunError

    run = Run(tmp_path / "r")
    run.path.mkdir()
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(2)).state_dict()  # an OrderedDict with _metadata
    state = {"model": model, "epoch": np.int64(1),
             "history": [{"valid_acc": np.float64(0.5), "seconds": np.float32(1.5), "ok": np.bool_(True)}],
             "best": {"valid_acc": np.float64(0.5), "pair": (np.float64(1.0), 2)}}
    run.save_checkpoint(state)
    ck = run.load_checkpoint()
    assert type(ck["epoch"]) is int and type(ck["history"][0]["valid_acc"]) is float
    assert type(ck["history"][0]["ok"]) is bool and ck["best"]["pair"] == (1.0, 2)
    assert type(ck["model"]) is type(model) and ck["model"]._metadata == model._metadata
    assert torch.equal(ck["model"]["0.running_var"], torch.ones(2))

    torch.save(state, run.file("checkpoint.pt"))  # as written before the conversion: numpy scalars inside
    old = run.load_checkpoint()
    assert old["history"][0]["valid_acc"] == 0.5 and old["epoch"] == 1

    torch.save({"model": {}, "epoch": _Boom()}, run.file("checkpoint.pt"))
    with pytest.raises(RunError, match=r"checkpoint\.pt: cannot read this run's checkpoint \(UnpicklingError: "
                                       r".*getpid.*delete it"):
        run.load_checkpoint()

    run.file("checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"checkpoint\.pt: not a checkpoint .*damaged or truncated.*delete it"):
        run.load_checkpoint()


def test_plain_keeps_container_types():
    """The numpy-scalar conversion of checkpoints keeps named tuples and OrderedDicts (with _metadata)."""
    from collections import OrderedDict, namedtuple

    import numpy as np

    from fer_study.runs import _plain

    Pair = namedtuple("Pair", "a b")
    od = OrderedDict(x=np.float32(2.5))
    od._metadata = {"": {"version": 2}}
    out = _plain({"p": Pair(np.int64(1), [np.float64(0.5)]), "od": od, "t": (np.bool_(False),)})
    assert out["p"] == Pair(1, [0.5]) and type(out["p"]) is Pair and type(out["p"].a) is int
    assert type(out["od"]) is OrderedDict and out["od"]._metadata == {"": {"version": 2}} and out["od"]["x"] == 2.5
    assert out["t"] == (False,) and type(out["t"][0]) is bool
