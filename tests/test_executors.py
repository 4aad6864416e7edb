"""The grid through submitit (``fer-study run --executor slurm``): real jobs with submitit's *local*
executor (subprocesses, the same job function, signals and requeue as on Slurm), the sbatch script
through a stand-in ``sbatch``, and a real cluster where ``sbatch`` is on PATH."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from fer_study.cli import main
from fer_study.executors import SlurmSettings, grid_status, submit_grid, wait
from fer_study.report import build_table
from fer_study.runs import CHECKPOINT, RunStore

ROOT = Path(__file__).resolve().parents[1]


def _overrides(synth_root: Path, tmp_path: Path, epochs: int, *extra: str) -> list[str]:
    # model.up/down/stn collapse Table 2's five cells into two runs: Swin-S (a-d) and Swin-B (e)
    return [f"synthfer_root={synth_root}", f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
            "sr_backend=bicubic", "sr_weights=none", f"epochs={epochs}", "max_train=96", "progress=false",
            "model.up=bilinear", "model.down=none", "model.stn=false", *extra]


def _task_pids(job) -> list[int]:
    """The task processes of a local job (children of its controller process)."""
    ppid, out = str(job._process.pid), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == ppid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError):
            pass
    return out


def _wait_for(path: Path, job, timeout: float = 150) -> None:
    t = time.monotonic()
    while not path.exists():
        assert job._process.poll() is None, f"job ended before {path} appeared:\n{job.stdout()}\n{job.stderr()}"
        assert time.monotonic() - t < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_local_submitit_jobs_requeue_resume_resubmit_skip_and_report(synth_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs, settings = tmp_path / "runs", SlurmSettings(cluster="local", gpus_per_run=0, time_min=10)
    ov = _overrides(synth_root, tmp_path, 12)
    sub = submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None)
    a, b = sub.summary["submitted"]  # Swin-S (a-d), Swin-B (e)
    assert sorted(sub.jobs) == sorted([a, b])
    entries = {r.run_id: r for r in sub.manifest.runs}
    assert {r.state for r in entries.values()} == {"submitted"}
    assert all(r.job_id.startswith("local:") for r in entries.values())

    # a: signalled as Slurm signals a job before preemption or time-out (USR2 to its task): submitit calls
    # TrainJob.checkpoint and requeues the job, which resumes from checkpoint.pt
    _wait_for(runs / a / CHECKPOINT, sub.jobs[a])
    (pid,) = _task_pids(sub.jobs[a])
    os.kill(pid, signal.SIGUSR2)
    # b: killed outright (scancel, a lost node): no requeue; the run stays partial with its checkpoint
    _wait_for(runs / b / CHECKPOINT, sub.jobs[b])
    for pid in _task_pids(sub.jobs[b]):  # the task itself: cancelling a local job may reach only its controller
        os.kill(pid, signal.SIGKILL)
    sub.jobs[b].cancel()
    done = wait(sub, log=lambda *_: None)
    assert done == {"done": [a], "failed": [b]}
    out_a = sub.jobs[a].stdout()
    assert f"run {a}, attempt 1, starting" in out_a and f"run {a}, attempt 2, resuming from checkpoint.pt" in out_a
    assert "Requeued job" in out_a
    history = (runs / a / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in history] == list(range(1, 13))  # every epoch once, across both attempts
    status = {r["run_id"]: r for r in grid_status("table2", "demo", [0], ov)}
    assert (status[a]["run"], status[a]["manifest"], status[a]["job"]) == ("finished", "done", "COMPLETED")
    assert (status[b]["run"], status[b]["manifest"]) == ("partial", "failed")
    assert status[b]["job"] in ("INTERRUPTED", "FAILED", "CANCELLED"), status[b]

    # re-run: the finished run is skipped, the interrupted one submitted again and resumed
    sub2 = submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None)
    assert sub2.summary["skipped"] == [a] and sub2.summary["submitted"] == [b]
    assert wait(sub2, log=lambda *_: None) == {"done": [b], "failed": []}
    assert f"run {b}, attempt 1, resuming from checkpoint.pt" in sub2.jobs[b].stdout()
    assert len((runs / b / "history.csv").read_text().splitlines()) == 13
    # and again: nothing left to submit
    sub3 = submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None)
    assert sorted(sub3.summary["skipped"]) == sorted([a, b]) and not sub3.jobs

    # the report finds both runs through the manifests
    df, _ = build_table("table2", "demo", None, [f"runs_dir={runs}"])
    assert list(df["Setting"]) == [*"abcde", "oracle"] and all("(n=1)" in v for v in df["Acc. ours clean"]), df
    assert len(RunStore(runs).manifests("demo")) == 3
    # fer-study run --status: each run's state, manifest entry and job
    assert main(["run", "table2", "--profile", "demo", "--seeds", "0", *sum((["--set", o] for o in ov), []),
                 "--status"]) == 0
    out = capsys.readouterr().out
    assert f"{a}" in out and "finished" in out and "summary: 2 finished" in out


@pytest.mark.slow
def test_a_run_on_two_processes_joins_ddp_through_submitit(synth_root, tmp_path, monkeypatch):
    """tasks_per_node=2 (what --gpus-per-run 2 gives on a GPU node): TorchDistributedEnvironment
    exports RANK/WORLD_SIZE/MASTER_ADDR for init_dist; here on CPU with gloo."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ov = _overrides(synth_root, tmp_path, 1, "model.backbone=tiny_swin_s")  # one run
    settings = SlurmSettings(cluster="local", gpus_per_run=0, tasks_per_node=2, time_min=10)
    sub = submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None)
    (rid,) = sub.summary["submitted"]
    assert wait(sub, log=lambda *_: None)["done"] == [rid]
    assert json.loads((tmp_path / "runs" / rid / "env.json").read_text())["world_size"] == 2


def test_sbatch_script_of_a_two_node_run(synth_root, tmp_path, monkeypatch):
    """The job array as submitit writes it for Slurm, through a stand-in sbatch that records the script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/job.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ov = _overrides(synth_root, tmp_path, 1)
    rc = main(["run", "table2", "--profile", "demo", "--seeds", "0", *sum((["--set", o] for o in ov), []),
               "--executor", "slurm", "--partition", "gpu", "--gpus-per-run", "8", "--nodes", "2", "--time", "600",
               "--cpus-per-run", "32", "--mem-gb", "200", "--array-parallelism", "1", "--slurm", "account=fer",
               "--slurm-setup", "module load cuda"])
    assert rc == 0
    script = (tmp_path / "job.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --time=600",
                 "#SBATCH --mem=200GB", "#SBATCH --array=0-1%1", "#SBATCH --account=fer", "#SBATCH --signal=USR2@90",
                 "module load cuda", "submitit.core._submit"):
        assert line in script, (line, script)
    (m,) = RunStore(tmp_path / "runs").manifests("demo")
    assert [(r.state, r.job_id) for r in m.runs] == [("submitted", "4242_0"), ("submitted", "4242_1")]
    assert main(["run", "table2", "--partition", "gpu"]) == 2  # a Slurm flag with the local executor


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch is not on PATH: no Slurm cluster here")
def test_on_a_real_slurm_cluster(synth_root, tmp_path, monkeypatch):
    """A one-run grid on the cluster this runs on (FER_STUDY_SLURM_PARTITION picks the partition;
    tmp_path must be on a file system the compute nodes share, e.g. pytest --basetemp=$HOME/tmp)."""
    ov = _overrides(synth_root, tmp_path, 2, "model.backbone=tiny_swin_s")
    settings = SlurmSettings(partition=os.environ.get("FER_STUDY_SLURM_PARTITION"), gpus_per_run=0, time_min=20,
                             cpus_per_run=2, mem_gb=8)
    sub = submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None)
    (rid,) = sub.summary["submitted"]
    assert wait(sub, log=lambda *_: None)["done"] == [rid], sub.jobs[rid].stderr()
    assert submit_grid("table2", "demo", [0], ov, settings, log=lambda *_: None).summary["skipped"] == [rid]
