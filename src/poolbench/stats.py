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
- p-value (two-sided, :func:`bootstrap_p`): where at least :data:`MIN_TAIL_DRAWS` draws lie on the far
  side of zero (or ALPHA/2 of the draws, if that is fewer), the percentile p
  ``min(1, 2 * (1 + #{far side}) / (n_boot + 1))``, i.e. twice the
  bootstrap mass beyond zero (draws equal to zero count on both sides: conservative for ties); p < 0.05
  exactly when 0 lies outside the percentile CI (up to the +1), so the CI and p never disagree. Fewer
  far-side draws resolve p badly (the percentile p has a floor of 2/(n_boot+1) and moves in steps of
  2/(n_boot+1), right where Holm's threshold lies), so there p is the two-sided tail of the normal
  approximation of the same bootstrap distribution (its mean and SD): smooth, without a floor.

Calibration (tests/test_stats.py and a wider simulation). The pigeonhole bootstrap counts the
unit × seed interaction (a seed's head flipping some units) about three times and the pure seed
effect (a seed shifting all units) (K-1)/K times, with only K-1 degrees of freedom behind it. With the
committed runs' structure (3-34% of units flip between seeds; whole-seed shifts of at most about
2 points SD) it rejects 1-5% of the time at alpha = 0.05 under a true difference of zero: about 1%
where flips dominate, 3.5-5% where fixed unit effects or whole-seed shifts do. It becomes liberal
where whole-seed shifts dominate and few units flip (shifts of about 3 points SD, 8% flips: 9%
rejections with 3 seeds); more seeds are the remedy. Matched to the committed study's own accuracies,
flip rates and seed SDs (``tests/test_stats.py::test_null_rejection_rate_matched_to_the_study``), it
rejects 7% on average, and up to 12%, for the 12 poolings whose seed SD is at least 1.5 points, with 3
seeds; 5% (up to 9%) with 5.

Seed-level test (:func:`mixed_model_test`): a crossed random-effects model of the per-unit, per-seed
differences, ``d[u, k] = mu + a_u + b_k + e_uk`` (test unit, seed, interaction), with moment (ANOVA)
estimates of the three variances and Satterthwaite's degrees of freedom. Why this and not a t-test over
the K per-seed differences: that t-test treats the test set as fixed, so under a true null where two
poolings have their own per-unit strengths it rejects far too often (9-42% in the matched simulation
where seeds hardly move); the mixed model keeps the test-unit variance (``a_u``) and gives the seed
variance (``b_k``) its K - 1
degrees of freedom, so with 3 seeds a difference that the seeds disagree on is judged on a t with about
2 df, not as if seeds were many. In the matched simulation it rejects 7% on average (up to 9%) with 3
seeds, where Satterthwaite's df are a little liberal when the seed variance is about half the total, and
4.5% with 5 seeds. A claim that needs both tests (``claim_p`` under ``statistics.claim_test: both``: the
larger of the two p-values, a valid p when either test is) rejects 5% on average (up to 8%) with 3 seeds
and 3.5% with 5.

Beside it, an exact McNemar test per seed (``sign_test``): over units, b = units where a got more
rows right than b, c = the reverse; two-sided exact binomial test of b against b + c with p = 1/2.
For one-row units this is McNemar's exact test; for verdicts it is its sign-test generalisation,
which respects the clustering. Holm's step-down adjustment (``holm``) controls the family-wise error
of a confirmatory family; Benjamini-Hochberg (``benjamini_hochberg``) the false discovery rate of the
exploratory rest.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import binom, norm
from scipy.stats import t as student_t

ALPHA = 0.05  # the one significance level: CIs are 1 - ALPHA, and "significant" means adjusted p < ALPHA
MIN_TAIL_DRAWS = 100  # far-side draws below which the percentile p gives way to the normal tail


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
    """Accuracy of one classifier with its 95% bootstrap CI over units and seeds (``poolbench score``)."""
    counts = _check(counts, resampler.n_units, resampler.n_seeds)
    return summarise_accuracy(int(counts.sum()), resampler.totals(counts), counts.size * rows_per_unit)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rows_per_unit: int, resampler: Resampler) -> dict:
    """Difference accuracy(a) - accuracy(b), its 95% CI and two-sided bootstrap p (``poolbench compare``)."""
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
    """Two-sided p-value of H0: difference = 0 from bootstrap differences ``boot`` (see the module doc):
    the percentile p where :data:`MIN_TAIL_DRAWS` or more draws lie beyond zero (or, for few draws, where p
    is at least about ALPHA), else the normal tail."""
    far = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    if far >= min(MIN_TAIL_DRAWS, ALPHA / 2 * len(boot)):  # so p < ALPHA exactly when the CI excludes 0
        return min(1.0, 2 * (1 + far) / (len(boot) + 1))
    mean, sd = float(np.mean(boot)), float(np.std(boot))
    if sd == 0:  # every draw the same non-zero value
        return 0.0
    return float(min(1.0, 2 * norm.sf(abs(mean) / sd)))


def mixed_model_test(a: np.ndarray, b: np.ndarray, rows_per_unit: int = 1) -> dict:
    """Seed-level test of accuracy(a) = accuracy(b) from ``counts[unit, seed]`` of each (see the module doc).

    The per-unit, per-seed difference ``d = (a - b) / rows_per_unit`` follows a crossed random-effects
    model ``d[u, k] = mu + a_u + b_k + e_uk``. The mean squares of units (MS_U, N - 1 df), seeds (MS_K,
    K - 1 df) and their interaction (MS_E) estimate the variance of the mean difference as
    ``sa/N + sb/K + se/(N K)`` with ``sa = max(0, (MS_U - MS_E)/K)``, ``sb = max(0, (MS_K - MS_E)/N)``,
    ``se = MS_E``; ``t = mean / sqrt(that)`` with Satterthwaite's df; p two-sided. Sums of squares are
    exact integers, so a tie is exactly zero. Returns ``mixed_t``, ``mixed_df`` and ``mixed_p``: NaN with
    fewer than 2 units or 2 seeds (no seed variance to estimate); p = 1 when every difference is zero,
    and p = 0 when every difference is the same non-zero value.
    """
    d = np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)
    n, k = d.shape
    if n < 2 or k < 2:
        return dict(mixed_t=np.nan, mixed_df=np.nan, mixed_p=np.nan)
    total = int(d.sum())
    # sums of squares times n*k (exact integers), in count units
    ss_all = n * k * int((d * d).sum()) - total**2
    ss_units = n * int((d.sum(axis=1) ** 2).sum()) - total**2
    ss_seeds = k * int((d.sum(axis=0) ** 2).sum()) - total**2
    ss_error = ss_all - ss_units - ss_seeds
    scale = float(n * k * rows_per_unit**2)
    ms_u, ms_k = ss_units / scale / (n - 1), ss_seeds / scale / (k - 1)
    ms_e = ss_error / scale / ((n - 1) * (k - 1))
    mean = total / (n * k * rows_per_unit)
    c_u, c_k = float(ms_u > ms_e), float(ms_k > ms_e)  # variance components truncated at zero
    c_e = 1.0 - c_u - c_k
    var_nk = c_u * ms_u + c_k * ms_k + c_e * ms_e  # n * k * Var(mean)
    if var_nk <= 0:
        p = 1.0 if total == 0 else 0.0
        return dict(mixed_t=0.0 if total == 0 else np.copysign(np.inf, mean), mixed_df=np.nan, mixed_p=p)
    terms = [(c_u * ms_u, n - 1), (c_k * ms_k, k - 1), (c_e * ms_e, (n - 1) * (k - 1))]
    df = var_nk**2 / sum(v * v / f for v, f in terms if v)
    t = mean / np.sqrt(var_nk / (n * k))
    return dict(mixed_t=float(t), mixed_df=float(df), mixed_p=float(min(1.0, 2 * student_t.sf(abs(t), df))))


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


def benjamini_hochberg(pvalues) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (same order as given): the false discovery rate of a family."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    adjusted = np.empty_like(p)
    running = 1.0
    order = np.argsort(p, kind="stable")
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, m * p[i] / (rank + 1))
        adjusted[i] = running
    return adjusted.tolist()
