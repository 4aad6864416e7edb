from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
# oneDNN's own kernel choice for the whole test process: the demo profile's AVX2 cap (fer_study.onednn) is
# not applied in-process, where the first convolution depends on test order (tests/test_onednn.py runs the
# cap in fresh processes)
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "ALL")

from pathlib import Path  # noqa: E402

import pytest

from fer_study.data.synth import SynthConfig, generate


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small SynthFER (FERPlus csv form) shared by the tests."""
    root = tmp_path_factory.mktemp("synthfer")
    generate(root, SynthConfig(n=600, seed=3, hr_size=96, imbalance=0.5))
    return root


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    root = os.environ.get("FERPLUS_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("FERPLUS_ROOT not set: real FERPlus tests skipped")
    return Path(root)


@pytest.fixture(scope="session")
def rafdb_labels() -> Path:
    p = os.environ.get("RAFDB_LABELS")
    if not p or not Path(p).is_file():
        pytest.skip("RAFDB_LABELS not set: real RAF-DB label tests skipped")
    return Path(p)
