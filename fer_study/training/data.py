"""The data a run trains on: the three splits, the label prior of F-PDLS (Eq. 2-3) and the
tensors the model is fed (cached SR images, Sec. 2.1, or the raw 48x48 images)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fer_study.config import TrainConfig
from fer_study.data.ferplus import FERSplit, load_ferplus
from fer_study.data.tensors import DeviceData
from fer_study.errors import RunError

if TYPE_CHECKING:  # pragma: no cover
    from fer_study.models.sr import SuperResolver

SPLITS = ("train", "valid", "test")


def load_splits(cfg: TrainConfig) -> dict[str, FERSplit]:
    """train/valid/test in the data set's class order (RAF-DB: valid carved from train)."""
    nc = cfg.model.num_classes
    root = Path(cfg.data_root)
    if not root.exists():
        from fer_study.config import ROOT_KEYS
        from fer_study.errors import DataError

        how = ("make it with `fer-study data synth --out {r}` (or `make demo`, which also trains the demo's facesr)"
               if cfg.dataset == "synthfer" else "point --set {k}=PATH at your copy (README: Bringing your own data)")
        raise DataError(f"{ROOT_KEYS[cfg.dataset]}={root}: no such folder; "
                        + how.format(r=root, k=ROOT_KEYS[cfg.dataset]))
    if cfg.dataset in ("ferplus", "synthfer"):
        splits = {s: load_ferplus(cfg.data_root, s, cfg.label_mode, nc) for s in SPLITS}
    elif cfg.dataset == "rafdb":
        from fer_study.data.rafdb import load_rafdb, stratified_split, subset

        if nc != 7:
            raise ValueError("RAF-DB has 7 classes: set model.num_classes=7")
        tr = load_rafdb(cfg.data_root, "train", downscale_to=48, grayscale=cfg.rafdb_grey)
        ti, vi = stratified_split(tr.label, cfg.valid_fraction, cfg.seed)
        splits = {"train": subset(tr, ti, "train"), "valid": subset(tr, vi, "valid"),
                  "test": load_rafdb(cfg.data_root, "test", downscale_to=48, grayscale=cfg.rafdb_grey)}
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


def make_prior(cfg: TrainConfig, train: FERSplit | None) -> np.ndarray:
    """The prior ``d`` of Eq. 2-3: PSR's published FERPlus confusion matrix (``psr``; re-indexed for
    RAF-DB, 7 classes without contempt) or one recomputed from the training votes (``votes``,
    which needs ``train``)."""
    from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes, rafdb_prior, seven_class_prior

    nc = cfg.model.num_classes
    if cfg.prior == "votes":
        if cfg.dataset == "rafdb":
            raise ValueError("RAF-DB has no votes: use prior=psr (the re-indexed FERPlus prior)")
        if train is None:
            raise ValueError("prior=votes needs the training split")
        return prior_from_votes(train.votes, train.label, nc)
    if cfg.prior != "psr":
        raise ValueError(f"prior must be psr or votes, not {cfg.prior!r}")
    if cfg.dataset == "rafdb":
        return rafdb_prior(cfg.prior_renormalise)
    return PSR_FERPLUS_PRIOR if nc == 8 else seven_class_prior(renormalise=cfg.prior_renormalise)


def make_sr(cfg: TrainConfig, device: torch.device) -> SuperResolver:
    """The frozen f_sr of the run (Sec. 2.1)."""
    from fer_study.models.sr import SuperResolver

    return SuperResolver(cfg.sr_backend, cfg.sr_weights, cfg.model.sr_size, device, precision=cfg.sr_precision)


def channels_first(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey or (N, H, W, 3) colour images (as the readers return them) -> (N, C, H, W)."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images


def model_inputs(cfg: TrainConfig, splits: dict[str, FERSplit], device: torch.device,
                 progress: bool = True) -> dict[str, DeviceData]:
    """The tensors the model is fed: cached SR images (SR settings), SynthFER's true high-resolution
    renders at the SR size (``sr_backend=oracle``) or the raw 48x48 images."""
    from fer_study.sr_cache import build_sr_cache

    out = {}
    oracle = cfg.model.input_kind == "sr" and cfg.sr_backend == "oracle"
    sr = make_sr(cfg, device) if cfg.model.input_kind == "sr" and not oracle else None
    for s, sp in splits.items():
        imgs = channels_first(sp.images)
        if oracle:
            from fer_study.data.synth import hr_inputs

            imgs = hr_inputs(cfg.data_root, sp.source, cfg.model.sr_size)
        elif sr is not None:
            imgs, _ = build_sr_cache(imgs, sr, cfg.cache_dir, device=device, progress=progress,
                                     label=f"{cfg.dataset}-{s}")
            imgs = np.asarray(imgs)
        out[s] = DeviceData(imgs, sp.label, sp.target, device)
    return out
