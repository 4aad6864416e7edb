"""oneDNN's instruction-set cap for a CPU run (``ONEDNN_MAX_CPU_ISA``), applied and then measured.

oneDNN (torch's CPU convolutions) picks its kernels for the best instruction set the CPU has, once per
process, at its first primitive. On the 2-core AVX-512 machine the demo runs on, its AVX-512 kernels are
*slower* for the Neural Resizer's convolutions with 3-16 channels than its AVX2 ones (a training step of
the demo's SR + LTR Swin-S stand-in: 5.1 vs 4.2 ms per image; Swin-B + STN 8.2 vs 6.7; vanilla 1.8 vs 1.7;
``results/repro/README.md``), and capping at AVX2 also puts AVX-512 and AVX2-only machines on the same
convolution kernels. A profile asks for a cap with ``onednn_max_isa``; :func:`apply_isa_cap` sets the
variable where the environment has none (the caller's choice wins) before this process's first
convolution, and :func:`conv_impl` reads back which kernel a convolution really ran, from oneDNN's own
verbose line. Once oneDNN has started in a process, a cap set later does nothing: that is reported
(``applied: false``, a warning), never hidden, and env.json records the kernel that ran.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from typing import Any

ENV = "ONEDNN_MAX_CPU_ISA"
OLD_ENV = "DNNL_MAX_CPU_ISA"  # the older name, read by oneDNN where ENV is unset
_VERBOSE_IMPL = re.compile(r",convolution,([^,]+),")


def conv_impl() -> str | None:
    """The implementation oneDNN runs a small float convolution with in this process (e.g.
    ``brg_conv_fwd:avx2``), read from its verbose output on file descriptor 1; None where oneDNN is
    unavailable or printed nothing recognisable. Starts oneDNN if it had not started."""
    import torch
    import torch.nn.functional as F

    if not torch.backends.mkldnn.is_available():
        return None
    x = torch.zeros(2, 8, 32, 32).contiguous(memory_format=torch.channels_last)  # big enough for oneDNN
    w = torch.zeros(8, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    try:
        sys.stdout.flush()
        with tempfile.TemporaryFile() as tmp:
            saved = os.dup(1)
            os.dup2(tmp.fileno(), 1)
            try:
                with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    F.conv2d(x, w)
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    except (AssertionError, RuntimeError, OSError, ValueError):  # no verbose support, no fd 1: unknown
        return None
    m = _VERBOSE_IMPL.search(text)
    return m.group(1) if m else None


def impl_isa(impl: str | None) -> str | None:
    """The ISA named in an implementation string (``brg_conv_fwd:avx512_core`` -> ``avx512_core``)."""
    if not impl or ":" not in impl:
        return None
    return impl.rsplit(":", 1)[1]


def within(isa: str | None, cap: str) -> bool | None:
    """Whether oneDNN's ``isa`` lies at or below ``cap`` (None: cannot be told)."""
    from fer_study.io import ONEDNN_ISA_ALIASES, ONEDNN_ISAS

    if isa is None:
        return None
    cap_n = ONEDNN_ISA_ALIASES.get(cap.lower(), cap.lower())
    isa_n = ONEDNN_ISA_ALIASES.get(isa.lower(), isa.lower())
    if isa_n in ("uni", "ref", "any") or isa_n not in ONEDNN_ISAS or cap_n not in ONEDNN_ISAS:
        return None
    return ONEDNN_ISAS[isa_n] <= ONEDNN_ISAS[cap_n]


def apply_isa_cap(cap: str | None) -> dict[str, Any]:
    """Ask oneDNN to stay at or below ``cap`` (a oneDNN ISA name, e.g. ``avx2``; None: no request) and
    report what holds: ``{"requested", "env", "set_here", "conv_impl", "applied"}``. An ``ONEDNN_MAX_CPU_ISA``
    (or ``DNNL_MAX_CPU_ISA``) already in the environment is kept (``set_here`` false: the caller's choice, e.g. the test suite's
    ``ALL``). ``applied`` is True when the measured kernel is within the cap, False when it is not (with a
    warning where the cap was set here: oneDNN had started earlier in this process), None when it cannot
    be told."""
    preset = os.environ.get(ENV) or os.environ.get(OLD_ENV)  # oneDNN reads either (ONEDNN_ first)
    if cap is None:
        return {"requested": None, "env": preset, "set_here": False, "conv_impl": conv_impl(), "applied": None}
    if preset is None:
        os.environ[ENV] = cap.upper()
    impl = conv_impl()
    ok = within(impl_isa(impl), cap)
    if ok is False and preset is None:  # a caller's own setting is its choice: recorded, not warned about
        warnings.warn(f"oneDNN runs {impl} although this run asks for {ENV}={cap.upper()}: oneDNN had already started "
                      "in this process, so the cap came too late; start a fresh process (fer-study train / run) for "
                      "the capped kernels. env.json records the kernel that ran.", RuntimeWarning, stacklevel=2)
    return {"requested": cap, "env": os.environ.get(ENV) or os.environ.get(OLD_ENV), "set_here": preset is None,
            "conv_impl": impl, "applied": ok}
