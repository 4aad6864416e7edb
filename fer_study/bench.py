"""``fer-study bench``: training throughput of the vanilla pipeline and of the Neural Resizer reading
the SR cache (same backbone and batch), eager vs ``torch.compile``, the on-device data path alone,
SR cache build throughput per backend, peak memory, and an authors'-style baseline (SR images
decoded from PNG files by a standard DataLoader with torchvision transforms, eager fp32).

Timing: median of repeated timed steps after warm-up, synchronised on CUDA. Results go to
``results/bench/<device>-<date>.json`` and ``.md``. Speed is measured here, never in unit tests.
"""

from __future__ import annotations

import datetime as _dt
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fer_study.data.tensors import AugmentConfig, augment, to_float
from fer_study.engine import autocast_for
from fer_study.io import environment, write_json, write_text
from fer_study.models.classifier import ModelConfig, NeuralResizerClassifier


@dataclass
class BenchConfig:
    backbone: str = "swin_s"
    batch: int = 64
    sr_size: int = 384
    input_size: int = 48
    warmup: int = 3
    steps: int = 10
    compile: bool = False
    amp: bool = True
    baseline: bool = True
    baseline_images: int = 256
    sr_backends: tuple[str, ...] = ("bicubic",)
    sr_images: int = 64
    dic_weights: str | None = None
    stem: str = "patch"
    ltr_n: int = 16


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


def train_step_bench(mcfg: ModelConfig, input_size: int, bc: BenchConfig, device: torch.device,
                     compile_model: bool) -> dict:
    torch.manual_seed(0)
    model = NeuralResizerClassifier(mcfg).to(device).cnn_channels_last_()
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_model else model
    data = torch.randint(0, 256, (bc.batch * 4, 1, input_size, input_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, mcfg.num_classes, (bc.batch,), device=device)
    gen = torch.Generator().manual_seed(0)
    aug = AugmentConfig()
    i = [0]

    def step():
        s = (i[0] % 4) * bc.batch
        i[0] += 1
        x = augment(to_float(data[s:s + bc.batch]), aug, gen)
        with autocast_for(device, bc.amp):
            out = fwd(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    ts = _timed(step, bc.warmup, bc.steps, device)
    med = statistics.median(ts)
    return {"median_step_s": med, "images_per_s": bc.batch / med, "steps": bc.steps, "warmup": bc.warmup,
            "first_steps_s": round(time.perf_counter() - t0 - sum(ts), 3), "peak_mem_mb": round(_peak_mb(device), 1),
            "all_steps_s": [round(t, 5) for t in ts]}


def data_path_bench(input_size: int, bc: BenchConfig, device: torch.device) -> dict:
    data = torch.randint(0, 256, (bc.batch * 4, 1, input_size, input_size), dtype=torch.uint8, device=device)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data), device=device)[:bc.batch]
    ts = _timed(lambda: augment(to_float(data[idx]), AugmentConfig(), gen), bc.warmup, bc.steps, device)
    med = statistics.median(ts)
    return {"median_batch_s": med, "images_per_s": bc.batch / med}


def sr_bench(backend: str, bc: BenchConfig, device: torch.device) -> dict:
    from fer_study.models.sr import SuperResolver

    if backend == "dic":
        from fer_study.models.dic import DIC, denormalise, normalise

        torch.manual_seed(0)
        net = DIC().to(device).eval()  # random weights: same cost as the released ones
        if bc.dic_weights:
            net = SuperResolver("dic", bc.dic_weights, bc.sr_size, device).net
        n = bc.sr_images
        bs = 8 if device.type == "cuda" else 1
        x = torch.rand(bs, 1, bc.input_size, bc.input_size, device=device)
        out = {}
        for dtype in ((torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)):
            def f(dtype=dtype):
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    denormalise(net(normalise(x)).float())
            steps = max(1, n // bs)
            ts = _timed(f, 1, steps, device)
            out[str(dtype).replace("torch.", "")] = {"images_per_s": bs / statistics.median(ts),
                                                     "ferplus_35887_minutes": 35887 / (bs / statistics.median(ts)) / 60}
        return {"backend": "dic", "batch": bs, **out}
    sr = SuperResolver(backend, out_size=bc.sr_size, device=device)
    x = torch.randint(0, 256, (64, 1, bc.input_size, bc.input_size), dtype=torch.uint8, device=device)
    ts = _timed(lambda: sr(x), 1, 5, device)
    return {"backend": backend, "batch": 64, "images_per_s": 64 / statistics.median(ts)}


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
    env = environment(device)
    van = ModelConfig(backbone=bc.backbone, up="bilinear", down="none", stem=bc.stem, ltr_n=bc.ltr_n,
                      sr_size=bc.sr_size)
    nr = ModelConfig(backbone=bc.backbone, up="sr", down="ltr", stem=bc.stem, ltr_n=bc.ltr_n, sr_size=bc.sr_size)
    res: dict = {"config": bc.__dict__, "env": env, "device": env["device"],
                 "date": _dt.date.today().isoformat(), "results": {}}
    modes = [False] + ([True] if bc.compile else [])
    for comp in modes:
        tag = "compiled" if comp else "eager"
        log(f"train step: vanilla, {tag}")
        res["results"][f"vanilla_{tag}"] = train_step_bench(van, bc.input_size, bc, device, comp)
        log(f"train step: neural resizer (SR cached), {tag}")
        res["results"][f"nr_{tag}"] = train_step_bench(nr, bc.sr_size, bc, device, comp)
    log("data path alone")
    res["results"]["data_path_sr"] = data_path_bench(bc.sr_size, bc, device)
    res["results"]["data_path_raw"] = data_path_bench(bc.input_size, bc, device)
    for b in bc.sr_backends:
        log(f"SR cache build: {b}")
        res["results"][f"sr_{b}"] = sr_bench(b, bc, device)
    if bc.baseline:
        log("authors'-style baseline (PNG + DataLoader + torchvision, eager fp32)")
        res["results"]["authors_baseline"] = authors_baseline(bc, device, nr)
    r = res["results"]
    best_nr = max((r[k] for k in r if k.startswith("nr_")), key=lambda d: d["images_per_s"])
    ratios = {
        "nr_over_vanilla_step_time_eager": r["nr_eager"]["median_step_s"] / r["vanilla_eager"]["median_step_s"],
        "data_path_fraction_of_nr_step": r["data_path_sr"]["median_batch_s"] / r["nr_eager"]["median_step_s"],
    }
    if bc.compile:
        ratios["compile_speedup_nr"] = r["nr_eager"]["median_step_s"] / r["nr_compiled"]["median_step_s"]
    if bc.baseline:
        ratios["ours_best_nr_over_authors_baseline"] = best_nr["images_per_s"] / r["authors_baseline"]["images_per_s"]
    res["ratios"] = {k: round(v, 4) for k, v in ratios.items()}
    stem = f"{_slug(env['device'])}-{res['date']}"
    out_dir = Path(out_dir)
    write_json(out_dir / f"{stem}.json", res)
    write_text(out_dir / f"{stem}.md", to_markdown(res))
    log(to_markdown(res))
    log(f"written: {out_dir / stem}.json and .md")
    return res


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-").replace("--", "-")[:60]


def to_markdown(res: dict) -> str:
    bc, r = res["config"], res["results"]
    lines = [f"# Benchmark: {res['device']} ({res['date']})", "",
             f"backbone `{bc['backbone']}`, batch {bc['batch']}, input {bc['input_size']} px, SR cache {bc['sr_size']} px, "
             f"amp={bc['amp']} (bf16 on CUDA only), median of {bc['steps']} steps after {bc['warmup']} warm-up; "
             f"torch {res['env']['torch']}, git {res['env']['git_sha'][:12]}", "",
             "| measurement | images/s | median s | peak MB |", "|---|---|---|---|"]
    for k, v in r.items():
        if "median_step_s" in v:
            lines.append(f"| train step {k} | {v['images_per_s']:.1f} | {v['median_step_s']:.4f} | {v['peak_mem_mb']} |")
        elif "median_batch_s" in v:
            lines.append(f"| {k} (batch, on-device augmentation) | {v['images_per_s']:.1f} | {v['median_batch_s']:.4f} | |")
        elif k.startswith("sr_") and "images_per_s" in v:
            lines.append(f"| SR cache build {v['backend']} | {v['images_per_s']:.1f} | | |")
        elif k.startswith("sr_"):
            for dt, d in v.items():
                if isinstance(d, dict):
                    lines.append(f"| SR cache build dic {dt} (all FERPlus: {d['ferplus_35887_minutes']:.1f} min) | "
                                 f"{d['images_per_s']:.2f} | | |")
        elif k == "authors_baseline":
            lines.append(f"| authors'-style baseline (PNG+DataLoader+torchvision, fp32) | {v['images_per_s']:.1f} | | |")
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in res["ratios"].items())]
    return "\n".join(lines) + "\n"
