"""Paired comparisons of classifiers on a shared test set: pure numpy/scipy, no pandas.

Data layout. A classifier's results are an integer array ``counts[unit, seed]``: how many of the
unit's test rows it got right with that seed. A unit is the independent thing that was sampled: an
IMDB review (1 row), or a tail-probe verdict (its rows at the three positions move together).
Accuracies and differences are integer sums divided once at the end, so ties are exact.

Bootstrap. Test units and seeds are both random, so each draw resamples units *and* seeds with
replacement, independently (the "pigeonhole" bootstrap, Owen 2007, Ann. Appl. Stat.). Both
classifiers of a comparison get the same draw (paired). A draw is a pair of multiplicity vectors
``w`` (over units, sums to N) and ``c`` (over seeds, sums to K); the resampled total of a
classifier is ``w @ counts @ c``, so ``n_boot`` draws cost two small matrix products.

- difference: accuracy(a) - accuracy(b) on the data as observed;
- 95% CI: the 2.5% and 97.5% percentiles of the bootstrap differences;
- p-value (two-sided, percentile): ``p = min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (n_boot + 1))``,
  i.e. twice the bootstrap mass on the far side of zero, with the usual +1 so that p >= 2/(n_boot+1).
  p < 0.05 exactly when 0 lies outside the percentile CI (up to the +1), so the CI and p never disagree.
  Draws equal to zero count on both sides (conservative for ties).

Calibration (tests/test_stats.py and a wider simulation). The pigeonhole bootstrap counts the
unit × seed interaction (a seed's head flipping some units) about three times and the pure seed
effect (a seed shifting all units) (K-1)/K times, with only K-1 degrees of freedom behind it. With the
committed runs' structure (3-34% of units flip between seeds; whole-seed shifts of at most about
2 points SD) it rejects 1-5% of the time at alpha = 0.05 under a true difference of zero: about 1%
where flips dominate, 3.5-5% where fixed unit effects or whole-seed shifts do. It becomes liberal
where whole-seed shifts dominate and few units flip (shifts of about 3 points SD, 8% flips: 9%
rejections with 3 seeds); more seeds are the remedy.

Beside it, an exact McNemar test per seed (``sign_test``): over units, b = units where a got more
rows right than b, c = the reverse; two-sided exact binomial test of b against b + c with p = 1/2.
For one-row units this is McNemar's exact test; for verdicts it is its sign-test generalisation,
which respects the clustering. Holm's step-down adjustment (``holm``) controls the family-wise error.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import binom

ALPHA = 0.05


class Resampler:
    """``n_boot`` joint draws over ``n_units`` units and ``n_seeds`` seeds, fixed by ``seed``.

    Draws are made in blocks (each from its own generator, seeded by ``(seed, block)``) so that memory
    stays bounded for large test sets; every call to :meth:`totals` sees the same draws, and two
    resamplers of the same shape and seed share them.
    """

    def __init__(self, n_units: int, n_seeds: int, n_boot: int = 10_000, seed: int = 0):
        self.n_units, self.n_seeds, self.n_boot, self.seed = n_units, n_seeds, n_boot, seed

    def totals(self, counts: np.ndarray) -> np.ndarray:
        """Resampled totals of ``counts[unit, seed]`` (shape (n_boot,)), or of a stack
        ``counts[classifier, unit, seed]`` (shape (n_boot, classifiers)), all on the same draws.
        Exact integers, held as float64."""
        counts = np.asarray(counts)
        stack = counts if counts.ndim == 3 else counts[None]
        for c in stack:
            _check(c, self.n_units, self.n_seeds)
        # float32 products are exact while every partial sum (an integer <= n_units * max count) is < 2**24
        exact32 = self.n_units * max(1, int(stack.max(initial=0))) < 2**24
        flat = stack.transpose(1, 0, 2).reshape(self.n_units, -1)  # unit × (classifier, seed)
        flat = flat.astype(np.float32 if exact32 else float)
        block = max(1, BLOCK_ENTRIES // self.n_units)
        out = []
        for i, start in enumerate(range(0, self.n_boot, block)):
            units, seeds = _draws(self.n_units, self.n_seeds, self.seed, i, min(block, self.n_boot - start))
            per_seed = (units @ flat).reshape(len(units), len(stack), self.n_seeds).astype(float)
            out.append(np.einsum("bpk,bk->bp", per_seed, seeds))
        out = np.concatenate(out)
        return out if counts.ndim == 3 else out[:, 0]


BLOCK_ENTRIES = 2_000_000  # unit multiplicities drawn at once (8 MB)


@functools.lru_cache(maxsize=32)  # at most 256 MB
def _draws(n_units: int, n_seeds: int, seed: int, block: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Block ``block`` of draws: multiplicities of units (size × n_units) and of seeds (size × n_seeds).
    A pure function of its arguments (cached: drawing costs more than using)."""
    rng = np.random.default_rng([seed, block])
    units = _multiplicities(rng.integers(0, n_units, (size, n_units)), n_units).astype(np.float32)
    seeds = _multiplicities(rng.integers(0, n_seeds, (size, n_seeds)), n_seeds).astype(float)
    units.flags.writeable = seeds.flags.writeable = False
    return units, seeds


def _multiplicities(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` indices occurs in each row of ``draws``: (rows, n) integers."""
    rows = draws.shape[0]
    flat = (draws + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n)


def _check(counts, n_units: int, n_seeds: int) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.shape != (n_units, n_seeds) or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"counts must be integers of shape ({n_units}, {n_seeds}); got {counts.dtype} {counts.shape}")
    return counts


def accuracy_ci(counts: np.ndarray, rows_per_unit: int, resampler: Resampler) -> dict:
    """Accuracy of one classifier with its 95% bootstrap CI over units and seeds."""
    counts = _check(counts, resampler.n_units, resampler.n_seeds)
    return summarise_accuracy(int(counts.sum()), resampler.totals(counts), counts.size * rows_per_unit)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rows_per_unit: int, resampler: Resampler) -> dict:
    """Difference accuracy(a) - accuracy(b), its 95% CI and two-sided bootstrap p (see module doc)."""
    a, b = (_check(x, resampler.n_units, resampler.n_seeds) for x in (a, b))
    boot = resampler.totals(np.stack([a, b]))
    return summarise_difference(int(a.sum()), int(b.sum()), boot[:, 0], boot[:, 1], a.size * rows_per_unit)


def summarise_accuracy(total: int, boot_totals: np.ndarray, denom: int) -> dict:
    """Accuracy total/denom and the 95% percentile CI from resampled totals."""
    low, high = np.quantile(boot_totals / denom, [ALPHA / 2, 1 - ALPHA / 2])
    return dict(accuracy=total / denom, ci_low=float(low), ci_high=float(high))


def summarise_difference(total_a: int, total_b: int, boot_a: np.ndarray, boot_b: np.ndarray, denom: int) -> dict:
    """Difference (total_a - total_b)/denom, 95% percentile CI and bootstrap p from paired resampled totals."""
    boot = boot_a - boot_b  # exact integers: a tie is exactly zero
    low, high = np.quantile(boot / denom, [ALPHA / 2, 1 - ALPHA / 2])
    return dict(diff=(total_a - total_b) / denom, ci_low=float(low), ci_high=float(high), p=bootstrap_p(boot))


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided percentile p-value of H0: difference = 0 from bootstrap differences ``boot``."""
    below, above = 1 + int((boot <= 0).sum()), 1 + int((boot >= 0).sum())
    return min(1.0, 2 * min(below, above) / (len(boot) + 1))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p from the discordant counts b and c (1.0 when there are none)."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * float(binom.cdf(min(b, c), n, 0.5)))


def sign_test(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, float]]:
    """Per seed (column): (units where a beats b, units where b beats a, exact McNemar/sign-test p)."""
    a, b = np.asarray(a), np.asarray(b)
    out = []
    for k in range(a.shape[1]):
        wins, losses = int((a[:, k] > b[:, k]).sum()), int((a[:, k] < b[:, k]).sum())
        out.append((wins, losses, mcnemar_exact(wins, losses)))
    return out


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (len(p) - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()
