"""Tables 1-4 from the runs that were trained: our numbers (mean ± std over seeds, n), the paper's
numbers in adjacent columns, both protocols, and paired significance against each cell's baseline.

Which runs: with ``overrides`` (the same ``--set`` values given to ``fer-study run``) the run ids
are derived exactly as the runner derived them; without, the grid manifests of the profile say
which run filled each cell for each seed (the newest manifest that lists the cell wins), so the
report needs no overrides. Only finished runs (metrics and model present) are reported, and only
while their data and weights files are those they were trained on (:mod:`fer_study.inputs`).

Significance: :mod:`fer_study.significance` (a two-level bootstrap over seeds and test images of the
clean-protocol accuracy difference against the cell's baseline), per-seed McNemar beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fer_study.compare import DID_NOT_LEARN
from fer_study.config import PROFILE_BACKBONE_RECIPES, make_config
from fer_study.exports import (  # noqa: F401 - the export API, re-exported for notebooks and tests
    Value,
    accuracy_columns,
    export,
    latex_escape,
    table_caption,
    to_csv_frame,
    to_latex,
    to_markdown,
    with_units,
)
from fer_study.inputs import StaleRunError, run_inputs, stale_message
from fer_study.paths import rooted
from fer_study.runs import Run, RunStore
from fer_study.significance import ALPHA, MIN_SEEDS, TEST_NAME, Comparison, adjust_family, compare, mcnemar  # noqa: F401 - mcnemar re-exported
from fer_study.tables import (
    DEMO_BACKBONE,
    FERPLUS_CPU_BACKBONE,
    PROFILE_BACKBONES,
    TABLES,
    Cell,
    TableSpec,
    cell_applies,
    cell_config,
)


def as_seeds(seeds: object) -> list[int]:
    """Seeds as given by a notebook parameter or the CLI: ``[0, 1]``, ``0``, ``"0 1"``, ``"0,1"``, ``None``/``[]``
    (= every seed the manifests list)."""
    if seeds is None or seeds == "" or seeds == []:
        return []
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        return [int(s) for s in seeds.replace(",", " ").split()]
    return [int(s) for s in seeds]  # type: ignore[union-attr]


def store_for(profile: str, overrides: list[str] | None = None) -> RunStore:
    """The run store of ``profile`` (``runs_dir`` may be overridden)."""
    return RunStore.of(make_config(profile, [o for o in overrides or [] if o.startswith("runs_dir=")]))


@dataclass
class CellRuns:
    """The finished runs of one cell, one per seed."""

    seeds: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    clean: list[float] = field(default_factory=list)
    authors: list[float] = field(default_factory=list)
    dataset: str | None = None
    unverified: list[str] = field(default_factory=list)  # runs without inputs.json (older versions)
    collapsed: list[tuple[int, str, float, str]] = field(default_factory=list)  # (seed, class, share, run id)

    def run_of(self, seed: int) -> Run:
        return self.runs[self.seeds.index(seed)]


#: A run whose clean-protocol test predictions fall in one class for at least this share of the test
#: images has not learned (the majority-class plateau of a from-scratch transformer; with an STN, usually
#: its warp ran away into the padding: ``stn_lr_scale``): its table says so.
COLLAPSE_SHARE = 0.98


def one_class_share(confusion: list[list[int]]) -> tuple[int, float]:
    """The most predicted class of a confusion matrix (rows = true, columns = predicted) and the share
    of all predictions that fall in it."""
    cols = np.asarray(confusion, dtype=np.int64).sum(0)
    k = int(cols.argmax())
    return k, float(cols[k] / max(1, cols.sum()))


def resolve(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, dict[int, Run]]:
    """cell key -> {seed: run} for the cells of ``spec`` (finished or not)."""
    store = store_for(profile, overrides)
    overrides = [o for o in overrides or [] if not o.startswith("runs_dir=")]
    seeds = list(seeds or [])
    cells = [c for c in spec.cells if cell_applies(c, profile, overrides)]
    out: dict[str, dict[int, Run]] = {c.key: {} for c in cells}
    if overrides:
        for c in cells:
            for s in seeds or [make_config(profile).seed]:
                out[c.key][s] = store.run_for(cell_config(c, profile, s, overrides + [f"runs_dir={store.root}"]))
        return out
    manifests = store.manifests(profile)
    for c in cells:
        label = f"{spec.name}:{c.key}"
        for m in manifests:
            for r in m.runs:
                if label in r.cells and (not seeds or r.seed in seeds) and r.seed not in out[c.key]:
                    out[c.key][r.seed] = store.run(r.run_id)
        for s in seeds:  # no manifest lists it: the run id of the profile's defaults
            if s not in out[c.key]:
                out[c.key][s] = store.run_for(cell_config(c, profile, s))
    if not seeds and not manifests:
        s = make_config(profile).seed
        for c in cells:
            out[c.key][s] = store.run_for(cell_config(c, profile, s))
    return out


def collect(spec: TableSpec, profile: str, seeds: list[int] | None = None,
            overrides: list[str] | None = None) -> dict[str, CellRuns]:
    """Both protocols' accuracies (%) of the finished runs of each cell, per seed."""
    res: dict[str, CellRuns] = {}
    fingerprints: dict = {}
    for key, by_seed in resolve(spec, profile, seeds, overrides).items():
        cr = CellRuns()
        for s in sorted(by_seed):
            run = by_seed[s]
            if not run.is_finished():
                continue
            changed = run.input_changes(run_inputs(rooted(run.config()), fingerprints))
            if run.inputs() is None:  # trained before inputs were recorded: reported, marked unverified
                cr.unverified.append(run.run_id)
            elif changed:
                raise StaleRunError(stale_message(run.run_id, changed, f"It fills {spec.name} {key}, seed {s}; "
                                                  "retrain it (fer-study run ... --retrain-stale) or restore the "
                                                  "inputs before reporting."))
            m = run.metrics()
            cr.seeds.append(s)
            cr.runs.append(run)
            cr.clean.append(100 * m["protocols"]["clean"]["test_acc"])
            auth = (m["protocols"].get("authors") or {}).get("test_acc")
            if auth is not None:  # None: trained with authors_protocol=false
                cr.authors.append(100 * auth)
            k, share = one_class_share(m["protocols"]["clean"]["confusion"])
            if share >= COLLAPSE_SHARE:
                classes = m.get("classes") or []
                cr.collapsed.append((s, classes[k] if k < len(classes) else str(k), share, run.run_id))
            cr.dataset = (("SynthFER (synthetic)" if m["dataset"] == "synthfer" else
                           f"SynthFER (synthetic, {m['dataset']} layout)") if m.get("synthetic") else m["dataset"])
        res[key] = cr
    return res


def _fmt(vals: list[float], seeds: list[int] | None = None) -> str:
    """Accuracies (%) of one cell over seeds: ``mean ± std (n=k)``, with mean, std, n and the value of
    each seed (``seeds``, in the order of ``vals``) kept for the numeric CSV."""
    if not vals:
        return "–"
    names = [f"seed {s}" for s in seeds] if seeds is not None and len(seeds) == len(vals) else \
        [f"run {k + 1}" for k in range(len(vals))]
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    fields = {"mean (%)": round(mean, 4), "std (%)": None if std is None else round(std, 4), "n": len(vals),
              **{f"{k} (%)": round(float(v), 4) for k, v in zip(names, vals)}}
    if std is None:
        return Value(f"{mean:.2f} (n=1)", fields, latex=f"{mean:.2f}")
    return Value(f"{mean:.2f} ± {std:.2f} (n={len(vals)})", fields, latex=f"{mean:.2f} ± {std:.2f}")


def _paired(a: CellRuns, b: CellRuns) -> str | Comparison:
    """``b`` against baseline ``a`` over the seeds both have (:func:`fer_study.significance.compare`:
    the accuracy difference, its two-level bootstrap interval over seeds and test images, and the
    verdict; per-seed McNemar p-values in brackets)."""
    common = [s for s in a.seeds if s in b.seeds]
    if not common:
        return "–"
    if a.run_of(common[0]).run_id == b.run_of(common[0]).run_id:
        return "same run"
    ca, cb = [], []
    for s in common:
        ya, pa = a.run_of(s).predictions()
        yb, pb = b.run_of(s).predictions()
        if not np.array_equal(ya, yb):
            from fer_study.errors import RunError

            raise RunError(f"runs {a.run_of(s).run_id} and {b.run_of(s).run_id} (seed {s}) were tested on different "
                           "images or labels: they cannot be compared image by image")
        ca.append(pa == ya)
        cb.append(pb == yb)
    return compare(ca, cb, common)  # its cell is written once the table's others are known (Holm)


def _comparison_value(c: Comparison) -> Value:
    fields: dict[str, float | int | str | None] = {
        "diff (points)": round(c.diff, 4), "CI low (points)": round(c.ci[0], 4), "CI high (points)": round(c.ci[1], 4),
        "p (bootstrap)": round(c.p, 6), "p Holm": None if c.p_holm is None else round(c.p_holm, 6),
        "significant": int(c.significant), "seeds": len(c.seeds),
        **{f"McNemar p seed {s}": round(p, 6) for s, p in zip(c.seeds, c.mcnemar_p)}}
    verdict = "*" if c.significant else ""
    return Value(f"{c.label()}; McNemar per seed p={', '.join(f'{p:.2g}' for p in c.mcnemar_p)}", fields,
                 latex=f"{c.diff:+.2f} [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]{verdict}")


def _finish_comparisons(recs: list[dict]) -> None:
    """Judge a table's comparisons together (:func:`fer_study.significance.adjust_family`: the pooled
    seed-variance test, then Holm) and write their cells."""
    pending = [(r, k) for r in recs for k, v in r.items() if isinstance(v, Comparison)]
    adjust_family([r[k] for r, k in pending])
    for r, k in pending:
        r[k] = _comparison_value(r[k])


def _pairs(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    first = next(iter(spec.cells[0].labels))
    groups: dict[str, list[Cell]] = {}
    for c in spec.cells:
        groups.setdefault(c.labels[first], []).append(c)
    recs = []
    for name, cells in groups.items():
        rec: dict[str, str] = {first: name}
        for c in cells:
            rec[f"{c.column}: ours clean"] = _fmt(res[c.key].clean, res[c.key].seeds)
            rec[f"{c.column}: ours authors'"] = _fmt(res[c.key].authors, res[c.key].seeds)
            rec[f"{c.column}: paper"] = f"{c.paper:.2f}"
        for c in cells:
            if c.baseline:
                base = spec.cell(c.baseline)
                rec[f"{c.column} vs {base.column}: Δ clean [95% CI]"] = _paired(res[base.key], res[c.key])
        recs.append(rec)
    return recs


def _gap(res: dict[str, CellRuns], key: str, base: str, oracle: str) -> str:
    """Fraction of the gap between the baseline and the oracle that ``key`` recovers, over the seeds all
    three have; "–" unless the oracle is ahead of the baseline by more than 1 point (a smaller gap
    makes the fraction noise)."""
    common = [s for s in res[base].seeds if s in res[oracle].seeds and s in res[key].seeds]
    if not common:
        return "–"

    def mean(k: str) -> float:
        return float(np.mean([res[k].clean[res[k].seeds.index(s)] for s in common]))

    a, o, x = mean(base), mean(oracle), mean(key)
    if o - a <= 1.0:
        return "–"
    return f"{(x - a) / (o - a):.2f}"


def _rows(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    recs = []
    cells = [c for c in spec.cells if c.key in res]
    base = next(b for b in cells if b.baseline is None)
    oracle = "oracle" if "oracle" in res else None
    for c in cells:
        rec = {**c.labels, "Acc. ours clean": _fmt(res[c.key].clean, res[c.key].seeds),
               "Acc. ours authors'": _fmt(res[c.key].authors, res[c.key].seeds),
               "Acc. paper": "–" if c.paper is None else f"{c.paper:.2f}",
               f"vs ({base.key}): Δ clean [95% CI]": "baseline" if c.baseline is None else
               _paired(res[c.baseline], res[c.key])}
        if oracle:
            rec[f"gap ({base.key})→oracle recovered"] = _gap(res, c.key, base.key, oracle)
        recs.append(rec)
    return recs


def _sota(spec: TableSpec, res: dict[str, CellRuns]) -> list[dict]:
    recs = [{"Type": t, "Method": meth, "FERPlus": "–" if fp is None else f"{fp:.2f}",
             "RAF-DB": "–" if rf is None else f"{rf:.2f}", "Source": "cited in the paper"}
            for t, meth, fp, rf in spec.cited]
    fer, raf = spec.cells
    recs.append({"Type": "Transformer", "Method": "ours (paper)", "FERPlus": f"{fer.paper:.2f}",
                 "RAF-DB": f"{raf.paper:.2f}*", "Source": "paper (* Swin-L)"})
    for proto in ("clean", "authors"):
        tag = {"clean": "clean", "authors": "authors'"}[proto]
        data = [d for d in (res[fer.key].dataset, res[raf.key].dataset) if d]
        dl = f" on {' / '.join(dict.fromkeys(data))}" if data else ""
        recs.append({"Type": "Transformer", "Method": f"ours (this study, {tag}{dl})",
                     "FERPlus": _fmt(getattr(res[fer.key], proto), res[fer.key].seeds), "RAF-DB": _fmt(getattr(res[raf.key], proto), res[raf.key].seeds),
                     "Source": "run store (this study)"})
    return recs


LAYOUTS = {"pairs": _pairs, "rows": _rows, "sota": _sota}


def _recipe_note(profile: str, overrides: list[str] | None, res: dict[str, CellRuns] | None = None,
                 spec: TableSpec | None = None) -> str:
    """What a CPU-scale profile trained: read from the config of a run in the table (else from the
    profile with the report's overrides), not restated by hand."""
    configs = [r.config() for v in (res or {}).values() for r in v.runs]
    # the most common recipe; stand-ins that train longer (config.PROFILE_BACKBONE_RECIPES) named after it
    c = max(configs, key=lambda x: sum(y.epochs == x.epochs for y in configs)) if configs else \
        make_config(profile, [o for o in overrides or [] if not o.startswith("runs_dir=")])
    maps = ", ".join(f"{k}→{v}" for k, v in PROFILE_BACKBONES[profile].items())
    m = c.model
    stem = {"conv": "a conv stem", "conv_wide": "a wide conv stem"}.get(m.stem, f"stem {m.stem}")
    opt = {"adamw": "AdamW", "adam": "Adam"}.get(c.optimizer, c.optimizer)
    others = sorted({(x.model.backbone, x.epochs) for x in configs if x.epochs != c.epochs}) if configs else \
        sorted((b, r["epochs"]) for b, r in PROFILE_BACKBONE_RECIPES.get(profile, {}).items() if "epochs" in r)
    also = f"; {', '.join(f'{b} {e} epochs' for b, e in others)}" if others else ""
    stn = any(x.model.stn for x in configs) if configs else \
        spec is None or any(cell.overrides.get("model.stn") is True for cell in spec.cells)
    stn_lr = f" (STN {c.lr * c.stn_lr_scale:g})" if stn and c.stn_lr_scale != 1.0 else ""
    train = f"{c.epochs} epochs of batch {c.batch_size} ({opt} lr {c.lr:g}{stn_lr}, {c.schedule}{also})"
    sr = f"{c.sr_backend} x{m.sr_size // m.input_size} ({m.input_size}->{m.sr_size}) instead of DIC x8 (48->384)"
    if PROFILE_BACKBONES[profile] is DEMO_BACKBONE:
        return (f"DEMO: SynthFER and CPU-sized random-init stand-ins ({maps}) with {stem} at {m.img_size} px, "
                f"{train}; {sr}; LTR n={m.ltr_n}. These numbers say nothing about real FER accuracy.")
    if c.sr_backend == "facesr":
        sr += f", trained self-supervised on the training faces (weights {c.sr_weights})"
    name = {"ferplus": "FERPlus", "rafdb": "RAF-DB"}.get(c.dataset, c.dataset)
    return (f"CPU SCALE: real {name} ({c.label_mode} labels), random-init stand-ins ({maps}) with {stem} at "
            f"{m.img_size} px, no pretraining, {train}; {sr}; LTR n={m.ltr_n}. Not a reproduction of the paper's "
            "numbers (pretrained Swin, DIC, 100 epochs).")


def build_table(table: str, profile: str, seeds: object = None,
                overrides: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Render ``table`` from its runs (see the module docstring for which runs)."""
    spec = TABLES[table]
    seeds_l = as_seeds(seeds)
    res = collect(spec, profile, seeds_l, overrides)
    found = sorted({s for r in res.values() for s in r.seeds})
    datasets = sorted({v.dataset for v in res.values() if v.dataset})
    recs = LAYOUTS[spec.layout](spec, res)
    _finish_comparisons(recs)
    df = pd.DataFrame(recs, dtype=object)  # object: cells keep their numbers (Value)
    notes = [f"{table}: profile `{profile}`, seeds {seeds_l or found} (finished runs found for seeds {found}).",
             f"Our data: {', '.join(datasets) or 'no finished runs yet'}. Paper numbers: real FERPlus/RAF-DB, "
             "copied from the paper, shown beside ours, never computed here.",
             "Protocols: clean = model chosen on validation, deterministic transform, full test set; authors' = best "
             "test epoch under the random training transform (optimistic; the authors' code)."
             + ("" if any(v.authors for v in res.values()) or not any(v.runs for v in res.values()) else
                " The authors' protocol was not run for these runs (authors_protocol=false: no test pass per "
                "epoch), hence its – cells."),
             f"Significance: {TEST_NAME}, for the clean-protocol accuracy difference (points) against the row's "
             f"baseline over matched seeds; significant only with >= {MIN_SEEDS} seeds, an interval excluding "
             f"0 and a Holm-adjusted p below {ALPHA:g} over the table's comparisons (so that a table's verdicts "
             "together err at most 5 % of the time: a difference that should survive a re-run). Per-seed exact "
             "McNemar p-values for information: they count test images only."]
    # a note about the SynthFER-only oracle row only where that row is in the table
    notes += [n for n in spec.notes if "oracle" in res or not n.startswith("oracle")]
    unverified = sorted({r for v in res.values() for r in v.unverified})
    if unverified:
        notes.append(f"Inputs unverified: {len(unverified)} run(s) were trained before fer-study recorded the "
                     "fingerprints of their data and weights (inputs.json), so nothing shows they match the files "
                     f"now ({', '.join(unverified[:3])}{' ...' if len(unverified) > 3 else ''}).")
    collapsed = [f"{key} seed {s} ({100 * share:.1f} % '{cls}')" for key, v in res.items() for s, cls, share, _ in v.collapsed]
    if collapsed:  # a run that fills two cells (e.g. a table's oracle row and (d)) is counted once, listed per cell
        n_runs = len({rid for v in res.values() for *_, rid in v.collapsed})
        notes.append(f"{DID_NOT_LEARN}: {n_runs} run(s) predict one class for at least {100 * COLLAPSE_SHARE:g} % "
                     f"of the test images (the majority-class plateau): {'; '.join(collapsed)}. They are kept in "
                     "the cells' means, standard deviations and tests as measured, not dropped or re-run.")
    if PROFILE_BACKBONES.get(profile) in (DEMO_BACKBONE, FERPLUS_CPU_BACKBONE):
        notes.insert(1, _recipe_note(profile, overrides, res, spec))
    return df, "\n".join(notes)


def figure_run(figure: str, profile: str, seeds: object = None, overrides: list[str] | None = None) -> Run:
    """The finished run a figure draws (its source cell, first seed with a finished run)."""
    from fer_study.tables import FIGURES

    spec = FIGURES[figure]
    if spec.source is None:
        raise ValueError(f"{figure} draws no single run")
    table, key = spec.source
    by_seed = resolve(TABLES[table], profile, as_seeds(seeds), overrides)[key]
    for s in sorted(by_seed):
        if by_seed[s].is_finished():
            return by_seed[s]
    from fer_study.errors import RunError

    raise RunError(f"{figure} draws {table} cell {key!r}, which has no finished run for profile {profile!r} "
                   f"(seeds {sorted(by_seed) or 'none planned'}); train it first: fer-study run {table} --profile {profile}")
