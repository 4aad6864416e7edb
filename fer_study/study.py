"""The study's multi-step commands: SR training and evaluation from a data source, the report
(tables and figures notebooks), and the demo (everything on SynthFER). The CLI's subcommands and
``fer-study demo`` call these same functions."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from fer_study.errors import ConfigError
from fer_study.io import environment, write_json, write_text
from fer_study.notebooks import run_notebook
from fer_study.tables import DATA_NOTEBOOK, FIGURES, TABLES, report_notebooks

#: Seeds a grid or a report uses when none are given.
DEFAULT_SEEDS = {"demo": [0, 1, 2], "paper": [1111], "ferplus-cpu": [0, 1, 2]}
DEMO_SYNTHFER = "data/synthfer"
DEMO_RAFDB = "data/synthfer_rafdb"
DEMO_FACESR = "cache/facesr/facesr.pt"
DEMO_SR_EVAL = "results/sr/facesr_eval_synthfer"


def _pairs(data: str | None, folder: str | None, scale: int, lr_size: int = 48):
    from fer_study.sr_train import folder_pairs, synthfer_pairs

    if folder is None:
        if lr_size != 48:
            raise ConfigError(f"--lr-size {lr_size}: SynthFER's low-resolution faces are 48 px (--folder for others)")
        return synthfer_pairs(data, 48 * scale)
    return folder_pairs(folder, lr_size=lr_size, scale=scale)


def sr_train(out: str | Path, data: str | None = DEMO_SYNTHFER, folder: str | None = None, scale: int = 2,
             holdout: float = 0.15, seed: int = 0, steps: int = 300, batch_size: int = 16, nf: int = 32,
             blocks: int = 4, lr_size: int = 48) -> dict:
    """Train facesr on (LR, HR) pairs of SynthFER's renders or of a folder of faces (held-out part kept
    out; ``holdout=0`` trains on all of them, e.g. FERPlus's training folder, evaluated on its test folder).
    ``lr_size``: the folder's faces become HR at ``lr_size * scale`` and LR at ``lr_size`` (FERPlus's
    48 px faces: ``lr_size=24, scale=2`` learns 24 -> 48, the model is then applied 48 -> 96)."""
    from fer_study.sr_train import check_holdout, split_pairs, train_facesr

    check_holdout(holdout, "train")
    lr, hr = _pairs(data, folder, scale, lr_size)
    tr, _ = split_pairs(len(lr), holdout, seed)
    info = train_facesr(lr[tr], hr[tr], Path(out), steps=steps, batch_size=batch_size, seed=seed, nf=nf,
                        blocks=blocks, patch=min(24, lr_size), source=str(folder or data), holdout=holdout,
                        n_pairs=len(lr))
    return info


def sr_eval(models: list[str], out: str | Path | None = None, data: str | None = DEMO_SYNTHFER,
            folder: str | None = None, scale: int = 2, holdout: float = 0.15, seed: int = 0,
            log: Callable[[str], None] = print, lr_size: int = 48) -> dict:
    """PSNR/SSIM of bicubic, bilinear and each ``BACKEND=WEIGHTS`` model on the held-out pairs
    (``holdout=1``: every pair, e.g. FERPlus's test folder); writes OUT.json and OUT.md when ``out`` is given."""
    from fer_study.models.sr import SuperResolver
    from fer_study.sr_train import check_holdout, evaluate_sr, split_pairs

    check_holdout(holdout, "eval")
    from fer_study.models.sr import check_sr_weights

    for spec in models:  # before the folder is read: the file exists and holds that network
        backend, _, w = spec.partition("=")
        if w and not Path(w).is_file():
            raise ConfigError(f"--model {spec}: weights file {w} not found")
        if w:
            check_sr_weights(backend, w, label=f"--model {backend}")
    lr, hr = _pairs(data, folder, scale, lr_size)
    _, ho = split_pairs(len(lr), holdout, seed)
    size = hr.shape[-1]
    resolvers = {"bicubic": SuperResolver("bicubic", out_size=size), "bilinear": SuperResolver("bilinear", out_size=size)}
    for spec in models:
        backend, _, w = spec.partition("=")
        resolvers[backend if backend not in resolvers else spec] = SuperResolver(backend, w or None, out_size=size)
    res = evaluate_sr(lr[ho], hr[ho], resolvers)
    source = "SynthFER (synthetic)" if folder is None else str(folder)
    weights = _weights_info(models)
    for spec, info in weights.items():
        tr = info.get("train") or {}
        if folder is not None and tr.get("source") and Path(tr["source"]).resolve() == Path(folder).resolve():
            # scored on its own training folder: unseen pairs only with the same split, held out at training
            if (tr.get("holdout") is None or tr["holdout"] == 0 or tr["holdout"] != holdout or tr.get("seed") != seed
                    or tr.get("n_pairs") != len(lr)):  # the split depends on the number of pairs too
                log(f"warning: {spec} was trained on {folder} itself (holdout {tr.get('holdout', 'not recorded')}, "
                    f"seed {tr.get('seed')}, {tr.get('n_pairs')} pairs); these held-out pairs (holdout {holdout}, "
                    f"seed {seed}, {len(lr)} pairs) are not the ones "
                    "it left out: score it on another folder (FERPlus: train on FER2013Train, eval on FER2013Test)")
    result = {"data": source, "holdout_images": int(len(ho)), "lr_size": int(lr.shape[-1]), "hr_size": int(size),
              "holdout": holdout, "seed": seed, "results": res, "models": weights, "env": environment()}
    lines = [f"SR evaluation on {len(ho)} held-out images of {source} ({lr.shape[-1]} -> {size})", "",
             "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    lines += [f"| {k} | {v['psnr']:.2f} ± {v['psnr_std']:.2f} | {v['ssim']:.4f} ± {v['ssim_std']:.4f} |"
              for k, v in res.items()]
    log("\n".join(lines))
    if out:
        write_json(Path(out).with_suffix(".json"), result)
        write_text(Path(out).with_suffix(".md"), "\n".join(lines) + "\n")
        log(f"written: {Path(out).with_suffix('.json')} and .md")
    return result


def _weights_info(models: list[str]) -> dict[str, dict]:
    """For each ``BACKEND=WEIGHTS`` spec: the weights file, its SHA-256 and what it was trained on (facesr
    checkpoints carry their training settings), so an SR evaluation names the exact weights it scored."""
    from fer_study.io import file_sha256
    from fer_study.models.sr import read_facesr

    out = {}
    for spec in models:
        backend, _, w = spec.partition("=")
        if not w or not Path(w).is_file():
            continue
        info: dict = {"backend": backend, "weights": w, "sha256": file_sha256(w)}
        if backend == "facesr":
            meta = read_facesr(w)
            info.update(config=meta.get("config"), train=meta.get("train"))
        out[spec] = info
    return out


def report(profile: str, seeds: list[int] | None = None, overrides: list[str] | None = None,
           log: Callable[[str], None] = print, jobs: int | None = None) -> bool:
    """Execute the table notebooks and the figure notebooks of ``profile`` over its trained runs (in place;
    a profile with its own outputs, e.g. ``ferplus-cpu``: executed copies in its tables folder), ``jobs``
    at a time (default: the CPU count, at most 2). The notebooks read runs and write only their own
    outputs (a figure notebook may build a missing SR-cache entry, under the cache's lock), so their order
    does not matter; each kernel's start-up (interpreter, imports) is most of a notebook's few seconds,
    which two at a time overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from fer_study.paths import PROFILE_OUTPUTS, figure_name, output_dir, project_root

    params = {"profile": profile, "seeds": list(seeds or []), "overrides": list(overrides or [])}
    names = report_notebooks(profile)
    # a profile with its own outputs keeps its executed notebooks beside its tables: notebooks/ stays the
    # demo's (what nbval checks and a newcomer opens)
    nb_dir = output_dir("tables", True, profile=profile) / "notebooks" if profile in PROFILE_OUTPUTS else None
    if nb_dir is not None:
        nb_dir.mkdir(parents=True, exist_ok=True)

    def one(k: int, name: str) -> bool:
        log(f"[{k}/{len(names)}] {name}")
        p = params if name != FIGURES["explore"].notebook else {"profile": profile, "overrides": params["overrides"]}
        return run_notebook(name, p, log=log, output=None if nb_dir is None else nb_dir / f"{name}.ipynb")

    workers = max(1, min(jobs or min(2, os.cpu_count() or 1), len(names)))
    # papermill in threads: each notebook's kernel is its own process; execute() passes this process's own
    # working directory as the kernel's cwd, so papermill's os.chdir (process-wide) changes nothing
    ex = ThreadPoolExecutor(max_workers=workers)
    try:
        # the figure notebooks (the slowest: they load models) first, so that no kernel starts last alone
        futures = [ex.submit(one, k, name) for k, name in reversed(list(enumerate(names, 1)))]
        ok = all([f.result() for f in futures])
    except BaseException:  # Ctrl-C: the queued notebooks are not started
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()
    if nb_dir is not None and not ok:
        log("run records not exported: a notebook failed (the committed records stay those of the last good report)")
    elif nb_dir is not None:  # the runs' results beside the tables (the run store itself is not committed)
        from fer_study.paths import runs_override
        from fer_study.report import store_for

        store = store_for(profile, runs_override(overrides, None, profile))
        records = nb_dir.parent / "run_records"
        ids = store.export_records(records, profile, list(seeds or []))
        log(f"run records: {len(ids)} finished runs' config, env, inputs, metrics, history and predictions -> "
            f"{os.path.relpath(records, project_root())}")
    tables = [t.name.removeprefix("table") for t in TABLES.values() if t.notebook in names]
    numbers = tables[0] if len(tables) == 1 else "{" + ",".join(tables) + "}"
    where = os.path.relpath(output_dir("tables", True, profile=profile), project_root())
    log(f"tables: {where}/table{numbers}.{{csv,md,tex}}; figure: figures/{figure_name('figure2', profile)}.{{png,pdf}}")
    return ok


def ensure_rafdb_twin(root: str | Path, n: int, seed: int = 1) -> Path:
    """The demo's RAF-DB-layout twin at ``root``: a SynthFER source of ``n`` images (``root/src``) and its
    official-layout copy (``root/basic``), each rewritten where it is not of these settings (the copy
    carries the source's synthfer.json as ``twin.json``, so a changed source is never read through a
    stale copy). Returns ``root/basic``."""
    from fer_study.data.synth import ensure, write_rafdb_layout

    root = Path(root)
    src = ensure(root / "src", n=n, seed=seed)
    basic = root / "basic"
    stamp = basic / "twin.json"
    want = (src / "synthfer.json").read_text()
    if not stamp.is_file() or stamp.read_text() != want:
        shutil.rmtree(basic, ignore_errors=True)
        write_rafdb_layout(src, basic, seed=seed)
        stamp.write_text(want)
    return basic


def demo(n: int = 3000, seeds: list[int] | None = None, jobs: int = 2, sr_steps: int = 500,
         log: Callable[[str], None] = print, rafdb_n: int = 1500) -> bool:
    """The whole study on SynthFER, CPU-sized (``make demo``). ``rafdb_n``: images of the RAF-DB-layout
    twin's source (Table 4's RAF-DB row; 1,500 give about 1,070 training, 120 validation and 300 test
    images, the size of SynthFER's training split, so its three Swin-L + STN runs cost what the others do)."""
    from fer_study.data.synth import ensure
    from fer_study.runner import WorkerPool, run_grid

    seeds = list(seeds or DEFAULT_SEEDS["demo"])
    t0 = time.perf_counter()
    ends: list[tuple[str, float]] = [("start", t0)]  # (phase, when it ended)

    log(f"== 1/6 SynthFER ({n} images, seed 0) and its RAF-DB-layout twin ({rafdb_n} images, seed 1)")
    ensure(DEMO_SYNTHFER, n=n, seed=0)
    ensure_rafdb_twin(DEMO_RAFDB, rafdb_n)
    ends.append(("data", time.perf_counter()))
    log("== 2/6 facesr (x2) trained on SynthFER's renders, evaluated against bicubic")
    if not Path(DEMO_FACESR).exists():
        sr_train(DEMO_FACESR, steps=sr_steps)
    sr_eval([f"facesr={DEMO_FACESR}"], out=DEMO_SR_EVAL, log=log)
    ends.append(("facesr", time.perf_counter()))
    log(f"== 3/6 {DATA_NOTEBOOK}")
    ok = run_notebook(DATA_NOTEBOOK, {"synth_n": n}, log=log)
    ends.append((DATA_NOTEBOOK.removesuffix(".ipynb"), time.perf_counter()))
    log(f"== 4/6 Tables 1-4 on the demo profile, seeds {seeds} ({jobs} worker processes; "
        "fer-study run all --executor workers)")
    with WorkerPool(jobs) as pool:  # stale runs: retrained, logged
        s = run_grid("all", "demo", seeds, jobs=jobs, log=log, retrain_stale=True, train=pool)
    ends.append(("grid (SR caches, training)", time.perf_counter()))
    log("== 5/6 tables and Figure 2")
    ok &= report("demo", seeds, log=log, jobs=jobs)
    ends.append(("report", time.perf_counter()))
    took = ", ".join(f"{name} {t - t_before:.0f} s" for (_, t_before), (name, t) in zip(ends, ends[1:]))
    log(f"== 6/6 done in {time.perf_counter() - t0:.0f} s ({took})")
    log("written: results/tables/table{1,2,3,4}.{csv,md,tex}, figures/figure2.{png,pdf}, figures/data_*.png, "
        f"{DEMO_SR_EVAL}.{{json,md}}, notebooks/*.ipynb (executed), results/runs/ (per run)")
    log("All demo numbers are on SynthFER (synthetic) with CPU-sized models; the paper's numbers are shown beside them.")
    return ok and not s["failed"]
