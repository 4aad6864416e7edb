"""Device choice and mixed precision: bf16 autocast on CUDA and on CPUs with native bf16 (Sec. 3.2
trains in full precision; bf16 autocast is this study's speed setting, recorded in env.json)."""

from __future__ import annotations

import os

import torch

from fer_study.io import cpu_flags


def select_device(name: str = "auto") -> torch.device:
    """``auto``: the local rank's GPU when CUDA is available, else the CPU; otherwise ``name``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16);
    oneDNN then runs bf16 convolutions and matrix products about twice as fast as fp32. Without them
    bf16 is emulated and slower, so autocast stays off. ``FER_STUDY_CPU_BF16=0|1`` overrides."""
    env = os.environ.get("FER_STUDY_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is used when ``amp`` on CUDA, and on a CPU with native bf16 instructions."""
    return amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast_for(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast when :func:`amp_active`; a disabled context otherwise."""
    if amp_active(device, amp):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)
