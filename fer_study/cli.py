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
