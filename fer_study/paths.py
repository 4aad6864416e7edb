"""Where the project is: notebooks run from ``notebooks/`` (papermill, nbval, JupyterLab) or from the
repository root, and must resolve ``results/``, ``data/`` and ``figures/`` the same way each time."""

from __future__ import annotations

import os
from pathlib import Path


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


def use_project_root() -> Path:
    """Make the project root the working directory (idempotent: a notebook may run it twice)."""
    root = project_root()
    os.chdir(root)
    return root
