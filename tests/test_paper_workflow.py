"""The README's paper workflow, run as written at miniature size.

The README's commands (`fer-study run all --profile paper ...` then `fer-study report --profile
paper`) run in a copy of the project, on SynthFER written in the FERPlus layout and its
RAF-DB-layout twin as the two data roots, with a small timm backbone whose random weights the test
saves to a local ``.safetensors`` file and passes as ``model.checkpoint``. SR is bicubic here (DIC
48 -> 384 takes ~30 s an image on this CPU; DIC checkpoints are tested in test_models.py). Every
"ours" cell of Tables 1-4 must be filled and Figure 2 drawn from those runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FER_STUDY = str(Path(sys.executable).with_name("fer-study"))

#: The README's paper workflow; {..} are the user's paths.
README_RUN = ("fer-study run all --profile paper --seeds 1111 --set ferplus_root={ferplus} "
              "--set rafdb_root={rafdb} --set sr_weights={dic} --set model.checkpoint={weights}")
README_REPORT = "fer-study report --profile paper"
#: What makes it miniature (appended to the run command only: the report needs no overrides).
MINIATURE = ["sr_backend=bicubic", "sr_weights=none", "model.backbone=vit_tiny_patch16_224", "model.img_size=32",
             "model.sr_size=64", 'model.backbone_kwargs={"depth": 2}', "epochs=1", "max_train=48",
             "batch_size=16", "progress=false"]


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    return re.sub(r"\\\n\s*", "", text)  # join continued lines


def test_readme_shows_the_commands_this_test_runs():
    block = _readme_block()
    run = README_RUN.format(ferplus="/data/ferplus", rafdb="/data/RAF-DB/basic", dic="/weights/DIC_Helen.pth",
                            weights="/weights/timm")
    assert " ".join(run.split()) in " ".join(block.split()), "README's paper workflow changed: update this test"
    assert README_REPORT in block


@pytest.mark.slow
def test_readme_paper_workflow_fills_every_table_and_figure2(synth_root, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from fer_study.data.synth import write_rafdb_layout
    from fer_study.tables import TABLES

    proj = tmp_path / "proj"  # a copy of the project: its results, figures and notebooks are the test's
    for part in ("fer_study", "notebooks", "results/tables"):
        shutil.copytree(ROOT / part, proj / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", proj)
    rafdb = tmp_path / "rafdb" / "basic"
    write_rafdb_layout(synth_root, rafdb, seed=0)
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, depth=2)
    weights = tmp_path / "vit_tiny_random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("FER_STUDY_TABLES_DIR", None)
    run = README_RUN.format(ferplus=synth_root, rafdb=rafdb, dic="unused", weights=weights).split()
    run = [FER_STUDY, *run[1:]]
    i = run.index("sr_weights=unused")
    del run[i - 1:i + 1]  # bicubic needs no weights (MINIATURE says sr_weights=none)
    for m in MINIATURE:
        run += ["--set", m]
    r = subprocess.run([*run, "--jobs", "2"], cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 failed" in r.stdout
    r = subprocess.run([FER_STUDY, *README_REPORT.split()[1:]], cwd=proj, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    import pandas as pd

    for name in TABLES:
        df = pd.read_csv(proj / "results" / "tables" / f"{name}.csv")
        rows = df if name != "table4" else df[df["Method"].str.startswith("ours (this study")]
        means = [c for c in df.columns if c.endswith(": mean (%)") and (name == "table4" or "ours" in c)]
        counts = [c[:-len("mean (%)")] + "n" for c in means]
        assert means and rows[means].notna().all().all(), (name, rows[means])  # numeric, every cell filled
        assert (rows[counts] == 1).all().all(), (name, rows[counts])
    t4 = (proj / "results" / "tables" / "table4.md").read_text()
    assert "synthetic" in t4.lower() or "SynthFER" in t4
    assert (proj / "figures" / "figure2.png").stat().st_size > 10_000
    assert (proj / "figures" / "figure2.pdf").exists()
