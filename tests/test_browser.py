"""JupyterLab in a real browser: the explorer (07) and a table notebook (03), as a reader uses them.

The test trains two tiny runs (Table 2's vanilla cell (a) and SR + learn-to-resize cell (d), about
5 s each), copies the two notebooks into a temporary folder with their parameters pointing at those
runs, starts JupyterLab on 127.0.0.1 with a token, and drives Debian's Chromium through playwright
(playwright's own browser download is not used): Run All on 07, then a change of the run and of the
class dropdowns must each redraw the figure, with no cell error; Run All on 03 must render the table
with its rows and the units in the headers.

Skips, saying why, where playwright or Chromium is missing (`.ci/run` installs Chromium; playwright
is in the dev extras). ``FER_STUDY_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FER_STUDY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _requirements() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set FER_STUDY_CHROMIUM)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_requirements() is not None, reason=str(_requirements()))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_parameters(src: Path, dst: Path, values: dict) -> None:
    """Copy a notebook with its parameters cell set to ``values`` (a user editing the cell)."""
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for k, v in values.items():
        lines = [f"{k} = {v!r}" if ln.split(":")[0].split("=")[0].strip() == k else ln for ln in lines]
    cell.source = "\n".join(lines)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, synth_root):
    from test_notebooks_ui import tiny_runs

    tmp = tmp_path_factory.mktemp("browser")
    runs, overrides = tiny_runs(tmp, synth_root, ("a", "d"))
    work = tmp / "lab" / "notebooks"
    work.mkdir(parents=True)
    _with_parameters(ROOT / "notebooks" / "07_explore.ipynb", work / "07_explore.ipynb",
                     {"overrides": [f"runs_dir={runs}"]})
    _with_parameters(ROOT / "notebooks" / "03_table2_ablation.ipynb", work / "03_table2_ablation.ipynb",
                     {"seeds": [0], "overrides": overrides})
    kernels = tmp / "jupyter" / "kernels" / "fer-study"  # the notebooks' kernel, on this Python
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fer-study (test)", "language": "python"}))
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_PATH": str(tmp / "jupyter"), "FER_STUDY_SCRATCH": str(tmp / "scratch"),
           "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "OMP_NUM_THREADS": "1"}
    log = (tmp / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'lab'}", "--expose-app-in-browser", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=tmp / "lab", env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp / "lab.log").read_text()[-3000:])
        yield url, token, tmp
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _run_all(page, url: str, token: str, path: str) -> None:
    page.goto(f"{url}/lab/tree/{path}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.sessionContext && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.session && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _wait_done(page, timeout: int = 120_000) -> None:
    """Until every code cell has run (no ``[*]`` prompt, an execution count on each) and the kernel is idle."""
    page.wait_for_function(
        "() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];"
        " return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)) && "
        "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'; }", timeout=timeout)


def _errors(page) -> list[str]:
    return page.eval_on_selector_all(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']",
                                     "els => els.map(e => e.textContent.slice(0, 500))")


def test_explorer_and_table_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, token, tmp = lab
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _run_all(page, url, token, "notebooks/07_explore.ipynb")
            print(f"07 opened and started: {time.perf_counter() - t0:.0f} s")
            img = ".jupyter-widgets img"
            page.wait_for_selector(".fer-done", timeout=120_000)
            first = page.get_attribute(img, "src")
            print(f"first view: {time.perf_counter() - t0:.0f} s")
            assert first and (first.startswith("blob:") or first.startswith("data:image/png"))
            selects = page.locator(".jupyter-widgets select")
            assert selects.count() == 2
            runs = selects.nth(0).locator("option").all_inner_texts()
            assert len(runs) == 2 and any("-sr-ltr-" in r for r in runs)

            def changed_after(action, before: str) -> str:
                action()
                page.wait_for_function(f"() => {{ const i = document.querySelector('{img}');"
                                       f" return i && i.src !== {json.dumps(before)} && "
                                       "document.querySelector('.fer-done'); }", timeout=90_000)
                return page.get_attribute(img, "src")

            second = changed_after(lambda: selects.nth(0).select_option(index=1), first)
            classes = selects.nth(1).locator("option").all_inner_texts()
            assert classes[0] == "any" and "neutral" in classes
            third = changed_after(lambda: selects.nth(1).select_option(label="happiness"), second)
            assert len({first, second, third}) == 3
            _wait_done(page)
            assert not _errors(page), _errors(page)
            assert page.locator(".fer-error").count() == 0
            statics = page.locator(".jp-OutputArea-output img")  # the widget's figure and the static view
            assert statics.count() >= 2

            print(f"07 done: {time.perf_counter() - t0:.0f} s")
            _run_all(page, url, token, "notebooks/03_table2_ablation.ipynb")
            page.wait_for_selector(".jp-RenderedHTMLCommon table.dataframe", timeout=120_000)
            _wait_done(page)
            assert not _errors(page), _errors(page)
            table = page.locator(".jp-RenderedHTMLCommon table.dataframe").first
            headers = table.locator("thead th").all_inner_texts()
            assert "Acc. ours clean (%)" in headers and "Acc. paper (%)" in headers, headers
            body = table.locator("tbody tr").all_inner_texts()
            rows = {r.split()[1]: r for r in body}
            assert set(rows) >= set("abcde"), body
            assert "(n=1)" in rows["a"] and "(n=1)" in rows["d"] and "–" in rows["b"]
            text = page.evaluate("() => document.querySelector('.jp-Notebook').textContent")
            assert "exported: table2.csv, table2.md, table2.tex" in text
            print(f"03 done: {time.perf_counter() - t0:.0f} s")
        finally:
            browser.close()
    assert sorted(p.name for p in (tmp / "scratch" / "tables").iterdir()) == ["table2.csv", "table2.md", "table2.tex"]
    assert time.perf_counter() - t0 < 150
