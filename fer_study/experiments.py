"""The paper's tables as declared grids of runs, and the batch runner that executes them.

Each grid row is a set of config overrides in the paper's vocabulary (paper backbone aliases);
the ``demo`` profile maps those to CPU-sized stand-ins of the same family (:data:`DEMO_BACKBONE`)
and keeps everything else. Rows shared between tables (e.g. Table 2 (d) and Table 1's Swin row)
have the same config and therefore the same run id: they are trained once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fer_study.config import TrainConfig, make_config
from fer_study.engine import is_finished, run_dir_for

DEMO_BACKBONE = {"vit_s": "tiny_vit", "deit_s": "tiny_deit", "convit_s": "tiny_convit", "xcit_s": "tiny_xcit",
                 "swin_t": "tiny_swin_t", "swin_s": "tiny_swin_s", "swin_b": "tiny_swin_b", "swin_l": "tiny_swin_l"}
VANILLA = {"model.up": "bilinear", "model.down": "none", "model.stn": False}
PROPOSED = {"model.up": "sr", "model.down": "ltr", "model.stn": False}
PROPOSED_STN = {"model.up": "sr", "model.down": "ltr", "model.stn": True}


@dataclass
class Row:
    table: str
    key: str  # the row/column label in the paper's table
    overrides: dict
    paper: float | None = None  # the paper's number for this cell
    meta: dict = field(default_factory=dict)


def _t1() -> list[Row]:
    paper = {"vit_s": (88.84, 88.87), "deit_s": (88.00, 88.09), "convit_s": (88.12, 88.53),
             "xcit_s": (88.22, 88.81), "swin_s": (88.69, 89.28)}
    names = {"vit_s": "ViT", "deit_s": "DeiT", "convit_s": "ConViT", "xcit_s": "XCiT", "swin_s": "Swin-S"}
    rows = []
    for b, (van, prop) in paper.items():
        rows.append(Row("table1", f"{names[b]}|CE + Vanilla", {"model.backbone": b, "loss": "ce", **VANILLA}, van,
                        {"model": names[b], "column": "CE + Vanilla"}))
        rows.append(Row("table1", f"{names[b]}|F-PDLS + Proposed", {"model.backbone": b, "loss": "fpdls", **PROPOSED},
                        prop, {"model": names[b], "column": "F-PDLS + Proposed"}))
    return rows


def _t2() -> list[Row]:
    s = [("a", "swin_s", "bilinear", "none", False, 88.69), ("b", "swin_s", "bilinear", "ltr", False, 88.53),
         ("c", "swin_s", "sr", "bilinear", False, 89.03), ("d", "swin_s", "sr", "ltr", False, 89.28),
         ("e", "swin_b", "sr", "ltr", True, 89.50)]
    return [Row("table2", k, {"model.backbone": b, "loss": "fpdls", "model.up": up, "model.down": dn, "model.stn": stn},
                p, {"setting": k, "model": {"swin_s": "Swin-S", "swin_b": "Swin-B"}[b], "STN": stn,
                    "Up.": {"bilinear": "Bi.", "sr": "SR"}[up], "Down.": {"none": "-", "ltr": "LTR", "bilinear": "Bi."}[dn]})
            for k, b, up, dn, stn, p in s]


def _t3() -> list[Row]:
    paper = {"ce": (88.72, 88.87), "pdls": (88.69, 88.91), "fpdls": (88.78, 89.50)}
    names = {"ce": "Cross-Entropy", "pdls": "PDLS", "fpdls": "F-PDLS (ours)"}
    rows = []
    for loss, (van, prop) in paper.items():
        rows.append(Row("table3", f"{names[loss]}|Vanilla", {"model.backbone": "swin_b", "loss": loss, **VANILLA}, van,
                        {"loss": names[loss], "column": "Vanilla"}))
        rows.append(Row("table3", f"{names[loss]}|Proposed", {"model.backbone": "swin_b", "loss": loss, **PROPOSED_STN},
                        prop, {"loss": names[loss], "column": "Proposed"}))
    return rows


def _t4() -> list[Row]:
    return [
        Row("table4", "ours|FERPlus", {"model.backbone": "swin_b", "loss": "fpdls", **PROPOSED_STN}, 89.50,
            {"dataset": "FERPlus"}),
        Row("table4", "ours|RAF-DB", {"model.backbone": "swin_l", "loss": "fpdls", **PROPOSED_STN, "dataset": "rafdb",
                                      "model.num_classes": 7, "prior": "psr"}, 88.57, {"dataset": "RAF-DB"}),
    ]


#: Cited comparison rows of Table 4 (accuracy %, FERPlus / RAF-DB), from the paper; never computed here.
TABLE4_CITED = [
    ("CNN", "RAN [6]", 89.16, 86.90), ("CNN", "SCN [7]", 89.35, 88.14), ("CNN", "PSR [10]", 89.75, 88.98),
    ("Transformer", "LBP + CVT [15]", 88.81, 88.14), ("Transformer", "MVT [14]", 88.88, 87.03),
    ("Transformer", "VIT + SE [13]", None, 86.18),
]
GRIDS = {"table1": _t1, "table2": _t2, "table3": _t3, "table4": _t4}


def grid(table: str) -> list[Row]:
    if table == "all":
        return [r for t in GRIDS for r in GRIDS[t]()]
    if table not in GRIDS:
        raise KeyError(f"unknown table {table!r}; choose from {sorted(GRIDS)} or all")
    return GRIDS[table]()


def row_config(row: Row, profile: str, seed: int, extra: dict | None = None) -> TrainConfig:
    ov = dict(row.overrides)
    if profile == "demo":
        ov["model.backbone"] = DEMO_BACKBONE[ov["model.backbone"]]
        if ov.get("dataset") == "rafdb":
            ov["data_root"] = "data/synthfer_rafdb/basic"
            ov["prior"] = "psr"
    ov["seed"] = seed
    ov.update(extra or {})
    return make_config(profile, {k: str(v) for k, v in ov.items()})


@dataclass
class Job:
    rows: list[Row]
    config: TrainConfig
    seed: int

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.config)


def plan(table: str, profile: str, seeds: list[int], extra: dict | None = None) -> list[Job]:
    """Unique runs of a grid (rows with identical configs share one run)."""
    jobs: dict[str, Job] = {}
    for row in grid(table):
        for s in seeds:
            cfg = row_config(row, profile, s, extra)
            rid = cfg.run_id()
            if rid in jobs:
                jobs[rid].rows.append(row)
            else:
                jobs[rid] = Job([row], cfg, s)
    return list(jobs.values())


def _execute(job: Job, notebook: Path, env: dict) -> tuple[bool, float, str]:
    import json

    job.run_dir.mkdir(parents=True, exist_ok=True)
    out_nb = job.run_dir / "01_train.executed.ipynb"
    params = {"config_json": json.dumps(job.config.to_dict()), "repo_root": str(Path.cwd())}
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out_nb), "--cwd", str(notebook.parent),
           "-k", "python3", "--no-progress-bar"]
    for k, v in params.items():
        cmd += ["-p", k, v]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    ok = r.returncode == 0 and is_finished(job.run_dir)
    if not ok:
        (job.run_dir / "failed.log").write_text(r.stdout[-20000:] + "\n" + r.stderr[-20000:])
    return ok, time.perf_counter() - t, str(job.run_dir)


def run_grid(table: str, profile: str, seeds: list[int], dry_run: bool = False, extra: dict | None = None,
             notebook: str | Path = "notebooks/01_train.ipynb", log=print, jobs: int = 1,
             devices: list[str] | None = None) -> dict[str, list[str]]:
    """Execute ``01_train`` once per unique run with papermill, each in its own process; skip finished
    runs; record a failure and continue. Returns {done, skipped, failed}.

    ``jobs`` runs that many processes at once (on a CPU each gets ``cpu_count // jobs`` threads);
    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) spreads runs over GPUs, one process per device.
    """
    from concurrent.futures import ThreadPoolExecutor

    todo = plan(table, profile, seeds, extra)
    summary: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    pending = []
    for i, job in enumerate(todo, 1):
        rid = job.config.run_id()
        labels = ", ".join(f"{r.table}:{r.key}" for r in job.rows)
        if is_finished(job.run_dir):
            summary["skipped"].append(rid)
            log(f"[{i}/{len(todo)}] skip (finished) {rid}  <- {labels}")
        elif dry_run:
            log(f"[{i}/{len(todo)}] would run {rid}  <- {labels}")
        else:
            pending.append((i, job, labels))
    workers = len(devices) if devices else max(1, jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)

    def work(item, slot: int):
        i, job, labels = item
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if devices:
            job.config.device = devices[slot % len(devices)]
        elif workers > 1:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        return i, job, labels, *_execute(job, Path(notebook), env)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(work, item, k) for k, item in enumerate(pending)]
        for f in futures:
            i, job, labels, ok, dt, d = f.result()
            rid = job.config.run_id()
            if ok:
                summary["done"].append(rid)
                log(f"[{i}/{len(todo)}] done in {dt:.0f} s {rid}  <- {labels}")
            else:
                summary["failed"].append(rid)
                log(f"[{i}/{len(todo)}] FAILED after {dt:.0f} s {rid} (see {d}/failed.log)")
    log(f"summary: {len(summary['done'])} done, {len(summary['skipped'])} skipped, {len(summary['failed'])} failed"
        + (f", {len(todo) - len(summary['skipped'])} to run (dry run)" if dry_run else ""))
    return summary
