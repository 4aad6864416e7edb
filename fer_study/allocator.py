"""CPU memory-allocator setting for training steps on the CPU.

glibc's malloc serves blocks above its (dynamic, at most 32 MiB by default) mmap threshold with fresh
``mmap`` calls and gives freed memory at the top of the heap back to the kernel beyond its trim
threshold. A training step allocates and frees the same large activation buffers every step; the
Neural Resizer's 384 px activations (8 x 16 x 384^2 floats = 75 MiB at batch 8) exceed the
threshold, so each step page-faults them back in: about 150,000 minor faults and 0.5-1 s per step
on the 2-core CI machine (measured with ``resource.getrusage``; the vanilla step had none).

:func:`tune_cpu_allocator` raises both thresholds to 2 GiB with ``mallopt`` so freed buffers stay in
the process and are reused (the same effect as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
or a preloaded jemalloc/tcmalloc, which Intel's PyTorch CPU guide recommends). The cost is a process
that keeps its peak heap instead of returning it. It applies to every pipeline alike, is a no-op off
glibc, and is skipped with ``FER_STUDY_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_THRESHOLD = 2 ** 31 - 1  # the largest value mallopt's int argument takes
_applied: dict | None = None


def tune_cpu_allocator() -> dict:
    """Raise glibc's mmap and trim thresholds once per process; returns what was done."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("FER_STUDY_MALLOC_TUNING", "1") == "0":
        _applied = {"applied": False, "reason": "FER_STUDY_MALLOC_TUNING=0"}
        return _applied
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _applied = {"applied": False, "reason": "not glibc"}
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, _THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _THRESHOLD))
    except (OSError, AttributeError) as e:
        _applied = {"applied": False, "reason": f"mallopt unavailable: {e}"}
        return _applied
    _applied = {"applied": ok, "mmap_threshold": _THRESHOLD, "trim_threshold": _THRESHOLD}
    return _applied
