"""Tables, figures and digest on synthetic predictions: the tests know the answer."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from poolbench import analysis
from poolbench.analysis import RUN_KEYS, comparisons, pooling_stats, probe_cells, read_predictions

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
    preds = pd.concat([synthetic(acc={"cls": 0.70, "mean": 0.90}), probe()], ignore_index=True)
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
    assert macros["NRuns"] == "12" and macros["ImdbMHeadOneTwoEightBestPooling"] == "mean"
    assert float(macros["ImdbMHeadOneTwoEightBestAcc"]) == pytest.approx(100 * stats["accuracy"].max(), abs=0.051)
    mean = comps[(comps["kind"] == "baseline") & (comps["dataset"] == "imdb")].iloc[0]
    assert float(macros["ImdbMHeadOneTwoEightMeanVsBaselineDiff"]) == pytest.approx(100 * mean["diff"], abs=0.051)
    assert macros["ImdbMHeadOneTwoEightNCompared"] == "1" and macros["NComparisons"] == str(len(comps))
    assert "ProbeMHeadOneTwoEightMeanContrastLongEndMinusStartCI" in macros
    table = (tmp_path / "paper" / "tab_imdb.tex").read_text()
    assert f"{100 * mean['diff']:+.1f} [{100 * mean['ci_low']:+.1f}, {100 * mean['ci_high']:+.1f}]" in table


def write_paper(write, folder):
    """paper.write on the summary files in ``folder`` (missing probe tables: empty), into folder/paper."""
    for name in ("tailprobe_cells.csv", "transfer_tailprobe_cells.csv"):
        if not (folder / name).exists():
            (folder / name).write_text("\n")
    out = {key: folder / "paper" / f"{name}.tex" for key, name in [
        ("numbers", "numbers"), ("imdb", "tab_imdb"), ("superlatives", "tab_superlatives"), ("probe", "tab_probe"),
        ("probe_pooling", "tab_probe_pooling")]}
    write(runs=folder / "runs.csv", stats=folder / "pooling_stats.csv", comparisons=folder / "comparisons.csv",
          probe=folder / "tailprobe_cells.csv", transfer=folder / "transfer_tailprobe_cells.csv", checks=None, out=out)


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
