"""What a run was trained on besides its config: a fingerprint of the data files and the content
hash of every weights file. The run id hashes the config only, so the same id with other data (a
regenerated SynthFER, an edited label file) or other weights (facesr retrained into the same path)
would otherwise reuse stale results. A run records its inputs in ``inputs.json``
(:meth:`fer_study.runs.Run.begin`); the trainer, the grid runner and the report compare them with
the inputs as they are now and refuse a run whose inputs changed (:func:`changes`).

The data fingerprint hashes the **bytes** of exactly the files the reader uses (label files and
images): the same pixels re-encoded into other bytes count as a change (conservative). Hashing
FERPlus's 35,714 files takes about 1 s; results are memoised per process on (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_study.errors import UserError
from fer_study.io import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from fer_study.config import TrainConfig

#: Version of the fingerprint's definition (a change of definition is not a change of data).
FINGERPRINT_VERSION = 1

class StaleRunError(UserError):
    """A finished (or resumable) run whose data or weights changed since it was trained."""


def _walk(folder: Path) -> Iterator[Path]:
    for dp, dn, fn in os.walk(folder):
        dn.sort()
        for f in sorted(fn):
            if not f.startswith("."):
                yield Path(dp) / f


def data_files(dataset: str, root: str | Path) -> list[Path]:
    """The files the reader of ``dataset`` reads under ``root`` (label files and images), sorted."""
    from fer_study.data.ferplus import SPLIT_FOLDERS

    root = Path(root)
    out: list[Path] = []
    if dataset in ("ferplus", "synthfer"):
        for name in ("fer2013.csv", "fer2013new.csv", *sorted(p.name for p in root.glob("hr_*.npy"))):
            if (root / name).is_file():
                out.append(root / name)
        for folder in SPLIT_FOLDERS.values():
            if (root / folder).is_dir():
                out.extend(_walk(root / folder))
    elif dataset == "rafdb":
        for label in (root / "EmoLabel" / "list_patition_label.txt", root / "train_labels.csv",
                      root / "test_labels.csv"):
            if label.is_file():
                out.append(label)
        for sub in (root / "Image" / "aligned", root / "DATASET"):
            if sub.is_dir():
                out.extend(_walk(sub))
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return out


def data_fingerprint(dataset: str, root: str | Path, cache: dict | None = None) -> dict[str, Any]:
    """{"sha256", "files", "bytes"} over the data set's files (relative path and content), or
    {"missing": root} when the root does not exist. ``cache`` (a dict the caller keeps for one
    command) avoids walking the same root twice."""
    root = Path(root)
    if cache is not None and (dataset, str(root.resolve())) in cache:
        return cache[(dataset, str(root.resolve()))]
    if not root.is_dir():
        return {"missing": str(root)}
    h = hashlib.sha256()
    files = data_files(dataset, root)
    size = 0
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + file_sha256(p).encode() + b"\n")
        size += p.stat().st_size
    out = {"sha256": h.hexdigest(), "files": len(files), "bytes": size}
    if cache is not None:
        cache[(dataset, str(root.resolve()))] = out
    return out


def weights_files(cfg: TrainConfig) -> dict[str, str]:
    """{config key: path} of the weights files the run of ``cfg`` reads."""
    out: dict[str, str] = {}
    if cfg.model.up == "sr" and cfg.sr_weights and cfg.sr_backend not in ("bicubic", "bilinear", "oracle"):
        out["sr_weights"] = str(cfg.sr_weights)
    if cfg.model.checkpoint:
        from fer_study.models.backbones import BACKBONES
        from fer_study.models.weights import checkpoint_file

        name = BACKBONES.get(cfg.model.backbone, (cfg.model.backbone, {}))[0]
        try:
            out["model.checkpoint"] = str(checkpoint_file(cfg.model.checkpoint, name))
        except FileNotFoundError:
            out["model.checkpoint"] = str(cfg.model.checkpoint)
    return out


def run_inputs(cfg: TrainConfig, cache: dict | None = None) -> dict[str, Any]:
    """The inputs of the run of ``cfg`` as they are now (what ``inputs.json`` records); ``cache``: see
    :func:`data_fingerprint`."""
    weights: dict[str, Any] = {}
    for key, path in weights_files(cfg).items():
        p = Path(path)
        weights[key] = ({"path": path, "sha256": file_sha256(p), "bytes": p.stat().st_size} if p.is_file()
                        else {"path": path, "missing": True})
    if cfg.model.pretrained and not cfg.model.checkpoint:
        from fer_study.models.backbones import BACKBONES

        weights["model.pretrained"] = {"timm": BACKBONES.get(cfg.model.backbone, (cfg.model.backbone, {}))[0]}
    return {"version": FINGERPRINT_VERSION, "dataset": cfg.dataset, "data_root": str(cfg.data_root),
            "data": data_fingerprint(cfg.dataset, cfg.data_root, cache), "weights": weights}


def changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a run's recorded inputs and the current ones (empty: the run may be
    reused). Inputs that cannot be checked now (the data root is absent) are not counted."""
    if recorded is None:
        return ["its inputs were not recorded (trained by an older fer-study)"]
    out = []
    old_d, new_d = recorded.get("data", {}), current.get("data", {})
    if "missing" not in new_d and old_d.get("sha256") != new_d.get("sha256"):
        detail = ""
        if old_d.get("files") != new_d.get("files"):
            detail = f": {old_d.get('files')} files then, {new_d.get('files')} now"
        out.append(f"the data at {current.get('data_root')} changed{detail}")
    old_w, new_w = recorded.get("weights", {}), current.get("weights", {})
    for key in sorted(set(old_w) | set(new_w)):
        a, b = old_w.get(key), new_w.get(key)
        if b is not None and b.get("missing"):
            continue
        if a is None or b is None or {k: a.get(k) for k in ("sha256", "timm")} != {k: b.get(k) for k in ("sha256", "timm")}:
            where = (b or a or {}).get("path") or (b or a or {}).get("timm")
            out.append(f"{key} ({where}) changed")
    return out


def stale_message(run_id: str, what: list[str], how: str) -> str:
    return f"run {run_id} was trained on other inputs: {'; '.join(what)}. {how}"
