"""The training engine: device-resident data, on-device augmentation, bf16 autocast, optional
``torch.compile``, checkpoint/resume, a NaN guard, DDP through ``torchrun``, and two evaluation
protocols recorded side by side.

Protocols (both always in metrics.json):
``clean``    the model is chosen on the validation split (best valid accuracy), then evaluated
             once on the full test set with the deterministic transform.
``authors``  as the authors' code did: every epoch the test set is scored under the *random*
             training transform, accuracy = mean of per-batch accuracies, and the best epoch on
             the test set is reported. Optimistic by construction; kept for comparison only.

Run directory ``<runs_dir>/<run-id>/``: config.json, env.json, history.csv, checkpoint.pt (every
epoch, atomic), predictions.csv (per-image test predictions of the clean protocol) and
metrics.json, written last: its presence marks a finished run, which is never overwritten
without ``force``.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from fer_study.allocator import tune_cpu_allocator
from fer_study.config import TrainConfig
from fer_study.data.ferplus import FERSplit, load_ferplus
from fer_study.data.tensors import AugmentConfig, DeviceData, augment, to_float
from fer_study.errors import RunError
from fer_study.io import atomic_write, environment, read_json, write_json, write_text
from fer_study.losses import build_loss
from fer_study.models.classifier import NeuralResizerClassifier

AUGMENTS = {
    "authors": AugmentConfig(),
    "light": AugmentConfig(rotation=10.0, affine_rotation=0.0, scale=(1.0, 1.1), brightness=0.2, contrast=0.2),
    "none": AugmentConfig.none(),
}
SPLITS = ("train", "valid", "test")


# ---- distributed helpers ----------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device_kind: str) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def _all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


# ---- data ---------------------------------------------------------------------------------
def load_splits(cfg: TrainConfig) -> dict[str, FERSplit]:
    """train/valid/test in the data set's class order (RAF-DB: valid carved from train)."""
    nc = cfg.model.num_classes
    if cfg.dataset in ("ferplus", "synthfer"):
        splits = {s: load_ferplus(cfg.data_root, s, cfg.label_mode, nc) for s in SPLITS}
    elif cfg.dataset == "rafdb":
        from fer_study.data.rafdb import load_rafdb, stratified_split, subset

        if nc != 7:
            raise ValueError("RAF-DB has 7 classes: set model.num_classes=7")
        tr = load_rafdb(cfg.data_root, "train", downscale_to=48, grayscale=True)
        ti, vi = stratified_split(tr.label, cfg.valid_fraction, cfg.seed)
        splits = {"train": subset(tr, ti, "train"), "valid": subset(tr, vi, "valid"),
                  "test": load_rafdb(cfg.data_root, "test", downscale_to=48, grayscale=True)}
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}")
    if cfg.max_train is not None and cfg.max_train < len(splits["train"]):
        from fer_study.data.rafdb import subset

        idx = np.sort(np.random.default_rng(cfg.seed).choice(len(splits["train"]), cfg.max_train, replace=False))
        splits["train"] = subset(splits["train"], idx, "train")
    for s, sp in splits.items():
        if len(sp) == 0:
            raise RunError(f"split {s} of {cfg.dataset} at {cfg.data_root} is empty")
    return splits


def make_prior(cfg: TrainConfig, train: FERSplit) -> np.ndarray:
    from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes, rafdb_prior, seven_class_prior

    nc = cfg.model.num_classes
    if cfg.prior == "votes":
        if cfg.dataset == "rafdb":
            raise ValueError("RAF-DB has no votes: use prior=psr (the re-indexed FERPlus prior)")
        return prior_from_votes(train.votes, train.label, nc)
    if cfg.prior != "psr":
        raise ValueError(f"prior must be psr or votes, not {cfg.prior!r}")
    if cfg.dataset == "rafdb":
        return rafdb_prior(cfg.prior_renormalise)
    return PSR_FERPLUS_PRIOR if nc == 8 else seven_class_prior(renormalise=cfg.prior_renormalise)


def make_sr(cfg: TrainConfig, device: torch.device):
    from fer_study.models.sr import SuperResolver

    return SuperResolver(cfg.sr_backend, cfg.sr_weights, cfg.model.sr_size, device, precision=cfg.sr_precision)


def model_inputs(cfg: TrainConfig, splits: dict[str, FERSplit], device: torch.device,
                 progress: bool = True) -> dict[str, DeviceData]:
    """The tensors the model is fed: cached SR images (SR settings) or the raw 48x48 images."""
    from fer_study.sr_cache import build_sr_cache

    out = {}
    sr = make_sr(cfg, device) if cfg.model.input_kind == "sr" else None
    for s, sp in splits.items():
        imgs = sp.images
        if sr is not None:
            imgs, _ = build_sr_cache(sp.images, sr, cfg.cache_dir, device=device, progress=progress,
                                     label=f"{cfg.dataset}-{s}")
            imgs = np.asarray(imgs)
        out[s] = DeviceData(imgs, sp.label, sp.target, device)
    return out


# ---- optimisation -------------------------------------------------------------------------
def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    raise ValueError(f"optimizer must be adam or adamw, not {cfg.optimizer!r}")


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """paper: x0.25 every 10 epochs (Sec. 3.2); authors: x0.25 every 15 (their code), both stepped per
    epoch; cosine: per step, with ``warmup_steps`` of linear warm-up; constant."""
    if cfg.schedule == "paper":
        return torch.optim.lr_scheduler.StepLR(opt, 10, 0.25)
    if cfg.schedule == "authors":
        return torch.optim.lr_scheduler.StepLR(opt, 15, 0.25)
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        warm = max(0, cfg.warmup_steps)

        def f(step: int) -> float:
            w = min(1.0, (step + 1) / warm) if warm else 1.0
            return w * 0.5 * (1.0 + np.cos(np.pi * min(step, total) / total))
        return torch.optim.lr_scheduler.LambdaLR(opt, f)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (read once per process; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16);
    oneDNN then runs bf16 convolutions and matrix products about twice as fast as fp32. Without them
    bf16 is emulated and slower, so autocast stays off. ``FER_STUDY_CPU_BF16=0|1`` overrides."""
    env = os.environ.get("FER_STUDY_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is used when ``amp`` on CUDA, and on a CPU with native bf16 instructions."""
    return amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast when :func:`amp_active`; a disabled context otherwise."""
    if amp_active(device, amp):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# ---- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, loss_fn: nn.Module, batch_size: int, device: torch.device,
             amp: bool = True, aug: AugmentConfig | None = None, generator: torch.Generator | None = None,
             dist: Dist | None = None) -> dict[str, Any]:
    """Loss, accuracy, per-class and mean-class accuracy, per-batch mean accuracy, predictions."""
    dist = dist or Dist()
    model.eval()
    n = len(data)
    idx_all = torch.arange(n, device=data.device)[dist.rank::dist.world]
    probs = torch.zeros(n, data.targets.shape[1], device=device)
    loss_sum = torch.zeros((), device=device)
    batch_accs = []
    for idx in data.batches(batch_size, shuffle=False, indices=idx_all):
        x = to_float(data.fetch(idx))
        if aug is not None:
            x = augment(x, aug, generator)
        with autocast_for(device, amp):
            logits = model(x)
        logits = logits.float()
        y = data.labels[idx]
        loss_sum += loss_fn(logits, data.targets[idx]) * len(idx)
        p = logits.softmax(-1)
        probs[idx] = p
        batch_accs.append(float((p.argmax(-1) == y).float().mean()))
    _all_reduce(probs, dist)
    _all_reduce(loss_sum, dist)
    pred = probs.argmax(-1)
    y = data.labels
    k = probs.shape[1]
    conf = torch.zeros(k, k, dtype=torch.long, device=device)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    conf = conf.cpu().numpy()
    per_class = [float(conf[c, c] / conf[c].sum()) if conf[c].sum() else float("nan") for c in range(k)]
    present = [a for a in per_class if a == a]
    return {"loss": float(loss_sum) / n, "acc": float((pred == y).float().mean()),
            "mean_class_acc": float(np.mean(present)), "per_class_acc": per_class,
            "batch_mean_acc": float(np.mean(batch_accs)) if batch_accs else float("nan"),
            "confusion": conf.tolist(), "pred": pred.cpu().numpy(), "probs": probs.cpu().numpy()}


# ---- the run ------------------------------------------------------------------------------
def run_dir_for(cfg: TrainConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.run_id()


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "metrics.json").is_file()


def _save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def _write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    write_text(path, out.getvalue())


def train(cfg: TrainConfig, force: bool = False, _interrupt_after_epoch: int | None = None,
          _inject_nan_at: tuple[int, int] | None = None) -> Path:
    """Train (or resume, or skip if finished) the run of ``cfg``; returns its run directory."""
    device = select_device(cfg.device)
    allocator = tune_cpu_allocator() if device.type == "cpu" else {"applied": False, "reason": "not a CPU run"}
    dist = init_dist(device.type)
    run_dir = run_dir_for(cfg)
    if is_finished(run_dir) and not force:
        if dist.main:
            print(f"finished run found, skipped: {run_dir} (use force to retrain)")
        return run_dir
    if force and dist.main and run_dir.exists():
        shutil.rmtree(run_dir)
    if dist.world > 1:
        torch.distributed.barrier()
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
        write_json(run_dir / "env.json", {**environment(device), "world_size": dist.world,
                                          "run_id": cfg.run_id(), "cpu_allocator": allocator,
                                          "bf16_autocast": amp_active(device, cfg.amp)})
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    show = cfg.progress and dist.main

    splits = load_splits(cfg)
    data = model_inputs(cfg, splits, device, progress=show)
    prior = make_prior(cfg, splits["train"])
    loss_fn = build_loss(cfg.loss, prior, cfg.alpha, cfg.gamma).to(device)
    sr_online = make_sr(cfg, device) if cfg.model.up == "sr" and cfg.model.input_kind == "raw" else None
    model = NeuralResizerClassifier(cfg.model, sr=sr_online).to(device)
    model.cnn_channels_last_()  # ~1.8x for the resizer convolutions, CPU and GPU
    opt = make_optimizer(cfg, model, device)
    per_rank_batch = max(2, cfg.batch_size // dist.world)
    steps_per_epoch = (len(data["train"]) // dist.world) // per_rank_batch
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    step_sched = cfg.schedule == "cosine"

    history: list[dict] = []
    best: dict[str, Any] = {"epoch": -1, "valid_acc": -1.0, "valid_loss": float("inf"), "state": None}
    start = 0
    ck_path = run_dir / "checkpoint.pt"
    if ck_path.exists():
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
        if show:
            print(f"resuming {run_dir.name} from epoch {start}")

    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(net) if cfg.compile else net
    aug = AUGMENTS[cfg.augment]
    train_data = data["train"]
    t_train = 0.0

    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: resumable, independent of history
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(train_data), generator=gen)
        shard = perm[dist.rank::dist.world]
        n_steps = len(shard) // per_rank_batch
        if n_steps == 0:
            raise RunError(f"training split has {len(shard)} images per rank, fewer than one batch")
        shard = shard[:n_steps * per_rank_batch].to(device)
        net.train()
        if model.sr is not None:
            model.sr.eval()
        losses = torch.zeros(n_steps, device=device)
        checked = 0
        correct = torch.zeros((), device=device)
        t0 = time.perf_counter()
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
        for step in bar:
            idx = shard[step * per_rank_batch:(step + 1) * per_rank_batch]
            x = augment(to_float(train_data.fetch(idx)), aug, gen)
            y = train_data.labels[idx]
            target = train_data.targets[idx] if cfg.label_mode != "majority" else y
            with autocast_for(device, cfg.amp):
                logits = fwd(x)
            loss = loss_fn(logits.float(), target)
            if _inject_nan_at == (epoch, step):
                loss = loss * float("nan")
            losses[step] = loss.detach()
            if device.type == "cpu" or step % 50 == 49 or step == n_steps - 1:
                bad = ~torch.isfinite(losses[checked: step + 1])  # GPU: one sync per 50 steps
                checked = step + 1
                if bad.any():
                    first = checked - len(bad) + int(bad.nonzero()[0])
                    msg = (f"non-finite loss ({float(losses[first])}) at epoch {epoch + 1}, step {first + 1} "
                           f"of run {run_dir.name}; the last checkpoint (epoch {epoch}) is kept")
                    if dist.main:
                        write_json(run_dir / "failed.json", {"error": msg, "epoch": epoch + 1, "step": first + 1})
                    raise RunError(msg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step_sched:
                sched.step()
            correct += (logits.detach().argmax(-1) == y).sum()
            if show and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}",
                                img_s=f"{(step + 1) * per_rank_batch * dist.world / (time.perf_counter() - t0):.0f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        t_train += dt
        stats = torch.stack([losses.sum(), correct, torch.tensor(float(n_steps * per_rank_batch), device=device)])
        _all_reduce(stats, dist)
        if not step_sched:
            sched.step()
        valid = evaluate(fwd, data["valid"], loss_fn, cfg.batch_size, device, cfg.amp, dist=dist)
        g_auth = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        test_auth = evaluate(fwd, data["test"], loss_fn, cfg.batch_size, device, cfg.amp, aug=aug,
                             generator=g_auth, dist=dist)  # this run's own random training transform
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
               "train_loss": float(stats[0]) / (n_steps * dist.world), "train_acc": float(stats[1] / stats[2]),
               "valid_loss": valid["loss"], "valid_acc": valid["acc"], "valid_mean_class_acc": valid["mean_class_acc"],
               **{f"valid_acc_{c}": a for c, a in zip(splits["valid"].classes, valid["per_class_acc"])},
               "test_authors_acc": test_auth["batch_mean_acc"], "seconds": round(dt, 3),
               "images_per_s": round(float(stats[2]) / dt, 1)}
        history.append(row)
        if (valid["acc"], -valid["loss"]) > (best["valid_acc"], -best["valid_loss"]):
            best = {"epoch": epoch + 1, "valid_acc": valid["acc"], "valid_loss": valid["loss"],
                    "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
        if show:
            print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | valid acc "
                  f"{valid['acc']:.3f} | {row['images_per_s']:.0f} img/s")
        if dist.main:
            _save_checkpoint(ck_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "epoch": epoch, "history": history,
                                       "best": best})
            _write_history(run_dir / "history.csv", history)
        if dist.world > 1:
            torch.distributed.barrier()
        if _interrupt_after_epoch is not None and epoch == _interrupt_after_epoch:
            raise KeyboardInterrupt(f"simulated interruption after epoch {epoch + 1}")

    # clean protocol: best-on-valid weights, deterministic transform, full test set
    model.load_state_dict(best["state"])
    test = evaluate(fwd, data["test"], loss_fn, cfg.batch_size, device, cfg.amp, dist=dist)
    auth_best = max(history, key=lambda r: r["test_authors_acc"])
    if dist.main:
        _write_predictions(run_dir / "predictions.csv", splits["test"], test)
        metrics = {
            "run_id": cfg.run_id(), "finished": True, "dataset": cfg.dataset,
            "synthetic": cfg.dataset == "synthfer", "classes": list(splits["test"].classes),
            "n": {s: len(sp) for s, sp in splits.items()}, "seed": cfg.seed, "epochs": cfg.epochs,
            "protocols": {
                "clean": {"description": "model chosen on validation accuracy; deterministic test transform; "
                                         "full test set", "selected_epoch": best["epoch"],
                          "valid_acc": best["valid_acc"], "test_acc": test["acc"],
                          "test_mean_class_acc": test["mean_class_acc"], "test_per_class_acc": test["per_class_acc"],
                          "test_loss": test["loss"], "confusion": test["confusion"]},
                "authors": {"description": "best epoch on the test set, test scored under the random training "
                                           "transform, mean of per-batch accuracies (the authors' code)",
                            "best_epoch": auth_best["epoch"], "test_acc": auth_best["test_authors_acc"]},
            },
            "train_seconds": round(t_train, 2),
            "images_per_s_mean": round(float(np.mean([r["images_per_s"] for r in history])), 1),
            "parameters": model.parameter_summary(),
        }
        write_json(run_dir / "metrics.json", metrics)
        ck_path.unlink(missing_ok=True)  # finished: the run directory holds results, not state
        torch.save(best["state"], run_dir / "model_best.pt")
    if dist.world > 1:
        torch.distributed.barrier()
    return run_dir


def _write_predictions(path: Path, split: FERSplit, ev: dict) -> None:
    out = io.StringIO()
    w = csv.writer(out)
    k = ev["probs"].shape[1]
    w.writerow(["index", "source", "label", "pred", *[f"p_{c}" for c in split.classes[:k]]])
    for i in range(len(split)):
        w.writerow([i, split.source[i], int(split.label[i]), int(ev["pred"][i]),
                    *[f"{p:.5f}" for p in ev["probs"][i]]])
    write_text(path, out.getvalue())


def load_metrics(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "metrics.json")


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[NeuralResizerClassifier, TrainConfig]:
    """The best-on-valid model of a finished run (for figures and the explorer)."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(read_json(run_dir / "config.json"))
    model = NeuralResizerClassifier(cfg.model)
    model.load_state_dict(torch.load(run_dir / "model_best.pt", map_location=device, weights_only=True))
    return model.to(device).eval(), cfg
