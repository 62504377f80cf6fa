"""poolbench.stats against answers known by hand or by construction."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from poolbench import stats as st

REPO = Path(__file__).resolve().parents[1]


def paired(a, b, rows_per_unit, resampler):
    """accuracy(a) - accuracy(b), its CI and bootstrap p, as poolbench.analysis computes each comparison."""
    boot = resampler.totals(np.stack([a, b]))
    return st.summarise_difference(int(a.sum()), int(b.sum()), boot[:, 0], boot[:, 1], a.size * rows_per_unit)


def test_mcnemar_exact_known_values():
    assert st.mcnemar_exact(1, 9) == pytest.approx(0.021484375, rel=1e-12)  # 2 * (1 + 10) / 2**10
    assert st.mcnemar_exact(9, 1) == st.mcnemar_exact(1, 9)
    assert st.mcnemar_exact(0, 5) == pytest.approx(2 / 32, rel=1e-12)
    assert st.mcnemar_exact(5, 5) == 1.0 and st.mcnemar_exact(0, 0) == 1.0


def test_sign_test_counts_discordant_units_per_seed():
    a = np.array([[1, 0], [1, 1], [0, 0], [1, 1]])
    b = np.array([[0, 0], [1, 0], [1, 0], [1, 0]])
    (w0, l0, p0), (w1, l1, p1) = st.sign_test(a, b)
    assert (w0, l0) == (1, 1) and p0 == 1.0
    assert (w1, l1) == (2, 0) and p1 == pytest.approx(0.5)
    # verdict counts (0..3 rows right): the unit, not the row, is the trial
    (w, l, _), = st.sign_test(np.array([[3], [2], [0]]), np.array([[0], [2], [1]]))
    assert (w, l) == (1, 1)


def test_holm_adjustment():
    assert st.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert st.holm([0.5]) == [0.5]
    assert st.holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_differences_in_thirds_are_exact():
    # 3 seeds: a is right on 2 of 3 seeds of every unit, b on 1 of 3; a difference of exactly 1/3
    a = np.tile([1, 1, 0], (30, 1))
    b = np.tile([0, 1, 0], (30, 1))
    r = st.Resampler(30, 3, n_boot=500, seed=1)
    out = paired(a, b, 1, r)
    assert out["diff"] == 1 / 3
    # a tie is exactly zero, whatever the draws: the per-seed differences (+1, -1, 0 per unit)
    # cancel exactly on resampled seed sets that hold seeds 0 and 1 equally often
    c = np.tile([1, 0, 1], (30, 1))
    d = np.tile([0, 1, 1], (30, 1))
    tie = paired(c, d, 1, r)
    assert tie["diff"] == 0.0 and tie["p"] == 1.0
    boot = r.totals(c) - r.totals(d)
    assert np.array_equal(boot, np.round(boot)) and (boot == 0).any()
    # what averaging per example over seeds did: two differences of one third that are not equal
    assert 1 - 2 / 3 != 1 / 3 - 0


def test_no_difference_at_all_gives_p_one_and_a_zero_ci():
    a = np.random.default_rng(0).integers(0, 2, (50, 3))
    out = paired(a, a.copy(), 1, st.Resampler(50, 3, 200, 0))
    assert out == dict(diff=0.0, ci_low=0.0, ci_high=0.0, p=1.0)


def test_accuracy_ci_covers_the_accuracy_and_counts_rows_per_unit():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, (100, 3))  # verdicts: 0..3 of their 3 rows right
    out = st.summarise_accuracy(int(counts.sum()), st.Resampler(100, 3, 2000, 0).totals(counts), counts.size * 3)
    assert out["accuracy"] == counts.sum() / 900
    assert out["ci_low"] < out["accuracy"] < out["ci_high"] and out["ci_high"] - out["ci_low"] < 0.2


def test_resampler_is_deterministic_and_paired():
    a = np.random.default_rng(0).integers(0, 2, (40, 3))
    b = np.random.default_rng(1).integers(0, 2, (40, 3))
    r1, r2 = st.Resampler(40, 3, 300, 7), st.Resampler(40, 3, 300, 7)
    assert np.array_equal(r1.totals(a), r2.totals(a))
    assert np.array_equal(r1.totals(np.stack([a, b]))[:, 1], r1.totals(b))  # same draws, stacked or not
    assert not np.array_equal(st.Resampler(40, 3, 300, 8).totals(a), r1.totals(a))
    # draws made in many blocks (as for a large test set) are as deterministic, and all n_boot are made
    saved = st.BLOCK_ENTRIES
    try:
        st.BLOCK_ENTRIES = 40 * 7
        blocked = st.Resampler(40, 3, 300, 7).totals(a)
        assert blocked.shape == (300,) and np.array_equal(blocked, st.Resampler(40, 3, 300, 7).totals(a))
    finally:
        st.BLOCK_ENTRIES = saved
    # each draw resamples N units and K seeds: the total of all-ones counts is always N * K
    assert np.all(r1.totals(np.ones((40, 3), dtype=np.int64)) == 120)


def test_bad_counts_are_refused():
    r = st.Resampler(10, 3, 10, 0)
    with pytest.raises(ValueError, match="integers of shape"):
        r.totals(np.zeros((10, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integers of shape"):
        r.totals(np.zeros((10, 3)))


def _null_pair(rng, n, k, seed_sd, spread, own):
    """Two classifiers with the same accuracy distribution, paired through a shared unit difficulty
    (logit SD ``spread``), each with its own unit effects (SD ``own``) and per-seed shifts (SD ``seed_sd``)."""
    difficulty = rng.normal(1.2, spread, n)
    out = []
    for _ in range(2):
        logit = (difficulty + rng.normal(0, own, n))[:, None] + rng.normal(0, seed_sd, k)[None, :]
        out.append((rng.random((n, k)) < 1 / (1 + np.exp(-logit))).astype(np.int64))
    return out


@pytest.mark.parametrize("seed_sd, spread, own", [
    (0.0, 2.5, 1.5),   # 22% of units flip between seeds: the interaction dominates (rejects 1.0%)
    (0.4, 2.5, 1.5),   # ... plus whole-seed shifts of about 4 points SD (5.2%)
    (0.6, 10.0, 5.0),  # 7% flip: fixed unit effects dominate; whole-seed shifts of about 2 points (4.7%)
])
def test_null_rejection_rate_is_at_most_alpha(seed_sd, spread, own):
    """True difference zero: the bootstrap test rejects at alpha = 0.05 in at most 6% of 600 data sets.
    The committed runs: 3-34% of units flip between seeds; whole-seed shifts of at most about 2 points SD."""
    rng = np.random.default_rng(2026)
    resampler = st.Resampler(150, 3, n_boot=400, seed=0)
    p = np.array([paired(*_null_pair(rng, 150, 3, seed_sd, spread, own), 1, resampler)["p"]
                  for _ in range(600)])
    assert (p < 0.05).mean() <= 0.06
    assert (p < 0.5).mean() > 0.2  # and p is not stuck at 1


def test_a_real_difference_is_found():
    rng = np.random.default_rng(5)
    a = (rng.random((300, 3)) < 0.80).astype(np.int64)
    b = (rng.random((300, 3)) < 0.65).astype(np.int64)
    out = paired(a, b, 1, st.Resampler(300, 3, 2000, 0))
    assert out["p"] < 0.01 and 0.05 < out["ci_low"] < out["diff"] < out["ci_high"] < 0.25
    assert 0 < out["p"] < 2 / 2001  # no draw on the far side: the normal tail, below the old floor 2/(n+1)


def test_bootstrap_p_is_the_percentile_p_where_resolved_and_smooth_beyond():
    rng = np.random.default_rng(0)
    boot = rng.normal(1.0, 1.0, 20_000)  # 16% of draws below zero: percentile
    below = int((boot <= 0).sum())
    assert st.bootstrap_p(boot) == 2 * (1 + below) / 20_001
    assert abs(st.bootstrap_p(boot) - 2 * sps.norm.sf(1.0)) < 0.01  # and close to the normal tail
    far = rng.normal(4.0, 1.0, 20_000)  # a handful of draws below zero: the normal tail, no floor, no steps
    assert (far <= 0).sum() < st.MIN_TAIL_DRAWS
    assert st.bootstrap_p(far) == pytest.approx(2 * sps.norm.sf(far.mean() / far.std()), rel=1e-12)
    assert st.bootstrap_p(far + 1) < st.bootstrap_p(far) < 2 / 20_001 * 100
    assert st.bootstrap_p(np.zeros(100)) == 1.0 and st.bootstrap_p(np.full(50, 3.0)) == 0.0


def test_benjamini_hochberg_adjustment():
    assert st.benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert st.benjamini_hochberg([0.5]) == [0.5]
    p = np.random.default_rng(1).random(30)
    bh, holm = np.array(st.benjamini_hochberg(p)), np.array(st.holm(p))
    assert (bh >= p).all() and (bh <= holm + 1e-12).all()  # BH never adjusts more than Holm


def test_mixed_model_test_reduces_to_the_t_tests_it_generalises():
    rng = np.random.default_rng(4)
    # no unit effect, no interaction: every unit has its seed's difference -> the t-test over seeds (K - 1 df)
    per_seed = np.array([3, 1, 2, 0, 2])
    a = np.tile(per_seed + 5, (40, 1))
    b = np.full((40, 5), 5)
    out = st.mixed_model_test(a, b)
    ref = sps.ttest_1samp(per_seed, 0)
    assert out["mixed_df"] == pytest.approx(4) and out["mixed_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # no seed effect, no interaction: the paired t-test over units (N - 1 df), rows per unit divided out
    unit = rng.integers(-2, 3, 60)
    unit[0] = 3
    out = st.mixed_model_test(np.tile(unit + 3, (4, 1)).T, np.full((60, 4), 3), rows_per_unit=3)
    ref = sps.ttest_1samp(unit / 3, 0)
    assert out["mixed_df"] == pytest.approx(59) and out["mixed_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["mixed_t"] == pytest.approx(ref.statistic, rel=1e-9)


def test_mixed_model_test_edge_cases():
    a = np.random.default_rng(0).integers(0, 2, (30, 3))
    assert st.mixed_model_test(a, a.copy())["mixed_p"] == 1.0  # a tie is exactly zero
    assert st.mixed_model_test(a + 1, a)["mixed_p"] == 0.0  # the same non-zero difference everywhere
    assert np.isnan(st.mixed_model_test(a[:, :1], a[:, :1] + 1)["mixed_p"])  # one seed: no seed variance
    x, y = (np.random.default_rng(s).integers(0, 2, (200, 3)) for s in (1, 2))
    out = st.mixed_model_test(x, y)
    assert out == st.mixed_model_test(x, y) and 2 <= out["mixed_df"] and 0 < out["mixed_p"] < 1
    swapped = st.mixed_model_test(y, x)
    assert swapped["mixed_p"] == pytest.approx(out["mixed_p"]) and swapped["mixed_t"] == pytest.approx(-out["mixed_t"])


# ---- known answer: a true null matched to the committed study's own seed SDs and flip rates -------


def _flip_probability(acc: float, rows: int, seeds: int) -> float:
    """Chance that a unit whose rows are each right with probability acc has differing counts across seeds."""
    b = sps.binom.pmf(np.arange(rows + 1), rows, acc)
    return 1 - float((b**seeds).sum())


def matched_null(rng, reps: int, units: int, seeds: int, rows: int, acc: float, flip: float, sd: float,
                 shared: float = 0.9):
    """``reps`` data sets of two classifiers with the same accuracy distribution (a true null), counts[rep,
    unit, seed], matching one pooling's accuracy, flip rate and seed SD: a share phi of units flips (each of
    its rows right with probability acc + delta_k / phi, so each seed k shifts the accuracy by delta_k with
    SD tau), the rest is right or wrong on every seed. The two classifiers share each unit's type and fixed
    outcome with probability ``shared`` (poolings of one backbone agree on most units); their seed shifts
    are their own."""
    phi = min(1.0, flip / max(_flip_probability(acc, rows, seeds), 1e-9))
    tau = np.sqrt(max(0.0, sd**2 - phi * acc * (1 - acc) / (units * rows)))
    fixed, flippy = rng.random((reps, units)) < acc, rng.random((reps, units)) < phi
    out = []
    for _ in range(2):
        own = rng.random((2, reps, units)) >= shared
        right = np.where(own[0], rng.random((reps, units)) < acc, fixed)
        moves = np.where(own[1], rng.random((reps, units)) < phi, flippy)
        q = np.clip(acc + rng.normal(0, tau, (reps, 1, seeds)) / max(phi, 1e-9), 0.01, 0.99)
        counts = np.where(moves[..., None], rng.binomial(rows, np.broadcast_to(q, (reps, units, seeds))),
                          rows * right[..., None])
        out.append(counts.astype(np.int64))
    return out


def _rejections(rng, row, seeds: int, reps: int, n_boot: int) -> dict:
    a, b = matched_null(rng, reps, int(row.units), seeds, int(row.n // row.units), row.accuracy, row.flip_rate,
                        row.accuracy_sd)
    boot = st.Resampler(int(row.units), seeds, n_boot, 0).totals(np.concatenate([a, b]))
    p_boot = np.array([st.bootstrap_p(boot[:, i] - boot[:, reps + i]) for i in range(reps)])
    p_mixed = np.array([st.mixed_model_test(x, y)["mixed_p"] for x, y in zip(a, b)])
    d = (a - b).mean(axis=1)  # per-seed differences: the plain t-test over seeds
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # data sets whose seeds agree exactly
        p_seed = np.nan_to_num(sps.ttest_1samp(d, 0, axis=1).pvalue, nan=1.0)
    return {"bootstrap": p_boot, "mixed": p_mixed, "seed t": p_seed, "both": np.maximum(p_boot, p_mixed)}


@pytest.mark.parametrize("seeds", [3, 5])
def test_null_rejection_rate_matched_to_the_study(seeds):
    """For every pooling of the committed study whose seed SD is at least 1.5 points (pooling_stats.csv: its
    accuracy, flip rate, seed SD, units and rows per unit), a true null matched to it: the test the claims
    use with ``statistics.claim_test: both`` (bootstrap and mixed model) rejects at most 6% at alpha = 0.05,
    with the committed 3 seeds and with 5. The bootstrap alone is liberal there with 3 seeds (the reason for
    the seed-level test). Where seeds hardly move (seed SD under half a point, units that flip), a plain
    t-test over the per-seed differences rejects far too often: it treats the test units as fixed."""
    stats = pd.read_csv(REPO / "results" / "summary" / "pooling_stats.csv")
    wide = stats[(stats["seeds"] > 1) & (stats["accuracy_sd"] >= 0.015)]
    assert len(wide) >= 5, "the committed study has too few poolings with a seed SD of 1.5 points or more"
    narrow = stats[(stats["seeds"] > 1) & (stats["accuracy_sd"] < 0.005) & (stats["flip_rate"] >= 0.05)].head(4)
    rng = np.random.default_rng(2027)

    def rates(rows):
        return pd.DataFrame([{name: (p < st.ALPHA).mean() for name, p in _rejections(rng, r, seeds, 200, 400).items()}
                             for r in rows.itertuples()], index=rows["pooling"] + " · " + rows["regime"])

    wide_rates, narrow_rates = rates(wide), rates(narrow)
    print(f"\nrejections at alpha = 0.05 of a true null, {seeds} seeds, 200 data sets per pooling; seed SD >= 1.5 "
          f"points:\n{wide_rates.round(3)}\nseed SD < 0.5 points:\n{narrow_rates.round(3)}")
    mean = wide_rates.mean()
    assert mean["both"] <= 0.06 and wide_rates["both"].max() <= 0.10  # per pooling: 200 sets, SE about 1.6 points
    assert mean["mixed"] <= (0.08 if seeds == 3 else 0.06)  # Satterthwaite's df: a little liberal with 3 seeds
    if seeds == 3:
        assert mean["bootstrap"] > 0.06  # what the issue found
    assert narrow_rates["both"].max() <= 0.10 and narrow_rates["mixed"].mean() <= 0.06
    assert narrow_rates["seed t"].mean() > 0.10
