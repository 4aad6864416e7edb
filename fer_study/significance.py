"""Significance of a setting against its baseline that counts seeds as well as test images.

Pooling McNemar's discordant counts over seeds treats seeds as more test images: it ignores that a
re-run with other seeds gives other models, and calls differences "significant" that a re-run does
not reproduce. Here a difference must pass three intervals, and the table shows the widest:

- a **two-level paired bootstrap**: each replicate draws seeds with replacement and one sample of
  test images with replacement, shared by all drawn seeds (every seed is scored on the same test
  set, so the image effect is common to them) and by the setting and its baseline (paired); the
  95 % percentile interval of the mean accuracy difference over ``B`` replicates;
- a **t interval over the per-seed differences** (S - 1 degrees of freedom): with 3 seeds the
  bootstrap's seed level has 10 distinct draws and cannot be wider than the seeds' range, so the
  seed-to-seed variance is judged with Student's t;
- where a table makes several comparisons, a **t interval with the table's pooled seed variance**
  (:func:`adjust_family`): the per-seed differences' variance pooled over the table's comparisons,
  with their degrees of freedom added up. With 3 seeds one comparison's variance has 2 degrees of
  freedom and can come out near zero by chance; then its own t interval is narrow and the verdict does
  not survive a re-run. Measured: on a second float path the demo's Table 3 PDLS row's three vanilla
  seeds agreed to 0.05 points and its +1.33 was called significant (own t p = 0.013), against +1.03
  n.s. on the first (results/repro/2026-11-29_threads2_stnlr; this test was added after that
  observation, and can only make verdicts more conservative).

A difference is called significant only with at least :data:`MIN_SEEDS` seeds, every interval
excluding 0 and, where a table makes several comparisons, its **Holm-adjusted** p-value (Holm 1979,
step-down over the table's comparisons against their baselines, :func:`holm`) below :data:`ALPHA`: each
test alone errs 5 % of the time, so a table of 5 rows would call one "significant" by chance in
about one re-run in four; Holm keeps that chance (family-wise) at 5 %. The p-value shown is the largest
of the tests', then Holm's. The per-seed exact McNemar p-values are reported beside it, for
information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Fewer seeds cannot say whether a difference survives a re-run.
MIN_SEEDS = 3
#: Family-wise error rate of a table's verdicts (Holm).
ALPHA = 0.05
#: Bootstrap replicates and seed of the resampling (fixed: the table is a function of the runs).
REPLICATES = 4000
BOOTSTRAP_SEED = 20221

TEST_NAME = ("two-level paired bootstrap over seeds and test images, a t interval over per-seed differences and "
             "one with the seed variance pooled over the table's comparisons, Holm-adjusted over them (95% CI: "
             "the widest)")


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test: b = a right & b wrong, c = a wrong & b right."""
    from scipy.stats import binomtest

    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p": p}


@dataclass
class Comparison:
    """A setting against its baseline over matched seeds (accuracy differences in points)."""

    seeds: list[int]
    diff: float  # mean over seeds of (setting - baseline) accuracy, points
    per_seed: list[float]  # the difference of each seed, points
    # 95 %: the widest of the bootstrap, the seed-level t and (after adjust_family) the pooled t interval
    ci: tuple[float, float]
    p: float  # two-sided: the largest of those tests' (the CSV column "p (bootstrap)", a name kept from before)
    mcnemar_p: list[float] = field(default_factory=list)  # per seed, exact McNemar
    p_holm: float | None = None  # Holm-adjusted over the table's comparisons (None: compared alone)
    family: int = 1  # how many comparisons that adjustment covers

    @property
    def significant(self) -> bool:
        p = self.p if self.p_holm is None else self.p_holm
        return len(self.seeds) >= MIN_SEEDS and (self.ci[0] > 0 or self.ci[1] < 0) and p < ALPHA

    def label(self) -> str:
        """Table cell: difference, interval, p (and Holm's) and the verdict."""
        verdict = ("significant" if self.significant else
                   f"n.s. ({len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} < {MIN_SEEDS})"
                   if len(self.seeds) < MIN_SEEDS else "n.s.")
        holm_p = "" if self.p_holm is None else f" (Holm over {self.family}: {self.p_holm:.2g})"
        return f"{self.diff:+.2f} [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}] p={self.p:.2g}{holm_p} {verdict}"


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (in the input order): the k-th smallest of m becomes
    max over j <= k of min(1, (m - j + 1) p_(j))."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def pool_seed_variance(comparisons: list[Comparison]) -> None:
    """Widen each comparison's interval and raise its p to those of a t test with the seed variance
    pooled over ``comparisons`` (``sum((S_i - 1) var_i) / sum(S_i - 1)`` of the per-seed differences, with
    ``sum(S_i - 1)`` degrees of freedom); never narrows or lowers them. Nothing to pool (one comparison, or
    no seed variance at all) leaves them as they are."""
    if len(comparisons) < 2:
        return
    ss = [np.asarray(c.per_seed, dtype=np.float64) for c in comparisons]
    df = sum(len(x) - 1 for x in ss)
    var = sum(float(((x - x.mean()) ** 2).sum()) for x in ss) / df if df > 0 else 0.0
    if not np.isfinite(var) or var <= 0:  # NaN (an empty test set) would otherwise pass silently
        return
    from scipy.stats import t as student_t

    q = float(student_t.ppf(0.975, df))
    for c, x in zip(comparisons, ss):
        se = np.sqrt(var / len(x))
        p = float(2 * student_t.sf(abs(c.diff) / se, df))
        c.ci = (min(c.ci[0], c.diff - q * se), max(c.ci[1], c.diff + q * se))
        c.p = max(c.p, p)


def adjust_family(comparisons: list[Comparison]) -> None:
    """For a table's comparisons that have at least :data:`MIN_SEEDS` seeds (the others cannot be
    significant; counting them would make every verdict depend on how far a grid has got): the pooled
    seed-variance test (:func:`pool_seed_variance`), then ``p_holm`` and ``family``; a family of one is
    left as it is."""
    comparisons = [c for c in comparisons if len(c.seeds) >= MIN_SEEDS]
    if len(comparisons) < 2:
        return
    pool_seed_variance(comparisons)
    for c, p in zip(comparisons, holm([c.p for c in comparisons])):
        c.p_holm, c.family = p, len(comparisons)


def compare(correct_base: list[np.ndarray], correct_setting: list[np.ndarray], seeds: list[int],
            replicates: int = REPLICATES, rng_seed: int = BOOTSTRAP_SEED) -> Comparison:
    """Compare per-seed correctness vectors (one boolean array over the test images per seed, the
    same images in the same order for both) of a setting against its baseline."""
    if not seeds or len(correct_base) != len(seeds) or len(correct_setting) != len(seeds):
        raise ValueError("one correctness vector per seed for both the baseline and the setting")
    a = np.stack([np.asarray(c, dtype=np.float64) for c in correct_base])  # (S, N)
    b = np.stack([np.asarray(c, dtype=np.float64) for c in correct_setting])
    if a.shape != b.shape:
        raise ValueError(f"baseline and setting were scored on different test sets: {a.shape} vs {b.shape}")
    d = b - a  # per image and seed: -1, 0, 1
    per_seed = 100 * d.mean(axis=1)
    s, n = d.shape
    rng = np.random.default_rng(rng_seed)
    boot = np.empty(replicates)
    chunk = max(1, 2_000_000 // max(1, s * n))
    for lo in range(0, replicates, chunk):
        k = min(chunk, replicates - lo)
        si = rng.integers(0, s, size=(k, s))  # seeds drawn with replacement
        ii = rng.integers(0, n, size=(k, 1, n))  # one image sample per replicate, shared by its seeds
        boot[lo:lo + k] = 100 * d[si[:, :, None], ii].mean(axis=(1, 2))
    b_lo, b_hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    tail = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    p_boot = min(1.0, 2 * (tail + 1) / (replicates + 1))  # never 0: at most 1/(B+1) resolution
    mean = float(per_seed.mean())
    t_lo, t_hi, p_t = mean, mean, (1.0 if mean == 0 else 0.0)
    if s >= 2:
        from scipy.stats import t as student_t

        se = float(per_seed.std(ddof=1)) / np.sqrt(s)
        if se > 0:
            q = float(student_t.ppf(0.975, s - 1))
            t_lo, t_hi = mean - q * se, mean + q * se
            p_t = float(2 * student_t.sf(abs(mean) / se, s - 1))
    else:
        t_lo, t_hi, p_t = -np.inf, np.inf, 1.0
    mc = [mcnemar(a[k].astype(bool), b[k].astype(bool))["p"] for k in range(s)]
    return Comparison(list(seeds), mean, per_seed.round(4).tolist(), (min(b_lo, t_lo), max(b_hi, t_hi)),
                      max(p_boot, p_t), mc)
