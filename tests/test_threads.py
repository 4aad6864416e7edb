"""Reproducibility across thread counts (issue: demo stability): the same run id trained with 1 and
with 2 intra-op threads gives other bits (float sums are reordered by the CPU kernels) but the same
accuracy within the stated tolerance. Bitwise equality holds only on the same machine and threads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fer_study.data.synth import SynthConfig, generate

#: Clean-protocol test accuracy, points: 1 vs 2 threads (measured 0.67 on the 2-core machine).
THREAD_TOLERANCE = 3.0

SCRIPT = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from fer_study.config import make_config
from fer_study.runs import Run
from fer_study.training import train
cfg = make_config("demo", json.loads(sys.argv[2]))
r = Run(train(cfg))
print(json.dumps({"run_id": cfg.run_id(), "test_acc": r.metrics()["protocols"]["clean"]["test_acc"],
                  "threads": r.env()["torch_threads"]}))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("threads") / "synth"
    generate(root, SynthConfig(n=1200, seed=3, hr_size=96, n_hr=0, imbalance=0.5, split_fractions=(0.5, 0.1, 0.4)))
    return root


def test_one_and_two_threads_agree_within_tolerance(data, tmp_path):
    out = {}
    for t in (1, 2):
        over = {"synthfer_root": str(data), "runs_dir": str(tmp_path / f"runs{t}"), "cache_dir": str(tmp_path / "c"),
                "model.backbone": "tiny_swin_t", "model.up": "bilinear", "model.down": "ltr", "model.sr_size": 64,
                "model.ltr_n": 8, "epochs": 6, "progress": False, "batch_size": 32}
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(t), json.dumps(over)], capture_output=True, text=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": str(t)})
        assert r.returncode == 0, r.stderr[-3000:]
        out[t] = json.loads(r.stdout.strip().splitlines()[-1])
        assert out[t]["threads"] == t
    assert out[1]["run_id"] == out[2]["run_id"]  # the run id is a function of the config only
    assert abs(out[1]["test_acc"] - out[2]["test_acc"]) * 100 <= THREAD_TOLERANCE, out


def test_env_json_reports_a_capped_onednn_isa(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (how a run is made to follow an older machine's kernels) is what env.json
    reports as the dispatch ISA, not the CPU's highest."""
    from fer_study.io import cpu_isa_flags, onednn_info

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    top = onednn_info()["dispatch_isa"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = onednn_info()
    assert info["max_cpu_isa_env"] == "AVX2"
    assert info["dispatch_isa"] == ("avx2" if "avx2" in cpu_isa_flags() and top != "sse41/other" else top)
