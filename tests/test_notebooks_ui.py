"""The notebooks as a reader and a user meet them: they run twice in a row in one kernel, from
JupyterLab's folder (``notebooks/``), papermill from the repository root and nbval alike, without
changing directory; figures show inline; interactive runs write to the scratch folder, never over the
committed tables and figures; the explorer is usable without a kernel; notebook diffs work from any
shell; the command line shows defaults and first-run hints."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Overrides that make a run train in a few seconds (tiny data, one epoch, bicubic SR).
TINY = ["sr_backend=bicubic", "sr_weights=none", "epochs=1", "max_train=32", "batch_size=16", "progress=false"]


def tiny_runs(tmp: Path, synth_root: Path, cells: tuple[str, ...] = ("a", "d"), seed: int = 0) -> tuple[Path, list[str]]:
    """Train Table 2's ``cells`` (a: vanilla, no resizer; d: SR + learn-to-resize) in-process into
    ``tmp/runs``, about 5 s each; returns (runs_dir, the overrides that name them)."""
    from fer_study.tables import TABLES, cell_config
    from fer_study.training import train

    runs = tmp / "runs"
    overrides = [f"synthfer_root={synth_root}", f"runs_dir={runs}", f"cache_dir={tmp / 'cache'}", *TINY]
    for key in cells:
        cfg = cell_config(TABLES["table2"].cell(key), "demo", seed, overrides)
        train(cfg)
    return runs, overrides


def _execute(path: Path, cwd: Path, params: dict, times: int = 1, timeout: int = 240) -> nbformat.NotebookNode:
    """Inject ``params`` as papermill does, then execute all cells ``times`` times in one kernel (a
    second "Run All" in JupyterLab) with the kernel in ``cwd``; returns the notebook of the last pass."""
    from nbclient import NotebookClient
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(nbformat.read(path, as_version=4), params, kernel_name="python3")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        for _ in range(times):
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, i)
    return nb


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in _outputs(nb) if o.get("output_type") == "error"]


# ---- sources -------------------------------------------------------------------------------------------
def test_no_notebook_or_module_changes_directory():
    for nb in NOTEBOOKS:
        src = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells)
        assert "chdir" not in src and "use_project_root" not in src, nb.name
    for mod in ("paths", "notebooks", "explorer", "figures", "plots", "report"):
        text = (ROOT / "fer_study" / f"{mod}.py").read_text()
        assert "os.chdir" not in text, mod


def test_notebooks_declare_the_fer_study_kernel_and_typed_parameters():
    import papermill as pm

    for nb_path in NOTEBOOKS:
        nb = nbformat.read(nb_path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "fer-study", nb_path.name
        declared = pm.inspect_notebook(str(nb_path))
        assert all(v["inferred_type_name"] not in ("None", "") for v in declared.values()), (nb_path.name, declared)
        if "seeds" in declared:
            assert declared["seeds"]["inferred_type_name"] == "list[int]", nb_path.name
        if nb_path.stem not in ("01_train", "07_explore"):
            assert declared["publish"]["inferred_type_name"] == "bool" and declared["publish"]["default"] == "False"


def test_plots_leave_the_backend_to_the_kernel():
    code = "import matplotlib; import fer_study.plots, fer_study.figures, fer_study.explorer; print(matplotlib.get_backend())"
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "module://matplotlib_inline.backend_inline"
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().lower() == "agg"  # no display: matplotlib falls back to Agg by itself


# ---- executing notebooks -------------------------------------------------------------------------------
def test_data_notebook_twice_in_one_kernel_from_notebooks_dir_shows_figures_and_writes_scratch(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("FER_STUDY_SCRATCH", str(scratch))
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "figures").glob("*")}
    nb = _execute(ROOT / "notebooks" / "00_data.ipynb", ROOT / "notebooks",
                  {"root": str(tmp_path / "synth"), "synth_n": 240}, times=2)
    assert not _errors(nb), _errors(nb)
    outs = _outputs(nb)
    assert sum("image/png" in o.get("data", {}) for o in outs) == 3, "each figure cell shows its figure inline"
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outs])
    assert "PosixPath" not in text
    assert "SynthFER (synthetic)" in "".join(o.get("text", "") for o in outs)
    made = sorted(p.name for p in (scratch / "figures").glob("*.png"))
    assert made == ["data_synthfer_distribution.png", "data_synthfer_prior.png", "data_synthfer_samples.png"]
    assert all((p.stat().st_mode & 0o044) == 0o044 for p in (scratch / "figures").glob("*.png"))
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "figures").glob("*")} == committed


@pytest.mark.parametrize("where", ["root", "notebooks"])
def test_table_notebook_with_papermill_single_seed_from_root_or_notebooks(where, tmp_path):
    """papermill's own CLI from the repository root or from notebooks/, a single seed (``-p seeds 0``,
    an int), an empty run store: the table renders with "–", the export goes to the scratch folder."""
    env = {**os.environ, "FER_STUDY_SCRATCH": str(tmp_path / "scratch")}
    cwd = ROOT if where == "root" else ROOT / "notebooks"
    nb_in = ROOT / "notebooks" / "03_table2_ablation.ipynb"
    out = tmp_path / "out.ipynb"
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "results" / "tables").glob("*")}
    cmd = [sys.executable, "-m", "papermill", str(nb_in.relative_to(cwd)), str(out), "-k", "python3",
           "-p", "seeds", "0", "-y", json.dumps({"overrides": [f"runs_dir={tmp_path / 'runs'}"]})]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    html = "".join(o.get("data", {}).get("text/html", "") for o in _outputs(nb))
    assert "Acc. ours clean (%)" in html and "–" in html
    assert sorted(p.name for p in (tmp_path / "scratch" / "tables").iterdir()) == \
        ["table2.csv", "table2.md", "table2.tex"]
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "results" / "tables").glob("*")} == committed


def test_run_notebook_publishes_and_strips_volatile_metadata(tmp_path, monkeypatch):
    """``fer-study report`` runs the notebooks through run_notebook: publish=True reaches the notebook
    (the committed folder, here redirected), and the executed copy has no timestamps or random ids."""
    from fer_study.notebooks import kernel_name, run_notebook, strip_volatile

    monkeypatch.setenv("FER_STUDY_TABLES_DIR", str(tmp_path / "published"))
    out = tmp_path / "05.ipynb"
    ok = run_notebook("05_table4_sota", {"profile": "demo", "seeds": [0], "overrides": [f"runs_dir={tmp_path}"]},
                      log=lambda *_: None, output=out)
    assert ok
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["table4.csv", "table4.md", "table4.tex"]
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["papermill"]["parameters"]["publish"] is True
    # the saved copy re-run (JupyterLab's Run All, nbval) writes to the scratch folder, not the committed one
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "publish = False  # `fer-study report` ran this with publish=True" in injected.source
    assert "publish = True" not in injected.source
    assert injected.id == "injected-parameters"  # not papermill's random id: no diff between two runs
    assert set(nb.metadata["papermill"]) <= {"parameters", "default_parameters", "version"}
    assert not any("papermill" in c.metadata or "execution" in c.metadata for c in nb.cells)
    assert "start_time" not in out.read_text() and str(tmp_path / "05.ipynb") not in out.read_text()
    assert (out.stat().st_mode & 0o044) == 0o044
    assert kernel_name("no-such-kernel-here") == "python3"
    nb2 = nbformat.v4.new_notebook(metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {
        "state": {"a3f1" * 8: {"children": ["IPY_MODEL_" + "b2e0" * 8]}, "b2e0" * 8: {}}}}})
    text = nbformat.writes(strip_volatile(nb2))
    assert "a3f1" not in text and "IPY_MODEL_" + f"{2:032x}" in text


# ---- explorer ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_root):
    return tiny_runs(tmp_path_factory.mktemp("ui_runs"), synth_root)


def test_explorer_states_legible_honest_and_usable_without_kernel(runs):
    import matplotlib.pyplot as plt
    import numpy as np

    from fer_study.explorer import FIGSIZE, explorer, finished_runs, render

    runs_dir, _ = runs
    found = finished_runs(runs_dir)
    assert len(found) == 2
    vanilla = next(p for p in found if "-bilinear-none-" in p.name)
    nr = next(p for p in found if "-sr-ltr-" in p.name)
    assert FIGSIZE[0] <= 10

    def texts(fig):
        return [t.get_text() for t in fig.findobj(plt.Text)]

    cache: dict = {}
    fig = render(nr, None, 0, cache)
    words = " ".join(texts(fig))
    assert "predicted class" in words and "true class" in words
    assert len(fig.get_axes()) >= 8  # 4 images, bars, confusion + 2 colorbars
    assert "SynthFER test image #" in words and "(synthetic)" in words
    assert all(t.get_fontsize() >= 8 for t in fig.findobj(plt.Text) if t.get_text())
    plt.close(fig)
    fig = render(vanilla, None, 0, cache)
    assert "no learned resizer" in " ".join(texts(fig))
    plt.close(fig)
    from fer_study.runs import Run

    _, _, test, _, _ = cache[str(vanilla)]
    last = len(test.classes) - 1
    test.label = np.where(test.label == last, 0, test.label)  # this run's test split now lacks the last class
    fig = render(vanilla, last, 0, cache)
    assert f"No test image has the label '{test.classes[last]}'" in " ".join(texts(fig))
    plt.close(fig)
    box = explorer(runs_dir)
    assert "needs a running kernel" in box._repr_mimebundle_()["text/plain"]
    image = box.children[-1]
    first = bytes(image.value)
    assert first[:4] == b"\x89PNG" and "shown in" in box.children[1].children[-1].value
    box.children[0].value = str(vanilla if box.children[0].value == str(nr) else nr)
    assert bytes(image.value) != first
    assert Run(vanilla).metrics()["classes"] == [o[0] for o in box.children[1].children[0].options][1:]


# ---- git, command line ---------------------------------------------------------------------------------
def test_notebook_diff_works_without_venv_on_path_and_hides_papermill_timings(tmp_path):
    if not (ROOT / ".venv" / "bin" / "git-nbdiffdriver").exists():
        pytest.skip("no .venv/bin/git-nbdiffdriver (make env creates it)")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for f in (".gitattributes", ".gitconfig", "nbdime_config.json"):
        shutil.copy(ROOT / f, repo / f)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    nb = ROOT / "notebooks" / "03_table2_ablation.ipynb"
    shutil.copy(nb, repo / "notebooks" / nb.name)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "--local", "include.path", "../.gitconfig")  # what `make env` does
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    d = json.loads((repo / "notebooks" / nb.name).read_text())
    d["metadata"].setdefault("papermill", {})["duration"] = 12.3
    for c in d["cells"]:
        c["metadata"]["papermill"] = {"start_time": "2030-01-01T00:00:00", "duration": 1.0}
    d["cells"][-1]["source"] = ["print('a real change')"]
    (repo / "notebooks" / nb.name).write_text(json.dumps(d, indent=1))
    out = git("diff", "--no-color")
    assert out.startswith("nbdiff") and "a real change" in out
    assert "duration" not in out and "start_time" not in out


def test_help_shows_defaults_and_first_run_hints():
    from fer_study.cli import build_parser

    p = build_parser()
    sub = p._subparsers._group_actions[0].choices  # noqa: SLF001
    run_help = sub["run"].format_help()
    assert "(default: 1)" in run_help and "(default: demo)" in run_help and "(default: None)" not in run_help
    assert "(default: 3000)" in sub["data"]._subparsers._group_actions[0].choices["synth"].format_help()  # noqa: SLF001
    def walk(parser, path):
        for a in parser._actions:  # noqa: SLF001
            if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
                for name, sp in a.choices.items():
                    walk(sp, [*path, name])
            elif a.dest != "help":
                assert a.help, f"fer-study {' '.join(path)} {a.option_strings or a.dest} has no help text"

    walk(p, [])
    assert "fer-study data synth" in sub["train"].format_help() and "make demo" in p.format_help()


def test_closed_pipe_ends_quietly():
    cmd = f"{sys.executable} -m fer_study.cli --help | head -1"
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, cwd=ROOT)
    assert r.stderr == "" and "usage" in r.stdout


def test_scratch_and_publish_locations(tmp_path, monkeypatch):
    from fer_study.paths import at_root, output_dir, project_root, rooted, runs_override

    monkeypatch.delenv("FER_STUDY_SCRATCH", raising=False)
    monkeypatch.delenv("FER_STUDY_TABLES_DIR", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert project_root() == ROOT
    assert output_dir("tables") == ROOT / "scratch" / "tables"
    assert output_dir("tables", publish=True) == ROOT / "results" / "tables"
    assert output_dir("figures", publish=True) == ROOT / "figures"
    monkeypatch.setenv("FER_STUDY_SCRATCH", str(tmp_path))
    assert output_dir("figures") == tmp_path / "figures"
    assert runs_override([]) == [f"runs_dir={ROOT / 'results' / 'runs'}"]
    assert runs_override(["runs_dir=x", "epochs=1"]) == [f"runs_dir={ROOT / 'x'}", "epochs=1"]
    # each profile's own store (the ferplus-cpu runs are not in results/runs)
    assert runs_override([], profile="ferplus-cpu") == [f"runs_dir={ROOT / 'results' / 'ferplus_cpu' / 'runs'}"]
    assert at_root("/abs") == Path("/abs")
    from fer_study.config import make_config

    cfg = rooted(make_config("demo", ["sr_backend=bicubic", "sr_weights=none"]))
    assert cfg.synthfer_root == str(ROOT / "data" / "synthfer") and cfg.sr_weights is None
    assert Path(cfg.runs_dir).is_absolute() and cfg.model == make_config("demo").model
    t = time.perf_counter()
    from fer_study.notebooks import train_config

    c2 = train_config("demo", {"epochs": 1, "sr_backend": "bicubic", "sr_weights": None})
    assert c2.synthfer_root == str(ROOT / "data" / "synthfer") and c2.epochs == 1
    assert time.perf_counter() - t < 5
    assert re.fullmatch(r"synthfer-.*-s\d+-[0-9a-f]{10}", c2.run_id())


def _widget_notebook(ids: dict[str, str], order: list[str]) -> nbformat.NotebookNode:
    """A saved notebook holding a displayed VBox (``box``) with two children (``a``, ``b``), each with a
    layout, and an unreferenced widget (``lone``); ``ids`` maps those names to model ids and ``order``
    is the order of the widget-state dict (the kernel's order, which varies between executions)."""
    def model(name: str, state: dict) -> dict:
        return {"model_module": "@jupyter-widgets/controls", "model_name": name, "state": state}

    states = {"box": model("VBoxModel", {"children": [f"IPY_MODEL_{ids['a']}", f"IPY_MODEL_{ids['b']}"],
                                         "layout": f"IPY_MODEL_{ids['box_l']}"}),
              "a": model("ButtonModel", {"description": "a", "layout": f"IPY_MODEL_{ids['a_l']}"}),
              "b": model("ButtonModel", {"description": "b", "layout": f"IPY_MODEL_{ids['b_l']}"}),
              "box_l": model("LayoutModel", {"width": "1"}), "a_l": model("LayoutModel", {"width": "2"}),
              "b_l": model("LayoutModel", {"width": "3"}),
              "lone": model("HTMLModel", {"value": f"x <span class='fer-volatile'>{ids['lone'][:3]}</span> s"})}
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("display(box)")
    cell["id"] = "show-box"
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": ids["box"], "version_major": 2, "version_minor": 0},
        "text/plain": "VBox()"})]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {ids[k]: states[k] for k in order}, "version_major": 2, "version_minor": 0}}
    return nb


def test_saved_widget_ids_do_not_depend_on_the_kernel_s_ids_or_order():
    """Two executions of a notebook give widgets other random ids, listed in another order; saved
    (strip_volatile), both are byte-identical: the displayed box is 1, its layout and children follow
    depth first, the unreferenced widget comes last, a text marked volatile (the explorer's "shown in
    N s") is saved as "…"; and saving a saved notebook again changes nothing."""
    import random
    import uuid

    from fer_study.notebooks import strip_volatile

    names = ["box", "a", "b", "box_l", "a_l", "b_l", "lone"]
    saved = []
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        ids = {n: uuid.UUID(int=rng.getrandbits(128)).hex for n in names}
        order = names[:]
        rng.shuffle(order)
        saved.append(nbformat.writes(strip_volatile(_widget_notebook(ids, order))))
    assert saved[0] == saved[1] == saved[2]
    nb = nbformat.reads(saved[0], as_version=4)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == f"{1:032x}"
    described = {k: v["state"].get("description") or v["state"].get("width") or v["state"].get("value")
                 for k, v in state.items()}
    # box (1), then depth first: a (2), a's layout (3), b (4), b's layout (5), box's layout (6); lone last
    assert list(described.values()) == [None, "a", "2", "b", "3", "1", "x <span class='fer-volatile'>…</span> s"]
    assert state[f"{1:032x}"]["state"]["children"] == [f"IPY_MODEL_{2:032x}", f"IPY_MODEL_{4:032x}"]
    assert nbformat.writes(strip_volatile(nbformat.reads(saved[0], as_version=4))) == saved[0]


def test_a_kernel_that_dies_before_starting_is_started_again(tmp_path, monkeypatch):
    """Two kernels started at once can draw the same TCP port and one dies before it answers
    (nbclient: 'Kernel died before replying to kernel_info'): execute() starts it again (nothing had
    run); it gives up after KERNEL_START_ATTEMPTS, and a failing cell is never re-executed."""
    import papermill as pm

    import fer_study.notebooks as nbs

    calls: list[int] = []
    monkeypatch.setattr(nbs.time, "sleep", lambda s: None)

    def flaky(source, output, **kw):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")
        nbformat.write(nbformat.v4.new_notebook(), output)

    monkeypatch.setattr(pm, "execute_notebook", flaky)
    nbs.execute(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {})
    assert len(calls) == 3 and (tmp_path / "out.ipynb").is_file()

    calls.clear()

    def always_dies(source, output, **kw):
        calls.append(1)
        raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(pm, "execute_notebook", always_dies)
    with pytest.raises(RuntimeError, match="kernel_info"):
        nbs.execute(tmp_path / "in.ipynb", tmp_path / "out2.ipynb", {})
    assert len(calls) == nbs.KERNEL_START_ATTEMPTS

    calls.clear()

    def cell_fails(source, output, **kw):
        calls.append(1)
        raise pm.PapermillExecutionError(0, 1, "boom", "ValueError", "boom", [])

    monkeypatch.setattr(pm, "execute_notebook", cell_fails)
    with pytest.raises(pm.PapermillExecutionError):
        nbs.execute(tmp_path / "in.ipynb", tmp_path / "out3.ipynb", {})
    assert len(calls) == 1
