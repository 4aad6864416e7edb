"""The grid runner: plan the runs of one or all tables, execute each with papermill in its own
process (``notebooks/01_train.ipynb``) or in persistent worker processes (:class:`WorkerPool`),
skip finished runs, record failures, and write a manifest (:mod:`fer_study.runs`) that the report reads."""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from fer_study.config import TrainConfig
from fer_study.inputs import StaleRunError, run_inputs
from fer_study.io import git_sha
from fer_study.runs import CHECKPOINT, Manifest, PlannedRun, Run, RunStore
from fer_study.tables import TRAIN_NOTEBOOK, Cell, TableSpec, cell_applies, cell_config, tables_for


@dataclass
class Job:
    """One unique run and the table cells it fills."""

    config: TrainConfig
    seed: int
    cells: list[tuple[TableSpec, Cell]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def run(self) -> Run:
        return RunStore.of(self.config).run_for(self.config)

    @property
    def labels(self) -> list[str]:
        return [f"{t.name}:{c.key}" for t, c in self.cells]


def overridden_varied_keys(table: str, overrides: list[str], profile: str | None = None) -> list[str]:
    """User overrides that replace a value the table varies between its cells (its rows then collapse)."""
    varied = set().union(*(t.varies for t in tables_for(table, profile)))
    keys = [o.split("=", 1)[0] for o in overrides]
    return [k for k in keys if k in varied or f"model.{k}" in varied]


def plan(table: str, profile: str, seeds: list[int], overrides: list[str] | None = None) -> list[Job]:
    """The unique runs of a grid (cells with identical configs share one run). A profile sized for some
    tables only (:data:`fer_study.tables.PROFILE_TABLES`) refuses the others."""
    from fer_study.errors import ConfigError
    from fer_study.tables import PROFILE_TABLES

    allowed = PROFILE_TABLES.get(profile)
    if allowed is not None and table != "all" and table not in allowed:
        raise ConfigError(f"{table}: the {profile} profile runs {', '.join(allowed)} only (its stand-ins and budget "
                          f"are sized for them); use --profile demo or paper for {table}")
    jobs: dict[str, Job] = {}
    for spec in tables_for(table, profile):
        for cell in spec.cells:
            if not cell_applies(cell, profile, overrides):
                continue
            for s in seeds:
                cfg = cell_config(cell, profile, s, overrides)
                job = jobs.setdefault(cfg.run_id(), Job(cfg, s))
                job.cells.append((spec, cell))
    return list(jobs.values())


def relative_cost(cfg: TrainConfig) -> float:
    """A rough training cost of a run relative to others of its grid (for longest-first scheduling):
    epochs x (backbone input pixels x width, plus the resizer's and STN's work at the SR size). Sized on
    the CPU stand-ins (``embed_dim`` in their kwargs; a timm backbone counts as width 96), where it orders
    the settings as measured ((e) > (b) = (d) > (a) = (c)); it only orders a grid, it predicts no time."""
    from fer_study.models.backbones import BACKBONES

    m = cfg.model
    width = BACKBONES.get(m.backbone, ("", {}))[1].get("embed_dim", 96)
    size = m.img_size or 224
    cost = size * size * width / 96
    big = m.sr_size if m.up == "sr" or m.down == "ltr" else m.input_size
    if m.down == "ltr":
        cost += 2.0 * big * big * m.ltr_n / 16
    if m.stn:
        cost += 1.0 * big * big
    return cfg.epochs * cost


def sr_cache_input(cfg: TrainConfig) -> tuple | None:
    """What the SR cache a run reads is built from (data set, its root, SR model, size), or None for a
    run that reads none (raw images; the oracle's renders)."""
    if cfg.model.input_kind != "sr" or cfg.sr_backend == "oracle":
        return None
    return cfg.dataset, cfg.data_root, cfg.sr_backend, cfg.sr_weights, cfg.model.sr_size


def longest_first(items: list[tuple[int, Job, PlannedRun]], workers: int = 1) -> list[tuple[int, Job, PlannedRun]]:
    """``(index, job, entry)`` items by decreasing :func:`relative_cost` (plan order among equals).

    With ``workers`` > 1 the first ``workers`` items (the runs started at once) read different SR caches
    where the grid has such runs: the first run of a cache builds it while the others wait on its lock
    (:mod:`fer_study.sr_cache`), so two first runs of one cache would leave a worker idle (the demo:
    its three RAF-DB-twin runs, the costliest, came first, and the second waited 10 s for the first's cache)."""
    order = sorted(items, key=lambda item: -relative_cost(item[1].config))
    first: list[int] = []  # positions in order
    seen: set = set()
    for pos, item in enumerate(order):
        if len(first) >= max(1, workers):
            break
        key = sr_cache_input(item[1].config)
        if key is None or key not in seen:
            first.append(pos)
            seen.add(key)
    taken = set(first)
    return [order[p] for p in first] + [item for p, item in enumerate(order) if p not in taken]


def _train_in_notebook(job: Job, env: dict[str, str]) -> tuple[bool, str]:
    """Execute 01_train for ``job`` in a fresh process (papermill); True when the run finished."""
    import subprocess

    from fer_study.notebooks import KERNEL, notebook_path

    run = job.run
    run.path.mkdir(parents=True, exist_ok=True)
    out_nb = run.file("01_train.executed.ipynb")
    nb = notebook_path(TRAIN_NOTEBOOK)
    params = json.dumps({"config_json": json.dumps(job.config.to_dict())})
    code = ("import json, sys; from fer_study.notebooks import execute; "
            "execute(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), kernel=sys.argv[4])")
    r = subprocess.run([sys.executable, "-c", code, str(nb), str(out_nb), params, KERNEL], capture_output=True,
                       text=True, env=env)
    ok = r.returncode == 0 and run.is_finished()
    if not ok:
        run.write_failed_log(r.stdout[-20000:] + "\n" + r.stderr[-20000:])
    return ok, str(run.path)


def _init_worker(threads: int) -> None:
    """A pool worker: ``threads`` intra-op threads (set before the first run imports anything heavy)."""
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    import torch

    torch.set_num_threads(threads)


def _train_in_worker(config: dict) -> str:
    """Train one run inside a pool worker; its output goes to ``train.log`` in the run directory."""
    import contextlib

    from fer_study.training import train

    cfg = TrainConfig.from_dict(config)
    cfg.progress = False  # not a result key: the run id is unchanged
    run = RunStore.of(cfg).run_for(cfg)
    run.path.mkdir(parents=True, exist_ok=True)
    with open(run.file("train.log"), "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        return str(train(cfg))


class WorkerPool:
    """``workers`` persistent Python processes that train runs in-process (``fer-study run --executor
    workers``, ``make demo``): torch, timm and the data are imported and parsed once per worker instead of
    once per run (a papermill run costs about 10 s of start-up: interpreter, kernel, imports, the
    notebook's plot). Each worker gets ``threads`` intra-op threads (default: ``OMP_NUM_THREADS`` when
    set, else the CPU count over ``workers``). No executed notebook is saved per
    run (``train.log`` holds its output); the run directory is otherwise the same.

    Use as the ``train`` of :func:`run_grid` (``workers`` = its ``jobs``); a worker that dies (killed,
    out of memory) fails its run, and the pool is restarted for the next."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        import multiprocessing

        self.workers = max(1, workers)
        env = os.environ.get("OMP_NUM_THREADS", "")
        # an explicit OMP_NUM_THREADS is honoured, as the papermill path's processes inherit it
        self.threads = threads or (int(env) if env.isdigit() and int(env) > 0 else
                                   max(1, (os.cpu_count() or 1) // self.workers))
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        self._lock = threading.Lock()
        self._ex = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(self.threads,))

    def __call__(self, job: Job, env: dict[str, str]) -> tuple[bool, str]:
        run = job.run
        with self._lock:
            ex = self._ex
        try:
            ex.submit(_train_in_worker, job.config.to_dict()).result()
        except BrokenProcessPool:
            with self._lock:
                if self._ex is ex:
                    self._ex = self._start()
            run.write_failed_log("the worker process died during this run (killed or out of memory); "
                                 f"its output: {run.file('train.log')}")
            return False, str(run.path)
        except Exception as e:  # noqa: BLE001 - the run's error, recorded beside it
            run.write_failed_log("".join(traceback.format_exception(e)))
            return False, str(run.path)
        return run.is_finished(), str(run.path)

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_grid(table: str, profile: str, seeds: list[int], overrides: list[str] | None = None, dry_run: bool = False,
             jobs: int = 1, devices: list[str] | None = None, log: Callable[[str], None] = print,
             train: Callable[[Job, dict[str, str]], tuple[bool, str]] | None = None,
             retrain_stale: bool = False) -> dict[str, list[str]]:
    """Execute each unique run once (skipping finished ones), ``jobs`` at a time, and record the grid
    in a manifest. Returns {done, skipped, failed, planned} lists of run ids.

    ``jobs`` runs that many processes at once (on a CPU each gets ``cpu_count // jobs`` threads);
    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) spreads runs over GPUs, one process per device.
    ``train`` replaces the papermill execution (an executor such as a cluster's).

    A finished run whose inputs changed since it was trained (:mod:`fer_study.inputs`) is *stale*:
    the grid stops before training anything and lists them, unless ``retrain_stale`` (their
    directories are then removed and the runs trained again).
    """
    overrides = list(overrides or [])
    todo = plan(table, profile, seeds, overrides)
    for k in overridden_varied_keys(table, overrides, profile):
        log(f"warning: --set {k} overrides a value {table} varies between its cells; those cells share one run")
    store = RunStore.of(todo[0].config) if todo else RunStore()
    manifest = Manifest(table, profile, list(seeds), overrides, git_sha=git_sha(),
                        runs=[PlannedRun(j.run_id, j.seed, j.labels) for j in todo])
    summary: dict[str, list[str]] = {"done": [], "skipped": [], "failed": [], "planned": []}
    pending = []
    stale: list[str] = []
    fingerprints: dict = {}
    for i, (job, entry) in enumerate(zip(todo, manifest.runs), 1):
        state = job.run.state()
        resumable = state in ("partial", "failed") and job.run.file(CHECKPOINT).is_file()
        changed = (job.run.input_changes(run_inputs(job.config, fingerprints))
                   if state == "finished" or resumable else [])
        if changed:
            stale.append(f"{job.run_id} ({'; '.join(changed)})")
            if dry_run or not retrain_stale:
                summary.setdefault("stale", []).append(job.run_id)
                log(f"[{i}/{len(todo)}] STALE {job.run_id}: {'; '.join(changed)}  <- {', '.join(job.labels)}")
                continue
            log(f"[{i}/{len(todo)}] retrain (stale: {'; '.join(changed)}) {job.run_id}")
            shutil.rmtree(job.run.path)
            pending.append((i, job, entry))
        elif state == "finished":
            entry.state = "skipped"
            summary["skipped"].append(job.run_id)
            log(f"[{i}/{len(todo)}] skip (finished) {job.run_id}  <- {', '.join(job.labels)}")
        elif dry_run:
            summary["planned"].append(job.run_id)
            log(f"[{i}/{len(todo)}] would run ({state}) {job.run_id}  <- {', '.join(job.labels)}")
        else:
            pending.append((i, job, entry))
    if dry_run:
        log(f"summary: {len(summary['skipped'])} finished, {len(summary['planned'])} to run, "
            f"{len(summary.get('stale', []))} stale (dry run: nothing trained, no manifest written)")
        return summary
    if stale and not retrain_stale:
        raise StaleRunError(f"{len(stale)} finished or partly trained run(s) were trained on other inputs, nothing was trained: "
                            f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}. Re-run with "
                            "--retrain-stale to retrain them, or restore the inputs.")
    store.write_manifest(manifest)
    workers = len(devices) if devices else max(1, jobs)
    if workers > 1:  # longest first: the last runs to finish are short, so no worker idles for long
        pending = longest_first(pending, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    execute = train or _train_in_notebook
    free: queue.Queue[str] = queue.Queue()  # one device per worker: a run takes a free one, gives it back
    for d in devices or []:
        free.put(d)

    def work(item: tuple[int, Job, PlannedRun]) -> tuple[int, Job, PlannedRun, bool, float, str]:
        i, job, entry = item
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        device = free.get() if devices else None
        try:
            if device is not None:
                job.config.device = device
            elif workers > 1:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            log(f"[{i}/{len(todo)}] start {job.run_id}{f' on {device}' if device else ''}  <- {', '.join(job.labels)}")
            t = time.perf_counter()
            ok, where = execute(job, env)
            return i, job, entry, ok, time.perf_counter() - t, where
        finally:
            if device is not None:
                free.put(device)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(work, item) for item in pending]
        # as they finish (not in submission order): the log and the manifest show a finished run at once
        for n_done, f in enumerate(as_completed(futures), 1):
            i, job, entry, ok, dt, where = f.result()
            entry.state = "done" if ok else "failed"
            store.write_manifest(manifest)
            summary["done" if ok else "failed"].append(job.run_id)
            eta = (time.perf_counter() - t0) / n_done * (len(pending) - n_done)
            if ok:
                log(f"[{i}/{len(todo)}] done in {dt:.0f} s {job.run_id} ({n_done}/{len(pending)}, ETA {eta:.0f} s)")
            else:
                log(f"[{i}/{len(todo)}] FAILED after {dt:.0f} s {job.run_id} (see {where}/failed.log)")
    log(f"summary: {len(summary['done'])} done, {len(summary['skipped'])} skipped, {len(summary['failed'])} failed; "
        f"manifest {manifest.path}")
    return summary
