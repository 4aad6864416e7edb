"""SR cache: f_sr is frozen, so each image is super-resolved once and stored as uint8.

One cache entry per (images, backend, weights hash, output size): the key is a SHA-256 over the
input images' bytes and :meth:`SuperResolver.identity`, so changing the data, the weights or the
settings gives a new entry (an old one is never reused for new settings). Files:
``<dir>/<key>.npy`` (N, C, S, S) uint8 (C = :meth:`SuperResolver.output_channels`: 3 for an RGB
network such as DIC, 3 x 384^2 bytes an image, about 15.5 GB for FERPlus; 1 for grayscale
backends), written through a memory map in chunks, and
``<key>.json`` with the settings and ``done``, the number of finished images. An interrupted build
resumes from ``done``; a finished one is only read. Reading returns a memory map (CPU); the
training engine moves it to the GPU when it fits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fer_study.io import read_json, write_json
from fer_study.models.sr import SuperResolver


def cache_key(images: np.ndarray, sr: SuperResolver) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps(sr.identity(), sort_keys=True).encode())
    return h.hexdigest()[:24]


def build_sr_cache(images: np.ndarray, sr: SuperResolver, cache_dir: str | Path, batch_size: int = 32,
                   device: str | torch.device = "cpu", stop_after: int | None = None,
                   progress: bool = True, label: str = "") -> tuple[np.ndarray, dict]:
    """Super-resolve ``images`` ((N, H, W) or (N, C, H, W) uint8) into the cache; returns (memmap, meta).

    ``stop_after`` (tests) stops after that many images, leaving a resumable partial entry.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    x = images[:, None] if images.ndim == 3 else images
    key = cache_key(x, sr)
    npy, meta_p = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    n, c = x.shape[0], sr.output_channels(x.shape[1])
    meta = read_json(meta_p) if meta_p.exists() and npy.exists() else None
    if meta is None:
        meta = {"key": key, "n": n, "channels": c, "size": sr.out_size, "done": 0, "label": label, **sr.identity()}
        np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(n, c, sr.out_size, sr.out_size)).flush()
        write_json(meta_p, meta)
    if meta["done"] < n:
        out = np.load(npy, mmap_mode="r+")
        sr = sr.to(device).eval()
        start = meta["done"]
        bar = tqdm(total=n, initial=start, desc=f"SR cache {sr.backend} {label}".strip(), unit="img",
                   disable=not progress)
        prev_bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = torch.device(device).type == "cuda"  # fixed shapes: autotune the convs
        try:
            with torch.no_grad():
                for s in range(start, n, batch_size):
                    e = min(n, s + batch_size)
                    xb = torch.from_numpy(np.ascontiguousarray(x[s:e])).to(device)
                    yb = sr(xb)
                    out[s:e] = (yb * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
                    out.flush()
                    meta["done"] = e
                    write_json(meta_p, meta)
                    bar.update(e - s)
                    if stop_after is not None and e >= stop_after:
                        break
        finally:
            torch.backends.cudnn.benchmark = prev_bench
        bar.close()
        del out
    return np.load(npy, mmap_mode="r"), meta
