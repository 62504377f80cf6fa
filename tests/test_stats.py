"""poolbench.stats against answers known by hand or by construction."""

from __future__ import annotations

import numpy as np
import pytest

from poolbench import stats as st


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
    out = st.paired_bootstrap(a, b, 1, r)
    assert out["diff"] == 1 / 3
    # a tie is exactly zero, whatever the draws: the per-seed differences (+1, -1, 0 per unit)
    # cancel exactly on resampled seed sets that hold seeds 0 and 1 equally often
    c = np.tile([1, 0, 1], (30, 1))
    d = np.tile([0, 1, 1], (30, 1))
    tie = st.paired_bootstrap(c, d, 1, r)
    assert tie["diff"] == 0.0 and tie["p"] == 1.0
    boot = r.totals(c) - r.totals(d)
    assert np.array_equal(boot, np.round(boot)) and (boot == 0).any()
    # what averaging per example over seeds did: two differences of one third that are not equal
    assert 1 - 2 / 3 != 1 / 3 - 0


def test_no_difference_at_all_gives_p_one_and_a_zero_ci():
    a = np.random.default_rng(0).integers(0, 2, (50, 3))
    out = st.paired_bootstrap(a, a.copy(), 1, st.Resampler(50, 3, 200, 0))
    assert out == dict(diff=0.0, ci_low=0.0, ci_high=0.0, p=1.0)


def test_accuracy_ci_covers_the_accuracy_and_counts_rows_per_unit():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, (100, 3))  # verdicts: 0..3 of their 3 rows right
    out = st.accuracy_ci(counts, 3, st.Resampler(100, 3, 2000, 0))
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
    p = np.array([st.paired_bootstrap(*_null_pair(rng, 150, 3, seed_sd, spread, own), 1, resampler)["p"]
                  for _ in range(600)])
    assert (p < 0.05).mean() <= 0.06
    assert (p < 0.5).mean() > 0.2  # and p is not stuck at 1


def test_a_real_difference_is_found():
    rng = np.random.default_rng(5)
    a = (rng.random((300, 3)) < 0.80).astype(np.int64)
    b = (rng.random((300, 3)) < 0.65).astype(np.int64)
    out = st.paired_bootstrap(a, b, 1, st.Resampler(300, 3, 2000, 0))
    assert out["p"] < 0.01 and 0.05 < out["ci_low"] < out["diff"] < out["ci_high"] < 0.25
    assert out["p"] >= 2 / 2001  # the bootstrap p never reaches 0
