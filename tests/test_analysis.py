"""Tables, figures and digest on synthetic predictions: the tests know the answer."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from poolbench import analysis
from poolbench.analysis import (RUN_KEYS, Statistics, StatisticsError, comparisons, pooling_stats, probe_cells,
                                read_predictions)

SETTING = dict(dataset="imdb", model="m", family="encoder", regime="frozen", truncation="head", max_len=128)


def synthetic(n=400, seeds=(0, 1, 2), acc=None, rng=0, **setting):
    """IMDB-like predictions: one row per example, each pooling right with probability acc[pooling]."""
    rng = np.random.default_rng(rng)
    labels = rng.integers(0, 2, n)
    rows = []
    for pooling, p in acc.items():
        for seed in seeds:
            correct = rng.random(n) < p
            rows.append(pd.DataFrame({"id": [f"ex{i}" for i in range(n)], "label": labels,
                                      "pred": np.where(correct, labels, 1 - labels),
                                      **{**SETTING, **setting}, "pooling": pooling, "seed": seed}))
    return pd.concat(rows, ignore_index=True)


def probe(n_verdicts=96, seeds=(0, 1, 2), poolings=("cls", "mean"), rng=0, right=None, **setting):
    """Probe-like predictions: each verdict at three positions, half agree and half contrast, half long.
    ``right(pooling, position, condition)`` -> probability of a correct prediction (default 0.5)."""
    rng = np.random.default_rng(rng)
    right = right or (lambda *_: 0.5)
    verdicts = pd.DataFrame({"verdict_review_id": [f"v{i}" for i in range(n_verdicts)],
                             "label": rng.integers(0, 2, n_verdicts),
                             "condition": np.where(np.arange(n_verdicts) % 2, "contrast", "agree"),
                             "length_bin": np.where(np.arange(n_verdicts) % 4 < 2, "short", "long")})
    base = verdicts.merge(pd.DataFrame({"position": ["start", "middle", "end"]}), how="cross")
    base["id"] = [f"tp{i}" for i in range(len(base))]
    base["body_label"] = np.where(base["condition"] == "agree", base["label"], 1 - base["label"])
    rows = []
    for pooling in poolings:
        for seed in seeds:
            p = np.array([right(pooling, pos, cond) for pos, cond in zip(base["position"], base["condition"])])
            correct = rng.random(len(base)) < p
            rows.append(base.assign(pred=np.where(correct, base["label"], 1 - base["label"]),
                                    **{**SETTING, "dataset": "tailprobe", **setting}, pooling=pooling, seed=seed))
    return pd.concat(rows, ignore_index=True)


def test_a_real_gap_is_significant_and_no_gap_is_not():
    preds = synthetic(acc={"cls": 0.70, "mean": 0.90, "max": 0.70})
    stats = pooling_stats(preds, n_boot=2000).set_index("pooling")
    assert stats.loc["mean", "accuracy"] == pytest.approx(0.90, abs=0.03)
    assert stats.loc["mean", "accuracy_ci_low"] < stats.loc["mean", "accuracy"] < stats.loc["mean", "accuracy_ci_high"]
    assert stats.loc["cls", "seeds"] == 3 and stats.loc["cls", "units"] == 400 and stats.loc["cls", "n"] == 400
    comps = comparisons(preds, n_boot=2000)
    base = comps[comps["kind"] == "baseline"].set_index("a")
    assert set(base.index) == {"mean", "max"} and (base["b"] == "cls").all()
    assert base.loc["mean", "diff"] > 0.15 and base.loc["mean", "ci_low"] > 0.1 and base.loc["mean", "holm_p"] < 0.01
    assert base.loc["max", "holm_p"] > 0.05 and base.loc["max", "ci_low"] < 0 < base.loc["max", "ci_high"]
    assert (base[["mcnemar_p_seed0", "mcnemar_p_seed1", "mcnemar_p_seed2"]].loc["mean"] < 1e-6).all()


def test_differences_are_exact_thirds():
    # per example: mean right on 2 of 3 seeds, cls on 1 of 3; the difference is exactly 1/3
    preds = synthetic(n=30, acc={"cls": 0.5, "mean": 0.5})
    seed_pattern = {"mean": [1, 1, 0], "cls": [0, 1, 0]}
    preds["pred"] = np.where([seed_pattern[p][s] for p, s in zip(preds["pooling"], preds["seed"])],
                             preds["label"], 1 - preds["label"])
    row = comparisons(preds, n_boot=200).query("kind == 'baseline'").iloc[0]
    assert row["diff"] == 1 / 3


def test_superlatives_get_their_own_test_and_holm_counts_each_test_once():
    preds = synthetic(acc={"cls": 0.60, "mean": 0.90, "max": 0.89, "pooler": 0.55})
    comps = comparisons(preds, n_boot=2000)
    best = comps[comps["kind"] == "best"].iloc[0]
    worst = comps[comps["kind"] == "worst"].iloc[0]
    assert {best["a"], best["b"]} == {"mean", "max"} and best["holm_p"] > 0.05  # no single best
    assert (worst["a"], worst["b"]) == ("pooler", "cls")
    # pooler − cls is both a baseline comparison (cls − ... reversed) and the worst one: one test, one Holm p
    same = comps[(comps["a"].isin(["pooler", "cls"])) & (comps["b"].isin(["pooler", "cls"]))]
    assert len(same) == 2 and same["holm_p"].nunique() == 1
    distinct = len(comps) - 1
    assert (comps["holm_p"] >= comps["p"]).all()
    assert comps["holm_p"].max() <= 1 and comps["holm_p"].min() == pytest.approx(min(1, comps["p"].min() * distinct))


def test_outputs_are_deterministic():
    preds = synthetic(acc={"cls": 0.7, "mean": 0.75})
    assert comparisons(preds, n_boot=500).to_csv() == comparisons(preds, n_boot=500).to_csv()
    assert pooling_stats(preds, n_boot=500).to_csv() == pooling_stats(preds, n_boot=500).to_csv()


def test_probe_units_are_verdicts_and_position_effects_are_tested():
    def right(pooling, position, condition):
        return 0.95 if (pooling == "mean" and position == "end") else 0.5

    preds = probe(n_verdicts=192, right=right)
    stats = pooling_stats(preds, n_boot=500).set_index("pooling")
    assert stats.loc["mean", "units"] == 192 and stats.loc["mean", "n"] == 576  # 192 verdicts × 3 positions
    comps = comparisons(preds, n_boot=2000)
    pos = comps[comps["kind"] == "position"].set_index(["pooling", "length_bin"])
    assert set(pos.index) == {(p, length) for p in ("cls", "mean") for length in ("short", "long")}
    assert (pos["units"] == 48).all()  # 192 verdicts / 2 conditions / 2 lengths
    assert (pos["condition"] == "contrast").all()
    assert pos.loc[("mean", "long"), "diff"] > 0.3 and pos.loc[("mean", "long"), "p"] < 0.01
    assert pos.loc[("cls", "long"), "ci_low"] < 0 < pos.loc[("cls", "long"), "ci_high"]


def test_truncation_effect_compares_tail_with_head_at_the_end():
    def better_at_end(pooling, position, condition):
        return 0.95 if position == "end" else 0.5

    preds = pd.concat([probe(rng=1), probe(rng=2, right=better_at_end, truncation="tail")], ignore_index=True)
    comps = comparisons(preds, n_boot=1000)
    trunc = comps[comps["kind"] == "truncation"]
    assert len(trunc) == 4 and (trunc["a"] == "tail").all() and (trunc["position"] == "end").all()
    assert (trunc["diff"] > 0.25).all()


def test_counts_refuse_incomplete_predictions():
    preds = synthetic(n=20, acc={"cls": 0.7, "mean": 0.8})
    with pytest.raises(ValueError, match="same units"):
        pooling_stats(preds.drop(index=preds.index[-1]), n_boot=10)


def test_probe_cells_count_following_the_body():
    df = pd.DataFrame({"id": [1, 2, 3, 4], "label": [1, 1, 0, 0], "body_label": [0, 0, 0, 1], "pred": [0, 1, 0, 1],
                       "condition": ["contrast", "contrast", "agree", "contrast"], "position": ["end"] * 4,
                       "length_bin": ["long"] * 4, "dataset": "tailprobe", "model": "m", "family": "decoder",
                       "regime": "frozen", "truncation": "head", "max_len": 128, "pooling": "last", "seed": 0})
    cells = probe_cells(df, n_boot=100).set_index("condition")
    assert cells.loc["contrast", "accuracy"] == pytest.approx(1 / 3)
    assert cells.loc["contrast", "follows_body"] == pytest.approx(2 / 3)
    assert cells.loc["agree", "accuracy"] == 1.0 and cells.loc["contrast", "n"] == 3
    assert cells.loc["contrast", "accuracy_ci_low"] <= 1 / 3 <= cells.loc["contrast", "accuracy_ci_high"]


def _write_run(root, keys, preds, file="predictions.parquet"):
    run = root / keys["dataset"] / keys["pooling"] / f"seed{keys['seed']}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({**keys, "accuracy": 0.5}))
    preds.to_parquet(run / file, index=False)
    return run / file


def test_read_predictions_attaches_run_keys_and_refuses_missing_files(tmp_path):
    table = pd.DataFrame({"id": ["a", "b"], "label": [0, 1], "pred": [0, 0], "p_positive": [0.2, 0.4]})
    keys = {**SETTING, "pooling": "mean", "seed": 1}
    paths = [_write_run(tmp_path, keys, table), _write_run(tmp_path, keys, table, "transfer-tailprobe.parquet")]
    preds = read_predictions(paths)
    assert len(preds) == 4 and (preds["pooling"] == "mean").all() and (preds["seed"] == 1).all()
    assert list(preds.columns[:4]) == ["id", "label", "pred", "p_positive"] and set(RUN_KEYS) <= set(preds.columns)
    missing = tmp_path / "imdb" / "cls" / "seed0" / "predictions.parquet"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_predictions(paths + [missing])
    paths[0].parent.joinpath("metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        read_predictions(paths)


def test_figures_work_for_several_settings_and_for_exactly_one_of_each(tmp_path):
    preds = pd.concat([synthetic(n=60, acc={"cls": 0.7, "mean": 0.8}, max_len=m) for m in (128, 256)]
                      + [probe(n_verdicts=32, poolings=("cls", "mean"), max_len=m) for m in (128, 256)],
                      ignore_index=True)
    stats = pooling_stats(preds, n_boot=100)
    cells = probe_cells(preds[preds["dataset"] == "tailprobe"], n_boot=100)
    one = stats[(stats["dataset"] == "imdb") & (stats["max_len"] == 128) & (stats["pooling"] == "cls")]
    one_cell = cells[(cells["max_len"] == 128) & (cells["condition"] == "agree") & (cells["length_bin"] == "long")]
    assert len(one) == 1 and one_cell["pooling"].nunique() == 2
    analysis.accuracy_by_pooling(stats, tmp_path / "acc.png")
    analysis.accuracy_by_pooling(one, tmp_path / "acc1.png")  # one dataset, setting and pooling: seaborn crashed
    analysis.tailprobe_figure(cells, tmp_path / "probe.png")
    analysis.tailprobe_figure(one_cell, tmp_path / "probe1.png")
    for name in ("acc.png", "acc1.png", "probe.png", "probe1.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_one_run_of_everything_gives_tables_a_digest_and_paper_numbers(tmp_path):
    from poolbench.paper import write

    preds = synthetic(n=50, seeds=(0,), acc={"cls": 0.7})
    stats, comps = pooling_stats(preds, n_boot=50), comparisons(preds, n_boot=50)
    assert len(stats) == 1 and np.isnan(stats["accuracy_sd"].iloc[0]) and comps.empty
    assert "cls" in analysis.markdown_summary(stats, comps, pd.DataFrame())
    preds.groupby(RUN_KEYS, as_index=False).size().assign(wall_s=1.0).to_csv(tmp_path / "runs.csv", index=False)
    stats.to_csv(tmp_path / "pooling_stats.csv", index=False)
    comps.to_csv(tmp_path / "comparisons.csv", index=False)
    write_paper(write, tmp_path)
    assert "NComparisons}{0}" in (tmp_path / "paper" / "numbers.tex").read_text()


def test_digest_names_each_comparison_with_difference_ci_and_holm_p():
    preds = pd.concat([synthetic(acc={"cls": 0.70, "mean": 0.90}), probe()], ignore_index=True)
    comps = comparisons(preds, n_boot=500)
    text = analysis.markdown_summary(pooling_stats(preds, n_boot=500), comps,
                                     probe_cells(preds[preds["dataset"] == "tailprobe"], n_boot=100))
    mean = comps[(comps["kind"] == "baseline") & (comps["a"] == "mean") & (comps["dataset"] == "imdb")].iloc[0]
    line = next(line for line in text.splitlines() if "imdb" in line and "mean − cls" in line)
    assert f"{100 * mean['diff']:+.1f} [{100 * mean['ci_low']:+.1f}, {100 * mean['ci_high']:+.1f}]*" in line
    assert analysis.pvalue(mean["holm_p"]) in line
    assert "no single most accurate pooling" in text or "is the most accurate pooling" in text
    assert f"all {len(comps)} comparisons" in text


def test_paper_numbers_come_from_the_tables(tmp_path):
    from poolbench.paper import macro_name, write

    assert macro_name("imdb", "minilm-l6", "head", 128, "best acc") == "ImdbMinilmLSixHeadOneTwoEightBestAcc"
    preds = pd.concat([synthetic(acc={"cls": 0.70, "mean": 0.90}), probe(), probe(rng=1, regime="topk")],
                      ignore_index=True)
    stats, comps = pooling_stats(preds, n_boot=500), comparisons(preds, n_boot=500)
    runs = preds.groupby(RUN_KEYS, as_index=False).size().assign(wall_s=10.0)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    stats.to_csv(tmp_path / "pooling_stats.csv", index=False)
    comps.to_csv(tmp_path / "comparisons.csv", index=False)
    cells = probe_cells(preds[preds["dataset"] == "tailprobe"], n_boot=100)
    cells.to_csv(tmp_path / "tailprobe_cells.csv", index=False)
    write_paper(write, tmp_path)
    tex = (tmp_path / "paper" / "numbers.tex").read_text()
    names = re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", tex)
    assert len(names) == len(set(names))  # LaTeX refuses a macro defined twice
    macros = dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}", tex))
    assert macros["NRuns"] == "18" and macros["ImdbMHeadOneTwoEightBestPooling"] == "mean"
    assert float(macros["ImdbMHeadOneTwoEightBestAcc"]) == pytest.approx(100 * stats["accuracy"].max(), abs=0.051)
    mean = comps[(comps["kind"] == "baseline") & (comps["dataset"] == "imdb")].iloc[0]
    assert float(macros["ImdbMHeadOneTwoEightMeanVsBaselineDiff"]) == pytest.approx(100 * mean["diff"], abs=0.051)
    assert macros["ImdbMHeadOneTwoEightNCompared"] == "1" and macros["NComparisons"] == str(len(comps))
    # the words a sentence uses about a comparison follow its Holm p (a 20-point gap on 400 units is real)
    assert macros["ImdbMHeadOneTwoEightMeanVsBaselineVerdict"] == ("significant" if mean["holm_p"] < 0.05
                                                                   else "not significant")
    assert mean["holm_p"] < 0.05
    assert "ProbeMHeadOneTwoEightMeanContrastLongEndMinusStartCI" in macros
    # a fine-tuned regime's probe macros carry its name; frozen ones keep theirs
    topk = comps[(comps["kind"] == "position") & (comps["regime"] == "topk") & (comps["pooling"] == "mean")
                 & (comps["length_bin"] == "long")].iloc[0]
    assert float(macros["ProbeMHeadOneTwoEightTopkMeanContrastLongEndMinusStartDiff"].replace("$-$", "-")) == pytest.approx(
        100 * topk["diff"], abs=0.051)
    assert "ProbeMHeadOneTwoEightTopkMeanContrastFollowsBody" in macros
    table = (tmp_path / "paper" / "tab_imdb.tex").read_text()
    assert f"{100 * mean['diff']:+.1f} [{100 * mean['ci_low']:+.1f}, {100 * mean['ci_high']:+.1f}]" in table


MAIN = Statistics.from_config({"main_regimes": {"m": "topk"}})  # top1 is a ladder step


def write_paper(write, folder, regimes=False, **optional):
    """paper.write on the summary files in ``folder`` (missing probe tables: empty), into folder/paper.
    ``regimes``: declare tab_regimes; ``optional``: natural / ladder / attention paths (natural declares
    tab_natural)."""
    for name in ("tailprobe_cells.csv", "transfer_tailprobe_cells.csv"):
        if not (folder / name).exists():
            (folder / name).write_text("\n")
    out = {key: folder / "paper" / f"{name}.tex" for key, name in [
        ("numbers", "numbers"), ("imdb", "tab_imdb"), ("superlatives", "tab_superlatives"), ("probe", "tab_probe"),
        ("probe_pooling", "tab_probe_pooling"), *([("regimes", "tab_regimes")] if regimes else []),
        *([("natural", "tab_natural")] if optional.get("natural") else [])]}
    write(runs=folder / "runs.csv", stats=folder / "pooling_stats.csv", comparisons=folder / "comparisons.csv",
          probe=folder / "tailprobe_cells.csv", transfer=folder / "transfer_tailprobe_cells.csv", checks=None, out=out,
          settings=MAIN, **optional)


def test_regime_ladder_reads_accuracy_and_gap_per_trained_layer(tmp_path):
    # mean's lead over cls shrinks as more layers train: 20 points frozen, 10 at two layers, none at six
    ladder_acc = {"frozen": (0, {"cls": 0.6, "mean": 0.8}), "top2": (2, {"cls": 0.7, "mean": 0.8}),
                  "full": (6, {"cls": 0.8, "mean": 0.8})}
    preds = pd.concat([synthetic(acc=acc, rng=i, regime=regime) for i, (regime, (_, acc)) in enumerate(ladder_acc.items())])
    # another setting in one regime only: no ladder
    preds = pd.concat([preds, synthetic(acc={"cls": 0.6, "mean": 0.7}, dataset="tailprobe")])
    runs = preds.drop_duplicates(RUN_KEYS)[RUN_KEYS].assign(
        trained_layers=lambda d: d["regime"].map({r: k for r, (k, _) in ladder_acc.items()}))
    stats, comps = pooling_stats(preds, n_boot=1000), comparisons(preds, n_boot=2000)
    assert analysis.ladder_settings(runs) == [("imdb", "m", "encoder", "head", 128)]
    ladder = analysis.regime_ladder(runs, stats, comps)
    assert len(ladder) == 6 and list(ladder["trained_layers"].unique()) == [0, 2, 6]
    mean = ladder[ladder["pooling"] == "mean"].set_index("regime")
    for regime, (_, acc) in ladder_acc.items():
        assert mean.loc[regime, "gap"] == pytest.approx(acc["mean"] - acc["cls"], abs=0.04)
        assert mean.loc[regime, "gap_ci_low"] < mean.loc[regime, "gap"] < mean.loc[regime, "gap_ci_high"]
    assert ladder[ladder["pooling"] == "cls"]["gap"].isna().all()  # the baseline has no gap to itself
    assert mean.loc["frozen", "gap_holm_p"] < 0.05 < mean.loc["full", "gap_holm_p"]
    out = tmp_path / "ladder.png"
    analysis.ladder_figure(ladder, out)
    assert out.stat().st_size > 10_000
    # runs without trained-layer counts (schema 1) give no ladder
    assert analysis.regime_ladder(runs.drop(columns="trained_layers"), stats, comps).empty


def _regimes(frozen: dict, finetuned: dict, regime="topk", **kw) -> pd.DataFrame:
    """The same setting trained frozen and in ``regime``: each pooling right with probability acc[pooling]."""
    return pd.concat([synthetic(acc=frozen, rng=1, **kw), synthetic(acc=finetuned, rng=2, regime=regime, **kw)],
                     ignore_index=True)


def test_gap_change_sees_a_gap_that_fine_tuning_closes():
    # frozen: mean leads cls by 20 points; fine-tuned: no lead
    preds = _regimes({"cls": 0.6, "mean": 0.8, "max": 0.6}, {"cls": 0.8, "mean": 0.8, "max": 0.8})
    comps = comparisons(preds, n_boot=2000)
    gap = comps[comps["kind"] == "gap_change"].set_index("pooling")
    assert set(gap.index) == {"mean", "max"}  # every pooling but the baseline
    assert (gap["a"] == "topk").all() and (gap["b"] == "frozen").all() and (gap["regime"] == "topk vs frozen").all()
    mean = gap.loc["mean"]
    assert mean["diff"] == pytest.approx(-0.20, abs=0.04)
    assert mean["ci_high"] < 0 and mean["holm_p"] < 0.01 and mean["units"] == 400 and mean["seeds"] == 3
    # it is the difference of the two regimes' baseline rows, exactly
    base = comps[comps["kind"] == "baseline"].set_index(["regime", "a"])["diff"]
    assert mean["diff"] == pytest.approx(base[("topk", "mean")] - base[("frozen", "mean")], abs=1e-12)
    assert gap.loc["max", "ci_low"] < 0 < gap.loc["max", "ci_high"] and gap.loc["max", "holm_p"] > 0.05
    assert "(mean − cls) topk − (mean − cls) frozen" in analysis.markdown_summary(
        pooling_stats(preds, n_boot=100), comps, pd.DataFrame())


def test_gap_change_of_identical_gaps_is_not_significant():
    preds = _regimes({"cls": 0.7, "mean": 0.8}, {"cls": 0.7, "mean": 0.8})
    row = comparisons(preds, n_boot=2000).query("kind == 'gap_change'").iloc[0]
    assert row["ci_low"] < 0 < row["ci_high"] and row["p"] > 0.05 and row["holm_p"] > 0.05


def test_gap_change_exact_values_of_a_hand_built_case():
    from poolbench import stats as st

    right = {("frozen", "cls"): [[0, 0], [0, 1], [1, 1]], ("frozen", "mean"): [[1, 1]] * 3,
             ("topk", "cls"): [[1, 1]] * 3, ("topk", "mean"): [[1, 0], [1, 1], [0, 1]]}
    rows = [dict(SETTING, regime=regime, pooling=pooling, seed=seed, id=f"u{unit}", label=1, pred=int(ok[unit][seed]))
            for (regime, pooling), ok in right.items() for unit in range(3) for seed in range(2)]
    row = comparisons(pd.DataFrame(rows), n_boot=4000).query("kind == 'gap_change'").iloc[0]
    gap = {r: np.array(right[(r, "mean")]) - np.array(right[(r, "cls")]) for r in ("frozen", "topk")}
    # gaps: frozen 3 of 6 unit-seeds, topk -2 of 6: (-2 - 3) / 6
    assert row["diff"] == -5 / 6
    # per seed, units whose gap grew / shrank: seed 0: 0 / 3, seed 1: 0 / 1 (units 1 and 2 tie)
    assert row["mcnemar_p_seed0"] == st.mcnemar_exact(0, 3) == 0.25 and row["mcnemar_p_seed1"] == 1.0
    # the bootstrap resamples units and seeds once for both regimes: the per-unit difference in
    # differences, resampled by itself on the same draws, gives the same CI and p
    did = gap["topk"] - gap["frozen"]
    boot = st.Resampler(3, 2, 4000, 0).totals(did)
    low, high = np.quantile(boot / 6, [0.025, 0.975])
    assert (row["ci_low"], row["ci_high"], row["p"]) == (low, high, st.bootstrap_p(boot))
    # every unit-seed's difference in differences is <= 0, so no draw is above 0: p counts the zero draws
    assert boot.max() == 0 and row["p"] == 2 * (1 + (boot == 0).sum()) / 4001


def test_gap_change_needs_frozen_and_the_same_seeds_and_joins_the_holm_family():
    preds = pd.concat([_regimes({"cls": 0.6, "mean": 0.8}, {"cls": 0.8, "mean": 0.8}),
                       synthetic(acc={"cls": 0.8, "mean": 0.8}, seeds=(0,), rng=3, regime="full"),  # 1 seed
                       synthetic(acc={"cls": 0.7, "mean": 0.9}, rng=4, regime="top4"),
                       synthetic(acc={"cls": 0.6, "mean": 0.9}, rng=5, regime="topk", dataset="tailprobe")],
                      ignore_index=True)
    comps = comparisons(preds, n_boot=500)
    gap = comps[comps["kind"] == "gap_change"]
    assert sorted(gap["a"]) == ["top4", "topk"] and (gap["dataset"] == "imdb").all()  # no full, no frozen probe
    # one Holm family: the smallest p is multiplied by the number of distinct tests, gap_change included
    # (best = worst = the baseline comparison in each two-pooling setting: one test for all three rows)
    n_tests = len(comps) - 2 * (comps["kind"] == "baseline").sum()
    assert comps["holm_p"].min() == pytest.approx(min(1, comps["p"].min() * n_tests))
    assert (comps["holm_p"] >= comps["p"]).all()
    bad = preds[~((preds["regime"] == "top4") & (preds["id"] == "ex0"))]
    bad = pd.concat([bad, preds[(preds["regime"] == "top4") & (preds["id"] == "ex0")].assign(id="other")])
    with pytest.raises(ValueError, match="same verdicts and seeds"):
        comparisons(bad, n_boot=50)


def test_the_main_fine_tuned_regime_is_the_configs_or_the_only_one():
    runs = pd.DataFrame([dict(SETTING, regime=r, pooling=p) for r, ps in
                         [("frozen", "abc"), ("topk", "abc"), ("top1", "ab"), ("full", "a")] for p in ps]
                        + [dict(SETTING, dataset="tailprobe", regime="frozen", pooling="a")]
                        + [dict(SETTING, model="n", regime=r, pooling="a") for r in ("frozen", "lpft")])
    settings = Statistics.from_config({"main_regimes": {"m": "top1"}})
    # m named by the config (not the regime with most poolings); n trained in one other regime only
    assert settings.finetuned_regimes(runs) == {("imdb", "m", "encoder", "head", 128): "top1",
                                                ("imdb", "n", "encoder", "head", 128): "lpft"}
    with pytest.raises(StatisticsError, match=r"statistics\.main_regimes\.m: missing.*full, top1, topk"):
        Statistics().finetuned_regimes(runs)
    # the reference regime is a setting too: gap_change and the tables measure against it
    other = Statistics.from_config({"reference_regime": "topk", "main_regimes": {"m": "frozen", "n": "lpft"}})
    assert other.finetuned_regimes(runs) == {("imdb", "m", "encoder", "head", 128): "frozen"}
    kept = other.main_rows(runs)
    assert set(kept["regime"]) == {"topk", "frozen", "lpft"} and "top1" not in set(kept["regime"])


def test_a_bad_statistics_section_is_refused_with_its_key():
    for section, match in [({"claim_tests": "both"}, r"statistics\.claim_tests: unknown key"),
                           ({"claim_test": "t"}, r"statistics\.claim_test: 't'"),
                           ({"confirmatory": [{"kind": "baseline", "pooling_a": "x"}]}, r"confirmatory\[0\]: unknown key"),
                           ({"confirmatory": [{"a": "mean"}]}, r"confirmatory\[0\]: kind must be")]:
        with pytest.raises(StatisticsError, match=match):
            Statistics.from_config(section)
    config = {"regimes": {"frozen": {}, "topk": {}}, "models": {"m": {}}}
    Statistics.from_config({"main_regimes": {"m": "topk"}}).check(config)
    with pytest.raises(StatisticsError, match=r"statistics\.reference_regime: unknown regime 'probe'"):
        Statistics.from_config({"reference_regime": "probe"}).check(config)
    with pytest.raises(StatisticsError, match=r"statistics\.main_regimes\.x: unknown model"):
        Statistics.from_config({"main_regimes": {"x": "topk"}}).check(config)
    preds = synthetic(n=50, acc={"cls": 0.7, "mean": 0.8})
    with pytest.raises(StatisticsError, match=r"confirmatory\[0\].*selects no comparison"):
        comparisons(preds, n_boot=50, settings=Statistics.from_config({"confirmatory": [{"kind": "baseline", "a": "max"}]}))


def test_holm_runs_over_the_confirmatory_family_and_bh_over_the_rest():
    preds = pd.concat([synthetic(acc={"cls": 0.60, "mean": 0.80, "max": 0.62, "pooler": 0.61}),
                       _regimes({"cls": 0.6, "mean": 0.8}, {"cls": 0.8, "mean": 0.8}, dataset="other")],
                      ignore_index=True)
    everything = comparisons(preds, n_boot=2000)
    assert (everything["claim_family"] == "confirmatory").all() and everything["bh_p"].isna().all()
    settings = Statistics.from_config({"confirmatory": [
        {"kind": "baseline", "dataset": "imdb", "a": "mean"},
        {"kind": "gap_change", "dataset": "other", "regime": "topk vs frozen", "pooling": "mean"}]})
    comps = comparisons(preds, n_boot=2000, settings=settings)
    conf = comps[comps["claim_family"] == "confirmatory"]
    assert len(conf) == 2 and set(conf["kind"]) == {"baseline", "gap_change"}
    # Holm over the two confirmatory tests only: the smaller p is doubled
    assert conf["holm_p"].min() == pytest.approx(min(1, 2 * conf["p"].min())) and conf["bh_p"].isna().all()
    expl = comps[comps["claim_family"] == "exploratory"]
    assert expl["holm_p"].isna().all() and (expl["bh_p"] >= expl["p"]).all()
    assert expl["bh_p"].min() <= expl["p"].min() * len(expl) + 1e-12  # BH never exceeds Bonferroni
    # the same numbers otherwise; the unadjusted p and the mixed-model test do not depend on the family
    assert np.array_equal(comps["p"], everything["p"]) and np.array_equal(comps["mixed_p"], everything["mixed_p"])
    # claim_test both: a claim needs the bootstrap and the mixed model
    both = comparisons(preds, n_boot=2000, settings=Statistics.from_config({"claim_test": "both"}))
    assert (both["claim_p"] == np.maximum(both["p"], both["mixed_p"])).all()
    assert (both["holm_p"] >= everything["holm_p"] - 1e-12).all()
    # the digest says which family each row is in
    text = analysis.markdown_summary(pooling_stats(preds, n_boot=100), comps, pd.DataFrame(), settings)
    assert "Holm's p over the 2 confirmatory comparisons" in text and "BH p" in text


def test_comparisons_carry_the_mixed_model_test():
    preds = synthetic(acc={"cls": 0.70, "mean": 0.90, "max": 0.70})
    comps = comparisons(preds, n_boot=500).query("kind == 'baseline'").set_index("a")
    assert comps.loc["mean", "mixed_p"] < 1e-6 and comps.loc["max", "mixed_p"] > 0.01
    assert (comps["mixed_df"] >= 2).all()
    one = comparisons(synthetic(n=50, seeds=(0,), acc={"cls": 0.7, "mean": 0.8}), n_boot=50)
    assert one["mixed_p"].isna().all()  # one seed: no seed-level test


def natural(n=40, seeds=(0, 1, 2), acc=None, rng=0, **setting):
    """Natural-tail-like transfer predictions: n reviews per set, each in three variants; each pooling
    right with probability acc[(pooling, variant)] (default 0.5)."""
    rng = np.random.default_rng(rng)
    acc = acc or {}
    base = pd.DataFrame([{"review_id": f"{s}{i}", "set": s, "variant": v, "id": f"{s}{i}-{v}"}
                         for s in ("tail", "head") for i in range(n) for v in ("original", "removed", "moved")])
    base["label"] = rng.integers(0, 2, len(base))
    rows = []
    for pooling in sorted({p for p, _ in acc} or {"cls", "mean"}):
        for seed in seeds:
            p = base["variant"].map(lambda v: acc.get((pooling, v), 0.5)).to_numpy()
            correct = rng.random(len(base)) < p
            rows.append(base.assign(pred=np.where(correct, base["label"], 1 - base["label"]),
                                    **{**SETTING, **setting}, pooling=pooling, seed=seed))
    return pd.concat(rows, ignore_index=True)


def attention_summary(mass=None):
    """verdict_attention.csv as poolbench.attention.summarise writes it, from hand-made per-example masses:
    [CLS] over 2 layers frozen and fine-tuned (topk, 1 layer), the attention pooling in its last layer."""
    from poolbench.attention import summarise

    mass = mass or {}
    frames = []
    for measure, layers in (("cls_attention", (1, 2)), ("attention_pooling", (2,))):
        for regime, k in (("frozen", 0), ("topk", 1)):
            for layer in layers:
                value = mass.get((measure, regime, layer), 0.1 * layer + 0.2 * k)
                frames.append(pd.DataFrame({
                    "measure": measure, "regime": regime, "trained_layers": k, "layer": layer,
                    "id": [f"tp{i}" for i in range(12)], "condition": ["agree", "contrast"] * 6,
                    "position": ["start", "middle", "end"] * 4, "verdict_cut": [False] * 11 + [True],
                    "mass": [value] * 11 + [np.nan], "verdict_tokens": 5, "tokens": 50}))
    return summarise(*frames, n_boot=100)


def paper_inputs(folder):
    """Every summary a fine-tuned study makes, from synthetic predictions, written into ``folder``."""
    imdb = pd.concat([_regimes({"cls": 0.6, "mean": 0.8, "max": 0.7}, {"cls": 0.8, "mean": 0.8, "max": 0.75}),
                      synthetic(acc={"cls": 0.8, "mean": 0.85}, rng=3, regime="top1")], ignore_index=True)
    preds = pd.concat([imdb, probe()], ignore_index=True)
    layers = {"frozen": 0, "top1": 1, "topk": 2}
    runs = preds.groupby(RUN_KEYS, as_index=False).size().assign(
        wall_s=10.0, precision="fp32", trained_layers=lambda d: d["regime"].map(layers))
    stats, comps = pooling_stats(preds, n_boot=300), comparisons(preds, n_boot=500)
    nat = pd.concat([natural(acc={("cls", "original"): 0.8, ("mean", "original"): 0.6}, regime=r, rng=i)
                     for i, r in enumerate(("frozen", "topk"))], ignore_index=True)
    tables = {"runs": runs, "pooling_stats": stats, "comparisons": comps,
              "tailprobe_cells": probe_cells(preds[preds["dataset"] == "tailprobe"], n_boot=100),
              "regime_ladder": analysis.regime_ladder(runs, stats, comps),
              "naturaltail_cells": analysis.natural_cells(nat, n_boot=100), "verdict_attention": attention_summary()}
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    return tables


def macros_of(folder) -> dict:
    tex = (folder / "paper" / "numbers.tex").read_text()
    names = re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", tex)
    assert len(names) == len(set(names))  # LaTeX refuses a macro defined twice
    return dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}", tex))


def optional(folder):
    return dict(natural=folder / "naturaltail_cells.csv", ladder=folder / "regime_ladder.csv",
                attention=folder / "verdict_attention.csv")


def test_fine_tuning_tables_and_macros_come_from_the_summaries(tmp_path):
    from poolbench.paper import write

    t = paper_inputs(tmp_path)
    write_paper(write, tmp_path, regimes=True, **optional(tmp_path))
    macros = macros_of(tmp_path)
    comps, stats = t["comparisons"], t["pooling_stats"]
    # tab_regimes: frozen and fine-tuned accuracy, the fine-tuned difference to the baseline, the precision
    regimes = (tmp_path / "paper" / "tab_regimes.tex").read_text()
    tuned = comps[(comps["kind"] == "baseline") & (comps["regime"] == "topk") & (comps["a"] == "mean")].iloc[0]
    assert f"{100 * tuned['diff']:+.1f} [{100 * tuned['ci_low']:+.1f}, {100 * tuned['ci_high']:+.1f}]" in \
        regimes.replace("$-$", "-")
    frozen_max = stats[(stats["regime"] == "frozen") & (stats["pooling"] == "max") & (stats["dataset"] == "imdb")]
    assert f"{100 * frozen_max['accuracy'].iloc[0]:.1f} [" in regimes
    assert "fine-tuned = topk: top 2 layers trained, fp32" in regimes
    assert "top1" not in regimes  # the main grid's regime, not a ladder step
    assert macros["FinetunedImdbMHeadOneTwoEightRegime"] == "topk" and macros["RunPrecision"] == "fp32"
    assert macros["FinetunedImdbMHeadOneTwoEightLayers"] == "2"
    assert macros["FinetunedImdbMHeadOneTwoEightPrecision"] == "fp32"
    assert float(macros["FinetunedImdbMHeadOneTwoEightMeanVsBaselineDiff"]) == pytest.approx(100 * tuned["diff"],
                                                                                             abs=0.051)
    # gap_change: one macro triple per row, and the counts
    gap = comps[(comps["kind"] == "gap_change") & (comps["a"] == "topk") & (comps["pooling"] == "mean")].iloc[0]
    assert float(macros["GapChangeImdbMHeadOneTwoEightTopkMeanDiff"].replace("$-$", "-")) == pytest.approx(
        100 * gap["diff"], abs=0.051)
    assert macros["NGapChange"] == str((comps["kind"] == "gap_change").sum()) == "3"  # topk: mean, max; top1: mean
    assert "GapChangeImdbMHeadOneTwoEightTopOneMeanHolmP" in macros
    # the ladder, natural tail and verdict attention
    ladder = t["regime_ladder"].set_index(["regime", "pooling"])
    assert macros["LadderImdbMHeadOneTwoEightTopOneMeanAcc"] == f"{100 * ladder.loc[('top1', 'mean'), 'accuracy']:.1f}"
    assert macros["LadderImdbMHeadOneTwoEightTopOneLayers"] == "1" and macros["NLadderSettings"] == "1"
    assert "LadderImdbMHeadOneTwoEightFrozenMeanGapCI" in macros
    nat = t["naturaltail_cells"].set_index(["regime", "pooling", "set", "variant"])
    assert macros["NaturalImdbMHeadOneTwoEightTopkClsTailOriginal"] == \
        f"{100 * nat.loc[('topk', 'cls', 'tail', 'original'), 'accuracy']:.1f}"
    assert macros["NaturalTailReviews"] == "40"
    natural_tex = (tmp_path / "paper" / "tab_natural.tex").read_text()
    assert r"\label{tab:natural}" in natural_tex and "Reviews: 40 tail, 40 head." in natural_tex
    assert natural_tex.count(r"\emph{m head-128") == 2  # frozen and topk blocks
    att = t["verdict_attention"]
    assert macros["AttentionClsFrozenAllAllMass"] == "20.0" and macros["AttentionClsFineTunedAllEndMass"] == "40.0"
    assert macros["AttentionPoolingFineTunedContrastStartUniform"] == "10.0"
    assert macros["AttentionClsFrozenLayer"] == "2"
    assert macros["AttentionFinetunedRegime"] == "topk" and macros["AttentionNCut"] == "1"
    assert macros["AttentionNExamples"] == str(att["n"].max()) == "11"


@pytest.mark.parametrize("table, column, where, macro", [
    ("regime_ladder", "accuracy", dict(regime="top1", pooling="mean"), "LadderImdbMHeadOneTwoEightTopOneMeanAcc"),
    ("naturaltail_cells", "accuracy", dict(regime="frozen", pooling="mean", set="head", variant="moved"),
     "NaturalImdbMHeadOneTwoEightFrozenMeanHeadMoved"),
    ("verdict_attention", "mean", dict(measure="cls_attention", regime="topk", layer=2, condition="all",
                                       position="end"), "AttentionClsFineTunedAllEndMass"),
    ("comparisons", "diff", dict(kind="gap_change", a="topk", pooling="max"),
     "GapChangeImdbMHeadOneTwoEightTopkMaxDiff"),
    ("pooling_stats", "accuracy", dict(regime="topk", pooling="max", dataset="imdb"),
     "FinetunedImdbMHeadOneTwoEightMaxAcc"),
])
def test_a_number_changed_in_a_summary_changes_its_macro(tmp_path, table, column, where, macro):
    from poolbench.paper import write

    t = paper_inputs(tmp_path)
    df = t[table]
    rows = (df[list(where)] == pd.Series(where)).all(axis=1)
    assert rows.sum() == 1
    df.loc[rows, column] = 0.123456
    df.to_csv(tmp_path / f"{table}.csv", index=False)
    write_paper(write, tmp_path, regimes=True, **optional(tmp_path))
    assert macros_of(tmp_path)[macro] in ("12.3", "+12.3")
    if table == "naturaltail_cells":
        assert " 12.3 " in (tmp_path / "paper" / "tab_natural.tex").read_text()


def test_without_fine_tuning_ladder_natural_or_attention_there_are_no_new_files_or_macros(tmp_path):
    from poolbench.paper import write

    preds = pd.concat([synthetic(acc={"cls": 0.7, "mean": 0.8}), probe()], ignore_index=True)
    preds.groupby(RUN_KEYS, as_index=False).size().assign(wall_s=1.0).to_csv(tmp_path / "runs.csv", index=False)
    pooling_stats(preds, n_boot=100).to_csv(tmp_path / "pooling_stats.csv", index=False)
    comparisons(preds, n_boot=100).to_csv(tmp_path / "comparisons.csv", index=False)
    write_paper(write, tmp_path)
    assert sorted(f.name for f in (tmp_path / "paper").iterdir()) == [
        "numbers.tex", "tab_imdb.tex", "tab_probe.tex", "tab_probe_pooling.tex", "tab_superlatives.tex"]
    assert not [m for m in macros_of(tmp_path) if m.startswith(("Finetuned", "GapChange", "Ladder", "Natural",
                                                                   "Attention", "NGapChange", "RunPrecision"))]
    with pytest.raises(ValueError, match="no setting of pooling_stats was trained frozen"):
        write_paper(write, tmp_path, regimes=True)  # tab_regimes declared for a frozen-only study


def test_a_declared_summary_that_is_missing_is_an_error_naming_it(tmp_path):
    from poolbench.paper import write

    paper_inputs(tmp_path)
    for name, path in optional(tmp_path).items():
        gone = tmp_path / "gone" / path.name
        with pytest.raises(FileNotFoundError, match=re.escape(str(gone))):
            write_paper(write, tmp_path, regimes=True, **{**optional(tmp_path), name: gone})
    with pytest.raises(ValueError, match="natural"):  # tab_natural declared without its cells
        write(runs=tmp_path / "runs.csv", stats=tmp_path / "pooling_stats.csv",
              comparisons=tmp_path / "comparisons.csv", probe=tmp_path / "tailprobe_cells.csv",
              transfer=tmp_path / "tailprobe_cells.csv", checks=None,
              out={k: tmp_path / "p" / f"{k}.tex" for k in ("numbers", "imdb", "superlatives", "probe",
                                                           "probe_pooling", "regimes", "natural")}, settings=MAIN)


def test_verdict_words_follow_holm_p():
    from poolbench.paper import verdict

    assert verdict(pd.Series({"holm_p": 0.049})) == "significant"
    assert verdict(pd.Series({"holm_p": 0.05})) == "not significant"
    assert verdict(pd.Series({"holm_p": 0.8})) == "not significant"


def test_probe_checks_become_macros():
    from poolbench.paper import numbers

    preds = synthetic(acc={"cls": 0.7, "mean": 0.8})
    stats, comps = pooling_stats(preds, n_boot=100), comparisons(preds, n_boot=100)
    runs = preds.groupby(RUN_KEYS, as_index=False).size().assign(wall_s=1.0)
    checks = {"labels_clean": {"splits": {"test": {"agreement": 0.99, "abstention_rate": 0.1}}},
              "read_and_counted": {"by_kind": {"verdict": {"n": 100, "agree": 97}, "contrast": {"n": 50, "agree": 5}}},
              "baselines": {"measured": {"tfidf_probe_train": 0.754},
                            "by_condition": {"tfidf_probe_train": {"contrast": 0.7, "agree": 0.81}}},
              "same_film": {"splits": {"test": {"overall": 0.405}}}}
    tex = numbers(runs, stats, comps, pd.DataFrame(), pd.DataFrame(), checks)
    macros = dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}", tex))
    assert macros["AuditVerdictAgree"] == "97" and macros["AuditContrastN"] == "50"
    assert macros["BaselineTfidfProbeTrain"] == "75.4" and macros["BaselineTfidfProbeTrainContrast"] == "70.0"
    assert macros["CheckSameFilm"] == "40.5"


def test_probe_table_has_every_regime_and_the_baselines():
    from poolbench.paper import probe_table

    preds = pd.concat([probe(), probe(rng=1, regime="topk")], ignore_index=True)
    cells, comps = probe_cells(preds, n_boot=100), comparisons(preds, n_boot=100)
    base = [{"baseline": "tfidf_probe_train", "condition": "contrast", "length_bin": "long", "position": p,
             "accuracy": acc} for p, acc in (("start", 0.25), ("middle", 0.5), ("end", 0.75))]
    table = probe_table(cells, comps, "caption", "tab:x", baselines=base)
    frozen, topk = table.index("m head-128, frozen"), table.index("m head-128, topk")
    assert frozen < topk < table.index("TF-IDF on probe-train & 25.0 & 50.0 & 75.0")
    long_topk = cells[(cells["regime"] == "topk") & (cells["condition"] == "contrast") & (cells["length_bin"] == "long")
                      & (cells["pooling"] == "mean")].set_index("position")["accuracy"]
    assert f"mean & {100 * long_topk['start']:.1f} & {100 * long_topk['middle']:.1f} & {100 * long_topk['end']:.1f}" \
        in table[topk:]


def test_the_accuracy_figure_keeps_frozen_and_the_main_fine_tuned_regime():
    grid = {"cls": 0.7, "mean": 0.8, "max": 0.75}
    preds = pd.concat([synthetic(acc=grid), synthetic(acc=grid, rng=1, regime="topk"),
                       synthetic(acc={"cls": 0.7, "mean": 0.8}, rng=2, regime="top1"),  # a ladder step
                       synthetic(acc={"cls": 0.7}, rng=3, regime="frozen", dataset="tailprobe"),
                       synthetic(acc={"cls": 0.7}, rng=4, regime="topk", dataset="other")], ignore_index=True)
    stats = pooling_stats(preds, n_boot=50)
    kept = MAIN.main_rows(stats)
    assert set(zip(kept["dataset"], kept["regime"])) == {("imdb", "frozen"), ("imdb", "topk"), ("tailprobe", "frozen"),
                                                         ("other", "topk")}
