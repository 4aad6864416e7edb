"""Run configuration: the ``paper`` and ``demo`` profiles, ``key=value`` overrides, run ids."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fer_study.models.classifier import ModelConfig

#: Keys that do not change a run's result (excluded from the run id).
NON_RESULT_KEYS = ("device", "progress", "runs_dir", "cache_dir", "compile", "num_workers")
# keys added after runs existed: hashed only when they differ from this value, so old run ids stay valid
LATER_KEYS = {"sr_precision": "fp32"}


@dataclass
class TrainConfig:
    # data
    dataset: str = "ferplus"  # ferplus | synthfer | rafdb
    data_root: str = "data/ferplus"
    label_mode: str = "majority"
    valid_fraction: float = 0.1  # RAF-DB: stratified valid carved from train
    max_train: int | None = None  # cap on training images (CPU runs)
    # f_sr (frozen, cached)
    sr_backend: str = "dic"
    sr_weights: str | None = None
    sr_precision: str = "fp32"  # fp32 | bf16 (autocast while building the SR cache; part of its key)
    # model
    model: ModelConfig = field(default_factory=ModelConfig)
    # loss
    loss: str = "fpdls"
    alpha: float = 0.8
    gamma: float = 2.0
    prior: str = "psr"  # psr (published constant) | votes (recomputed from the training votes)
    prior_renormalise: bool = False
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 100
    schedule: str = "paper"  # paper (x0.25 every 10) | authors (x0.25 every 15) | cosine (per step) | constant
    warmup_steps: int = 0  # linear warm-up (cosine schedule)
    augment: str = "authors"  # authors | light | none
    seed: int = 1111
    # execution
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (engine.amp_active)
    compile: bool = False
    progress: bool = True
    runs_dir: str = "results/runs"
    cache_dir: str = "cache/sr"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = ModelConfig(**d.pop("model", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown config keys: {sorted(unknown)}")
        return cls(model=model, **d)

    def run_id(self) -> str:
        d = self.to_dict()
        for k in NON_RESULT_KEYS:
            d.pop(k, None)
        for k, default in LATER_KEYS.items():
            if d.get(k) == default:
                d.pop(k)
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        m = self.model
        stn = "-stn" if m.stn else ""
        return f"{self.dataset}-{m.backbone}-{m.up}-{m.down}{stn}-{self.loss}-s{self.seed}-{h}"


def paper_profile() -> TrainConfig:
    """The paper's configuration (Sec. 3.2 and the authors' code): Swin-B + STN + NR, F-PDLS."""
    return TrainConfig(model=ModelConfig(backbone="swin_b", up="sr", down="ltr", stn=True, sr_size=384,
                                         pretrained=True))


def demo_profile() -> TrainConfig:
    """CPU-sized: SynthFER, facesr x2 (48 -> 96), LTR n=8 back down to the backbones' 48 px, tiny
    random-init backbones with a convolutional stem (from-scratch transformers with patchify stems stay
    at the majority class for tens of epochs here), 3 epochs of batch 16 with warm-up + cosine."""
    return TrainConfig(
        dataset="synthfer", data_root="data/synthfer", sr_backend="facesr", sr_weights="cache/facesr/facesr.pt",
        model=ModelConfig(backbone="tiny_swin_s", up="sr", down="ltr", stn=False, sr_size=96, img_size=48,
                          head="linear", stem="conv", ltr_n=8),
        prior="votes", optimizer="adamw", lr=1.5e-3, weight_decay=0.05, batch_size=16, epochs=3,
        schedule="cosine", warmup_steps=50, augment="light", seed=0, amp=False)


PROFILES = {"paper": paper_profile, "demo": demo_profile}


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def apply_overrides(cfg: TrainConfig, overrides: list[str] | dict[str, Any]) -> TrainConfig:
    """``key=value`` pairs (``model.backbone=tiny_vit`` for model keys); unknown keys are an error."""
    items = overrides.items() if isinstance(overrides, dict) else (o.split("=", 1) for o in overrides)
    top: dict[str, Any] = {}
    mod: dict[str, Any] = {}
    model_keys = {f.name for f in fields(ModelConfig)}
    top_keys = {f.name for f in fields(TrainConfig)}
    for k, v in items:
        v = _parse_value(v) if isinstance(v, str) else v
        if k.startswith("model."):
            k = k[6:]
            if k not in model_keys:
                raise KeyError(f"unknown model key {k!r}; known: {sorted(model_keys)}")
            mod[k] = v
        elif k in top_keys and k != "model":
            top[k] = v
        elif k in model_keys:
            mod[k] = v
        else:
            raise KeyError(f"unknown config key {k!r}")
    return replace(cfg, model=replace(cfg.model, **mod), **top)


def make_config(profile: str = "demo", overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    return apply_overrides(PROFILES[profile](), overrides or [])
