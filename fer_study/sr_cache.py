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

Integrity: when a build finishes, the json records the .npy's size (``bytes``) and a SHA-256 per
64 MiB chunk of it (``checksum``). A chunk list rather than one whole-file hash: the chunks are
hashed in parallel threads (hashlib and file reads release the GIL; SHA-256 runs at about 1.7 GB/s
a core here, so FERPlus's 15.5 GB cost about 9 s on one core, a few on several, plus the disk read
when the file is not in the page cache), and a mismatch says where the damage is. Each time a
finished entry is opened, its size is checked against the .npy header and the recorded size, then
every chunk. An entry that fails (truncated .npy, changed bytes, a header that does not describe
this entry, an unreadable json) is rebuilt from scratch with a warning naming the file and the
reason; so is a partial entry whose .npy is shorter than its header says. A partial entry is
otherwise resumed from ``done`` (the images before it are trusted: the checksum covers them once the
build finishes). Entries finished before checksums existed are checked for size and get their
checksum on first read.

Concurrency: checking, building and finishing an entry happen under an exclusive ``fcntl`` lock on
``<key>.lock``, so two processes that need the same entry (``--executor workers --jobs 2``, DDP ranks
on one file system) never write it at once: the second waits, then finds it finished and only reads
it. Where ``fcntl`` is missing (Windows) there is no lock; build the cache first
(``fer-study sr cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fer_study.io import read_json, write_json
from fer_study.models.sr import SuperResolver

#: Bytes per checksum chunk of a cache entry's .npy.
CHUNK_BYTES = 64 << 20


def cache_key(images: np.ndarray, sr: SuperResolver) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps(sr.identity(), sort_keys=True).encode())
    return h.hexdigest()[:24]


def chunk_sha256(path: str | Path, chunk_bytes: int | None = None, workers: int | None = None) -> list[str]:
    """SHA-256 of each ``chunk_bytes`` chunk of the file (default :data:`CHUNK_BYTES`; the last one
    shorter), hashed in parallel threads."""
    path = Path(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    size = path.stat().st_size

    def one(i: int) -> str:
        h = hashlib.sha256()
        left = min(chunk_bytes, size - i * chunk_bytes)
        with open(path, "rb") as f:
            f.seek(i * chunk_bytes)
            while left > 0:
                b = f.read(min(left, 8 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
        return h.hexdigest()

    n = max(1, -(-size // chunk_bytes))
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as ex:
        return list(ex.map(one, range(n)))


def npy_layout(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes the file needs) from a .npy header; ValueError/OSError when unreadable."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version}")
        offset = f.tell()
    return tuple(shape), dtype, offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _record_checksum(npy: Path, meta: dict[str, Any], meta_p: Path) -> None:
    meta["bytes"] = npy.stat().st_size
    meta["checksum"] = {"algorithm": "sha256", "chunk_bytes": CHUNK_BYTES, "chunks": chunk_sha256(npy, CHUNK_BYTES)}
    write_json(meta_p, meta)


def entry_problem(npy: Path, meta: Any, key: str, shape: tuple[int, ...]) -> str | None:
    """Why a cache entry cannot be used (its json ``meta`` against the .npy), or None. A finished entry's
    checksum is verified (:func:`chunk_sha256`); a partial one is checked for size only."""
    if not isinstance(meta, dict):
        return "its json is not an object"
    n = shape[0]
    want = {"key": key, "n": n, "channels": shape[1], "size": shape[2]}
    wrong = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
    done = meta.get("done")
    if wrong or not isinstance(done, int) or not 0 <= done <= n:
        return f"its json does not describe this entry ({wrong or {'done': done}}, expected {want}, 0 <= done <= {n})"
    try:
        got, dtype, need = npy_layout(npy)
    except (OSError, ValueError) as e:
        return f"unreadable .npy header ({type(e).__name__}: {e})"
    if got != shape or dtype != np.uint8:
        return f"the .npy header says {got} {dtype}, expected {shape} uint8"
    st = npy.stat()
    if st.st_size != need:
        return f"{'truncated' if st.st_size < need else 'too long'}: {st.st_size} bytes, its header needs {need}"
    if done < n:
        return None
    ck = meta.get("checksum")
    if ck is None:
        return None  # finished before checksums existed: recorded by the caller
    if meta.get("bytes") != st.st_size:
        return f"{st.st_size} bytes, the finished build recorded {meta.get('bytes')}"
    try:
        chunk, recorded = int(ck["chunk_bytes"]), list(ck["chunks"])
    except (KeyError, TypeError, ValueError):
        return f"unreadable checksum record {ck!r}"
    now = chunk_sha256(npy, chunk)
    bad = [i for i in range(max(len(now), len(recorded)))
           if i >= len(now) or i >= len(recorded) or now[i] != recorded[i]]
    if bad:
        return (f"checksum mismatch in {len(bad)} of {len(recorded)} chunks of {chunk} bytes (first at byte "
                f"{bad[0] * chunk}): the file changed after its build finished")
    return None


def _read_meta(meta_p: Path) -> tuple[Any, str | None]:
    try:
        return read_json(meta_p), None
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
        return None, f"unreadable json {meta_p} ({type(e).__name__}: {e})"


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock held while an entry is checked or built (see the module
    docstring); a no-op where ``fcntl`` is not available."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        f = open(path, "a+b")  # noqa: SIM115 - closed below, after the body ran
    except OSError as e:  # a read-only cache folder: reading a finished entry needs no lock
        warnings.warn(f"SR cache: no lock file {path} ({e}); building without an inter-process lock",
                      RuntimeWarning, stacklevel=3)
        yield
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"SR cache: waiting for another process building {path.stem}", flush=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError as e:  # a file system without flock (some NFS/FUSE)
            warnings.warn(f"SR cache: cannot lock {path} ({e}); building without an inter-process lock",
                          RuntimeWarning, stacklevel=3)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_sr_cache(images: np.ndarray, sr: SuperResolver, cache_dir: str | Path, batch_size: int = 32,
                   device: str | torch.device = "cpu", stop_after: int | None = None,
                   progress: bool = True, label: str = "") -> tuple[np.ndarray, dict]:
    """Super-resolve ``images`` ((N, H, W) or (N, C, H, W) uint8) into the cache; returns (memmap, meta).

    An entry that fails its checks (:func:`entry_problem`, an unreadable json) is rebuilt from scratch
    with a warning. ``stop_after`` (tests) stops after that many images, leaving a resumable partial entry.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    x = images[:, None] if images.ndim == 3 else images
    key = cache_key(x, sr)
    npy, meta_p = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    n, c = x.shape[0], sr.output_channels(x.shape[1])
    shape = (n, c, sr.out_size, sr.out_size)
    with entry_lock(cache_dir / f"{key}.lock"):
        meta = None
        if meta_p.exists() and npy.exists():
            meta, why = _read_meta(meta_p)
            why = why or entry_problem(npy, meta, key, shape)
            if why is not None:
                warnings.warn(f"SR cache entry {npy}: {why}; rebuilding it from scratch", RuntimeWarning, stacklevel=2)
                meta = None
                npy.unlink()  # a new file: memory maps of the old one stay valid
            elif meta["done"] == n and "checksum" not in meta:
                _record_checksum(npy, meta, meta_p)
        if meta is None:
            meta = {"key": key, "n": n, "channels": c, "size": sr.out_size, "done": 0, "label": label, **sr.identity()}
            np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape).flush()
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
            if meta["done"] == n:
                _record_checksum(npy, meta, meta_p)
        return np.load(npy, mmap_mode="r"), meta
