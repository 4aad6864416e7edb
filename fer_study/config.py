"""Run configuration: the ``paper``, ``demo`` and ``ferplus-cpu`` profiles, typed ``key=value`` overrides, validation, run ids.

What each field accepts is declared next to it (:func:`fer_study.overrides.option`: choices, bounds,
files that must exist) and checked by :meth:`TrainConfig.validate`, which every config built from user
input passes through (:func:`make_config`, :func:`apply_overrides`) before any data is read.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from fer_study.errors import ConfigError
from fer_study.io import ONEDNN_ISA_ALIASES, ONEDNN_ISAS
from fer_study.models.classifier import ModelConfig
from fer_study.models.sr import check_sr_weights
from fer_study.overrides import check_fields, check_paths, option, parse_value, unknown_key

#: Keys excluded from the run id: where and how a run executes, not what it trains (like the thread count,
#: ``device`` and ``onednn_max_isa`` change float rounding, hence bits; env.json records them).
NON_RESULT_KEYS = ("device", "progress", "runs_dir", "cache_dir", "compile", "onednn_max_isa")
#: Keys added after runs existed, with the value every older config implicitly had: a stored config
#: without the key reads as that value, and the key is hashed only when it differs from it, so old run
#: ids stay valid and name what they trained. ``pipeline`` 1 is the code before the fidelity changes
#: (grey SR, resizer before normalisation, bilinear [1, 1.2] augmentation, StepLR one epoch late,
#: last partial batch dropped, grey RAF-DB); it can be read, not retrained.
LATER_KEYS: dict[str, Any] = {"sr_precision": "fp32", "pipeline": 1, "drop_last": True, "rafdb_grey": True,
                              "pdls_alpha": None, "authors_protocol": True, "stn_lr_scale": 1.0}
LATER_MODEL_KEYS: dict[str, Any] = {"normalise": "backbone", "stn_align_corners": False,
                                     # strictness decides whether a run trains, not what it computes
                                     "checkpoint_strict": True}
#: The pipeline version this code trains (see LATER_KEYS).
PIPELINE = 2
#: The data root field of each data set (``TrainConfig.data_root`` is the active one).
ROOT_KEYS = {"ferplus": "ferplus_root", "rafdb": "rafdb_root", "synthfer": "synthfer_root"}
#: Names of the augmentation presets (``fer_study.data.tensors.AUGMENTS``; a test keeps them equal).
AUGMENT_NAMES = ("authors", "light", "none")
#: ``oracle``: no network; the true high-resolution renders of SynthFER (the upper bound of f_sr)
SR_BACKENDS = ("dic", "spandrel", "facesr", "bicubic", "bilinear", "oracle")


@dataclass
class TrainConfig:
    # allowed values are declared per field (fer_study.overrides.option) and checked by validate()
    # data
    dataset: str = option("ferplus", choices=tuple(ROOT_KEYS))
    ferplus_root: str = "data/ferplus"
    rafdb_root: str = "data/rafdb/basic"
    synthfer_root: str = "data/synthfer"
    label_mode: str = option("majority", choices=("majority", "probability", "crossentropy", "multi_target"))
    valid_fraction: float = option(0.1, gt=0, lt=1)  # RAF-DB: stratified valid carved from train
    max_train: int | None = option(None, ge=1)  # cap on training images (CPU runs)
    # f_sr (frozen, cached)
    sr_backend: str = option("dic", choices=SR_BACKENDS)
    sr_weights: str | None = option(None, path="file", note=(
        "the demo's facesr weights are trained by `make demo` or `fer-study sr train`; DIC's come from "
        "github.com/Maclory/Deep-Iterative-Collaboration; or --set sr_backend=bicubic --set sr_weights=none"))
    sr_precision: str = option("fp32", choices=("fp32", "bf16"))  # autocast while building the SR cache (in its key)
    # model
    model: ModelConfig = field(default_factory=ModelConfig)
    # loss
    loss: str = option("fpdls", choices=("ce", "focal", "pdls", "fpdls"))
    alpha: float = option(0.8, ge=0, le=1)
    gamma: float = option(2.0, ge=0)
    prior: str = option("psr", choices=("psr", "votes"))  # psr: published constant; votes: from training votes
    prior_renormalise: bool = False
    # PDLS's alpha when loss=pdls (None: ``alpha``); the authors' code built PDLS with its class default 0.5
    pdls_alpha: float | None = option(None, ge=0, le=1)
    # optimisation
    optimizer: str = option("adam", choices=("adam", "adamw"))
    lr: float = option(1e-4, gt=0)
    weight_decay: float = option(0.0, ge=0)
    # the STN's learning rate as a multiple of ``lr`` (1: one group, the authors'); see training.optim
    stn_lr_scale: float = option(1.0, gt=0, le=1)
    batch_size: int = option(64, ge=2, note="BatchNorm needs 2 or more")
    epochs: int = option(100, ge=1)
    # paper: x0.25 every 10 epochs; authors: x0.25 every 15; cosine: per step; constant
    schedule: str = option("paper", choices=("paper", "authors", "cosine", "constant"))
    warmup_steps: int = option(0, ge=0)  # linear warm-up (cosine schedule)
    augment: str = option("authors", choices=AUGMENT_NAMES)
    drop_last: bool = False  # drop each epoch's last partial batch (the authors' DataLoader keeps it)
    rafdb_grey: bool = False  # RAF-DB is RGB; the paper resizes it to 48 px, keeping colour
    pipeline: int = option(PIPELINE, choices=(PIPELINE,), note="configs of pipeline 1 can be read, not retrained")
    seed: int = option(1111, ge=0)
    # the authors' protocol (fer_study.training.loop): one test pass per epoch under the training transform
    authors_protocol: bool = True
    # execution
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (checked against this machine by validate)
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (fer_study.training.precision.amp_active)
    compile: bool = False
    # oneDNN's instruction-set cap for CPU runs (fer_study.onednn; env.json records the kernel that ran)
    onednn_max_isa: str | None = option(None, choices=tuple(ONEDNN_ISAS) + tuple(ONEDNN_ISA_ALIASES))
    progress: bool = True
    runs_dir: str = "results/runs"
    cache_dir: str = "cache/sr"

    @property
    def data_root(self) -> str:
        """The root of the active data set (``ferplus_root``, ``rafdb_root`` or ``synthfer_root``)."""
        if self.dataset not in ROOT_KEYS:
            raise ConfigError(f"dataset={self.dataset}: expected one of {', '.join(ROOT_KEYS)}")
        return getattr(self, ROOT_KEYS[self.dataset])

    def validate(self, check_files: bool | Collection[str] = True) -> None:
        """Raise :class:`ConfigError` (key, value, what was expected) for a value outside its field's
        declared choices or range, an unknown backbone, a device this machine lacks or an inconsistent
        combination; then, of the keys ``check_files`` selects (True, False, or the keys to check), that
        ``sr_weights`` / ``model.checkpoint``, where set, exist and hold weights of the expected network
        (their keys are read and compared with the network's: :func:`fer_study.models.sr.check_sr_weights`,
        :meth:`ModelConfig.check_weights`) and that ``model.pretrained`` weights are cached or the hub is
        reachable (seconds, not a minute of retries)."""
        check_fields(self)
        self.model.validate(check_files=False)
        _check_device(self.device)
        if self.dataset == "rafdb":
            if self.model.num_classes != 7:
                raise ConfigError(f"model.num_classes={self.model.num_classes}: dataset=rafdb needs 7 (RAF-DB has "
                                  "no contempt)")
            if self.prior != "psr":
                raise ConfigError(f"prior={self.prior}: dataset=rafdb needs prior=psr (RAF-DB has no votes)")
        if self.sr_backend == "oracle" and self.model.up == "sr":
            if self.dataset != "synthfer":
                raise ConfigError(f"sr_backend=oracle: only dataset=synthfer has true high-resolution renders, "
                                  f"not dataset={self.dataset}")
            if self.model.input_kind != "sr":
                raise ConfigError("sr_backend=oracle: the renders replace the cached SR images; it cannot run "
                                  "inside the model (model.stn_placement=before_sr)")
        check_paths(self, "", check_files)
        if self.sr_weights is not None and (check_files is True or (not isinstance(check_files, bool)
                                                                    and "sr_weights" in check_files)):
            check_sr_weights(self.sr_backend, self.sr_weights)
        self.model.check_weights(check_files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A stored config (a run's config.json) as it is, without validation (an old run stays readable on
        any machine). The single ``data_root`` of older configs becomes the root of their data set."""
        d = dict(d)
        model = dict(d.pop("model", {}))
        for k, legacy in LATER_KEYS.items():
            d.setdefault(k, legacy)
        for k, legacy in LATER_MODEL_KEYS.items():
            model.setdefault(k, legacy)
        unknown_model = set(model) - {f.name for f in fields(ModelConfig)}
        if "data_root" in d:
            root, ds = d.pop("data_root"), d.get("dataset", TrainConfig.dataset)
            if ds not in ROOT_KEYS:
                raise ConfigError(f"dataset={ds}: expected one of {', '.join(ROOT_KEYS)}")
            d.setdefault(ROOT_KEYS[ds], root)
        unknown = sorted(set(d) - {f.name for f in fields(cls)}) + sorted(f"model.{k}" for k in unknown_model)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(model=ModelConfig(**model), **d)

    def run_id(self) -> str:
        """``<dataset>-<backbone>-<up>-<down>[-stn]-<loss>-s<seed>-<hash>``: the hash covers the result keys;
        of the data roots only the active one counts (hashed as ``data_root``, as before the split)."""
        d = self.to_dict()
        for k in (*NON_RESULT_KEYS, *ROOT_KEYS.values()):
            d.pop(k, None)
        d["data_root"] = self.data_root
        # a path inside this checkout hashes as the relative path it would be written as, so the same
        # run has one id whether a path was written relative (fer-study run from the root) or made
        # absolute (01_train in JupyterLab resolves relative paths against the project root)
        d["data_root"] = _in_project(d["data_root"])
        d["sr_weights"] = _in_project(d["sr_weights"])
        d["model"]["checkpoint"] = _in_project(d["model"]["checkpoint"])
        for k, legacy in LATER_KEYS.items():
            if d.get(k) == legacy:
                d.pop(k)
        if not self.model.stn:  # without an STN the scale changes nothing: the same run, the same id
            d.pop("stn_lr_scale", None)
        for k, legacy in LATER_MODEL_KEYS.items():
            if d["model"].get(k) == legacy:
                d["model"].pop(k)
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        m = self.model
        stn = "-stn" if m.stn else ""
        return f"{self.dataset}-{m.backbone}-{m.up}-{m.down}{stn}-{self.loss}-s{self.seed}-{h}"


def _in_project(path: str | None) -> str | None:
    """``path`` relative to the project root when it is an absolute path inside it, else unchanged."""
    if not path or not Path(path).is_absolute():
        return path
    from fer_study.paths import project_root

    try:
        return Path(path).relative_to(project_root()).as_posix()
    except ValueError:
        return path


def _check_device(device: str) -> None:
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("auto", "cpu"):
        return
    if m:
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device}: CUDA is not available on this machine; use device=auto or cpu")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device=mps: MPS is not available on this machine; use device=auto or cpu")
        return
    raise ConfigError(f"device={device}: expected auto, cpu, cuda, cuda:N or mps")


def paper_profile() -> TrainConfig:
    """The paper's configuration (Sec. 3.2 and the authors' code): Swin-B + STN + NR, F-PDLS."""
    return TrainConfig(model=ModelConfig(backbone="swin_b", up="sr", down="ltr", stn=True, sr_size=384,
                                         pretrained=True))


def demo_profile() -> TrainConfig:
    """CPU-sized: SynthFER, facesr x2 (48 -> 96), LTR n=8 back down to the backbones' 48 px, tiny
    random-init backbones with a convolutional stem (from-scratch transformers with patchify stems stay
    at the majority class for tens of epochs here), 3 epochs of batch 16 at lr 1e-3 with warm-up +
    cosine; the ViT stand-in 4 and the ConViT stand-in 8 (:data:`PROFILE_BACKBONE_RECIPES`). Batch 16 x 3
    epochs (264 steps on the 1,407 training images SynthFER's label rules keep) replaced batch 32 x 4
    epochs (176 steps) for `make demo`'s 15 minutes: a step costs
    6-18 % more per image at batch 16 on the 2-core CPU, the 25 % fewer images more than pay for it, and
    the extra steps train the stand-ins further (e.g. Swin-B + STN, CE: 93.87 +- 0.63 against 93.07 +-
    0.82), except ViT's, which needs its fourth epoch (F-PDLS + proposed 89.51 +- 2.93 at 3, 92.28 +-
    0.49 at 4; results/repro/2026-11-29_batch16). The STN trains at the paper's 1e-4 (``stn_lr_scale=0.1``,
    :func:`fer_study.training.optim.param_groups`): at 1e-3 its affine warp ran away in some seeds of the
    Swin-B/L + STN stand-ins, which then sat at the majority class (3 of 52 runs of two stall sweeps over
    both float paths; 0 of the same 52 at 1e-4: results/repro/2026-11-29_stn_lr). At 1.5e-3 and above, ConViT and the STN settings stayed
    at the majority class in some seeds. 60 warm-up steps, not 30 (measured at batch 32 x 4 epochs): on
    oneDNN's AVX2 float path one seed of the Swin-B stand-in + STN cell sat at the majority class with 30
    (1 of 20 seeds; 0 of 20 with 60: suggestive only, Fisher p = 1; results/repro/2026-11-29_stall_sweep). For time: oneDNN capped at
    AVX2 (:mod:`fer_study.onednn`: its AVX2 kernels run the resizer's small-channel convolutions faster
    than its AVX-512 ones on the 2-core machine, and put AVX2-only and AVX-512 machines on the same
    kernels) and no authors'-protocol test pass per epoch (``authors_protocol=false``; the ferplus-cpu
    and paper profiles keep it)."""
    return TrainConfig(
        dataset="synthfer", synthfer_root="data/synthfer", rafdb_root="data/synthfer_rafdb/basic",  # RAF-DB-layout twin
        sr_backend="facesr", sr_weights="cache/facesr/facesr.pt",
        model=ModelConfig(backbone="tiny_swin_s", up="sr", down="ltr", stn=False, sr_size=96, img_size=48,
                          head="linear", stem="conv", ltr_n=8),
        prior="votes", optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=16, epochs=3,
        schedule="cosine", warmup_steps=60, augment="light", seed=0, amp=False,
        authors_protocol=False, onednn_max_isa="avx2", stn_lr_scale=0.1)


#: The ``ferplus-cpu`` profile's facesr weights (``fer-study sr train --folder FERPLUS/FER2013Train
#: --lr-size 24 --holdout 0 --out ...``: self-supervised on FERPlus training faces, 24 -> 48).
FERPLUS_CPU_FACESR = "cache/facesr/facesr_ferplus.pt"


def ferplus_cpu_profile() -> TrainConfig:
    """Real FERPlus at CPU scale (Table 2 on real faces): the user's FERPlus (set ``ferplus_root``),
    majority labels, 8 classes, the PSR prior; facesr x2 (48 -> 96) trained self-supervised on FERPlus
    training faces (24 -> 48) instead of DIC x8; LTR n=8 back down to the stand-ins' 48 px; random-init
    Swin stand-ins with a wide convolutional stem (``cpu_swin_s``, ``cpu_swin_b``); 12 epochs of AdamW
    with warm-up + cosine, light augmentation; bf16 autocast where the CPU has native bf16 (1.6x faster
    here; env.json records whether it was used). Runs go to ``results/ferplus_cpu/runs`` (their config,
    env, metrics and history are committed; checkpoints are not)."""
    return TrainConfig(
        dataset="ferplus", ferplus_root="data/ferplus", sr_backend="facesr", sr_weights=FERPLUS_CPU_FACESR,
        model=ModelConfig(backbone="cpu_swin_s", up="sr", down="ltr", stn=False, sr_size=96, img_size=48,
                          head="linear", stem="conv_wide", ltr_n=8),
        label_mode="majority", prior="psr", optimizer="adamw", lr=2e-3, weight_decay=0.05, batch_size=64,
        epochs=12, schedule="cosine", warmup_steps=200, augment="light", seed=0, amp=True,
        runs_dir="results/ferplus_cpu/runs")


PROFILES = {"paper": paper_profile, "demo": demo_profile, "ferplus-cpu": ferplus_cpu_profile}


_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The annotated type of each field of ``cls`` (``TrainConfig``, ``ModelConfig``), resolved once."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _items(overrides: list[str] | dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, raw value, how the errors name it) for ``["k=v", ...]`` or ``{"k": v}``."""
    if isinstance(overrides, dict):
        return [(str(k), v, f"{k}={v}") for k, v in overrides.items()]
    out = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"--set {o}: expected KEY=VALUE")
        k, v = o.split("=", 1)
        out.append((k.strip(), v, f"--set {o}"))
    return out


def apply_overrides(cfg: TrainConfig, overrides: list[str] | dict[str, Any]) -> TrainConfig:
    """``cfg`` with ``KEY=VALUE`` overrides (``--set`` strings, or a dict such as papermill parameters),
    each parsed against its field's type (:func:`fer_study.overrides.parse_value`); model keys as
    ``model.KEY`` (bare model keys work too). The result is validated (:meth:`TrainConfig.validate`;
    of the weights files, those named by the overrides must exist). Errors: :class:`ConfigError`."""
    top_types = {k: t for k, t in field_types(TrainConfig).items() if k != "model"}
    model_types = field_types(ModelConfig)
    top: dict[str, Any] = {}
    mod: dict[str, Any] = {}
    for k, raw, label in _items(overrides):
        if k == "data_root":
            raise ConfigError(f"{label}: data_root was split into ferplus_root / rafdb_root / synthfer_root "
                              "(one root per data set); set the one of your dataset")
        name = k[6:] if k.startswith("model.") else k
        if k.startswith("model.") and name in model_types:
            mod[name] = parse_value(raw, model_types[name], label)
        elif k in top_types:
            top[k] = parse_value(raw, top_types[k], label)
        elif k in model_types:
            mod[k] = parse_value(raw, model_types[k], label)
        else:
            valid = [*top_types, *(f"model.{m}" for m in model_types), *model_types]
            raise unknown_key(k, valid, label)
    new = replace(cfg, model=replace(cfg.model, **mod), **top)
    named = {k for k in top} | {f"model.{k}" for k in mod}
    new.validate(check_files=named)
    return new


#: A profile's training settings for one stand-in, applied by :func:`make_config` where the overrides leave
#: them unset (so a table cell and ``fer-study train --set model.backbone=...`` train the same run). The
#: demo's ConViT and ViT stand-ins learn slowest. ConViT at batch 32: its CE + vanilla cell's seed std was
#: 2.35 points at 4 epochs (seeds 0-5), 0.51 at 6; its F-PDLS + proposed cell's 1.72 and 2.39 at 6 (two
#: demos), 0.64 at 8 (results/repro/2026-11-29_convit_epochs); at batch 16, 6 epochs gave 1.64 and 1.23
#: (results/repro/2026-11-29_batch16): it trains 8. ViT at batch 16: 0.47 and 2.93 at 3 epochs, 0.18 and
#: 0.49 at 4: it trains 4. Their vanilla and proposed cells alike.
PROFILE_BACKBONE_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {"tiny_convit": {"epochs": 8}, "tiny_vit": {"epochs": 4}}}


def _named_keys(overrides: list[str] | dict[str, Any] | None) -> set[str]:
    """The keys a list or dict of overrides sets."""
    return {k for k, _, _ in _items(overrides or [])}


def _apply_recipe(profile: str, cfg: TrainConfig, named: Collection[str] = ()) -> TrainConfig:
    """``cfg`` with the profile's settings for its backbone (:data:`PROFILE_BACKBONE_RECIPES`), except
    those ``named`` (keys the caller set explicitly)."""
    recipe = PROFILE_BACKBONE_RECIPES.get(profile, {}).get(cfg.model.backbone, {})
    extra = {k: v for k, v in recipe.items() if k not in named}
    if not extra:
        return cfg
    cfg = replace(cfg, **extra)
    cfg.validate(check_files=set())
    return cfg


def make_config(profile: str = "demo", overrides: list[str] | dict[str, Any] | None = None,
                user: list[str] | None = None) -> TrainConfig:
    """A profile with ``overrides``, then ``user``'s (e.g. a table cell's, then ``--set``), each validated
    (see :func:`apply_overrides`), then the profile's settings for the backbone the run ends up with
    (:data:`PROFILE_BACKBONE_RECIPES`) that neither names."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(sorted(PROFILES))}")
    cfg = apply_overrides(PROFILES[profile](), overrides or [])
    if user:
        cfg = apply_overrides(cfg, user)
    return _apply_recipe(profile, cfg, _named_keys(overrides) | _named_keys(user))


def read_config(path: str | Path) -> TrainConfig:
    """A config.json (e.g. of an earlier run) as a :class:`TrainConfig`; a missing file, bad JSON or
    unknown keys are a :class:`ConfigError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {p}: no such file")
    try:
        return TrainConfig.from_dict(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {p}: not valid JSON ({e})") from None
    except (ConfigError, TypeError, AttributeError) as e:
        raise ConfigError(f"--config {p}: {e}") from None
