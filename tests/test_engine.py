from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fer_study.config import TrainConfig, make_config
from fer_study.errors import ConfigError, RunError
from fer_study.runs import Run
from fer_study.training import TrainHooks, train

ROOT = Path(__file__).resolve().parents[1]


def load_metrics(run_dir: Path) -> dict:
    return Run(Path(run_dir)).metrics()


def is_finished(run_dir: Path) -> bool:
    return Run(Path(run_dir)).is_finished()


def _overrides(synth_root: Path, tmp: Path, **over) -> dict[str, str]:
    base = {"synthfer_root": str(synth_root), "runs_dir": str(tmp / "runs"), "cache_dir": str(tmp / "cache"),
            "model.backbone": "tiny_swin_t", "model.up": "bilinear", "model.down": "ltr", "model.sr_size": 96,
            "model.ltr_n": 16, "epochs": 2, "progress": False, "batch_size": 32}
    base.update(over)
    return {k: str(v) for k, v in base.items()}


def _cfg(synth_root: Path, tmp: Path, **over) -> TrainConfig:
    return make_config("demo", _overrides(synth_root, tmp, **over))


def test_run_id_ignores_execution_keys_and_tracks_result_keys(synth_root, tmp_path):
    a = _cfg(synth_root, tmp_path)
    assert a.run_id() == _cfg(synth_root, tmp_path, device="cpu", progress=True).run_id()
    assert a.run_id() != _cfg(synth_root, tmp_path, seed=5).run_id()
    assert a.run_id() != _cfg(synth_root, tmp_path, sr_precision="bf16").run_id()
    # a key added later is hashed only away from its default, so earlier run ids stay valid
    d = a.to_dict()
    d.pop("sr_precision")
    assert TrainConfig.from_dict(d).run_id() == a.run_id()
    assert TrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))).run_id() == a.run_id()
    with pytest.raises(ConfigError):
        make_config("demo", ["no_such_key=1"])


def test_learns_above_chance_and_records_both_protocols(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path, epochs=6, **{"model.backbone": "tiny_swin_s", "model.down": "none"},
               max_train="null", authors_protocol="true")
    d = train(cfg)
    m = load_metrics(d)
    clean, authors = m["protocols"]["clean"], m["protocols"]["authors"]
    counts = [sum(r) for r in clean["confusion"]]
    majority = max(counts) / sum(counts)
    assert clean["test_acc"] > majority + 0.05, (clean["test_acc"], majority)
    assert 1 <= clean["selected_epoch"] <= 6 and 1 <= authors["best_epoch"] <= 6
    assert m["synthetic"] is True
    for f in ("config.json", "env.json", "history.csv", "predictions.csv", "model_best.pt"):
        assert (d / f).exists(), f
    hist = (d / "history.csv").read_text().strip().splitlines()
    assert len(hist) == 7 and "valid_acc_neutral" in hist[0] and "valid_mean_class_acc" in hist[0]
    assert len((d / "predictions.csv").read_text().strip().splitlines()) == m["n"]["test"] + 1
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] and env["git_sha"] and env["device"]
    # the kernel oneDNN ran, read back from oneDNN (None only where it cannot tell); no cap asked here
    k = env["onednn_kernels"]
    assert k["requested"] == "avx2" and k["set_here"] is False and k["env"] == "ALL"  # tests/conftest.py keeps ALL
    assert k["conv_impl"] is None or ":" in k["conv_impl"]
    assert env["optimizer_impl"] == "fused"  # PyTorch's fused AdamW on the CPU (fer_study.training.optim)
    # a finished run is skipped, not retrained
    mtime = (d / "metrics.json").stat().st_mtime_ns
    assert train(cfg) == d and (d / "metrics.json").stat().st_mtime_ns == mtime


def test_skipping_the_authors_protocol_leaves_the_clean_result_unchanged(synth_root, tmp_path):
    """authors_protocol=false (the demo's setting) drops the per-epoch test pass only: the clean protocol's
    model, predictions and accuracy are those of the same run with the pass (it has its own generator)."""
    with_auth = _cfg(synth_root, tmp_path, authors_protocol="true")
    without = _cfg(synth_root, tmp_path)  # the demo profile's own setting
    assert without.authors_protocol is False
    assert with_auth.run_id() != without.run_id()  # a key added later, hashed only away from its default (true)
    d = with_auth.to_dict()
    d.pop("authors_protocol")
    assert TrainConfig.from_dict(d).run_id() == with_auth.run_id()  # older runs keep their ids
    a, b = Run(train(with_auth)), Run(train(without))
    ma, mb = a.metrics(), b.metrics()
    assert mb["protocols"]["clean"] == ma["protocols"]["clean"]
    assert a.file("predictions.csv").read_bytes() == b.file("predictions.csv").read_bytes()
    assert ma["protocols"]["authors"]["test_acc"] is not None
    assert mb["protocols"]["authors"]["test_acc"] is None and mb["protocols"]["authors"]["best_epoch"] is None
    import pandas as pd

    assert pd.read_csv(b.file("history.csv"))["test_authors_acc"].isna().all()
    out = subprocess.run([sys.executable, "-m", "fer_study.cli", "evaluate", str(b.path)], capture_output=True, text=True)
    assert out.returncode == 0 and "authors : not run (authors_protocol=false)" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("amp,stn", [(False, False), (True, False), (False, True)], ids=["fp32", "bf16", "stn"])
def test_interrupted_then_resumed_equals_uninterrupted(synth_root, tmp_path, monkeypatch, amp, stn):
    """A run stopped after epoch 1 and resumed from its checkpoint ends with the same metrics and
    history as one that was not stopped, in fp32 and under bf16 autocast (the ferplus-cpu profile's
    setting; forced on here, so CPUs without native bf16 check it too, emulated), and with an STN in an
    optimiser group of its own (the demo's ``stn_lr_scale``)."""
    if amp:
        monkeypatch.setenv("FER_STUDY_CPU_BF16", "1")
    extra = {"model.stn": True} if stn else {}
    a = _cfg(synth_root, tmp_path / "a", epochs=3, max_train=256, amp=amp, **extra)
    b = _cfg(synth_root, tmp_path / "b", epochs=3, max_train=256, amp=amp, **extra)
    train(a)
    env = json.loads((Path(a.runs_dir) / a.run_id() / "env.json").read_text())
    assert env["bf16_autocast"] is amp

    def interrupt(epoch: int) -> None:
        if epoch == 0:
            raise KeyboardInterrupt("simulated interruption after epoch 1")

    with pytest.raises(KeyboardInterrupt):
        train(b, hooks=TrainHooks(after_epoch=interrupt))
    rb = Path(b.runs_dir) / b.run_id()
    assert (rb / "checkpoint.pt").exists() and not is_finished(rb)
    if stn:  # the checkpoint holds both groups, the STN's at a tenth of the lr
        import torch

        groups = torch.load(rb / "checkpoint.pt", map_location="cpu", weights_only=False)["optimizer"]["param_groups"]
        assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(b.stn_lr_scale * groups[0]["lr"])
    train(b)
    ma, mb = load_metrics(Path(a.runs_dir) / a.run_id()), load_metrics(rb)
    assert ma["protocols"] == mb["protocols"]
    ha = (Path(a.runs_dir) / a.run_id() / "history.csv").read_text().splitlines()
    hb = (rb / "history.csv").read_text().splitlines()
    strip = [lambda line: ",".join(line.split(",")[:8])]  # drop timing columns
    assert [strip[0](x) for x in ha] == [strip[0](x) for x in hb]


def test_nan_guard_names_epoch_and_step_and_keeps_checkpoint(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path, epochs=3, max_train=128)
    with pytest.raises(RunError, match=r"non-finite loss \(nan\) at epoch 2, step 3"):
        train(cfg, hooks=TrainHooks(transform_loss=lambda e, s, loss: loss * float("nan") if (e, s) == (1, 2) else loss))
    d = Path(cfg.runs_dir) / cfg.run_id()
    assert (d / "checkpoint.pt").exists() and (d / "history.csv").exists() and (d / "failed.json").exists()
    assert not is_finished(d)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_cpu_optimizer_is_the_for_loop_update(name):
    """make_optimizer's fused CPU kernels apply the same Adam/AdamW update as PyTorch's for-loop one (50
    steps of a small conv net whose convolution is channels_last, as the resizer's are: equal to rounding;
    a net without BatchNorm, whose preceding biases get gradients of rounding noise that Adam amplifies
    into unit steps). A checkpoint of the for-loop optimiser resumes on the fused one, with the same next
    step (load_optimizer_state: PyTorch's load_state_dict alone would bring the for-loop flag back)."""
    import copy

    import torch

    from fer_study.training.optim import load_optimizer_state, make_optimizer

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last), torch.nn.GELU(),
                                   torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 4))

    def steps(m: torch.nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x = torch.rand(16, 3, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 4, (16,), generator=gen)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

    cfg = TrainConfig(optimizer=name, lr=1e-2, weight_decay=0.05)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    cpu = torch.device("cpu")
    start = net().state_dict()
    fused, loop = net(), net()
    opt_f = make_optimizer(cfg, fused, cpu)
    opt_l = cls(loop.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    assert opt_f.param_groups[0]["fused"] is True and not opt_l.param_groups[0]["fused"]
    steps(fused, opt_f, 50)
    steps(loop, opt_l, 50)
    for k in start:
        assert torch.allclose(fused.state_dict()[k], loop.state_dict()[k], rtol=1e-4, atol=1e-6), k
        assert not torch.allclose(fused.state_dict()[k], start[k], atol=1e-3), k  # and the weights did move

    # a checkpoint round trip (fresh tensors, as torch.load gives) of a for-loop run whose convolution was
    # contiguous: resumed on the fused update with the moments in the channels_last parameter's layout, it
    # goes on as the uninterrupted run does
    plain = net()
    plain[0].to(memory_format=torch.contiguous_format)
    plain.load_state_dict(loop.state_dict())
    opt_p = cls(plain.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    steps(plain, opt_p, 3, seed=3)
    saved = copy.deepcopy(opt_p.state_dict())
    assert not saved["state"][0]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    resumed = net()
    resumed.load_state_dict(plain.state_dict())
    opt_r = make_optimizer(cfg, resumed, cpu)
    load_optimizer_state(opt_r, saved)
    assert opt_r.param_groups[0]["fused"] is True
    w = resumed[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert opt_r.state[w]["exp_avg"].stride() == opt_r.state[w]["exp_avg_sq"].stride() == w.stride()
    steps(resumed, opt_r, 5, seed=2)
    steps(plain, opt_p, 5, seed=2)  # the same run going on, uninterrupted, on the for-loop update
    for k in start:
        assert torch.allclose(resumed.state_dict()[k], plain.state_dict()[k], rtol=1e-4, atol=1e-6), k


def test_step_check_runs_before_the_weights_change():
    import torch

    from fer_study.data.tensors import AugmentConfig
    from fer_study.losses import CrossEntropy
    from fer_study.training.step import StepParts, train_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    parts = StepParts(forward=net, loss_fn=CrossEntropy(), optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), scheduler_per_step=True,
                      augment=AugmentConfig(), device=torch.device("cpu"), amp=False)
    x = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in net.parameters()]

    def reject(loss):
        raise RunError("rejected")

    with pytest.raises(RunError):
        train_step(parts, x, y, torch.Generator().manual_seed(0), check=reject)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert parts.scheduler.last_epoch == 0
    loss, logits = train_step(parts, x, y, torch.Generator().manual_seed(0))
    assert not loss.requires_grad and logits.shape == (4, 8) and logits.dtype == torch.float32
    assert not all(torch.equal(a, p) for a, p in zip(before, net.parameters())) and parts.scheduler.last_epoch == 1


def test_sr_setting_uses_cache(synth_root, tmp_path):
    from fer_study.sr_train import synthfer_pairs, train_facesr

    lr, hr = synthfer_pairs(synth_root)
    train_facesr(lr[:64], hr[:64], tmp_path / "facesr.pt", steps=3, batch_size=4, progress=False)
    cfg = _cfg(synth_root, tmp_path, epochs=1, max_train=96, sr_backend="facesr", sr_weights=str(tmp_path / "facesr.pt"),
               **{"model.up": "sr", "model.stn": True})
    m = load_metrics(train(cfg))
    assert m["parameters"]["stn"]["trainable"] > 0 and m["parameters"]["resizer"]["trainable"] == 12083
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3  # one SR cache entry per split


def test_torchrun_two_processes_gloo(synth_root, tmp_path):
    over = _overrides(synth_root, tmp_path, epochs=1, max_train=128)
    cfg = make_config("demo", over)
    sets = []
    for k, v in over.items():
        sets += ["--set", f"{k}={v}"]
    import socket

    with socket.socket() as sock:  # a free port: parallel test runs must not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                        "-m", "fer_study.cli", "train", "--profile", "demo", *sets], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    d = Path(cfg.runs_dir) / cfg.run_id()
    m2 = load_metrics(d)
    assert json.loads((d / "env.json").read_text())["world_size"] == 2
    single = _cfg(synth_root, tmp_path / "one", epochs=1, max_train=128)
    m1 = load_metrics(train(single))
    assert set(m1) == set(m2) and set(m1["protocols"]["clean"]) == set(m2["protocols"]["clean"])
    assert m1["n"] == m2["n"]
