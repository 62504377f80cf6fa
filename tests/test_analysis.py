"""Statistics on synthetic predictions: the tests know the answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolbench.analysis import holm, pooling_stats, probe_cells


def synthetic(n=400, seeds=(0, 1, 2), acc=None, rng=0):
    rng = np.random.default_rng(rng)
    labels = rng.integers(0, 2, n)
    rows = []
    for pooling, p in acc.items():
        for seed in seeds:
            correct = rng.random(n) < p
            rows.append(pd.DataFrame({"id": np.arange(n), "label": labels, "pred": np.where(correct, labels, 1 - labels),
                                      "dataset": "imdb", "model": "m", "family": "encoder", "regime": "frozen",
                                      "truncation": "head", "max_len": 128, "pooling": pooling, "seed": seed}))
    return pd.concat(rows, ignore_index=True)


def test_a_real_gap_is_significant_and_no_gap_is_not():
    stats = pooling_stats(synthetic(acc={"cls": 0.70, "mean": 0.90, "max": 0.70})).set_index("pooling")
    assert stats.loc["mean", "accuracy"] == pytest.approx(0.90, abs=0.03)
    assert stats.loc["mean", "diff_vs_baseline"] > 0.15 and stats.loc["mean", "p_holm"] < 1e-6
    assert stats.loc["mean", "diff_ci_low"] > 0.1
    assert stats.loc["max", "p_holm"] > 0.01 and stats.loc["max", "diff_ci_low"] < 0 < stats.loc["max", "diff_ci_high"]
    assert np.isnan(stats.loc["cls", "diff_vs_baseline"]) and stats.loc["cls", "seeds"] == 3


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_probe_cells_count_following_the_body():
    df = pd.DataFrame({"id": [1, 2, 3, 4], "label": [1, 1, 0, 0], "body_label": [0, 0, 0, 1], "pred": [0, 1, 0, 1],
                       "condition": ["contrast", "contrast", "agree", "contrast"], "position": ["end"] * 4,
                       "length_bin": ["long"] * 4, "dataset": "tailprobe", "model": "m", "family": "decoder",
                       "regime": "frozen", "truncation": "head", "max_len": 128, "pooling": "last", "seed": 0})
    cells = probe_cells(df).set_index("condition")
    assert cells.loc["contrast", "accuracy"] == pytest.approx(1 / 3)
    assert cells.loc["contrast", "follows_body"] == pytest.approx(2 / 3)
    assert cells.loc["agree", "accuracy"] == 1.0 and cells.loc["contrast", "n"] == 3


def test_paper_numbers_come_from_the_tables(tmp_path):
    import re

    from poolbench.analysis import RUN_KEYS
    from poolbench.paper import macro_name, write

    assert macro_name("imdb", "minilm-l6", "head", 128, "best acc") == "ImdbMinilmLSixHeadOneTwoEightBestAcc"
    preds = synthetic(acc={"cls": 0.70, "mean": 0.90})
    stats = pooling_stats(preds)
    runs = preds.groupby(RUN_KEYS, as_index=False).size().assign(wall_s=10.0)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    stats.to_csv(tmp_path / "pooling_stats.csv", index=False)
    write(tmp_path, None, tmp_path / "paper")
    tex = (tmp_path / "paper" / "numbers.tex").read_text()
    macros = dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{([^}]*)\}", tex))
    assert macros["NRuns"] == "6" and macros["ImdbMHeadOneTwoEightBestPooling"] == "mean"
    assert float(macros["ImdbMHeadOneTwoEightBestAcc"]) == pytest.approx(100 * stats["accuracy"].max(), abs=0.051)
    assert "mean" in (tmp_path / "paper" / "tab_imdb.tex").read_text()
