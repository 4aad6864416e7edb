"""Atomic writes and the provenance record (git SHA, versions, device) written beside results."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file in the same folder, then rename it onto ``path``.

    A reader never sees a half-written file; an interrupted write leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        from fer_study.paths import make_readable

        make_readable(tmp)  # mkstemp's files are 0600; results are meant to be read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def memo_by_file(min_bytes: int = 0, max_entries: int | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Memoise a function of one file (first argument) per process on (path, size, mtime_ns, inode) and
    the other arguments. Files under ``min_bytes`` are read every time (tests rewrite small files within
    one mtime tick); ``max_entries`` bounds the cache (it is cleared when full). Callers must not mutate
    what it returns."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        cache: dict[tuple, T] = {}

        @functools.wraps(fn)
        def wrapper(path: str | Path, *args: Any, **kwargs: Any) -> T:
            p = Path(path)
            try:
                st = p.stat()
            except OSError:
                return fn(path, *args, **kwargs)  # the function raises its own error
            if st.st_size < min_bytes:
                return fn(path, *args, **kwargs)
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, args, tuple(sorted(kwargs.items())))
            if key not in cache:
                if max_entries is not None and len(cache) >= max_entries:
                    cache.clear()
                cache[key] = fn(path, *args, **kwargs)
            return cache[key]

        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return wrapper

    return deco


@memo_by_file()
def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content, memoised per process (:func:`memo_by_file`): weights files and
    data files are hashed once however many runs of a grid ask."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`: a reader never sees a half-written checkpoint."""
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def git_sha(cwd: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` when the tree has changes); without a git checkout (a copy
    of the tree on another machine) the value of ``FER_STUDY_GIT_SHA``, else ``unknown``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("FER_STUDY_GIT_SHA", "unknown")


def device_name(device: Any = None) -> str:
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (``None`` where unreadable, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _torch_runtime() -> dict[str, Any]:
    """Threads, CPU model and kernel level, determinism switches: what makes two runs' speed (and,
    for the switches, their bits) comparable."""
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        capability = None
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
            "cpu_model": cpu_model(), "cpu_capability": capability, "cpu_isa": cpu_isa_flags(),
            "onednn": onednn_info(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "mkldnn_deterministic": bool(torch._C._get_mkldnn_deterministic()),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


#: Environment variables that set thread counts (recorded when set).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: /proc/cpuinfo's first ``flags`` (x86) or ``Features`` (Arm) line, read
    once per process; empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                           if ln.startswith(("flags", "Features"))), []))


@functools.lru_cache(maxsize=1)
def cpu_isa_flags() -> list[str]:
    """The vector instruction sets of this CPU that oneDNN and torch's kernels choose between
    (AVX2, AVX-512 variants, AMX), from /proc/cpuinfo; [] where it cannot be read."""
    return sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))


#: oneDNN's x86 ISA feature bits (``cpu_isa_bit_t``) and the /proc/cpuinfo flags each needs. None: no
#: Linux flag known here (AVX10.2, AMX-2, ACE), so the bit reads as absent: the recorded ISA can then
#: be below oneDNN's on such a CPU, never above it.
_ONEDNN_BIT_FLAGS: dict[str, tuple[str, ...] | None] = {
    "sse41": ("sse4_1",), "avx": ("avx",), "avx2": ("avx2",), "avx_vnni": ("avx_vnni",),
    "avx_vnni_2": ("avx_vnni_int8", "avx_ne_convert"),
    "avx512_core": ("avx512f", "avx512bw", "avx512vl", "avx512dq"), "avx512_vnni": ("avx512_vnni",),
    "avx512_bf16": ("avx512_bf16",), "avx512_fp16": ("avx512_fp16",),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"), "amx_fp16": ("amx_fp16",),
    "avx10_2": None, "amx_2": None, "ace": None}


def _onednn_isas() -> dict[str, frozenset[str]]:
    """oneDNN's ISAs (``dnnl_cpu_isa_t``), each the set of its feature bits, lowest first. The bits
    follow the public enum (sse41 = 0x1, avx = 0x3, avx2 = 0x7, avx2_vnni = 0xf, avx2_vnni_2 = 0x1f,
    avx512_core = 0x27, avx512_core_vnni = 0x67, avx512_core_bf16 = 0xe7, avx10_1_512 = 0x1ef,
    avx10_1_512_amx = 0xfef, avx10_1_512_amx_fp16 = 0x1fef) and, for AVX10.2, the partial order that
    ``dnnl_set_max_cpu_isa``'s documentation states (AVX10_1_512 < AVX10_2 < AVX10_2_AMX_2,
    AVX10_1_512_AMX_FP16 < AVX10_2_AMX_2, AVX10_2 < AVX10_2_ACE). The order is partial: avx2_vnni is
    not below avx512_core, for one."""
    defs = (("sse41", (), "sse41"), ("avx", ("sse41",), "avx"), ("avx2", ("avx",), "avx2"),
            ("avx2_vnni", ("avx2",), "avx_vnni"), ("avx2_vnni_2", ("avx2_vnni",), "avx_vnni_2"),
            ("avx512_core", ("avx2",), "avx512_core"), ("avx512_core_vnni", ("avx512_core",), "avx512_vnni"),
            ("avx512_core_bf16", ("avx512_core_vnni",), "avx512_bf16"),
            ("avx512_core_fp16", ("avx512_core_bf16", "avx2_vnni"), "avx512_fp16"),
            ("avx512_core_amx", ("avx512_core_fp16",), "amx"),
            ("avx512_core_amx_fp16", ("avx512_core_amx",), "amx_fp16"),
            ("avx10_2_512", ("avx512_core_fp16",), "avx10_2"),
            ("avx10_2_512_amx_2", ("avx10_2_512", "avx512_core_amx_fp16"), "amx_2"),
            ("avx10_2_ace", ("avx10_2_512",), "ace"))
    isas: dict[str, frozenset[str]] = {}
    for name, below, bit in defs:
        isas[name] = frozenset({bit}).union(*(isas[b] for b in below))
    return isas


#: See :func:`_onednn_isas`; the names are oneDNN's (lower case), the older of two aliases.
ONEDNN_ISAS = _onednn_isas()
#: ``ONEDNN_MAX_CPU_ISA``'s other spellings of the same ISAs (the AVX10 names; documented aliases).
ONEDNN_ISA_ALIASES = {"avx10_1_512": "avx512_core_fp16", "avx10_1_512_amx": "avx512_core_amx",
                      "avx10_1_512_amx_fp16": "avx512_core_amx_fp16", "avx10_2": "avx10_2_512",
                      "avx10_2_amx_2": "avx10_2_512_amx_2"}
#: Dispatched only when a cap names them ("initial support"); DEFAULT leaves them out, and so does ALL
#: here (no /proc/cpuinfo flag for them is known anyway, :data:`_ONEDNN_BIT_FLAGS`).
ONEDNN_OPT_IN = ("avx10_2_512", "avx10_2_512_amx_2", "avx10_2_ace")
#: The order oneDNN tries ISAs in, best first (``get_isa_info_t``'s ``mayiuse`` chain): the dispatch ISA
#: is the first that the CPU has and the cap allows.
ONEDNN_DISPATCH_ORDER = ("avx10_2_ace", "avx10_2_512_amx_2", "avx512_core_amx_fp16", "avx512_core_amx",
                         "avx10_2_512", "avx512_core_fp16", "avx512_core_bf16", "avx512_core_vnni",
                         "avx512_core", "avx2_vnni_2", "avx2_vnni", "avx2", "avx", "sse41")


def onednn_dispatch_isa(cap: str | None, flags: frozenset[str] | set[str]) -> tuple[str | None, str | None]:
    """The ISA oneDNN dispatches to on a CPU with these /proc/cpuinfo ``flags`` under the
    ``ONEDNN_MAX_CPU_ISA`` value ``cap`` (None, DEFAULT or ALL: no cap), as oneDNN's ``mayiuse`` decides
    it: the first ISA of :data:`ONEDNN_DISPATCH_ORDER` whose feature bits the CPU has and are all within
    the cap's. Returns (isa, None), or (None, why) where it cannot be told: a cap oneDNN does not
    document (never the CPU's best instead), or a CPU with none of these ISAs."""
    has = {bit for bit, need in _ONEDNN_BIT_FLAGS.items() if need is not None and all(f in flags for f in need)}
    if cap is None or cap.strip().upper() in ("", "DEFAULT", "ALL"):
        allowed = frozenset().union(*(bits for name, bits in ONEDNN_ISAS.items() if name not in ONEDNN_OPT_IN))
    else:
        name = cap.strip().lower()
        name = ONEDNN_ISA_ALIASES.get(name, name)
        if name not in ONEDNN_ISAS:
            return None, f"unknown cap {cap}"
        allowed = ONEDNN_ISAS[name]
    for name in ONEDNN_DISPATCH_ORDER:
        if ONEDNN_ISAS[name] <= allowed and ONEDNN_ISAS[name] <= has:
            return name, None
    return None, "no oneDNN x86 ISA in /proc/cpuinfo's flags"


@functools.lru_cache(maxsize=1)
def _onednn_version() -> str | None:
    """oneDNN's version in torch's build (read once)."""
    import re

    import torch

    m = re.search(r"MKL-DNN v([0-9.]+)", torch.__config__.show())
    return m.group(1) if m else None


def onednn_info() -> dict[str, Any]:
    """oneDNN's version (torch's build) and the ISA it dispatches to (:func:`onednn_dispatch_isa`): the
    best of this CPU's, or the best at or below ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA``) where one
    caps it; None, with ``dispatch_isa_note`` saying why, where the cap is a name oneDNN does not know."""
    import torch

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    isa, note = onednn_dispatch_isa(cap, cpu_flags())
    return {"version": _onednn_version(), "enabled": torch.backends.mkldnn.is_available(),
            "dispatch_isa": isa, "dispatch_isa_note": note, "max_cpu_isa_env": cap}


def environment(device: Any = None) -> dict[str, Any]:
    """Package versions, git SHA and device: stored as env.json beside every result."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "git_sha": git_sha(),
        "device": device_name(device),
        "cuda": torch.version.cuda,
        **_torch_runtime(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("timm", "torchvision", "pandas", "papermill", "spandrel"):
        try:  # the installed distribution's version, without importing it (papermill: 3 s, per run)
            info[mod] = version(mod)
        except PackageNotFoundError:  # optional packages
            info[mod] = None
    return info
