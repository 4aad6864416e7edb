"""The CPU allocator setting: applied once on glibc, skipped on request."""

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
