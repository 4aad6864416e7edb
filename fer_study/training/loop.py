"""The epoch loop: train (or resume, or skip if finished) one run, with a NaN guard, DDP through
``torchrun`` and the two evaluation protocols recorded side by side.

Protocols (both in metrics.json; the authors' is skipped, its values None, with ``authors_protocol=false``,
which saves one test pass per epoch: the demo profile's choice):
``clean``    the model is chosen on the validation split (best valid accuracy), then evaluated
             once on the full test set with the deterministic transform.
``authors``  as the authors' code did: every epoch the test set is scored under the *random*
             training transform, accuracy = mean of per-batch accuracies, and the best epoch on
             the test set is reported. Optimistic by construction; kept for comparison only.

The run directory (config, env, history, checkpoint, model, predictions, metrics) is written
through :class:`fer_study.runs.Run`, which alone knows its layout and finishing order.
"""

from __future__ import annotations

import copy
import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from fer_study.allocator import tune_cpu_allocator
from fer_study.config import TrainConfig
from fer_study.data.synth import is_synthetic
from fer_study.errors import RunError
from fer_study.inputs import StaleRunError, run_inputs, stale_message
from fer_study.io import environment
from fer_study.models.classifier import NeuralResizerClassifier
from fer_study.onednn import apply_isa_cap
from fer_study.runs import CHECKPOINT, Run, RunStore, predictions_csv
from fer_study.training.data import load_splits, make_prior, make_sr, model_inputs
from fer_study.training.distributed import Dist, all_reduce, barrier, init_dist
from fer_study.training.evaluate import evaluate
from fer_study.training.optim import load_optimizer_state, optimizer_impl
from fer_study.training.precision import amp_active, select_device
from fer_study.training.step import build_step_parts, train_step


@dataclass
class TrainHooks:
    """Optional callbacks into :func:`train` (tests simulate interruptions and NaNs with them).

    ``after_epoch(epoch)``: after an epoch's checkpoint is written (0-based ``epoch``); raising
    there stops the run as an interruption would. ``transform_loss(epoch, step, loss)``: replaces a
    step's loss before the NaN guard sees it (0-based ``epoch`` and ``step``)."""

    after_epoch: Callable[[int], None] | None = None
    transform_loss: Callable[[int, int, torch.Tensor], torch.Tensor] | None = None


class _NaNGuard:
    """Records one epoch's step losses on the device and stops the step before backward at the first
    non-finite one. On CUDA the losses are checked every 50 steps and at the epoch's end (one host
    sync per 50 steps), on the CPU every step; either way no optimiser step follows a checked NaN."""

    def __init__(self, n_steps: int, device: torch.device, epoch: int, run: Run, dist: Dist,
                 transform: Callable[[int, int, torch.Tensor], torch.Tensor] | None) -> None:
        self.losses = torch.zeros(n_steps, device=device)
        self.n_steps, self.every_step = n_steps, device.type == "cpu"
        self.epoch, self.run, self.dist, self.transform = epoch, run, dist, transform
        self.checked = 0

    def __call__(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            loss = self.transform(self.epoch, step, loss)
        self.losses[step] = loss.detach()
        if self.every_step or step % 50 == 49 or step == self.n_steps - 1:
            bad = ~torch.isfinite(self.losses[self.checked: step + 1])  # GPU: one sync per 50 steps
            self.checked = step + 1
            if bad.any():
                first = self.checked - len(bad) + int(bad.nonzero()[0])
                e = self.epoch
                msg = (f"non-finite loss ({float(self.losses[first])}) at epoch {e + 1}, step {first + 1} "
                       f"of run {self.run.run_id}; the last checkpoint (epoch {e}) is kept")
                if self.dist.main:
                    self.run.mark_failed({"error": msg, "epoch": e + 1, "step": first + 1})
                raise RunError(msg)
        return loss


def _environment(device: torch.device, cfg: TrainConfig, dist: Dist, allocator: dict,
                 onednn: dict | None = None) -> dict[str, Any]:
    env = {**environment(device), "world_size": dist.world, "run_id": cfg.run_id(), "cpu_allocator": allocator,
           "bf16_autocast": amp_active(device, cfg.amp), "onednn_kernels": onednn,
           "optimizer_impl": optimizer_impl(device)}
    if onednn is not None and onednn.get("applied") is False and isinstance(env.get("onednn"), dict):
        # onednn.dispatch_isa is derived from the environment variable, which did not take effect here
        env["onednn"]["dispatch_isa_note"] = ("the ISA cap did not apply in this process: onednn_kernels.conv_impl "
                                              "is the kernel that ran")
    return env


def epoch_batches(n: int, batch: int, drop_last: bool, world: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each batch of an epoch's ``n`` shuffled images. The authors' DataLoader keeps
    the last partial batch (``drop_last=False``); it is kept here too, unless it holds one image
    (BatchNorm cannot train on one) or several processes train (DDP needs equal step counts)."""
    full = n // batch
    out = [(k * batch, (k + 1) * batch) for k in range(full)]
    if not drop_last and world == 1 and n - full * batch >= 2:
        out.append((full * batch, n))
    return out


def train(cfg: TrainConfig, force: bool = False, hooks: TrainHooks | None = None) -> Path:
    """Train (or resume, or skip if finished) the run of ``cfg``; returns its run directory."""
    hooks = hooks or TrainHooks()
    # the weights this run reads are opened and checked before any data is (a profile's own default
    # paths are not checked by make_config, which only checks the files the overrides name)
    cfg.validate(check_files={"model.checkpoint", "model.pretrained"} | (
        {"sr_weights"} if cfg.model.up == "sr" and cfg.sr_backend != "oracle" else set()))
    device = select_device(cfg.device)
    allocator = tune_cpu_allocator() if device.type == "cpu" else {"applied": False, "reason": "not a CPU run"}
    # before this process's first convolution (the SR cache below runs some)
    onednn = apply_isa_cap(cfg.onednn_max_isa) if device.type == "cpu" else None
    dist = init_dist(device.type)
    run = RunStore.of(cfg).run_for(cfg)
    inputs = run_inputs(cfg)
    if not force and (run.is_finished() or run.file(CHECKPOINT).is_file()):
        changed = run.input_changes(inputs)
        if changed:
            what = "finished" if run.is_finished() else "partly trained"
            raise StaleRunError(stale_message(run.run_id, changed, f"It is {what} at {run.path}; retrain it with "
                                              "--force (fer-study train) or --retrain-stale (fer-study run), or "
                                              "restore the inputs."))
    if run.is_finished() and not force:
        if dist.main:
            run.tidy()
            print(f"finished run found, skipped: {run.path} (use force to retrain)")
        return run.path
    if force and dist.main and run.path.exists():
        shutil.rmtree(run.path)
    barrier(dist)
    if dist.main:
        run.begin(cfg.to_dict(), _environment(device, cfg, dist, allocator, onednn), inputs)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    show = cfg.progress and dist.main

    splits = load_splits(cfg)
    data = model_inputs(cfg, splits, device, progress=show)
    prior = make_prior(cfg, splits["train"])
    sr_online = make_sr(cfg, device) if cfg.model.up == "sr" and cfg.model.input_kind == "raw" else None
    model = NeuralResizerClassifier(cfg.model, sr=sr_online).to(device)
    model.cnn_channels_last_()  # ~1.8x for the resizer convolutions, CPU and GPU
    per_rank_batch = max(2, cfg.batch_size // dist.world)
    steps_per_epoch = len(epoch_batches(len(data["train"]) // dist.world, per_rank_batch, cfg.drop_last, dist.world))
    parts = build_step_parts(cfg, model, None, prior, device, steps_per_epoch)  # forward: set after a resume
    opt, sched = parts.optimizer, parts.scheduler

    history: list[dict] = []
    best: dict[str, Any] = {"epoch": -1, "valid_acc": -1.0, "valid_loss": float("inf"), "state": None}
    start = 0
    ck = run.load_checkpoint(device)
    if ck is not None:
        model.load_state_dict(ck["model"])
        load_optimizer_state(opt, ck["optimizer"])  # keeps this code's fused/for-loop choice
        sched.load_state_dict(ck["scheduler"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
        if show:
            print(f"resuming {run.run_id} from epoch {start}")

    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(net) if cfg.compile else net
    parts = replace(parts, forward=fwd)
    train_data = data["train"]
    t_train = 0.0

    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: resumable, independent of history
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(train_data), generator=gen)
        shard = perm[dist.rank::dist.world]
        bounds = epoch_batches(len(shard), per_rank_batch, cfg.drop_last, dist.world)
        n_steps = len(bounds)
        if n_steps == 0:
            raise RunError(f"training split has {len(shard)} images per rank, fewer than one batch")
        shard = shard[:bounds[-1][1]].to(device)
        net.train()
        if model.sr is not None:
            model.sr.eval()
        guard = _NaNGuard(n_steps, device, epoch, run, dist, hooks.transform_loss)
        correct = torch.zeros((), device=device)
        t0 = time.perf_counter()
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
        for step in bar:
            idx = shard[bounds[step][0]:bounds[step][1]]
            y = train_data.labels[idx]
            target = train_data.targets[idx] if cfg.label_mode != "majority" else y
            loss, logits = train_step(parts, train_data.fetch(idx), target, gen,
                                      check=functools.partial(guard, step))
            correct += (logits.argmax(-1) == y).sum()
            if show and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.detach().item():.3f}",
                                img_s=f"{bounds[step][1] * dist.world / (time.perf_counter() - t0):.0f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        t_train += dt
        stats = torch.stack([guard.losses.sum(), correct,
                             torch.tensor(float(bounds[-1][1]), device=device)])
        all_reduce(stats, dist)
        if not parts.scheduler_per_step:
            sched.step()
        valid = evaluate(fwd, data["valid"], parts.loss_fn, cfg.batch_size, device, cfg.amp, dist=dist)
        test_auth = None
        if cfg.authors_protocol:  # this run's own random training transform, its own generator
            g_auth = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            test_auth = evaluate(fwd, data["test"], parts.loss_fn, cfg.batch_size, device, cfg.amp,
                                 aug=parts.augment, generator=g_auth, dist=dist)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
               "train_loss": float(stats[0]) / (n_steps * dist.world), "train_acc": float(stats[1] / stats[2]),
               "valid_loss": valid["loss"], "valid_acc": valid["acc"], "valid_mean_class_acc": valid["mean_class_acc"],
               **{f"valid_acc_{c}": a for c, a in zip(splits["valid"].classes, valid["per_class_acc"])},
               "test_authors_acc": None if test_auth is None else test_auth["batch_mean_acc"], "seconds": round(dt, 3),
               "images_per_s": round(float(stats[2]) / dt, 1)}
        history.append(row)
        if (valid["acc"], -valid["loss"]) > (best["valid_acc"], -best["valid_loss"]):
            best = {"epoch": epoch + 1, "valid_acc": valid["acc"], "valid_loss": valid["loss"],
                    "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
        if show:
            print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | valid acc "
                  f"{valid['acc']:.3f} | {row['images_per_s']:.0f} img/s")
        if dist.main:
            run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "epoch": epoch, "history": history, "best": best})
            run.write_history(history)
        barrier(dist)
        if hooks.after_epoch is not None:
            hooks.after_epoch(epoch)

    # clean protocol: best-on-valid weights, deterministic transform, full test set
    model.load_state_dict(best["state"])
    test = evaluate(fwd, data["test"], parts.loss_fn, cfg.batch_size, device, cfg.amp, dist=dist)
    if dist.main:
        ts = splits["test"]
        run.finish(best["state"], predictions_csv(ts.source, ts.label, test["pred"], test["probs"], ts.classes),
                   _metrics(cfg, splits, history, best, test, t_train, model))
    barrier(dist)
    return run.path


def _metrics(cfg: TrainConfig, splits: dict, history: list[dict], best: dict[str, Any], test: dict[str, Any],
             t_train: float, model: NeuralResizerClassifier) -> dict[str, Any]:
    """metrics.json: both protocols, split sizes, timing and parameter counts."""
    scored = [r for r in history if r.get("test_authors_acc") is not None]
    authors: dict[str, Any] = {"description": "not run (authors_protocol=false): no test pass per epoch",
                               "best_epoch": None, "test_acc": None}
    if scored:
        auth_best = max(scored, key=lambda r: r["test_authors_acc"])
        authors = {"description": "best epoch on the test set, test scored under the random training transform, "
                                  "mean of per-batch accuracies (the authors' code)",
                   "best_epoch": auth_best["epoch"], "test_acc": auth_best["test_authors_acc"]}
    return {
        "run_id": cfg.run_id(), "finished": True, "dataset": cfg.dataset,
        "synthetic": cfg.dataset == "synthfer" or is_synthetic(cfg.data_root), "classes": list(splits["test"].classes),
        "n": {s: len(sp) for s, sp in splits.items()}, "seed": cfg.seed, "epochs": cfg.epochs,
        "data": {s: {"rows_read": sp.meta.get("rows_read"), "dropped": dict(sp.dropped),
                     "colour_images": sp.colour_images} for s, sp in splits.items()},
        "protocols": {
            "clean": {"description": "model chosen on validation accuracy; deterministic test transform; "
                                     "full test set", "selected_epoch": best["epoch"],
                      "valid_acc": best["valid_acc"], "test_acc": test["acc"],
                      "test_mean_class_acc": test["mean_class_acc"], "test_per_class_acc": test["per_class_acc"],
                      "test_loss": test["loss"], "confusion": test["confusion"]},
            "authors": authors,
        },
        "train_seconds": round(t_train, 2),
        "images_per_s_mean": round(float(np.mean([r["images_per_s"] for r in history])), 1),
        "parameters": model.parameter_summary(),
        "backbone_weights": model.weights_report,  # what model.checkpoint loaded (None: random init / timm hub)
    }
