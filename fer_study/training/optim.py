"""Optimiser and learning-rate schedule (Sec. 3.2: Adam, lr 1e-4, x0.25 every 10 epochs)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

from fer_study.config import TrainConfig

#: Devices where PyTorch has fused Adam/AdamW kernels. On the CPU the default is a Python loop over the
#: parameters (a dozen small ops each): for the demo's stand-ins (100-135 parameter tensors) one step of
#: it took 3.6-5.6 ms against 0.8-1.2 ms fused, measured at one thread (tiny_swin_s, tiny_swin_b + STN,
#: tiny_convit), a few per cent of a 60-200 ms training step. The same update, rounded differently.
FUSED_DEVICES = ("cuda", "cpu")


def optimizer_impl(device: torch.device) -> str:
    """Which implementation :func:`make_optimizer` uses on ``device`` (recorded in env.json): ``fused``, or
    PyTorch's default for the device (``foreach`` or the for-loop)."""
    return "fused" if device.type in FUSED_DEVICES else "torch default"


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state into ``opt``, keeping ``opt``'s implementation. PyTorch's
    ``load_state_dict`` takes the saved groups' ``fused``/``foreach`` flags too, so a run checkpointed before
    this project used the fused kernels on the CPU would resume on the for-loop update while its env.json
    (:func:`optimizer_impl`) says fused; the state itself (moments, step counts) is the same for both.
    Moments saved in another memory layout than their parameter's (a model made channels_last after the
    checkpoint) are copied into the parameter's: PyTorch 2.14's fused CPU Adam/AdamW pairs a channels_last
    tensor with a contiguous one element by element in memory order, i.e. wrongly (autograd gives every
    gradient its parameter's layout, so training itself never mixes them)."""
    impl = {k: opt.param_groups[0].get(k) for k in ("fused", "foreach")}
    opt.load_state_dict(state)
    for g in opt.param_groups:
        g.update(impl)
        for p in g["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def stn_parameter(name: str) -> bool:
    """Whether the parameter ``name`` (of the model, or of a DDP / compiled wrapper around it) is the STN's."""
    parts = name.split(".")
    while parts and parts[0] in ("module", "_orig_mod"):
        parts = parts[1:]
    return bool(parts) and parts[0] == "stn"


def param_groups(cfg: TrainConfig, model: nn.Module) -> list[dict]:
    """The trainable parameters, with the STN's in a group of its own at ``lr * stn_lr_scale`` when the
    scale is not 1 (one group otherwise, as the authors' code). Why a scale: the STN's last layer starts at
    zero with the identity bias, and Adam moves every weight by about ``lr`` a step whatever its gradient;
    at the demo's lr 1e-3 (10x the paper's) the affine theta of some seeds ran away within the first epoch
    (e.g. [24, 7, -10; -28, 7, -31]), the warp then samples the zero padding and the network stays at the
    majority class. ``stn_lr_scale=0.1`` gives the STN the paper's 1e-4 (:func:`fer_study.config.demo_profile`);
    AdamW's decoupled weight decay, ``lr * weight_decay`` a step, shrinks with it."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.stn_lr_scale == 1.0:
        return [{"params": [p for _, p in named]}]
    groups = [{"params": [p for n, p in named if not stn_parameter(n)]},
              {"params": [p for n, p in named if stn_parameter(n)], "lr": cfg.lr * cfg.stn_lr_scale}]
    return [g for g in groups if g["params"]]


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Adam (the paper) or AdamW over the trainable parameters (:func:`param_groups`); fused kernels on CUDA
    and the CPU."""
    params = param_groups(cfg, model)
    fused = optimizer_impl(device) == "fused"
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    raise ValueError(f"optimizer must be adam or adamw, not {cfg.optimizer!r}")


def schedule_per_step(cfg: TrainConfig) -> bool:
    """Whether the schedule of ``cfg`` is stepped after every training step (else once per epoch)."""
    return cfg.schedule == "cosine"


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> LRScheduler:
    """paper: x0.25 every 10 epochs (Sec. 3.2); authors: x0.25 every 15 as their code runs it
    (``StepLR(15, 0.25)`` stepped at the *start* of each epoch, so the first decay applies in epoch
    15, not 16); both stepped once per epoch here; cosine: per step, with ``warmup_steps`` of linear
    warm-up; constant."""
    if cfg.schedule == "paper":
        return torch.optim.lr_scheduler.StepLR(opt, 10, 0.25)
    if cfg.schedule == "authors":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.25 ** ((epoch + 1) // 15))
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
