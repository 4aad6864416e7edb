"""Evaluation of a model on a split, for both protocols of the study.

``clean``: deterministic transform (``aug=None``), accuracy over all images. ``authors``: the
split scored under the random training transform (``aug`` with a generator), accuracy = mean of
per-batch accuracies (``batch_mean_acc``), as the authors' code reports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer_study.data.tensors import AugmentConfig, DeviceData, augment, to_float
from fer_study.training.distributed import Dist, all_reduce
from fer_study.training.precision import autocast_for


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, loss_fn: nn.Module, batch_size: int, device: torch.device,
             amp: bool = True, aug: AugmentConfig | None = None, generator: torch.Generator | None = None,
             dist: Dist | None = None) -> dict[str, Any]:
    """Loss, accuracy, per-class and mean-class accuracy, per-batch mean accuracy, predictions.

    Under DDP each rank scores every ``world``-th image and the probabilities are summed over the
    ranks, so every rank returns the whole split's result."""
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
    all_reduce(probs, dist)
    all_reduce(loss_sum, dist)
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
