"""The training step: the one function that both the epoch loop (:mod:`fer_study.training.loop`)
and ``fer-study bench`` run, so the benchmark times exactly what a run trains with.

One step: a uint8 batch on the device -> float [0, 1] -> on-device augmentation (the run's
transform, :data:`fer_study.data.tensors.AUGMENTS`) -> forward under bf16 autocast when active
-> the run's loss on float32 logits (F-PDLS, Eq. 2-3, by default) -> ``check(loss)`` -> zero_grad,
backward, optimiser step (-> per-step schedule). ``check`` runs between the forward pass and the
backward pass, so a loss it rejects (the loop's NaN guard raises) never reaches the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

from fer_study.config import TrainConfig
from fer_study.data.tensors import AUGMENTS, AugmentConfig, augment, to_float
from fer_study.losses import build_loss
from fer_study.training.optim import make_optimizer, make_scheduler, schedule_per_step
from fer_study.training.precision import autocast_for

#: ``check(loss) -> loss``: sees the step's loss before backward; returns the loss to back-propagate
#: (a test may transform it) or raises to stop the step before the weights change.
LossCheck = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepParts:
    """Everything one training step needs."""

    forward: nn.Module  # the model as called: possibly DDP-wrapped and/or compiled
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler  # the run's schedule (saved in checkpoints)
    scheduler_per_step: bool  # stepped by train_step (cosine); else by the loop once per epoch
    augment: AugmentConfig
    device: torch.device
    amp: bool


def build_step_parts(cfg: TrainConfig, model: nn.Module, forward: nn.Module | None, prior: np.ndarray | None,
                     device: torch.device, steps_per_epoch: int) -> StepParts:
    """The loss (``cfg.loss`` with ``prior``), optimiser, schedule and augmentation of ``cfg`` for
    ``model``; ``forward`` is what the step calls (``None``: ``model`` itself)."""
    alpha = cfg.pdls_alpha if cfg.loss == "pdls" and cfg.pdls_alpha is not None else cfg.alpha
    loss_fn = build_loss(cfg.loss, prior, alpha, cfg.gamma).to(device)
    opt = make_optimizer(cfg, model, device)
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    return StepParts(forward=model if forward is None else forward, loss_fn=loss_fn, optimizer=opt,
                     scheduler=sched, scheduler_per_step=schedule_per_step(cfg), augment=AUGMENTS[cfg.augment],
                     device=device, amp=cfg.amp)


def forward_loss(parts: StepParts, x_uint8: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment the uint8 batch (draws from ``generator``), run the model under autocast and the loss
    on float32 logits; returns (loss with its graph, float32 logits)."""
    x = augment(to_float(x_uint8), parts.augment, generator)
    with autocast_for(parts.device, parts.amp):
        logits = parts.forward(x)
    logits = logits.float()
    return parts.loss_fn(logits, target), logits


def backward_update(parts: StepParts, loss: torch.Tensor) -> None:
    """zero_grad, backward, optimiser step, and the schedule when it is stepped per step."""
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    if parts.scheduler_per_step:
        parts.scheduler.step()


def train_step(parts: StepParts, x_uint8: torch.Tensor, target: torch.Tensor, generator: torch.Generator,
               check: LossCheck | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step (see the module docstring); returns the detached loss and logits."""
    loss, logits = forward_loss(parts, x_uint8, target, generator)
    if check is not None:
        loss = check(loss)
    backward_update(parts, loss)
    return loss.detach(), logits.detach()
