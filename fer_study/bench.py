"""``fer-study bench``: training throughput of the vanilla pipeline and of the Neural Resizer reading
the SR cache (same backbone and batch), eager vs ``torch.compile``, the on-device data path alone,
SR cache build throughput per backend, peak memory, and an authors'-style baseline (SR images
decoded from PNG files by a standard DataLoader with torchvision transforms, eager fp32).

The timed training step is the engine's own, :func:`fer_study.training.step.train_step`, built by
:func:`~fer_study.training.step.build_step_parts` from the ``profile`` (``paper``: F-PDLS with the
PSR prior, Adam, the authors' augmentation) with ``overrides``; only the model fields come from
:class:`BenchConfig`. The JSON records which loss, optimiser and augmentation were timed.

Timing: median of repeated timed steps after warm-up, synchronised on CUDA. Results go to
``results/bench/<device>-<date>.json`` and ``.md``. Speed is measured here, never in unit tests.
"""

from __future__ import annotations

import datetime as _dt
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fer_study.allocator import tune_cpu_allocator
from fer_study.config import TrainConfig, make_config
from fer_study.data.tensors import AUGMENTS, augment, to_float
from fer_study.io import environment, write_json, write_text
from fer_study.models.classifier import ModelConfig, NeuralResizerClassifier
from fer_study.training import step as engine_step
from fer_study.training.data import make_prior
from fer_study.training.precision import amp_active


@dataclass
class BenchConfig:
    backbone: str = "swin_s"
    batch: int = 64
    sr_size: int = 384
    input_size: int = 48
    warmup: int = 3
    steps: int = 10  # timed blocks per model
    block: int = 1  # training steps per timed block (CUDA: several, so the host may run ahead)
    compile_modes: tuple[str, ...] = ()  # torch.compile modes to time besides eager ("default", ...)
    amp: bool = True
    baseline: bool = True
    baseline_images: int = 256
    sr_backends: tuple[str, ...] = ("bicubic",)
    sr_images: int = 64
    sr_batch: int = 32
    dic_weights: str | None = None
    stem: str = "patch"
    ltr_n: int = 16
    stn: bool = False  # the paper's model has an STN; the bench times the pipelines without it by default
    profile: str = "paper"  # the run configuration whose step (loss, optimiser, augmentation) is timed
    overrides: tuple[str, ...] = ()  # key=value on top of the profile (model fields above win)


def bench_train_config(bc: BenchConfig, model: ModelConfig | None = None) -> TrainConfig:
    """The run configuration whose training step is timed: ``bc.profile`` with ``bc.overrides``,
    the model fields of ``bc`` (random weights: the same cost as pretrained ones), ``bc.amp`` and
    ``bc.batch``; ``model`` replaces the model when given."""
    cfg = make_config(bc.profile, list(bc.overrides))
    if model is None:
        model = replace(cfg.model, backbone=bc.backbone, stem=bc.stem, ltr_n=bc.ltr_n, sr_size=bc.sr_size,
                        stn=bc.stn, pretrained=False, checkpoint=None)
    return replace(cfg, model=model, amp=bc.amp, batch_size=bc.batch)


def pipeline_models(bc: BenchConfig) -> dict[str, ModelConfig]:
    """The two pipelines compared: vanilla (48 px bilinear up to the backbone) and the Neural
    Resizer reading the SR cache (``up=sr``, ``down=ltr``)."""
    m = bench_train_config(bc).model
    return {"vanilla": replace(m, up="bilinear", down="none"), "nr": replace(m, up="sr", down="ltr")}


def timed_step_record(bc: BenchConfig) -> dict[str, Any]:
    """What the timed step runs, for the JSON: the function and the run settings it was built from."""
    cfg = bench_train_config(bc)
    return {"function": f"{engine_step.__name__}.train_step", "profile": bc.profile,
            "overrides": list(bc.overrides), "loss": cfg.loss, "alpha": cfg.alpha, "gamma": cfg.gamma,
            "prior": cfg.prior if cfg.prior == "psr" else f"{cfg.prior} (uniform stand-in: random bench data)",
            "label_mode": cfg.label_mode, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "stn_lr_scale": cfg.stn_lr_scale if cfg.model.stn else None,  # None: no STN
            "weight_decay": cfg.weight_decay, "schedule": cfg.schedule, "augment": cfg.augment,
            "augment_config": asdict(AUGMENTS[cfg.augment])}


def _bench_prior(cfg: TrainConfig) -> np.ndarray:
    if cfg.prior == "votes":  # random data have no votes; a prior of the same shape costs the same
        k = cfg.model.num_classes
        return np.full((k, k), 1.0 / k)
    return make_prior(cfg, None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process peak)


def _timed(fn, warmup: int, steps: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return ts


def make_train_step(mcfg: ModelConfig, input_size: int, bc: BenchConfig, device: torch.device,
                    compile_mode: str | None) -> Callable[[], None]:
    """One training step exactly as a run's epoch loop runs it: the engine's
    :func:`fer_study.training.step.train_step` on parts built by ``build_step_parts`` from
    :func:`bench_train_config` (uint8 batch on the device -> on-device augmentation -> (compiled)
    model under bf16 autocast when active -> the run's loss -> backward -> the run's optimiser)."""
    cfg = bench_train_config(bc, mcfg)
    torch.manual_seed(0)
    model = NeuralResizerClassifier(mcfg).to(device).cnn_channels_last_()
    fwd = torch.compile(model, mode=compile_mode) if compile_mode else model
    parts = engine_step.build_step_parts(cfg, model, fwd, _bench_prior(cfg), device,
                                         steps_per_epoch=max(1, bc.warmup + bc.steps * bc.block))
    model.train()
    data = torch.randint(0, 256, (bc.batch * 4, 1, input_size, input_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, mcfg.num_classes, (bc.batch,), device=device)
    target = y if cfg.label_mode == "majority" else F.one_hot(y, mcfg.num_classes).float()
    gen = torch.Generator().manual_seed(0)
    i = [0]

    def step() -> None:
        s = (i[0] % 4) * bc.batch
        i[0] += 1
        engine_step.train_step(parts, data[s:s + bc.batch], target, gen)

    return step


def train_steps_bench(models: dict[str, tuple[ModelConfig, int]], bc: BenchConfig, device: torch.device,
                      compile_mode: str | None) -> dict[str, dict]:
    """Time several pipelines (e.g. vanilla and NR) on the same batch size, interleaved.

    Each model is built and warmed up on its own (its warm-up time includes compilation; on CUDA its
    peak memory is measured then, above what was allocated before it), then the timed blocks
    alternate between the models (A, B, A, B, ...), so a machine whose speed drifts during the run
    slows every pipeline alike and the ratio stays fair. Each block is ``bc.block`` steps followed by
    a device sync; the reported step time is the median block time / ``bc.block``.
    """
    cuda = device.type == "cuda"
    steps, out = {}, {}
    for name, (mcfg, size) in models.items():
        base = torch.cuda.memory_allocated(device) if cuda else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step = make_train_step(mcfg, size, bc, device, compile_mode)
        t0 = time.perf_counter()
        for _ in range(max(1, bc.warmup)):
            step()
        _sync(device)
        out[name] = {"warmup_s": round(time.perf_counter() - t0, 3),
                     "peak_mem_mb": round((_peak_mb(device) - base / 2 ** 20) if cuda else _peak_mb(device), 1)}
        steps[name] = step
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(bc.steps):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(bc.block):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - t) / bc.block)
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name].update({"median_step_s": med, "images_per_s": bc.batch / med, "blocks": bc.steps,
                          "block": bc.block, "warmup": bc.warmup, "all_steps_s": [round(t, 5) for t in ts],
                          "compile_mode": compile_mode or "eager"})
    return out


def data_path_bench(input_size: int, bc: BenchConfig, device: torch.device) -> dict:
    """The step's data path alone: index a uint8 batch, convert, augment with the run's transform."""
    aug = AUGMENTS[bench_train_config(bc).augment]
    data = torch.randint(0, 256, (bc.batch * 4, 1, input_size, input_size), dtype=torch.uint8, device=device)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data), device=device)[:bc.batch]

    def batches() -> None:
        for _ in range(bc.block):
            augment(to_float(data[idx]), aug, gen)

    ts = _timed(batches, bc.warmup, bc.steps, device)
    med = statistics.median(ts) / bc.block
    return {"median_batch_s": med, "images_per_s": bc.batch / med}


def sr_bench(backend: str, bc: BenchConfig, device: torch.device) -> dict:
    """SR cache build throughput: :func:`build_sr_cache` itself (SR, uint8 rounding, memmap writes)
    on ``bc.sr_images`` random 48 px images, after a warm-up build of one batch; fp32 and, for the
    network backends on CUDA, bf16. DIC without ``dic_weights`` uses random weights (same cost)."""
    from fer_study.models.sr import SuperResolver
    from fer_study.sr_cache import build_sr_cache

    tmp = Path(tempfile.mkdtemp(prefix="fer-bench-sr-"))
    weights = None
    if backend == "dic":
        weights = bc.dic_weights
        if weights is None:
            from fer_study.models.dic import DIC

            torch.manual_seed(0)
            weights = str(tmp / "dic_random.pth")
            torch.save(DIC().state_dict(), weights)
    elif backend not in ("bicubic", "bilinear"):
        raise ValueError(f"bench times dic, bicubic or bilinear, not {backend!r}")
    net = backend == "dic"
    precisions = ("fp32", "bf16") if net and device.type == "cuda" else ("fp32",)
    rng = np.random.default_rng(0)
    n = bc.sr_images
    imgs = rng.integers(0, 256, (n, bc.input_size, bc.input_size), dtype=np.uint8)
    res: dict = {"backend": backend, "batch": bc.sr_batch, "images": n,
                 "weights": "random (same cost as released)" if net and bc.dic_weights is None else bc.dic_weights}
    arrays = {}
    try:
        for prec in precisions:
            sr = SuperResolver(backend, weights, bc.sr_size, device, precision=prec)
            build_sr_cache(imgs[:bc.sr_batch], sr, tmp / f"warm-{prec}", bc.sr_batch, device, progress=False)
            _sync(device)
            t = time.perf_counter()
            arr, _ = build_sr_cache(imgs, sr, tmp / prec, bc.sr_batch, device, progress=False)
            _sync(device)
            ips = n / (time.perf_counter() - t)
            arrays[prec] = np.asarray(arr)
            res[prec] = {"images_per_s": ips, "ferplus_35887_minutes": 35887 / ips / 60}
        if len(arrays) == 2:
            d = np.abs(arrays["fp32"].astype(np.int16) - arrays["bf16"].astype(np.int16))
            res["bf16_vs_fp32_uint8"] = {"mean_abs": float(d.mean()), "max_abs": int(d.max()),
                                         "equal_fraction": float((d == 0).mean())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def authors_baseline(bc: BenchConfig, device: torch.device, mcfg: ModelConfig) -> dict:
    """The authors' pipeline: SR PNGs -> DataLoader (workers) -> torchvision transforms -> eager fp32."""
    import os

    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    tmp = Path(tempfile.mkdtemp(prefix="fer-bench-png-"))
    rng = np.random.default_rng(0)
    n = bc.baseline_images
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (bc.sr_size, bc.sr_size), dtype=np.uint8)).convert("RGB").save(tmp / f"{k}.png")
    tf = T.Compose([T.RandomHorizontalFlip(), T.RandomRotation(45), T.RandomAffine(15, scale=(1.0, 1.2)),
                    T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class PNGs(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, k: int):
            with Image.open(tmp / f"{k}.png") as im:
                return tf(im.convert("RGB")), k % mcfg.num_classes

    torch.manual_seed(0)
    model = NeuralResizerClassifier(mcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    workers = min(8, os.cpu_count() or 1)
    loader = DataLoader(PNGs(), batch_size=bc.batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    seen, t0 = 0, None
    for _epoch in range(2):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)  # eager fp32, as the authors' code
            opt.zero_grad()
            loss.backward()
            opt.step()
            if t0 is None:
                _sync(device)
                t0 = time.perf_counter()  # timing starts after the first batch (worker start-up, warm-up)
                continue
            seen += len(x)
    _sync(device)
    dt = time.perf_counter() - t0
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return {"images_per_s": seen / dt if seen else float("nan"), "images_timed": seen, "workers": workers,
            "note": "PNG decode + torchvision transforms in DataLoader workers, eager fp32, Adam"}


def run_bench(bc: BenchConfig, device: torch.device, out_dir: str | Path = "results/bench", log=print) -> dict:
    """All measurements, in the order eager pair, data path, SR cache builds, authors' baseline, then
    one compiled pair per compile mode. The JSON is rewritten (atomically) after each part with
    ``complete: false``, so a run stopped by a time limit still leaves what it measured."""
    env = environment(device)
    env["bf16_autocast"] = amp_active(device, bc.amp)
    if device.type == "cpu":
        env["cpu_allocator"] = tune_cpu_allocator()  # see fer_study.allocator; FER_STUDY_MALLOC_TUNING=0 skips it
    models = pipeline_models(bc)
    van, nr = models["vanilla"], models["nr"]
    pair = {"vanilla": (van, bc.input_size), "nr": (nr, bc.sr_size)}
    res: dict = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(bc).items()},
                 "train_step": timed_step_record(bc), "models": {k: asdict(m) for k, m in models.items()},
                 "env": env, "device": env["device"], "date": _dt.date.today().isoformat(), "results": {},
                 "complete": False}
    out_dir = Path(out_dir)
    stem = base = f"{_slug(env['device'])}-{res['date']}"
    k = 1
    while (out_dir / f"{stem}.json").exists():  # never overwrite an earlier run of the same day
        k += 1
        stem = f"{base}-{k}"

    def save() -> None:
        res["ratios"] = ratios(res["results"])
        write_json(out_dir / f"{stem}.json", res)
        write_text(out_dir / f"{stem}.md", to_markdown(res))

    log("train steps: vanilla and neural resizer (SR cached), eager, interleaved")
    for k, v in train_steps_bench(pair, bc, device, None).items():
        res["results"][f"{k}_eager"] = v
    save()
    log("data path alone")
    res["results"]["data_path_sr"] = data_path_bench(bc.sr_size, bc, device)
    res["results"]["data_path_raw"] = data_path_bench(bc.input_size, bc, device)
    for b in bc.sr_backends:
        log(f"SR cache build: {b}")
        res["results"][f"sr_{b}"] = sr_bench(b, bc, device)
        save()
    if bc.baseline:
        log("authors'-style baseline (PNG + DataLoader + torchvision, eager fp32)")
        res["results"]["authors_baseline"] = authors_baseline(bc, device, nr)
        save()
    for mode in bc.compile_modes:
        log(f"train steps: vanilla and neural resizer, torch.compile(mode={mode!r}), interleaved")
        for k, v in train_steps_bench(pair, bc, device, mode).items():
            res["results"][f"{k}_compiled_{mode}"] = v
        save()
    res["complete"] = True
    save()
    log(to_markdown(res))
    log(f"written: {out_dir / stem}.json and .md")
    return res


def ratios(r: dict) -> dict[str, float]:
    """The issue's ratios from whatever has been measured so far."""
    out: dict[str, float] = {}
    if "nr_eager" in r and "vanilla_eager" in r:
        out["nr_over_vanilla_step_time_eager"] = r["nr_eager"]["median_step_s"] / r["vanilla_eager"]["median_step_s"]
        a, b = r["nr_eager"].get("all_steps_s", []), r["vanilla_eager"].get("all_steps_s", [])
        if a and len(a) == len(b):  # median of the per-block ratios of interleaved neighbours: robust to drift
            out["nr_over_vanilla_paired_median_eager"] = statistics.median(x / y for x, y in zip(a, b))
    if "data_path_sr" in r and "nr_eager" in r:
        out["data_path_fraction_of_nr_step"] = r["data_path_sr"]["median_batch_s"] / r["nr_eager"]["median_step_s"]
    nrs = {k: v for k, v in r.items() if k.startswith("nr_")}
    for k, v in nrs.items():
        if k != "nr_eager" and "nr_eager" in r:
            mode = k.removeprefix("nr_compiled_")
            out[f"compile_speedup_nr_{mode}"] = r["nr_eager"]["median_step_s"] / v["median_step_s"]
            van = r.get(f"vanilla_compiled_{mode}")
            if van:
                out[f"nr_over_vanilla_step_time_compiled_{mode}"] = v["median_step_s"] / van["median_step_s"]
    if nrs:
        out["best_nr_images_per_s"] = max(v["images_per_s"] for v in nrs.values())
        if "authors_baseline" in r:
            out["ours_best_nr_over_authors_baseline"] = out["best_nr_images_per_s"] / r["authors_baseline"]["images_per_s"]
    return {k: round(v, 4) for k, v in out.items()}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-").replace("--", "-")[:60]


def _step_lines(ts: dict | None) -> list[str]:
    if not ts:
        return []
    over = f" with {', '.join(ts['overrides'])}" if ts["overrides"] else ""
    return [f"Timed step: `{ts['function']}` (the engine's), profile `{ts['profile']}`{over}: loss `{ts['loss']}` "
            f"(alpha {ts['alpha']}, gamma {ts['gamma']}, prior {ts['prior']}), optimizer `{ts['optimizer']}` "
            f"(lr {ts['lr']}{_stn_lr(ts)}, weight decay {ts['weight_decay']}), augmentation `{ts['augment']}`.", ""]


def _stn_lr(ts: dict) -> str:
    """The STN's learning rate where the timed step's was scaled (records from before the key have none)."""
    scale = ts.get("stn_lr_scale")
    return f", STN lr x{scale:g}" if scale not in (None, 1.0) else ""


def to_markdown(res: dict) -> str:
    bc, r = res["config"], res["results"]
    state = "" if res.get("complete", True) else " (INCOMPLETE: the run stopped before its last part)"
    lines = [f"# Benchmark: {res['device']} ({res['date']}){state}", "",
             f"backbone `{bc['backbone']}`, batch {bc['batch']}, input {bc['input_size']} px, SR cache {bc['sr_size']} px, "
             f"amp={bc['amp']} (bf16 autocast active: {res['env'].get('bf16_autocast')}); train steps: median of {bc['steps']} timed blocks of "
             f"{bc.get('block', 1)} step(s) after {bc['warmup']} warm-up, models interleaved; "
             f"torch {res['env']['torch']}, git {res['env']['git_sha'][:12]}"
             + (f"; CPU allocator tuning (fer_study.allocator): {res['env']['cpu_allocator'].get('applied')}"
                if "cpu_allocator" in res["env"] else ""), "", *_step_lines(res.get("train_step")),
             "| measurement | images/s | median s | peak MB | warm-up s |", "|---|---|---|---|---|"]
    for k, v in r.items():
        if "median_step_s" in v:
            lines.append(f"| train step {k} | {v['images_per_s']:.1f} | {v['median_step_s']:.4f} | {v['peak_mem_mb']} "
                         f"| {v.get('warmup_s', '')} |")
        elif "median_batch_s" in v:
            lines.append(f"| {k} (batch, on-device augmentation) | {v['images_per_s']:.1f} | {v['median_batch_s']:.4f} "
                         "| | |")
        elif k.startswith("sr_"):
            for prec in ("fp32", "bf16"):
                if prec in v:
                    d = v[prec]
                    lines.append(f"| SR cache build {v['backend']} {prec} (all FERPlus: "
                                 f"{d['ferplus_35887_minutes']:.2f} min) | {d['images_per_s']:.1f} | | | |")
            if "bf16_vs_fp32_uint8" in v:
                q = v["bf16_vs_fp32_uint8"]
                lines.append(f"| SR {v['backend']} bf16 vs fp32 cache (uint8): mean abs {q['mean_abs']:.3f}, "
                             f"max {q['max_abs']}, equal {q['equal_fraction']:.3f} | | | | |")
        elif k == "authors_baseline":
            lines.append(f"| authors'-style baseline (PNG+DataLoader+torchvision, fp32) | {v['images_per_s']:.1f} | | | |")
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in res.get("ratios", {}).items())]
    return "\n".join(lines) + "\n"
