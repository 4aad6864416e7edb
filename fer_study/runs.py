"""The run store: the only code that knows a run directory's layout, and the grid manifests.

A run lives in ``<runs_dir>/<run-id>/``:

==========================  ==========================================================================
``config.json``             the full :class:`~fer_study.config.TrainConfig` (written when the run starts)
``env.json``                versions, git SHA, device, threads (written when the run starts)
``inputs.json``             fingerprints of the data files and weights files the run read
                            (:mod:`fer_study.inputs`; a run is reused only while they still match)
``history.csv``             one row per epoch
``checkpoint.pt``           training state after the last finished epoch (removed when the run ends)
``failed.json``             why the last attempt stopped (removed when a new attempt starts)
``failed.log``              the grid runner's copy of a failed notebook's output
``model_best.pt``           the best-on-validation weights (clean protocol)
``predictions.csv``         per-image test predictions of the clean protocol
``metrics.json``            both protocols' results: written **last**, so its presence (with the
                            model beside it) marks a finished run
``01_train.executed.ipynb`` the executed notebook, when the grid runner trained the run
==========================  ==========================================================================

Finishing is ordered so that an interruption at any point leaves either a finished run or one
that resumes: model and predictions (atomically), then metrics.json, then the checkpoint is
removed. A run with metrics but no model is *incomplete*: it is never reported and is retrained.

A **manifest** (``<runs_dir>/manifests/<time>-<table>-<profile>.json``) is written by each grid
invocation (``fer-study run``): the table, profile, seeds, overrides, and for each planned run its
id, the table cells it fills and its state. The report reads the runs that were actually trained
through the manifests, so it needs no overrides.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_study.errors import RunError
from fer_study.io import read_json, torch_save_atomic, write_json, write_text

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fer_study.config import TrainConfig
    from fer_study.models.classifier import NeuralResizerClassifier

CONFIG = "config.json"
ENV = "env.json"
INPUTS = "inputs.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
PREDICTIONS = "predictions.csv"
CHECKPOINT = "checkpoint.pt"
MODEL = "model_best.pt"
FAILED = "failed.json"
FAILED_LOG = "failed.log"
EXECUTED_NOTEBOOK = "01_train.executed.ipynb"
MANIFESTS = "manifests"

#: The small text files of a finished run that are worth keeping in a repository (no weights).
RECORD_FILES = (CONFIG, ENV, INPUTS, METRICS, HISTORY, PREDICTIONS)

#: Run states, as shown by ``fer-study run --dry-run`` and recorded in manifests.
STATES = ("finished", "incomplete", "partial", "failed", "absent")


@dataclass(frozen=True)
class Run:
    """One run directory."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- state -----------------------------------------------------------------------------
    def is_finished(self) -> bool:
        """metrics.json and the model are both there (the finishing order writes the model first)."""
        return self.file(METRICS).is_file() and self.file(MODEL).is_file()

    def state(self) -> str:
        """``finished``; ``incomplete`` (metrics without a model: an interrupted finish of an old
        version); ``partial`` (started, may resume from a checkpoint); ``failed``; ``absent``."""
        if self.is_finished():
            return "finished"
        if self.file(METRICS).is_file():
            return "incomplete"
        if self.file(FAILED).is_file() or self.file(FAILED_LOG).is_file():
            return "failed"
        if self.path.is_dir():
            return "partial"
        return "absent"

    # ---- starting and resuming ---------------------------------------------------------------
    def begin(self, config: dict[str, Any], env: dict[str, Any], inputs: dict[str, Any] | None = None) -> None:
        """Create the directory and record the config and environment of this attempt. Traces of
        an earlier failed attempt (failed.json/.log) and an incomplete finish (metrics.json without
        a model) are removed, so they never outlive the attempt that replaces them."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (FAILED, FAILED_LOG):
            self.file(name).unlink(missing_ok=True)
        if self.state() == "incomplete":
            self.file(METRICS).unlink()
        write_json(self.file(CONFIG), config)
        write_json(self.file(ENV), env)
        if inputs is not None:
            write_json(self.file(INPUTS), inputs)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the training state atomically; numpy scalars (history rows, best-epoch values)
        become Python numbers, so that :meth:`load_checkpoint` reads it with ``weights_only``."""
        torch_save_atomic(_plain(state), self.file(CHECKPOINT))

    def load_checkpoint(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The training state saved by :meth:`save_checkpoint`, or None. Read with torch's
        ``weights_only`` unpickler (tensors, containers and numbers only, no code runs; numpy scalars
        are allowed too, as checkpoints written before they were converted hold them). A file that is
        not a checkpoint (damaged, truncated, or holding other objects) raises :class:`RunError`
        naming it; other errors (memory, devices, permissions) are raised as they are."""
        import pickle
        import zipfile

        import torch

        from fer_study.models.weights import error_reason

        p = self.file(CHECKPOINT)
        if not p.is_file():
            return None
        fix = "delete it to train the run from its start"
        if not zipfile.is_zipfile(p):
            raise RunError(f"{p}: not a checkpoint (torch.save writes a zip archive; this file is damaged or "
                           f"truncated); {fix}")
        allowed = _numpy_scalar_globals()
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(p, map_location=device, weights_only=True)
        except (pickle.UnpicklingError, EOFError) as e:
            raise RunError(f"{p}: cannot read this run's checkpoint ({error_reason(e)}); {fix}") from e

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        write_text(self.file(HISTORY), out.getvalue())

    def mark_failed(self, info: dict[str, Any]) -> None:
        write_json(self.file(FAILED), info)

    def write_failed_log(self, text: str) -> None:
        write_text(self.file(FAILED_LOG), text)

    # ---- finishing -----------------------------------------------------------------------------
    def finish(self, best_state: dict[str, Any], predictions_csv: str, metrics: dict[str, Any]) -> None:
        """Atomic and ordered: the model and the predictions, then metrics.json (the completion
        marker), then the checkpoint goes. A kill between any two steps loses nothing: before
        metrics.json the run resumes from its checkpoint and finishes again."""
        torch_save_atomic(best_state, self.file(MODEL))
        write_text(self.file(PREDICTIONS), predictions_csv)
        write_json(self.file(METRICS), metrics)
        self.file(CHECKPOINT).unlink(missing_ok=True)

    def tidy(self) -> None:
        """Complete an interrupted finish of a finished run: remove the checkpoint it left behind."""
        if self.is_finished():
            self.file(CHECKPOINT).unlink(missing_ok=True)

    # ---- reading -------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return read_json(self.file(CONFIG))

    def config(self) -> TrainConfig:
        from fer_study.config import TrainConfig

        return TrainConfig.from_dict(self.config_dict())

    def env(self) -> dict[str, Any]:
        return read_json(self.file(ENV))

    def inputs(self) -> dict[str, Any] | None:
        """The recorded inputs (None for a run of a version that did not record them)."""
        p = self.file(INPUTS)
        return read_json(p) if p.is_file() else None

    def input_changes(self, current: dict[str, Any]) -> list[str]:
        """How the inputs the run was trained on differ from ``current`` (empty: none)."""
        from fer_study.inputs import changes

        return changes(self.inputs(), current)

    def metrics(self) -> dict[str, Any]:
        return read_json(self.file(METRICS))

    def history(self) -> list[dict[str, str]]:
        with self.file(HISTORY).open() as f:
            return list(csv.DictReader(f))

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """(true labels, predicted labels) of the clean protocol's test predictions."""
        with self.file(PREDICTIONS).open() as f:
            rows = list(csv.DictReader(f))
        return np.array([int(r["label"]) for r in rows]), np.array([int(r["pred"]) for r in rows])

    def load_model(self, device: torch.device | str = "cpu") -> tuple[NeuralResizerClassifier, TrainConfig]:
        """The best-on-valid model of a finished run (for figures and the explorer). Pretrained
        weights are not fetched again: the saved state holds every trained weight."""
        from dataclasses import replace

        import torch

        from fer_study.models.classifier import NeuralResizerClassifier

        cfg = self.config()
        mcfg = replace(cfg.model, pretrained=False, checkpoint=None)
        model = NeuralResizerClassifier(mcfg)
        model.load_state_dict(torch.load(self.file(MODEL), map_location=device, weights_only=True))
        return model.to(device).eval(), cfg


def predictions_csv(sources: list[str] | np.ndarray, labels: np.ndarray, preds: np.ndarray, probs: np.ndarray,
                    classes: list[str] | tuple[str, ...]) -> str:
    """The text of predictions.csv: index, source image, label, prediction, class probabilities."""
    out = io.StringIO()
    w = csv.writer(out)
    k = probs.shape[1]
    w.writerow(["index", "source", "label", "pred", *[f"p_{c}" for c in list(classes)[:k]]])
    for i in range(len(labels)):
        w.writerow([i, sources[i], int(labels[i]), int(preds[i]), *[f"{p:.5f}" for p in probs[i]]])
    return out.getvalue()


# ---- manifests -------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    run_id: str
    seed: int
    cells: list[str]  # "table2:d", "table1:Swin-S|F-PDLS + Proposed", ...
    state: str = "planned"  # planned | done | skipped | failed
    job_id: str | None = None  # an executor's job id (e.g. Slurm), when one ran it


@dataclass
class Manifest:
    table: str
    profile: str
    seeds: list[int]
    overrides: list[str]
    runs: list[PlannedRun] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now().isoformat(timespec="seconds"))
    git_sha: str = ""
    runs_dir: str = ""
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "profile": self.profile, "seeds": self.seeds, "overrides": self.overrides,
                "created": self.created, "git_sha": self.git_sha, "runs_dir": self.runs_dir,
                "runs": [vars(r) for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path | None = None) -> Manifest:
        return cls(table=d["table"], profile=d["profile"], seeds=list(d["seeds"]), overrides=list(d["overrides"]),
                   runs=[PlannedRun(**r) for r in d["runs"]], created=d.get("created", ""),
                   git_sha=d.get("git_sha", ""), runs_dir=d.get("runs_dir", ""), path=path)

    def run_for(self, cell: str, seed: int) -> PlannedRun | None:
        for r in self.runs:
            if r.seed == seed and cell in r.cells:
                return r
        return None


class RunStore:
    """All run directories under one ``runs_dir`` and the manifests of the grids that filled it."""

    def __init__(self, root: str | Path = "results/runs") -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, cfg: TrainConfig) -> RunStore:
        return cls(cfg.runs_dir)

    def run(self, run_id: str) -> Run:
        return Run(self.root / run_id)

    def run_for(self, cfg: TrainConfig) -> Run:
        return self.run(cfg.run_id())

    def finished(self) -> list[Run]:
        if not self.root.is_dir():
            return []
        return [Run(p) for p in sorted(self.root.iterdir()) if p.is_dir() and Run(p).is_finished()]

    # manifests
    @property
    def manifest_dir(self) -> Path:
        return self.root / MANIFESTS

    def write_manifest(self, m: Manifest) -> Path:
        """Write (or rewrite, atomically) a manifest; a new one gets a unique file name."""
        if m.path is None:
            stamp = re.sub(r"[^0-9T]", "", m.created)
            base = f"{stamp}-{m.table}-{m.profile}"
            p, k = self.manifest_dir / f"{base}.json", 1
            while p.exists():
                k += 1
                p = self.manifest_dir / f"{base}-{k}.json"
            m.path = p
        m.runs_dir = m.runs_dir or str(self.root)
        write_json(m.path, m.to_dict())
        return m.path

    def export_records(self, dest: str | Path, profile: str, seeds: list[int] | None = None) -> list[str]:
        """Copy the :data:`RECORD_FILES` of every finished run that ``profile``'s manifests list (of
        ``seeds`` when given), and those manifests, to ``dest`` (``dest/<run-id>/``, ``dest/manifests/``):
        what a run store's results are, without its weights, for committing beside a table. ``dest`` is
        replaced as a whole (built beside it, then swapped in), so it never keeps the records of a run
        that was deleted or is being retrained. Returns the run ids copied."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        copied: list[str] = []
        for m in self.manifests(profile):
            if seeds and not any(r.seed in seeds for r in m.runs):
                continue
            write_json(tmp / MANIFESTS / (m.path.name if m.path else "manifest.json"), m.to_dict())
            for r in m.runs:
                run = self.run(r.run_id)
                if r.run_id in copied or not run.is_finished() or (seeds and r.seed not in seeds):
                    continue
                for name in RECORD_FILES:
                    if run.file(name).is_file():
                        write_text(tmp / r.run_id / name, run.file(name).read_text())
                copied.append(r.run_id)
        tmp.mkdir(parents=True, exist_ok=True)
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if dest.exists():
            dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)  # the last good records back in place
            raise
        if old.exists():
            shutil.rmtree(old)
        return copied

    def manifests(self, profile: str | None = None) -> list[Manifest]:
        """All manifests (of ``profile``), newest first."""
        if not self.manifest_dir.is_dir():
            return []
        out = []
        for p in self.manifest_dir.glob("*.json"):
            try:
                m = Manifest.from_dict(read_json(p), p)
            except (ValueError, KeyError, TypeError):
                continue  # not a manifest of ours
            if profile is None or m.profile == profile:
                out.append(m)
        return sorted(out, key=lambda m: (m.created, str(m.path)), reverse=True)


def _numpy_scalar_globals() -> list[Any]:
    """The numpy objects that checkpoints written before :func:`_plain` existed hold (numpy scalars
    in the history rows and the schedule's learning rates): the only non-torch globals
    :meth:`Run.load_checkpoint` lets the unpickler build. The scalar constructor is allowed under both
    its numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names, so a checkpoint written under
    one loads under the other."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *(type(np.dtype(c)) for c in "?bBhHiIlLqQefdg")]


def _plain(x: Any) -> Any:
    """``x`` with every numpy scalar (at any depth of dicts, lists and tuples) as a Python number;
    container types are kept (an ``OrderedDict`` state dict keeps its ``_metadata``, a named tuple
    stays one)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        out = {k: _plain(v) for k, v in x.items()}
        if type(x) is not dict:
            out = type(x)(out)
            if hasattr(x, "_metadata"):
                out._metadata = x._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_plain(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x
