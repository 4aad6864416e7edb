"""oneDNN's instruction-set cap (fer_study.onednn): applied before a process's first convolution, read
back from oneDNN's own verbose line, reported (never hidden) where it came too late."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fer_study.config import make_config
from fer_study.io import cpu_flags
from fer_study.onednn import impl_isa, within

needs_avx512 = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available() or not {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags(),
    reason="needs oneDNN on an x86 CPU with AVX-512 (where an AVX2 cap changes the kernels)")

PROBE = """
import json, sys, warnings
import torch, torch.nn.functional as F
if sys.argv[1] == "conv_first":  # oneDNN starts before the cap is asked for
    F.conv2d(torch.zeros(2, 8, 32, 32).contiguous(memory_format=torch.channels_last),
             torch.zeros(8, 8, 3, 3).contiguous(memory_format=torch.channels_last))
from fer_study.onednn import apply_isa_cap
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    r = apply_isa_cap(sys.argv[2] if sys.argv[2] != "none" else None)
print(json.dumps({**r, "warned": [str(x.message) for x in w]}))
"""


def _probe(order: str, cap: str, env_cap: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if env_cap is not None:
        env["ONEDNN_MAX_CPU_ISA"] = env_cap
    r = subprocess.run([sys.executable, "-c", PROBE, order, cap], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_impl_isa_and_within():
    assert impl_isa("brg_conv_fwd:avx2") == "avx2" and impl_isa("jit:avx512_core") == "avx512_core"
    assert impl_isa(None) is None and impl_isa("gemm") is None
    assert within("avx2", "avx2") and within("sse41", "avx2") and within("avx", "AVX2")
    assert within("avx512_core", "avx2") is False and within("avx512_core_bf16", "avx512_core") is False
    assert within("uni", "avx2") is None and within("acl", "avx2") is None


@needs_avx512
def test_cap_applies_in_a_fresh_process_and_is_read_back():
    r = _probe("cap_first", "avx2")
    assert r["conv_impl"].endswith(":avx2") and r["applied"] is True and r["set_here"] is True, r
    assert r["env"] == "AVX2" and not r["warned"]
    free = _probe("cap_first", "none")  # no request: oneDNN's own choice, measured all the same
    assert impl_isa(free["conv_impl"]).startswith("avx512") and free["applied"] is None, free


@needs_avx512
def test_a_cap_that_comes_too_late_is_reported_not_hidden():
    r = _probe("conv_first", "avx2")
    assert impl_isa(r["conv_impl"]).startswith("avx512") and r["applied"] is False, r
    assert len(r["warned"]) == 1 and "too late" in r["warned"][0], r


@needs_avx512
def test_the_callers_own_setting_wins_and_is_recorded():
    r = _probe("cap_first", "avx2", env_cap="ALL")
    assert r["env"] == "ALL" and r["set_here"] is False and r["applied"] is False and not r["warned"], r


def test_the_older_variable_name_counts_as_the_callers_setting():
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env["DNNL_MAX_CPU_ISA"] = "SSE41"
    r = subprocess.run([sys.executable, "-c", PROBE, "cap_first", "avx2"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["env"] == "SSE41" and out["set_here"] is False and not out["warned"], out


def test_probe_failure_reads_as_unknown(monkeypatch):
    """A torch without oneDNN verbose support: the probe says None, the run goes on."""
    from fer_study import onednn

    class Broken:
        def __init__(self, *a):
            pass

        def __enter__(self):
            raise AssertionError("verbose unsupported")

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(torch.backends.mkldnn, "verbose", Broken)
    assert onednn.conv_impl() is None
    r = onednn.apply_isa_cap(None)
    assert r["conv_impl"] is None and r["applied"] is None and r["set_here"] is False


def test_demo_asks_for_avx2_and_the_cap_is_not_in_the_run_id():
    demo = make_config("demo")
    assert demo.onednn_max_isa == "avx2" and make_config("ferplus-cpu").onednn_max_isa is None  # bf16 needs AVX-512
    assert make_config("demo", ["onednn_max_isa=none"]).run_id() == demo.run_id()
    from fer_study.errors import ConfigError

    with pytest.raises(ConfigError, match="onednn_max_isa"):
        make_config("demo", ["onednn_max_isa=avx3"])
