"""Executing the study's notebooks with papermill: the one place that does it.

The kernel's working directory is the caller's (``fer-study`` is run from the project root), so the
relative paths of a config mean in the notebook what they meant to the command. The notebooks do
not depend on it: each resolves the project's folders against the project root itself
(:mod:`fer_study.paths`) and never changes directory, so the same notebook runs from JupyterLab,
papermill (from the repository root or ``notebooks/``) and nbval alike, and twice in a row.

Notebooks run on the ``fer-study`` kernel (``make env`` registers it inside ``.venv``); where it is
not registered, on this environment's ``python3`` kernel. Executed copies keep the parameters and
lose papermill's and nbclient's timestamps and absolute paths, so that a re-run changes only what
the results change. :func:`run_notebook` (``fer-study report``, ``fer-study demo``) passes
``publish=True``: only then do the notebooks write the committed tables and figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_study.paths import make_readable, project_root

#: The kernel the notebooks declare and papermill uses (``make env`` installs it into the venv).
KERNEL = "fer-study"
#: Used where :data:`KERNEL` is not registered (ipykernel's own kernel of this Python).
FALLBACK_KERNEL = "python3"
#: Notebook-level papermill keys kept in executed copies (the rest are times and absolute paths).
KEEP_PAPERMILL = ("parameters", "default_parameters", "version")
#: nbclient's error when a kernel exits before it answers, nothing executed yet (e.g. two kernels started
#: at once drew the same free TCP port: "ZMQError: Address already in use"): the start is retried.
KERNEL_START_FAILED = "Kernel died before replying to kernel_info"
KERNEL_START_ATTEMPTS = 3
#: HTML class of a widget text that changes on every execution (a duration): shown live, saved as "…".
VOLATILE = "fer-volatile"


def notebook_path(name: str) -> Path:
    return project_root() / "notebooks" / f"{name}.ipynb"


def kernel_name(kernel: str = KERNEL) -> str:
    """``kernel`` when a kernel spec of that name is registered, else :data:`FALLBACK_KERNEL`."""
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        KernelSpecManager().get_kernel_spec(kernel)
        return kernel
    except Exception:  # noqa: BLE001 - NoSuchKernel and broken specs alike
        return FALLBACK_KERNEL


def strip_volatile(nb: Any) -> Any:
    """Remove what changes on every execution without a change of result: papermill's and nbclient's
    timestamps, durations, status flags and absolute input/output paths (the parameters stay)."""
    pm = nb.metadata.get("papermill")
    if isinstance(pm, dict):
        nb.metadata["papermill"] = {k: v for k, v in pm.items() if k in KEEP_PAPERMILL}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = unpublish(cell.source)
            cell["id"] = "injected-parameters"  # papermill draws a random id on every run
    return _tidy_widgets(nb)


#: What replaces ``publish = True`` in a saved notebook's injected parameters.
UNPUBLISHED = ("publish = False  # `fer-study report` ran this with publish=True (the committed outputs); "
               "a re-run (JupyterLab, nbval) writes to the scratch folder")


def unpublish(source: str) -> str:
    """The injected parameters of a saved notebook with ``publish = True`` turned off: only ``fer-study
    report`` writes the committed tables and figures, never a re-run of the saved notebook (JupyterLab's
    Run All, nbval). The notebook's papermill metadata keeps the parameters it ran with."""
    return "\n".join(UNPUBLISHED if ln.strip() == "publish = True" else ln for ln in source.split("\n"))


def _tidy_widgets(nb: Any) -> Any:
    """Widget texts marked ``<span class='fer-volatile'>...</span>`` (:data:`VOLATILE`) saved as "…", and
    the saved widgets given ids numbered in a canonical order instead of random ones (the ids link the
    widget state to the outputs; random ids would change every line that names one on each run): the
    widgets the outputs display, in cell order, then those they reference (``IPY_MODEL_<id>`` in their
    state, in sorted-key order), depth first; widgets nothing reaches last, ordered by their state.
    The widget-state dict is saved in the new ids' order. So the same notebook executed twice is saved
    byte-identically (the kernel's own order of the widgets is not stable)."""
    import json
    import re

    import nbformat

    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state")
    if not state:
        return nb
    ref = re.compile(r"IPY_MODEL_([0-9a-f]{32})")

    def refs(model_id: str) -> list[str]:
        return [r for r in ref.findall(json.dumps(state[model_id].get("state", {}), sort_keys=True)) if r in state]

    shown = [o["data"]["application/vnd.jupyter.widget-view+json"].get("model_id") for c in nb.cells
             for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    order: list[str] = []
    stack = [m for m in reversed(shown) if m in state]
    while stack:
        m = stack.pop()
        if m not in order:
            order.append(m)
            stack.extend(r for r in reversed(refs(m)) if r not in order)
    rest = sorted((m for m in state if m not in order),
                  key=lambda m: ref.sub("IPY_MODEL_", json.dumps(state[m], sort_keys=True)))
    new = {old: f"{i + 1:032x}" for i, old in enumerate(order + rest)}
    text = re.sub(rf"(<span class='{VOLATILE}'>)[^<]*(</span>)", "\\g<1>…\\g<2>", nbformat.writes(nb))
    for old in sorted(new, key=lambda m: new[m]):
        text = text.replace(old, "\0" + new[old])  # marked, so a new id is never taken for an old one
    out = nbformat.reads(text.replace("\0", ""), as_version=4)
    st = out.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    st["state"] = dict(sorted(st["state"].items()))
    return out


def execute(source: str | Path, output: str | Path, parameters: dict[str, Any], cwd: str | Path | None = None,
            kernel: str = KERNEL, progress: bool = False) -> None:
    """Execute ``source`` into ``output`` with ``parameters`` (Python values: lists stay lists), the
    kernel in ``cwd`` (default: this process's working directory). Raises papermill's
    ``PapermillExecutionError`` (with the failing cell) when a cell fails; the output notebook is
    written (and tidied) either way. A kernel that dies before it starts (nothing executed: a port
    race between kernels started at once) is started again, up to :data:`KERNEL_START_ATTEMPTS` times."""
    import nbformat
    import papermill as pm

    from fer_study.io import atomic_write

    source, output = Path(source), Path(output)
    try:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                pm.execute_notebook(str(source), str(output), parameters=parameters, cwd=str(cwd or Path.cwd()),
                                    kernel_name=kernel_name(kernel), progress_bar=progress, log_output=False)
                break
            except RuntimeError as e:  # a cell's error is a PapermillExecutionError, never retried
                if KERNEL_START_FAILED not in str(e) or attempt == KERNEL_START_ATTEMPTS:
                    raise
                time.sleep(attempt)
    finally:
        if output.is_file():
            nb = strip_volatile(nbformat.read(output, as_version=4))
            atomic_write(output, lambda t: nbformat.write(nb, t))
            make_readable(output)


def _sets(overrides: dict[str, Any] | list[str], key: str) -> bool:
    return key in overrides if isinstance(overrides, dict) else any(o.startswith(f"{key}=") for o in overrides)


def train_config(profile: str, overrides: dict[str, Any] | list[str], config_json: str = ""):
    """The config ``01_train`` trains: ``config_json`` as the grid runner planned it (its relative paths
    mean what they meant to the runner, whose working directory the kernel shares); else the profile
    with ``overrides``, where relative paths are the project root's also when the kernel runs in
    ``notebooks/`` (JupyterLab, nbval; the run id then hashes the absolute data root). With
    ``$FER_STUDY_SCRATCH`` set (``make test``'s nbval pass) and no ``runs_dir`` given, the run goes to
    the scratch folder's ``runs/``: a test never adds a run to ``results/runs``."""
    import json

    from fer_study.config import TrainConfig, make_config
    from fer_study.paths import MODEL_PATH_FIELDS, PATH_FIELDS, at_root, rooted

    if config_json:
        return TrainConfig.from_dict(json.loads(config_json))
    if os.environ.get("FER_STUDY_SCRATCH") and not _sets(overrides, "runs_dir"):
        # nbval (make test) and other scratch sessions train into the scratch folder, never into the run store
        from fer_study.paths import scratch_dir

        runs = str(scratch_dir() / "runs")
        overrides = {**overrides, "runs_dir": runs} if isinstance(overrides, dict) else [*overrides, f"runs_dir={runs}"]
    root = project_root()
    if Path.cwd().resolve() == root:
        return make_config(profile, overrides)
    keys = set(PATH_FIELDS) | {f"model.{k}" for k in MODEL_PATH_FIELDS}

    def fix(k: str, v: Any) -> Any:
        return str(at_root(v, root)) if k in keys and isinstance(v, str) and v and v.lower() not in ("none", "null") \
            else v

    if isinstance(overrides, dict):
        ov: dict[str, Any] | list[str] = {k: fix(k, v) for k, v in overrides.items()}
    else:
        ov = [f"{k}={fix(k, v)}" for k, _, v in (o.partition("=") for o in overrides)]
    return rooted(make_config(profile, ov), root)


def declared_parameters(path: str | Path) -> set[str]:
    """The names of a notebook's parameters (its ``parameters`` cell)."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def run_notebook(name: str, parameters: dict[str, Any], log: Callable[[str], None] = print,
                 output: str | Path | None = None, publish: bool = True) -> bool:
    """Execute ``notebooks/NAME.ipynb`` (in place unless ``output``); log one line; True when it ran.
    ``publish`` (a notebook parameter, where the notebook declares it): write the committed tables
    and figures instead of the scratch folder."""
    nb = notebook_path(name)
    t = time.perf_counter()
    log(f"running {nb.relative_to(project_root())} ...")
    params = dict(parameters)
    if "publish" in declared_parameters(nb):
        params.setdefault("publish", publish)
    try:
        execute(nb, output or nb, params)
    except Exception as e:  # noqa: BLE001 - papermill raises many kinds; the notebook keeps the traceback
        log(f"FAILED: {nb.name} after {time.perf_counter() - t:.0f} s: {type(e).__name__}: {str(e)[-2000:]}")
        return False
    log(f"executed: {nb.name} ({time.perf_counter() - t:.0f} s)")
    return True
