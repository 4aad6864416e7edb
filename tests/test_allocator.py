"""CPU speed settings: the allocator thresholds (applied once on glibc, skipped on request) and bf16
autocast on CPUs with native bf16."""

from __future__ import annotations

import platform

import pytest

from fer_study import allocator


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    return allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_once_on_glibc(fresh):
    first = fresh.tune_cpu_allocator()
    assert first == {"applied": True, "mmap_threshold": 2 ** 31 - 1, "trim_threshold": 2 ** 31 - 1}
    assert fresh.tune_cpu_allocator() is first


def test_skipped_on_request(fresh, monkeypatch):
    monkeypatch.setenv("FER_STUDY_MALLOC_TUNING", "0")
    assert fresh.tune_cpu_allocator() == {"applied": False, "reason": "FER_STUDY_MALLOC_TUNING=0"}


def test_bf16_autocast_on_cpu_follows_the_instruction_set(monkeypatch):
    import torch

    from fer_study.training.precision import amp_active, autocast_for

    cpu = torch.device("cpu")
    monkeypatch.setenv("FER_STUDY_CPU_BF16", "1")
    assert amp_active(cpu, True) and not amp_active(cpu, False)
    with autocast_for(cpu, True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    monkeypatch.setenv("FER_STUDY_CPU_BF16", "0")
    assert not amp_active(cpu, True)
    with autocast_for(cpu, True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
