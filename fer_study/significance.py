"""Significance of a setting against its baseline that counts seeds as well as test images.

Pooling McNemar's discordant counts over seeds treats seeds as more test images: it ignores that a
re-run with other seeds gives other models, and calls differences "significant" that a re-run does
not reproduce. The decision here is a **two-level (hierarchical) paired bootstrap**: each replicate
draws seeds with replacement, then, for each drawn seed, test images with replacement (the same
images for the setting and its baseline: paired), and averages the accuracy difference. The 95 %
percentile interval and a two-sided bootstrap p-value come from ``B`` replicates. A difference is
called significant only with at least :data:`MIN_SEEDS` seeds and an interval that excludes 0.
The per-seed exact McNemar p-values are reported beside it, for information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Fewer seeds cannot say whether a difference survives a re-run.
MIN_SEEDS = 3
#: Bootstrap replicates and seed of the resampling (fixed: the table is a function of the runs).
REPLICATES = 4000
BOOTSTRAP_SEED = 20221

TEST_NAME = "two-level paired bootstrap over seeds and test images (95% CI)"


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
    ci: tuple[float, float]  # 95 % two-level bootstrap interval, points
    p: float  # two-sided bootstrap p-value
    mcnemar_p: list[float] = field(default_factory=list)  # per seed, exact McNemar

    @property
    def significant(self) -> bool:
        return len(self.seeds) >= MIN_SEEDS and (self.ci[0] > 0 or self.ci[1] < 0)

    def label(self) -> str:
        """Table cell: difference, interval, p and the verdict."""
        verdict = ("significant" if self.significant else
                   f"n.s. ({len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} < {MIN_SEEDS})"
                   if len(self.seeds) < MIN_SEEDS else "n.s.")
        return f"{self.diff:+.2f} [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}] p={self.p:.2g} {verdict}"


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
        ii = rng.integers(0, n, size=(k, s, n))  # then images, per drawn seed
        boot[lo:lo + k] = 100 * d[si[:, :, None], ii].mean(axis=(1, 2))
    lo_ci, hi_ci = np.percentile(boot, [2.5, 97.5])
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    mc = [mcnemar(a[k].astype(bool), b[k].astype(bool))["p"] for k in range(s)]
    return Comparison(list(seeds), float(per_seed.mean()), per_seed.round(4).tolist(), (float(lo_ci), float(hi_ci)),
                      p, mc)
