"""The grid on a Slurm cluster, through submitit: each pending run of a plan is one task of a Slurm
job array that trains the run in-process (:class:`TrainJob`). A preempted or timed-out job is
requeued by submitit and resumes from the run's own ``checkpoint.pt`` (at most the epoch in progress
is lost). The manifest records each run's job id; :func:`grid_status` reads it back.

Job files (sbatch script, pickles, logs) go to ``<runs_dir>/slurm/<job-id>/``. Submitit's *local*
executor (``SlurmSettings(cluster="local")``) runs the same jobs as local processes; the tests use it.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from fer_study.errors import ConfigError, RunError
from fer_study.inputs import StaleRunError, run_inputs
from fer_study.io import git_sha
from fer_study.runner import Job, overridden_varied_keys, plan
from fer_study.runs import CHECKPOINT, HISTORY, Manifest, PlannedRun, RunStore

#: Slurm job states in which the job may still train its run (a re-run does not submit it again).
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
         "REQUEUE_FED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "READY"}
LOCAL = "local:"  # job ids of submitit's local executor: "local:<pid of its controller>"


@dataclass
class SlurmSettings:
    """Resources of each run's job. ``gpus_per_run`` GPUs are spread evenly over ``nodes`` nodes, one
    process (task) per GPU; ``cpus_per_run`` and ``mem_gb`` are per node; ``time_min`` is the wall
    time of one job (a timed-out job is requeued at most ``max_timeouts`` times)."""

    partition: str | None = None
    gpus_per_run: int = 1
    nodes: int = 1
    time_min: int = 720
    cpus_per_run: int | None = None
    mem_gb: float | None = None
    array_parallelism: int = 32
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, conda activate)
    extra: dict[str, Any] = field(default_factory=dict)  # other submitit Slurm parameters: account, qos, ...
    max_timeouts: int = 3
    tasks_per_node: int | None = None  # default: one per GPU of a node (at least one)
    cluster: str = "slurm"  # "local": submitit's local executor (tests; one machine)

    def validate(self) -> None:
        if self.gpus_per_run < 0 or self.nodes < 1 or self.time_min < 1 or self.array_parallelism < 1:
            raise ConfigError("--gpus-per-run must be >= 0; --nodes, --time and --array-parallelism >= 1")
        if self.gpus_per_run % self.nodes:
            raise ConfigError(f"--gpus-per-run {self.gpus_per_run} does not split evenly over --nodes {self.nodes}")
        if self.nodes > 1 and not self.gpus_per_run:
            raise ConfigError("--nodes > 1 needs GPUs (--gpus-per-run): one process per GPU")

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_run // self.nodes

    @property
    def tasks(self) -> int:
        """Processes per node."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def executor(self, runs_dir: Path, name: str) -> submitit.AutoExecutor:
        c = self.cluster
        if c == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm: sbatch is not on PATH (run this on a Slurm login node)")
        ex = submitit.AutoExecutor(folder=runs_dir / "slurm" / "%j", cluster=c, **{f"{c}_max_num_timeout":
                                                                                   self.max_timeouts})
        params: dict[str, Any] = dict(name=name, timeout_min=self.time_min, nodes=self.nodes,
                                      tasks_per_node=self.tasks, gpus_per_node=self.gpus_per_node,
                                      slurm_partition=self.partition, slurm_array_parallelism=self.array_parallelism,
                                      mem_gb=self.mem_gb,
                                      cpus_per_task=self.cpus_per_run and max(1, self.cpus_per_run // self.tasks))
        if self.setup:
            params[f"{c}_setup"] = list(self.setup)
        params.update({f"slurm_{k}": v for k, v in self.extra.items()})
        try:
            ex.update_parameters(**params)
        except (NameError, ValueError) as e:  # submitit names the valid parameters
            raise ConfigError(f"Slurm parameters: {e}") from e
        return ex


class TrainJob:
    """The function of one run's job: trains the run in this process (every task of the job joins
    DDP through env://). Picklable; submitit calls :meth:`checkpoint` on preemption or time-out and
    requeues the job, which then resumes from the run's checkpoint.pt."""

    def __init__(self, attempt: int = 1) -> None:
        self.attempt = attempt

    def __call__(self, config: dict[str, Any], run_id: str | None = None) -> str:
        from fer_study.config import TrainConfig

        env = submitit.JobEnvironment()
        config = dict(config)
        if env.num_tasks > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for init_dist's env://
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            if str(config.get("device", "auto")).startswith("cuda"):
                config["device"] = "auto"  # each rank its LOCAL_RANK's GPU
        if "SLURM_CPUS_PER_TASK" in os.environ and "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        cfg = TrainConfig.from_dict(config)
        run = RunStore.of(cfg).run_for(cfg)
        if run_id is not None and run.run_id != run_id:  # the code that derives run ids changed meanwhile
            raise RunError(f"the config submitted as run {run_id} now has run id {run.run_id}: fer_study changed "
                           "between submission and this job; submit the grid again")
        resume = run.file(CHECKPOINT).is_file()
        print(f"fer-study job {env.job_id} task {env.global_rank}/{env.num_tasks}: run {run.run_id}, attempt "
              f"{self.attempt}, {'resuming from checkpoint.pt' if resume else 'starting'}", flush=True)
        try:
            from fer_study.training import train

            return str(train(cfg))
        except Exception:
            if env.global_rank == 0:
                run.write_failed_log(f"job {env.job_id}, attempt {self.attempt}\n{traceback.format_exc()}")
            raise
        finally:
            from fer_study.training.distributed import end_process_group

            end_process_group()  # this job process owns the group its ranks joined

    def checkpoint(self, config: dict[str, Any], run_id: str | None = None) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: the same run again; training resumes from its last epoch's checkpoint."""
        return submitit.helpers.DelayedSubmission(TrainJob(self.attempt + 1), config, run_id)


@dataclass
class Submission:
    """What :func:`submit_grid` did: run ids by outcome, the manifest and the submitted jobs by run id."""

    summary: dict[str, list[str]]
    manifest: Manifest | None
    jobs: dict[str, submitit.Job] = field(default_factory=dict)


def job_id_of(job: submitit.Job) -> str:
    return f"{LOCAL}{job.job_id}" if isinstance(job, submitit.LocalJob) else str(job.job_id)


def job_states(job_ids: list[str], runs_dir: str | Path) -> dict[str, str]:
    """The state of each job id where it can be told: Slurm through sacct, a local executor's job by
    its process (RUNNING) or else its result (COMPLETED, FAILED, or INTERRUPTED when it left none)."""
    out: dict[str, str] = {}
    slurm = [j for j in job_ids if not j.startswith(LOCAL)]
    if slurm and shutil.which("sacct"):
        from submitit.slurm.slurm import SlurmInfoWatcher

        w = SlurmInfoWatcher()
        for j in slurm:
            w.register_job(j)
        w.update()
        out.update({j: w.get_state(j, mode="cache") for j in slurm})
    for j in job_ids:
        if j.startswith(LOCAL):
            out[j] = _local_state(j[len(LOCAL):], Path(runs_dir))
    return out


def _local_state(pid: str, runs_dir: Path) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        alive = stat.rsplit(")", 1)[1].split()[0] not in "ZX" and b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        alive = False
    if alive:
        return "RUNNING"
    result = submitit.core.utils.JobPaths(runs_dir / "slurm" / "%j", pid, 0).result_pickle
    if not result.is_file():
        return "INTERRUPTED"
    return "COMPLETED" if submitit.core.utils.pickle_load(result)[0] == "success" else "FAILED"


def latest_jobs(store: RunStore, profile: str) -> dict[str, tuple[str | None, str]]:
    """run id -> (job id, manifest state) from the newest manifest that lists the run."""
    out: dict[str, tuple[str | None, str]] = {}
    for m in store.manifests(profile):  # newest first
        for r in m.runs:
            out.setdefault(r.run_id, (r.job_id, r.state))
    return out


def submit_grid(table: str, profile: str, seeds: list[int], overrides: list[str] | None = None,
                settings: SlurmSettings | None = None, dry_run: bool = False, only: list[str] | None = None,
                log: Callable[[str], None] = print, retrain_stale: bool = False) -> Submission:
    """Submit every unfinished run of the grid as one job array (``only``: just these run ids), except
    runs whose last job is still alive; finished runs are skipped. Writes a manifest with each run's
    job id (state ``submitted``) and returns without waiting (see :func:`wait`). Finished runs whose
    inputs changed stop the submission, as in :func:`fer_study.runner.run_grid`."""
    settings = settings or SlurmSettings()
    settings.validate()
    overrides = list(overrides or [])
    todo = [j for j in plan(table, profile, seeds, overrides) if only is None or j.run_id in only]
    for k in overridden_varied_keys(table, overrides, profile):
        log(f"warning: --set {k} overrides a value {table} varies between its cells; those cells share one run")
    store = RunStore.of(todo[0].config) if todo else RunStore()
    previous = latest_jobs(store, profile)
    earlier = sorted({previous[j.run_id][0] for j in todo if previous.get(j.run_id, (None,))[0]})
    alive = job_states(earlier, store.root)
    if any(not j.startswith(LOCAL) for j in earlier) and shutil.which("sacct") is None:
        log("warning: sacct is not on PATH: jobs submitted earlier are not checked; unfinished runs are submitted again")
    manifest = Manifest(table, profile, list(seeds), overrides, git_sha=git_sha(),
                        runs=[PlannedRun(j.run_id, j.seed, j.labels) for j in todo])
    summary: dict[str, list[str]] = {"submitted": [], "queued": [], "skipped": [], "planned": []}
    pending: list[tuple[Job, PlannedRun]] = []
    stale: list[str] = []
    fingerprints: dict = {}
    for i, (job, entry) in enumerate(zip(todo, manifest.runs), 1):
        state, jid = job.run.state(), previous.get(job.run_id, (None,))[0]
        where = f"[{i}/{len(todo)}] {{}} {job.run_id}  <- {', '.join(job.labels)}"
        resumable = state in ("partial", "failed") and job.run.file(CHECKPOINT).is_file()
        changed = (job.run.input_changes(run_inputs(job.config, fingerprints))
                   if state == "finished" or resumable else [])
        if changed and not retrain_stale:
            stale.append(f"{job.run_id} ({'; '.join(changed)})")
            log(where.format(f"STALE ({'; '.join(changed)})"))
        elif changed:
            log(where.format(f"retrain (stale: {'; '.join(changed)})"))
            if not dry_run:
                shutil.rmtree(job.run.path)
                pending.append((job, entry))
            else:
                summary["planned"].append(job.run_id)
        elif state == "finished":
            entry.state = "skipped"
            summary["skipped"].append(job.run_id)
            log(where.format("skip (finished)"))
        elif jid and alive.get(jid, "").upper() in ALIVE:
            entry.state, entry.job_id = "submitted", jid
            summary["queued"].append(job.run_id)
            log(where.format(f"in job {jid} ({alive[jid]}), not submitted again"))
        elif dry_run:
            summary["planned"].append(job.run_id)
            log(where.format(f"would submit ({state})"))
        else:
            pending.append((job, entry))
    if stale and not dry_run:
        raise StaleRunError(f"{len(stale)} finished or partly trained run(s) were trained on other inputs, nothing was submitted: "
                            f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}. Re-run with "
                            "--retrain-stale to retrain them, or restore the inputs.")
    if dry_run:
        log(f"summary: {len(summary['skipped'])} finished, {len(summary['queued'])} in a job, "
            f"{len(summary['planned'])} to submit (dry run: nothing submitted, no manifest written)")
        return Submission(summary, None)
    jobs: dict[str, submitit.Job] = {}
    if pending:
        root = Path(store.root).resolve()
        configs = [{**j.config.to_dict(), "runs_dir": str(root)} for j, _ in pending]
        submitted = settings.executor(root, f"fer-{table}").map_array(TrainJob(), configs, [j.run_id for j, _ in pending])
        for (job, entry), sj in zip(pending, submitted):
            entry.state, entry.job_id = "submitted", job_id_of(sj)
            jobs[job.run_id] = sj
            summary["submitted"].append(job.run_id)
            log(f"submitted {job.run_id} as job {entry.job_id} (log: {root}/slurm/{sj.job_id}/)")
    store.write_manifest(manifest)
    log(f"summary: {len(summary['submitted'])} submitted, {len(summary['queued'])} already in a job, "
        f"{len(summary['skipped'])} finished; manifest {manifest.path}; progress: fer-study run {table} --status")
    return Submission(summary, manifest, jobs)


def wait(sub: Submission, store: RunStore | None = None, log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Wait for the submitted jobs; record each run as done or failed in the manifest."""
    out: dict[str, list[str]] = {"done": [], "failed": []}
    if sub.manifest is None:
        return out
    store = store or RunStore(sub.manifest.runs_dir)
    for entry in sub.manifest.runs:
        if entry.run_id in sub.jobs:
            sub.jobs[entry.run_id].wait()
            ok = store.run(entry.run_id).is_finished()
            entry.state = "done" if ok else "failed"
            out[entry.state].append(entry.run_id)
            log(f"{entry.state}: {entry.run_id} (job {entry.job_id})")
    store.write_manifest(sub.manifest)
    return out


def grid_status(table: str, profile: str, seeds: list[int], overrides: list[str] | None = None) -> list[dict]:
    """Each planned run's state in the run store, its newest manifest entry and its job's state."""
    todo = plan(table, profile, seeds, list(overrides or []))
    store = RunStore.of(todo[0].config) if todo else RunStore()
    latest = latest_jobs(store, profile)
    states = job_states(sorted({latest[j.run_id][0] for j in todo if latest.get(j.run_id, (None,))[0]}), store.root)
    rows = []
    for j in todo:
        jid, mstate = latest.get(j.run_id, (None, "-"))
        hist = j.run.file(HISTORY)
        epochs = max(0, len(hist.read_text().splitlines()) - 1) if hist.is_file() else 0
        rows.append({"run_id": j.run_id, "cells": j.labels, "seed": j.seed, "run": j.run.state(),
                     "epochs": f"{epochs}/{j.config.epochs}", "manifest": mstate, "job_id": jid or "-",
                     "job": states.get(jid or "", "-")})
    return rows


def format_status(rows: list[dict]) -> str:
    head = f"{'run':60s} {'state':10s} {'epochs':>7s} {'manifest':10s} {'job':14s} {'job state':12s} cells"
    lines = [head] + [f"{r['run_id']:60s} {r['run']:10s} {r['epochs']:>7s} {r['manifest']:10s} {r['job_id']:14s} "
                      f"{r['job']:12s} {', '.join(r['cells'])}" for r in rows]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["run"]] = counts.get(r["run"], 0) + 1
    return "\n".join(lines + ["summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))])
