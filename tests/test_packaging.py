from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = {_norm(r) for r in pp["dependencies"] + pp["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_norm(r) for r in pip if not r.startswith("-e")}
    assert have == want, f"only in environment.yml: {have - want}; only in pyproject: {want - have}"
    assert "python=3.11" in env["dependencies"]


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "fer_study.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    from fer_study.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert name in out
    assert "data" in sub.choices


def test_data_counts_json(synth_root):
    import json

    out = subprocess.run([sys.executable, "-m", "fer_study.cli", "data", "counts", "--dataset", "ferplus",
                          "--root", str(synth_root), "--json"], capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    assert set(d["splits"]) == {"train", "valid", "test"}
    assert all(v["total"] == sum(v["per_class"].values()) for v in d["splits"].values())
