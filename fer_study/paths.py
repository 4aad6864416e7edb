"""Where the project is, and where a notebook's outputs go.

Notebooks run from ``notebooks/`` (JupyterLab, nbval, papermill started there) or from the
repository root (papermill, ``fer-study``). They never change the working directory: paths are made
absolute against the project root (:func:`at_root`, :func:`rooted`), so a notebook gives the same
result from any folder and when it runs twice in a row in one kernel.

Outputs: only ``fer-study report`` (notebook parameter ``publish=True``) writes the committed
``results/tables/`` and ``figures/``; an interactive or nbval run writes the same files under a
scratch folder (:func:`output_dir`), ``scratch/`` at the root (git-ignored) unless
``FER_STUDY_SCRATCH`` names another.
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

#: Config fields that hold paths (relative ones are relative to the project root).
PATH_FIELDS = ("ferplus_root", "rafdb_root", "synthfer_root", "sr_weights", "runs_dir", "cache_dir")
MODEL_PATH_FIELDS = ("checkpoint",)


def _is_root(p: Path) -> bool:
    return (p / "pyproject.toml").is_file() and (p / "notebooks").is_dir() and (p / "fer_study").is_dir()


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) that holds this
    project (pyproject.toml, notebooks/, fer_study/); else the checkout the package was imported
    from; else the working directory."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if _is_root(p):
            return p
    pkg = Path(__file__).resolve().parents[1]
    return pkg if _is_root(pkg) else here


def at_root(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` as an absolute path: relative paths are relative to the project root (not to the
    working directory, which is ``notebooks/`` in JupyterLab and nbval)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root or project_root()) / p


def rooted(cfg: Any, root: str | Path | None = None) -> Any:
    """A copy of a run config whose relative paths (data roots, weights, runs and cache folders) are
    absolute against the project root. For *reading* a run (figures, explorer): the run id hashes the
    data root as written, so a config meant for training keeps its paths as they are."""
    root = Path(root or project_root())

    def fix(obj: Any, names: tuple[str, ...]) -> Any:
        have = {f.name for f in fields(obj)}
        ch = {n: str(at_root(getattr(obj, n), root)) for n in names
              if n in have and isinstance(getattr(obj, n), str) and getattr(obj, n)
              and getattr(obj, n).lower() not in ("none", "null")}
        return replace(obj, **ch) if ch else obj

    out = fix(cfg, PATH_FIELDS)
    if is_dataclass(getattr(out, "model", None)):
        out = replace(out, model=fix(out.model, MODEL_PATH_FIELDS))
    return out


def runs_override(overrides: list[str] | None, root: str | Path | None = None, profile: str = "demo") -> list[str]:
    """``overrides`` with ``runs_dir`` made absolute (added as ``profile``'s run store when absent:
    ``results/runs``, ``results/ferplus_cpu/runs`` for ``ferplus-cpu``), so that the run store is found
    from any working directory."""
    out = list(overrides or [])
    for i, o in enumerate(out):
        if o.startswith("runs_dir="):
            out[i] = f"runs_dir={at_root(o.split('=', 1)[1], root)}"
            return out
    from fer_study.config import PROFILES

    default = PROFILES[profile]().runs_dir if profile in PROFILES else "results/runs"
    return out + [f"runs_dir={at_root(default, root)}"]


def scratch_dir(root: str | Path | None = None) -> Path:
    """Where interactive and nbval runs write their tables and figures (``$FER_STUDY_SCRATCH``, else
    ``scratch/`` at the project root, git-ignored)."""
    env = os.environ.get("FER_STUDY_SCRATCH")
    return at_root(env, root) if env else at_root("scratch", root)


#: Profiles whose published tables go elsewhere than ``results/tables`` and whose figures carry a
#: suffix, so that they never overwrite the demo's: profile -> (tables folder, figure name suffix).
PROFILE_OUTPUTS: dict[str, tuple[str, str]] = {"ferplus-cpu": ("results/ferplus_cpu", "_ferplus_cpu")}


def output_dir(kind: str, publish: bool = False, root: str | Path | None = None, profile: str | None = None) -> Path:
    """The folder for ``kind`` (``"tables"`` or ``"figures"``): the committed one when ``publish``
    (the profile's :data:`PROFILE_OUTPUTS` folder, else ``results/tables``; ``$FER_STUDY_TABLES_DIR``
    replaces ``results/tables``, and holds the profile's folder by name; ``figures``), else
    ``scratch_dir()/kind``."""
    if kind not in ("tables", "figures"):
        raise ValueError(f"kind={kind!r}: expected 'tables' or 'figures'")
    if not publish:
        return scratch_dir(root) / kind
    if kind == "tables":
        own = PROFILE_OUTPUTS.get(profile or "")
        env = os.environ.get("FER_STUDY_TABLES_DIR")
        if env:  # a profile with its own outputs gets a subfolder, so that it never overwrites the demo's
            return at_root(env, root) / Path(own[0]).name if own else at_root(env, root)
        return at_root(own[0] if own else "results/tables", root)
    return at_root("figures", root)


def figure_name(name: str, profile: str | None = None) -> str:
    """A figure's file name without extension: ``figure2``, or ``figure2_ferplus_cpu`` for a profile
    with its own outputs (:data:`PROFILE_OUTPUTS`)."""
    return name + PROFILE_OUTPUTS.get(profile or "", ("", ""))[1]


def make_readable(path: str | Path) -> Path:
    """Give a written file the permissions of a normal file (0644 under the usual umask): atomic
    writes go through ``mkstemp``, whose files are 0600."""
    os.chmod(path, 0o666 & ~_umask())
    return Path(path)


def _umask() -> int:
    try:  # Linux: read it without setting it (os.umask would change it for every thread meanwhile)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
