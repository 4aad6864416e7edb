"""Executing the study's notebooks with papermill: the one place that does it.

Notebooks run with ``notebooks/`` as the working directory on the project's kernel; each notebook
finds the project root itself (:func:`fer_study.paths.use_project_root`), so the same notebook
runs from JupyterLab, papermill (from any folder) and nbval alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_study.paths import project_root

#: The kernel the notebooks declare and papermill uses (``make env`` installs it into the venv).
KERNEL = "python3"


def notebook_path(name: str) -> Path:
    return project_root() / "notebooks" / f"{name}.ipynb"


def execute(source: str | Path, output: str | Path, parameters: dict[str, Any], cwd: str | Path | None = None,
            kernel: str = KERNEL, progress: bool = False) -> None:
    """Execute ``source`` into ``output`` with ``parameters`` (Python values: lists stay lists).
    Raises papermill's ``PapermillExecutionError`` (with the failing cell) when a cell fails."""
    import papermill as pm

    source = Path(source)
    pm.execute_notebook(str(source), str(output), parameters=parameters, cwd=str(cwd or source.parent),
                        kernel_name=kernel, progress_bar=progress, log_output=False)


def run_notebook(name: str, parameters: dict[str, Any], log: Callable[[str], None] = print,
                 output: str | Path | None = None) -> bool:
    """Execute ``notebooks/NAME.ipynb`` (in place unless ``output``); log one line; True when it ran."""
    nb = notebook_path(name)
    t = time.perf_counter()
    log(f"running {nb.relative_to(project_root())} ...")
    try:
        execute(nb, output or nb, parameters)
    except Exception as e:  # noqa: BLE001 - papermill raises many kinds; the notebook keeps the traceback
        log(f"FAILED: {nb.name} after {time.perf_counter() - t:.0f} s: {type(e).__name__}: {str(e)[-2000:]}")
        return False
    log(f"executed: {nb.name} ({time.perf_counter() - t:.0f} s)")
    return True
