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
    s = generate(out, SynthConfig(n=a.n, seed=a.seed, hr_size=a.hr_size, n_hr=a.n_hr, imbalance=a.imbalance))
    print(f"SynthFER: {a.n} images (seed {a.seed}) written to {out} in {time.perf_counter() - t:.1f} s")
    print("true classes: " + ", ".join(f"{k}={v}" for k, v in s["true_class_counts"].items()))
    if a.rafdb_layout:
        n = write_rafdb_layout(out, a.rafdb_layout, seed=a.seed)
        print(f"RAF-DB layout: {n} images written to {a.rafdb_layout}")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from fer_study.config import apply_overrides, make_config
    from fer_study.engine import train

    cfg = make_config(a.profile, a.set or [])
    if a.config:
        from fer_study.config import TrainConfig

        cfg = apply_overrides(TrainConfig.from_dict(json.loads(Path(a.config).read_text())), a.set or [])
    d = train(cfg, force=a.force)
    print(f"run directory: {d}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from fer_study.engine import load_metrics

    m = load_metrics(a.run)
    c, au = m["protocols"]["clean"], m["protocols"]["authors"]
    tag = " (SynthFER: synthetic data)" if m.get("synthetic") else ""
    print(f"{m['run_id']}{tag}, seed {m['seed']}, n={m['n']}")
    print(f"clean   : test acc {c['test_acc']:.4f}  mean-class {c['test_mean_class_acc']:.4f}  "
          f"(model of epoch {c['selected_epoch']}, valid acc {c['valid_acc']:.4f})")
    print(f"authors : test acc {au['test_acc']:.4f} (best epoch {au['best_epoch']} on test, random transform)")
    return 0


def _cmd_sr_train(a: argparse.Namespace) -> int:
    from fer_study.sr_train import folder_pairs, split_pairs, synthfer_pairs, train_facesr

    lr, hr = synthfer_pairs(a.data, 48 * a.scale) if a.folder is None else folder_pairs(a.folder, scale=a.scale)
    tr, _ = split_pairs(len(lr), a.holdout, a.seed)
    out = Path(a.out)
    if out.exists() and not a.force:
        print(f"{out} exists; use --force to retrain", file=sys.stderr)
        return 1
    info = train_facesr(lr[tr], hr[tr], out, steps=a.steps, batch_size=a.batch_size, seed=a.seed, nf=a.nf,
                        blocks=a.blocks)
    print(f"facesr written to {out}: {info}")
    return 0


def _cmd_sr_eval(a: argparse.Namespace) -> int:
    from fer_study.io import environment, write_json, write_text
    from fer_study.models.sr import SuperResolver
    from fer_study.sr_train import evaluate_sr, folder_pairs, split_pairs, synthfer_pairs

    lr, hr = synthfer_pairs(a.data, 48 * a.scale) if a.folder is None else folder_pairs(a.folder, scale=a.scale)
    _, ho = split_pairs(len(lr), a.holdout, a.seed)
    size = hr.shape[-1]
    resolvers = {"bicubic": SuperResolver("bicubic", out_size=size), "bilinear": SuperResolver("bilinear", out_size=size)}
    for spec in a.model:
        backend, _, w = spec.partition("=")
        resolvers[backend if backend not in resolvers else spec] = SuperResolver(backend, w or None, out_size=size)
    res = evaluate_sr(lr[ho], hr[ho], resolvers)
    data = "SynthFER (synthetic)" if a.folder is None else str(a.folder)
    out = {"data": data, "holdout_images": int(len(ho)), "lr_size": int(lr.shape[-1]), "hr_size": int(size),
           "results": res, "env": environment()}
    lines = [f"SR evaluation on {len(ho)} held-out images of {data} ({lr.shape[-1]} -> {size})", "",
             "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    lines += [f"| {k} | {v['psnr']:.2f} ± {v['psnr_std']:.2f} | {v['ssim']:.4f} ± {v['ssim_std']:.4f} |"
              for k, v in res.items()]
    print("\n".join(lines))
    if a.out:
        write_json(Path(a.out).with_suffix(".json"), out)
        write_text(Path(a.out).with_suffix(".md"), "\n".join(lines) + "\n")
        print(f"written: {Path(a.out).with_suffix('.json')} and .md")
    return 0


def _cmd_sr_cache(a: argparse.Namespace) -> int:
    from fer_study.config import make_config
    from fer_study.engine import load_splits, make_sr, select_device
    from fer_study.sr_cache import build_sr_cache

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
    from fer_study.config import apply_overrides, make_config
    from fer_study.experiments import run_grid

    extra = {}
    if a.set:
        apply_overrides(make_config(a.profile), a.set)  # validate the keys
        extra = dict(o.split("=", 1) for o in a.set)
    s = run_grid(a.table, a.profile, a.seeds, dry_run=a.dry_run, extra=extra, jobs=a.jobs, devices=a.devices)
    return 1 if s["failed"] else 0


REPORT_NOTEBOOKS = ("02_table1_backbones", "03_table2_ablation", "04_table3_losses", "05_table4_sota",
                    "06_figure2_resizer", "07_explore")


def execute_notebook(name: str, params: dict, log=print) -> bool:
    """Execute notebooks/NAME.ipynb in place with papermill (cwd notebooks/)."""
    import subprocess
    import time

    nb = Path("notebooks") / f"{name}.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(nb), str(nb), "--cwd", "notebooks", "-k", "python3",
           "--no-progress-bar"]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    ok = r.returncode == 0
    log(f"{'executed' if ok else 'FAILED'}: {nb} ({time.perf_counter() - t:.0f} s)")
    if not ok:
        log(r.stderr[-4000:])
    return ok


def _cmd_report(a: argparse.Namespace) -> int:
    seeds = " ".join(map(str, a.seeds))
    ok = True
    for name in REPORT_NOTEBOOKS:
        params = {"profile": a.profile, "seeds": seeds} if name[:2] in ("02", "03", "04", "05") else (
            {"profile": a.profile, "seed": a.seeds[0]} if name.startswith("06") else {})
        ok &= execute_notebook(name, params)
    print("tables: results/tables/table{1,2,3,4}.{csv,md,tex}; figure: figures/figure2.{png,pdf}")
    return 0 if ok else 1


def _cmd_demo(a: argparse.Namespace) -> int:
    """The whole study on SynthFER, CPU-sized (what `make demo` runs)."""
    import time

    from fer_study.data.synth import ensure, write_rafdb_layout
    from fer_study.experiments import run_grid

    t0 = time.perf_counter()
    seeds = a.seeds
    print(f"== 1/6 SynthFER ({a.n} images, seed 0) and its RAF-DB-layout twin")
    ensure("data/synthfer", n=a.n, seed=0)
    raf = Path("data/synthfer_rafdb")
    if not (raf / "basic" / "EmoLabel" / "list_patition_label.txt").exists():
        ensure(raf / "src", n=a.n, seed=1)
        write_rafdb_layout(raf / "src", raf / "basic", seed=1)
    print("== 2/6 facesr (x2) trained on SynthFER's renders, evaluated against bicubic")
    if not Path("cache/facesr/facesr.pt").exists():
        _cmd_sr_train(argparse.Namespace(data="data/synthfer", folder=None, scale=2, holdout=0.15, seed=0,
                                         out="cache/facesr/facesr.pt", steps=a.sr_steps, batch_size=16, nf=32,
                                         blocks=4, force=False))
    _cmd_sr_eval(argparse.Namespace(data="data/synthfer", folder=None, scale=2, holdout=0.15, seed=0,
                                    model=["facesr=cache/facesr/facesr.pt"], out="results/sr/facesr_eval_synthfer"))
    print("== 3/6 00_data")
    ok = execute_notebook("00_data", {"synth_n": a.n})
    print(f"== 4/6 Tables 1-4 on the demo profile, seeds {seeds} (one papermill process per run)")
    s = run_grid("all", "demo", seeds, jobs=a.jobs)
    print("== 5/6 tables and Figure 2")
    ok &= _cmd_report(argparse.Namespace(profile="demo", seeds=seeds)) == 0
    print(f"== 6/6 done in {time.perf_counter() - t0:.0f} s")
    print("written: results/tables/table{1,2,3,4}.{csv,md,tex}, figures/figure2.{png,pdf}, figures/data_*.png, "
          "results/sr/facesr_eval_synthfer.{json,md}, notebooks/*.ipynb (executed), results/runs/ (per run)")
    print("All demo numbers are on SynthFER (synthetic) with CPU-sized models; the paper's numbers are shown beside them.")
    return 0 if ok and not s["failed"] else 1


def _cmd_bench(a: argparse.Namespace) -> int:
    from fer_study.bench import BenchConfig, run_bench
    from fer_study.engine import select_device

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
    p.add_argument("--profile", choices=["demo", "paper"], default="demo",
                   help="demo: SynthFER + CPU-sized models; paper: the paper's configuration")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value (model keys as model.KEY), repeatable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-study", description=(
        "Reproducible study of 'Vision Transformer Equipped with Neural Resizer on FER' (ICASSP 2022)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="data sets: counts, PDLS priors, SynthFER generation")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("counts", help="per-split and per-class image counts")
    c.add_argument("--dataset", choices=["ferplus", "rafdb"], required=True)
    c.add_argument("--root", help="data root (FERPlus: fer2013*.csv or FER2013Train/...; RAF-DB: basic/)")
    c.add_argument("--labels", help="RAF-DB: path of list_patition_label.txt (instead of ROOT/EmoLabel/...)")
    c.add_argument("--label-mode", default="majority",
                   choices=["majority", "probability", "crossentropy", "multi_target"],
                   help="FERPlus label mode for train (valid/test always majority)")
    c.add_argument("--classes", type=int, default=8, choices=[7, 8], help="FERPlus: 8 or 7 (contempt dropped)")
    c.add_argument("--vote-source", default="auto", choices=["auto", "label.csv", "fer2013new.csv"],
                   help="FERPlus folder form: where the votes come from")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_cmd_data_counts)

    pr = dsub.add_parser("prior", help="print (and save) a PDLS prior distribution d")
    pr.add_argument("--source", choices=["psr", "votes", "rafdb"], default="psr",
                    help="psr: the published FERPlus constant; votes: recompute from --root; rafdb: re-indexed")
    pr.add_argument("--root", help="FERPlus root for --source votes")
    pr.add_argument("--renormalise", action="store_true", help="rafdb: renormalise rows after dropping contempt")
    pr.add_argument("--out", help="write the prior as JSON here")
    pr.set_defaults(func=_cmd_data_prior)

    sy = dsub.add_parser("synth", help="generate the SynthFER data set (FERPlus formats)")
    sy.add_argument("--out", required=True)
    sy.add_argument("--n", type=int, default=2000)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--hr-size", type=int, default=192, help="render size of the high-resolution faces")
    sy.add_argument("--n-hr", type=int, default=None, help="how many HR renders to keep (default min(n, 3000))")
    sy.add_argument("--imbalance", type=float, default=1.0, help="exponent on FERPlus class frequencies")
    sy.add_argument("--rafdb-layout", help="also write an official-layout RAF-DB tree here")
    sy.add_argument("--force", action="store_true", help="overwrite an existing SynthFER folder")
    sy.set_defaults(func=_cmd_data_synth)

    tr = sub.add_parser("train", help="train one run (resumes an interrupted run, skips a finished one)")
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
        q.add_argument("--scale", type=int, default=2, help="SR factor (48 -> 48*scale)")
        q.add_argument("--holdout", type=float, default=0.15, help="held-out fraction")
        q.add_argument("--seed", type=int, default=0)
        q.set_defaults(func=fn)
    q = ssub.choices["train"]
    q.add_argument("--out", default="cache/facesr/facesr.pt")
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--nf", type=int, default=32)
    q.add_argument("--blocks", type=int, default=4)
    q.add_argument("--force", action="store_true")
    q = ssub.choices["eval"]
    q.add_argument("--model", action="append", default=[], metavar="BACKEND=WEIGHTS",
                   help="an SR model to compare, e.g. facesr=cache/facesr/facesr.pt (repeatable)")
    q.add_argument("--out", help="write OUT.json and OUT.md")
    q = ssub.add_parser("cache", help="super-resolve every split of a run config into the SR cache")
    _add_profile(q)
    q.add_argument("--batch-size", type=int, default=32)
    q.set_defaults(func=_cmd_sr_cache)

    ru = sub.add_parser("run", help="run a table's grid (01_train via papermill, one process per run)")
    ru.add_argument("table", choices=["table1", "table2", "table3", "table4", "all"])
    ru.add_argument("--profile", choices=["demo", "paper"], default="demo")
    ru.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ru.add_argument("--dry-run", action="store_true", help="list the runs (and which are finished) without training")
    ru.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra override for every run (e.g. data_root=...)")
    ru.add_argument("--jobs", type=int, default=1, help="runs at once (CPU threads are split between them)")
    ru.add_argument("--devices", nargs="+", help="spread runs over these devices, one process each (e.g. cuda:0 cuda:1)")
    ru.set_defaults(func=_cmd_run)

    rp = sub.add_parser("report", help="execute the table and figure notebooks (02-07) over finished runs")
    rp.add_argument("--profile", choices=["demo", "paper"], default="demo")
    rp.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    rp.set_defaults(func=_cmd_report)

    de = sub.add_parser("demo", help="the whole study on SynthFER, CPU-sized (make demo)")
    de.add_argument("--n", type=int, default=1500, help="SynthFER images")
    de.add_argument("--jobs", type=int, default=3, help="training runs at once (overlaps kernel start-up)")
    de.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    de.add_argument("--sr-steps", type=int, default=200, help="facesr training steps")
    de.set_defaults(func=_cmd_demo)

    be = sub.add_parser("bench", help="throughput benchmark (writes results/bench/<device>-<date>.json/.md)")
    be.add_argument("--device", default="auto")
    be.add_argument("--backbone", default="swin_s", help="backbone alias or timm name (same for both pipelines)")
    be.add_argument("--batch", type=int, default=64)
    be.add_argument("--sr-size", type=int, default=384, help="size of the cached SR images")
    be.add_argument("--warmup", type=int, default=3)
    be.add_argument("--steps", type=int, default=10, help="timed blocks per pipeline (the median is reported)")
    be.add_argument("--block", type=int, help="training steps per timed block (default: 5 on CUDA, 1 on CPU)")
    be.add_argument("--compile", action="store_true", help="also time torch.compile (mode 'default')")
    be.add_argument("--compile-modes", nargs="+", metavar="MODE",
                    help="torch.compile modes to time besides eager (default, reduce-overhead, ...)")
    be.add_argument("--no-amp", action="store_true", help="fp32 throughout (default: bf16 autocast on CUDA and on CPUs with native bf16)")
    be.add_argument("--no-baseline", action="store_true", help="skip the authors'-style PNG/DataLoader baseline")
    be.add_argument("--baseline-images", type=int, default=256)
    be.add_argument("--sr-backends", nargs="+", default=["bicubic"], help="SR cache build timings (bicubic, dic)")
    be.add_argument("--sr-images", type=int, default=64, help="images timed per SR backend")
    be.add_argument("--sr-batch", type=int, default=32, help="SR cache build batch size")
    be.add_argument("--dic-weights", help="time DIC with these weights (random weights cost the same)")
    be.add_argument("--stem", default="patch", choices=["patch", "conv"])
    be.add_argument("--ltr-n", type=int, default=16)
    be.add_argument("--out", default="results/bench")
    be.set_defaults(func=_cmd_bench)

    mo = sub.add_parser("model", help="model utilities")
    msub = mo.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    q = msub.add_parser("summary", help="parameter counts per part (sr, stn, resizer, backbone, head)")
    _add_profile(q)
    q.set_defaults(func=_cmd_model_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fer_study.errors import DataError

    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
