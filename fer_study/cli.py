"""The ``fer-study`` command line. Each subcommand calls the package; ``--help`` lists them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _cmd_data_counts(a: argparse.Namespace) -> int:
    if a.dataset == "ferplus":
        from fer_study.data.ferplus import ferplus_counts

        out = ferplus_counts(a.root, a.label_mode, a.classes, a.vote_source)
    else:
        from fer_study.data.rafdb import rafdb_counts

        out = rafdb_counts(a.root, labels_file=a.labels)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for split, d in out["splits"].items():
            print(f"{split:6s} {d['total']:6d}  " + "  ".join(f"{k}={v}" for k, v in d["per_class"].items()))
            dropped = {k: v for k, v in (d.get("dropped") or {}).items() if v}
            if dropped:
                print(f"{'':6s} dropped by the label mode: " + "  ".join(f"{k}={v}" for k, v in dropped.items()))
    return 0


def _cmd_data_prior(a: argparse.Namespace) -> int:
    from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes, rafdb_prior
    from fer_study.io import write_json

    if a.source == "psr":
        prior, classes = PSR_FERPLUS_PRIOR, "ferplus"
    elif a.source == "rafdb":
        prior, classes = rafdb_prior(renormalise=a.renormalise), "rafdb (native order)"
    else:
        from fer_study.data.ferplus import load_ferplus

        if a.root is None:
            print("--root is required with --source votes", file=sys.stderr)
            return 2
        s = load_ferplus(a.root, "train", "majority", 8, load_images=False)
        prior, classes = prior_from_votes(s.votes, s.label, 8), f"ferplus (recomputed from {a.root})"
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    print(f"# prior d ({classes}), rows = true class")
    print(prior)
    if a.out:
        write_json(a.out, {"source": a.source, "classes": classes, "prior": np.asarray(prior).tolist()})
        print(f"written: {a.out}")
    return 0


def _cmd_data_synth(a: argparse.Namespace) -> int:
    import time

    from fer_study.data.synth import SynthConfig, generate, write_rafdb_layout

    out = Path(a.out)
    if (out / "synthfer.json").exists() and not a.force:
        print(f"{out} already holds SynthFER (synthfer.json); use --force to regenerate", file=sys.stderr)
        return 1
    t = time.perf_counter()
    s = generate(out, SynthConfig(n=a.n, seed=a.seed, hr_size=a.hr_size, n_hr=a.n_hr, imbalance=a.imbalance,
                                  split_fractions=tuple(a.split)))
    print(f"SynthFER: {a.n} images (seed {a.seed}) written to {out} in {time.perf_counter() - t:.1f} s")
    print("true classes: " + ", ".join(f"{k}={v}" for k, v in s["true_class_counts"].items()))
    if a.rafdb_layout:
        n = write_rafdb_layout(out, a.rafdb_layout, seed=a.seed)
        print(f"RAF-DB layout: {n} images written to {a.rafdb_layout}")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from fer_study.config import apply_overrides, make_config
    from fer_study.training import train
    from fer_study.training.distributed import end_process_group

    cfg = make_config(a.profile, a.set or [])
    if a.config:
        from fer_study.config import read_config  # a missing or bad file: ConfigError naming it

        cfg = apply_overrides(read_config(a.config), a.set or [])
    try:
        d = train(cfg, force=a.force)
    finally:
        end_process_group()
    print(f"run directory: {d}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from fer_study.errors import ConfigError
    from fer_study.runs import Run

    run = Run(Path(a.run))
    if not run.is_finished():
        raise ConfigError(f"{a.run} is not a finished run (state: {run.state()}); train it with fer-study train")
    m = run.metrics()
    c, au = m["protocols"]["clean"], m["protocols"]["authors"]
    tag = " (SynthFER: synthetic data)" if m.get("synthetic") else ""
    print(f"{m['run_id']}{tag}, seed {m['seed']}, n={m['n']}")
    print(f"clean   : test acc {c['test_acc']:.4f}  mean-class {c['test_mean_class_acc']:.4f}  "
          f"(model of epoch {c['selected_epoch']}, valid acc {c['valid_acc']:.4f})")
    if au.get("test_acc") is None:
        print("authors : not run (authors_protocol=false)")
    else:
        print(f"authors : test acc {au['test_acc']:.4f} (best epoch {au['best_epoch']} on test, random transform)")
    return 0


def _cmd_sr_train(a: argparse.Namespace) -> int:
    from fer_study.study import sr_train

    out = Path(a.out)
    if out.exists() and not a.force:
        print(f"{out} exists; use --force to retrain", file=sys.stderr)
        return 1
    info = sr_train(out, a.data, a.folder, a.scale, a.holdout, a.seed, a.steps, a.batch_size, a.nf, a.blocks,
                    lr_size=a.lr_size)
    print(f"facesr written to {out}: {info}")
    return 0


def _cmd_sr_eval(a: argparse.Namespace) -> int:
    from fer_study.study import sr_eval

    sr_eval(a.model, a.out, a.data, a.folder, a.scale, a.holdout, a.seed, lr_size=a.lr_size)
    return 0


def _cmd_sr_cache(a: argparse.Namespace) -> int:
    from fer_study.config import make_config
    from fer_study.sr_cache import build_sr_cache
    from fer_study.training.data import load_splits, make_sr
    from fer_study.training.precision import select_device

    cfg = make_config(a.profile, a.set or [])
    dev = select_device(cfg.device)
    sr = make_sr(cfg, dev)
    for split, sp in load_splits(cfg).items():
        arr, meta = build_sr_cache(sp.images, sr, cfg.cache_dir, batch_size=a.batch_size, device=dev,
                                   label=f"{cfg.dataset}-{split}")
        print(f"{split}: {arr.shape} -> {cfg.cache_dir}/{meta['key']}.npy")
    return 0


def _cmd_model_summary(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from fer_study.config import make_config
    from fer_study.models.classifier import NeuralResizerClassifier

    cfg = make_config(a.profile, a.set or [])
    m = NeuralResizerClassifier(replace(cfg.model, pretrained=False, checkpoint=None))  # counts need no weights
    s = m.parameter_summary()
    if cfg.model.up == "sr":
        s["sr"] = {"total": _sr_params(cfg), "trainable": 0}
    print(f"{'part':10s} {'total':>12s} {'trainable':>12s}")
    for k, v in s.items():
        print(f"{k:10s} {v['total']:12,d} {v['trainable']:12,d}")
    print(f"{'all':10s} {sum(v['total'] for v in s.values()):12,d} {sum(v['trainable'] for v in s.values()):12,d}")
    from fer_study.models.backbones import paper_backbone_tags

    tags = paper_backbone_tags()
    print(f"backbone {cfg.model.backbone}: timm {tags.get(cfg.model.backbone, cfg.model.backbone)}"
          f"{' (pretrained weights of this tag)' if cfg.model.pretrained else ' (random init)'}")
    if a.profile == "paper":
        print("paper backbones (alias -> timm tag): " + ", ".join(f"{k} -> {v}" for k, v in tags.items()))
    return 0


def _sr_params(cfg) -> int:
    if cfg.sr_backend == "dic":
        from fer_study.models.dic import DIC

        return sum(p.numel() for p in DIC().parameters())
    if cfg.sr_backend in ("bicubic", "bilinear") or not cfg.sr_weights or not Path(cfg.sr_weights).exists():
        return 0
    from fer_study.models.sr import SuperResolver

    return sum(p.numel() for p in SuperResolver(cfg.sr_backend, cfg.sr_weights).parameters())


def _cmd_run(a: argparse.Namespace) -> int:
    from fer_study.errors import ConfigError
    from fer_study.runner import run_grid
    from fer_study.study import DEFAULT_SEEDS

    seeds = a.seeds or DEFAULT_SEEDS.get(a.profile, [0])
    slurm_flags = {"partition": "partition", "gpus_per_run": "gpus_per_run", "nodes": "nodes", "time": "time_min",
                   "cpus_per_run": "cpus_per_run", "mem_gb": "mem_gb", "array_parallelism": "array_parallelism",
                   "slurm_setup": "setup", "slurm": "extra", "max_timeouts": "max_timeouts"}
    given = {dest: getattr(a, flag) for flag, dest in slurm_flags.items() if getattr(a, flag) is not None}
    if a.status:
        from fer_study.executors import format_status, grid_status

        print(format_status(grid_status(a.table, a.profile, seeds, a.set or [])))
        return 0
    if a.executor in ("local", "workers"):
        if given or a.wait:
            flags = [f"--{f.replace('_', '-')}" for f, d in slurm_flags.items() if d in given] + ["--wait"] * a.wait
            raise ConfigError(f"{', '.join(flags)}: only with --executor slurm")
        import contextlib

        from fer_study.runner import WorkerPool

        if a.executor == "workers" and a.devices:
            raise ConfigError("--devices: only with --executor local (workers train on the CPU)")
        with WorkerPool(a.jobs) if a.executor == "workers" else contextlib.nullcontext() as pool:
            s = run_grid(a.table, a.profile, seeds, overrides=a.set or [], dry_run=a.dry_run, jobs=a.jobs,
                         devices=a.devices, retrain_stale=a.retrain_stale, train=pool)
        return 1 if s["failed"] else 0
    from fer_study.executors import SlurmSettings, submit_grid, wait

    if a.devices or a.jobs != 1:
        raise ConfigError("--jobs/--devices: only with --executor local (Slurm runs each run as its own job)")
    if "extra" in given:
        bad = [kv for kv in given["extra"] if "=" not in kv]
        if bad:
            raise ConfigError(f"--slurm {bad[0]}: expected KEY=VALUE (e.g. account=myproj)")
        given["extra"] = dict(kv.split("=", 1) for kv in given["extra"])
    sub = submit_grid(a.table, a.profile, seeds, a.set or [], SlurmSettings(**given), dry_run=a.dry_run,
                      retrain_stale=a.retrain_stale)
    return 1 if a.wait and wait(sub)["failed"] else 0


def _cmd_report(a: argparse.Namespace) -> int:
    from fer_study.config import make_config
    from fer_study.study import report

    if a.set:
        make_config(a.profile, a.set)  # a wrong override stops here, before any notebook runs
    return 0 if report(a.profile, a.seeds, a.set or []) else 1


def _cmd_demo(a: argparse.Namespace) -> int:
    """The whole study on SynthFER, CPU-sized (what `make demo` runs)."""
    from fer_study.study import demo

    return 0 if demo(a.n, a.seeds, a.jobs, a.sr_steps) else 1


def _cmd_compare(a: argparse.Namespace) -> int:
    """Two sets of exported tables: conclusions and means (exit 1 when they disagree)."""
    from fer_study.compare import compare_dirs
    from fer_study.errors import UserError

    for d in (a.a, a.b):
        if not any(Path(d).glob("table*.csv")):
            raise UserError(f"{d}: no table*.csv (expected a results/tables directory)")
    c = compare_dirs(a.a, a.b, a.tolerance)
    print(c.markdown())
    return 0 if c.agree else 1


def _cmd_bench(a: argparse.Namespace) -> int:
    from fer_study.bench import BenchConfig, run_bench
    from fer_study.training.precision import select_device

    dev = select_device(a.device)
    modes = tuple(a.compile_modes or (["default"] if a.compile else []))
    block = a.block if a.block is not None else (5 if dev.type == "cuda" else 1)
    bc = BenchConfig(backbone=a.backbone, batch=a.batch, sr_size=a.sr_size, warmup=a.warmup, steps=a.steps,
                     block=block, compile_modes=modes, amp=not a.no_amp, baseline=not a.no_baseline,
                     baseline_images=a.baseline_images, sr_backends=tuple(a.sr_backends), sr_images=a.sr_images,
                     sr_batch=a.sr_batch, dic_weights=a.dic_weights, stem=a.stem, ltr_n=a.ltr_n)
    run_bench(bc, dev, a.out)
    return 0


def _add_profile(p: argparse.ArgumentParser) -> None:
    from fer_study.config import PROFILES

    p.add_argument("--profile", choices=list(PROFILES), default="demo",
                   help="demo: SynthFER + CPU-sized models; paper: the paper's configuration; ferplus-cpu: "
                        "Table 2 on real FERPlus at CPU scale (set ferplus_root)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, parsed as its field's type (integer, number, boolean "
                        "true/false/yes/no/1/0, none/null for optional values, JSON for dicts) and checked "
                        "before any data is read; model keys as model.KEY; repeatable")


def build_parser() -> argparse.ArgumentParser:
    from fer_study.data.synth import DEMO_SPLIT

    class Help(argparse.ArgumentDefaultsHelpFormatter):
        """--help shows each option's default, except where there is none (None, off) or the help says it."""

        def _get_help_string(self, action: argparse.Action) -> str:
            if action.default in (None, False, []) or "default" in (action.help or ""):
                return action.help or ""
            return super()._get_help_string(action)

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("formatter_class", Help)
            super().__init__(*args, **kwargs)

    p = Parser(prog="fer-study", epilog="First run: `make demo` (or `fer-study demo`) generates SynthFER and "
               "trains everything on CPU; `fer-study data synth --out data/synthfer` makes the data alone.",
               description=(
        "Reproducible study of 'Vision Transformer Equipped with Neural Resizer on FER' (ICASSP 2022)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="data sets: counts, PDLS priors, SynthFER generation")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("counts", help="per-split and per-class image counts")
    c.add_argument("--dataset", choices=["ferplus", "rafdb"], required=True, help="which reader")
    c.add_argument("--root", help="data root (FERPlus: fer2013*.csv or FER2013Train/...; RAF-DB: basic/)")
    c.add_argument("--labels", help="RAF-DB: path of list_patition_label.txt (instead of ROOT/EmoLabel/...)")
    c.add_argument("--label-mode", default="majority",
                   choices=["majority", "probability", "crossentropy", "multi_target"],
                   help="FERPlus label mode for train (valid/test always majority)")
    c.add_argument("--classes", type=int, default=8, choices=[7, 8], help="FERPlus: 8 or 7 (contempt dropped)")
    c.add_argument("--vote-source", default="auto", choices=["auto", "label.csv", "fer2013new.csv"],
                   help="FERPlus folder form: where the votes come from")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_cmd_data_counts)

    pr = dsub.add_parser("prior", help="print (and save) a PDLS prior distribution d")
    pr.add_argument("--source", choices=["psr", "votes", "rafdb"], default="psr",
                    help="psr: the published FERPlus constant; votes: recompute from --root; rafdb: re-indexed")
    pr.add_argument("--root", help="FERPlus root for --source votes")
    pr.add_argument("--renormalise", action="store_true", help="rafdb: renormalise rows after dropping contempt")
    pr.add_argument("--out", help="write the prior as JSON here")
    pr.set_defaults(func=_cmd_data_prior)

    sy = dsub.add_parser("synth", help="generate the SynthFER data set (FERPlus formats)")
    sy.add_argument("--out", required=True, help="folder to write (e.g. data/synthfer, the demo profile's root)")
    sy.add_argument("--n", type=int, default=3000,
                    help="images to generate (left as they are, these options make the demo's data set)")
    sy.add_argument("--split", type=float, nargs=3, default=list(DEMO_SPLIT), metavar=("TRAIN", "VALID", "TEST"),
                    help="fractions of the three splits (FERPlus itself is 0.8 0.1 0.1)")
    sy.add_argument("--seed", type=int, default=0, help="generator seed (the data set is deterministic per seed)")
    sy.add_argument("--hr-size", type=int, default=192, help="render size of the high-resolution faces")
    sy.add_argument("--n-hr", type=int, default=None, help="how many HR renders to keep (default: min(n, 3000))")
    sy.add_argument("--imbalance", type=float, default=1.0, help="exponent on FERPlus class frequencies")
    sy.add_argument("--rafdb-layout", help="also write an official-layout RAF-DB tree here")
    sy.add_argument("--force", action="store_true", help="overwrite an existing SynthFER folder")
    sy.set_defaults(func=_cmd_data_synth)

    tr = sub.add_parser("train", help="train one run (resumes an interrupted run, skips a finished one)",
                        description="Train one run. The demo profile reads SynthFER from data/synthfer: make it "
                        "first with `fer-study data synth --out data/synthfer` (or run `make demo`, which also "
                        "trains the facesr weights cache/facesr/facesr.pt; without them add --set sr_backend=bicubic "
                        "--set sr_weights=none).")
    _add_profile(tr)
    tr.add_argument("--config", help="start from a run's config.json instead of a profile")
    tr.add_argument("--force", action="store_true", help="retrain a finished run (its directory is replaced)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="print a finished run's metrics under both protocols")
    ev.add_argument("run", help="run directory (results/runs/<run-id>)")
    ev.set_defaults(func=_cmd_evaluate)

    sr = sub.add_parser("sr", help="super-resolution: train/evaluate facesr, build the SR cache")
    ssub = sr.add_subparsers(dest="sr_command", required=True, metavar="SUBCOMMAND")
    for name, fn, helptext in (("train", _cmd_sr_train, "train facesr on (LR, HR) face pairs"),
                               ("eval", _cmd_sr_eval, "PSNR/SSIM against bicubic on held-out pairs")):
        q = ssub.add_parser(name, help=helptext)
        q.add_argument("--data", default="data/synthfer", help="SynthFER root (pairs from its HR renders)")
        q.add_argument("--folder", help="instead: any folder of face images (HR), LR made by bicubic downscale")
        q.add_argument("--scale", type=int, default=2, help="SR factor (LR-SIZE -> LR-SIZE*scale)")
        q.add_argument("--lr-size", type=int, default=48,
                       help="--folder: low-resolution size; the faces become HR at LR-SIZE*scale (FERPlus: "
                            "--lr-size 24 learns 24 -> 48 from its 48 px faces)")
        q.add_argument("--holdout", type=float, default=0.15,
                       help="held-out fraction in [0, 1] (train: 0 uses every pair; eval: 1 scores every pair)")
        q.add_argument("--seed", type=int, default=0, help="seed of the held-out split (and of training)")
        q.set_defaults(func=fn)
    q = ssub.choices["train"]
    q.add_argument("--out", default="cache/facesr/facesr.pt", help="weights file to write (the demo profile reads "
                   "this path)")
    q.add_argument("--steps", type=int, default=300, help="optimiser steps")
    q.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    q.add_argument("--nf", type=int, default=32, help="feature channels of facesr")
    q.add_argument("--blocks", type=int, default=4, help="residual blocks of facesr")
    q.add_argument("--force", action="store_true", help="overwrite an existing weights file")
    q = ssub.choices["eval"]
    q.add_argument("--model", action="append", default=[], metavar="BACKEND=WEIGHTS",
                   help="an SR model to compare, e.g. facesr=cache/facesr/facesr.pt (repeatable)")
    q.add_argument("--out", help="write OUT.json and OUT.md")
    q = ssub.add_parser("cache", help="super-resolve every split of a run config into the SR cache")
    _add_profile(q)
    q.add_argument("--batch-size", type=int, default=32, help="images super-resolved at once")
    q.set_defaults(func=_cmd_sr_cache)

    from fer_study.models.backbones import STEMS
    from fer_study.tables import TABLES

    ru = sub.add_parser("run", help="run a table's grid (01_train via papermill, one process per run)")
    ru.add_argument("table", choices=[*TABLES, "all"],
                    help="which table's grid (all: Tables 1-4; the ferplus-cpu profile runs table2 only)")
    _add_profile(ru)
    ru.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds (default: 0 1 2 for demo and ferplus-cpu, 1111 for paper)")
    ru.add_argument("--dry-run", action="store_true", help="list the runs (and which are finished) without training")
    ru.add_argument("--retrain-stale", action="store_true",
                    help="retrain finished runs whose data or weights files changed since they were trained "
                         "(default: stop and list them)")
    ru.add_argument("--jobs", type=int, default=1, help="runs at once (CPU threads are split between them)")
    ru.add_argument("--devices", nargs="+", help="spread runs over these devices, one process each (e.g. cuda:0 cuda:1)")
    ru.add_argument("--executor", choices=["local", "workers", "slurm"], default="local",
                    help="local: one papermill process per run on this machine (the executed 01_train notebook is "
                         "kept in the run directory); workers: --jobs persistent Python processes on this machine "
                         "that train the runs in-process (no per-run notebook, about 10 s less start-up per run; "
                         "make demo uses it); slurm: one job per run (a job array) through submitit, requeued and "
                         "resumed on preemption or time-out; returns once submitted")
    ru.add_argument("--status", action="store_true",
                    help="show each planned run's state (run store), its newest manifest entry and job state")
    sl = ru.add_argument_group("Slurm (--executor slurm; job files and logs in RUNS_DIR/slurm/JOB_ID/)")
    sl.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    sl.add_argument("--gpus-per-run", type=int, help="GPUs of one run, one process each, DDP when > 1 (default 1)")
    sl.add_argument("--nodes", type=int, help="nodes of one run; --gpus-per-run is split evenly over them (default 1)")
    sl.add_argument("--time", type=int, metavar="MINUTES", help="wall time of one job (default 720)")
    sl.add_argument("--cpus-per-run", type=int, help="CPUs of a run on each node, split over its processes")
    sl.add_argument("--mem-gb", type=float, help="memory of a run on each node (GB)")
    sl.add_argument("--array-parallelism", type=int, help="runs of the array running at once (default 32)")
    sl.add_argument("--max-timeouts", type=int, help="requeues after time-outs (default 3; preemptions do not count)")
    sl.add_argument("--slurm-setup", action="append", metavar="LINE",
                    help="shell line run in the job before training (module load ..., source .venv/bin/activate); repeatable")
    sl.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                    help="any other submitit Slurm parameter (account=..., qos=..., constraint=...); repeatable")
    sl.add_argument("--wait", action="store_true", help="wait for the jobs; exit 1 if a run failed")
    ru.set_defaults(func=_cmd_run)

    rp = sub.add_parser("report", help="execute the table and figure notebooks over the trained runs",
                        description="Renders Tables 1-4 and Figure 2 from the runs the grid manifests list "
                        "(no overrides needed); with --set, from the run ids those overrides give.")
    _add_profile(rp)
    rp.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds to report (default: every seed the manifests list)")
    rp.set_defaults(func=_cmd_report)

    de = sub.add_parser("demo", help="the whole study on SynthFER, CPU-sized (make demo)")
    de.add_argument("--n", type=int, default=3000, help="SynthFER images (split 50/10/40: about 1,150 test images)")
    de.add_argument("--jobs", type=int, default=2, help="worker processes training runs at once (CPU threads split between them), "
                    "and report notebooks executed at once")
    de.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds of every grid cell (3: the fewest the significance test decides with)")
    de.add_argument("--sr-steps", type=int, default=500, help="facesr training steps")
    de.set_defaults(func=_cmd_demo)

    cp = sub.add_parser("compare", help="compare two results/tables directories (conclusions, means)",
                        description="Matches the rows of each table*.csv in A and B; prints every clean-protocol "
                        "mean with its change and every row's verdict against its baseline (+, -, n.s.: the "
                        "seed-aware test); exit 1 when a verdict changed or a mean moved by more than the "
                        "tolerance. E.g. the committed tables against a fresh clone's `make demo`.")
    cp.add_argument("a", help="first tables directory (e.g. results/tables of one clone)")
    cp.add_argument("b", help="second tables directory")
    cp.add_argument("--tolerance", type=float, default=3.0,
                    help="points a cell mean may move (default 3: the demo's stated tolerance)")
    cp.set_defaults(func=_cmd_compare)

    be = sub.add_parser("bench", help="throughput benchmark (writes results/bench/<device>-<date>.json/.md)")
    be.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    be.add_argument("--backbone", default="swin_s", help="backbone alias or timm name (same for both pipelines)")
    be.add_argument("--batch", type=int, default=64, help="images per training step")
    be.add_argument("--sr-size", type=int, default=384, help="size of the cached SR images")
    be.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    be.add_argument("--steps", type=int, default=10, help="timed blocks per pipeline (the median is reported)")
    be.add_argument("--block", type=int, help="training steps per timed block (default: 5 on CUDA, 1 on CPU)")
    be.add_argument("--compile", action="store_true", help="also time torch.compile (mode 'default')")
    be.add_argument("--compile-modes", nargs="+", metavar="MODE",
                    help="torch.compile modes to time besides eager (default, reduce-overhead, ...)")
    be.add_argument("--no-amp", action="store_true", help="fp32 throughout (default: bf16 autocast on CUDA and on CPUs with native bf16)")
    be.add_argument("--no-baseline", action="store_true", help="skip the authors'-style PNG/DataLoader baseline")
    be.add_argument("--baseline-images", type=int, default=256, help="SR PNGs the authors'-style baseline decodes")
    be.add_argument("--sr-backends", nargs="+", default=["bicubic"], help="SR cache build timings (bicubic, dic)")
    be.add_argument("--sr-images", type=int, default=64, help="images timed per SR backend")
    be.add_argument("--sr-batch", type=int, default=32, help="SR cache build batch size")
    be.add_argument("--dic-weights", help="time DIC with these weights (random weights cost the same)")
    be.add_argument("--stem", default="patch", choices=["patch", *STEMS], help="backbone stem")
    be.add_argument("--ltr-n", type=int, default=16, help="channels of the learn-to-resize CNN")
    be.add_argument("--out", default="results/bench", help="folder of the JSON/Markdown results")
    be.set_defaults(func=_cmd_bench)

    mo = sub.add_parser("model", help="model utilities")
    msub = mo.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    q = msub.add_parser("summary", help="parameter counts per part (sr, stn, resizer, backbone, head)")
    _add_profile(q)
    q.set_defaults(func=_cmd_model_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A user's mistake (:class:`~fer_study.errors.UserError`: a bad config value, bad
    data) is one line ``error: ...`` on stderr and exit code 2; a closed stdout (``| head``) ends quietly."""
    import os

    from fer_study.errors import UserError

    try:
        try:
            args = build_parser().parse_args(argv)
            return int(args.func(args) or 0)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as a shell reports a killed writer
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
