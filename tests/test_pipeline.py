"""The smoke pipeline end to end, invoked through the snakemake CLI as a user would."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from poolbench.config import canonical, expand, run_spec
from poolbench.paths import run_dir

from conftest import run_snakemake


def test_every_run_has_metrics_and_predictions(smoke):
    workdir, cfg = smoke
    runs = expand(cfg)
    assert len(runs) == 42
    for run in runs:
        folder = run_dir(workdir / cfg["results_dir"], **run.wildcards())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["pooling"] == run.pooling and metrics["seed"] == run.seed
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
        assert metrics["n"] == cfg["datasets"]["imdb"]["test_size"]
        assert metrics["wall_s"] > 0 and metrics["cpu_s"] > 0 and metrics["precision"] in ("fp32", "bf16")
        fit = metrics["train"]
        if run.regime == "frozen":  # heads fitted to their optimum (poolbench.heads)
            assert fit["method"] in ("logistic_cv", "sgd_early_stopping") and fit["train_loss"] > 0
        else:
            assert fit["train_tokens_per_s"] > 0
        assert metrics["versions"]["torch"] and canonical(metrics["spec"]) == canonical(run_spec(cfg, run))
        assert metrics["schema_version"] == 2 and metrics["spec"]["pooling"]["name"] == run.pooling
        preds = pd.read_parquet(folder / "predictions.parquet")
        assert list(preds.columns[:4]) == ["id", "label", "pred", "p_positive"]
        assert len(preds) == metrics["n"] and preds["id"].is_unique
        assert ((preds["p_positive"] >= 0.5).astype(int) == preds["pred"]).all()
        assert metrics["accuracy"] == pytest.approx((preds["pred"] == preds["label"]).mean())


def test_summary_table_and_figure(smoke):
    workdir, cfg = smoke
    results = workdir / cfg["results_dir"]
    runs = pd.read_csv(results / "summary" / "runs.csv")
    assert len(runs) == len(expand(cfg))
    assert set(runs["pooling"]) == set(cfg["poolings"]["encoder"]) | set(cfg["poolings"]["decoder"])
    for name in ("accuracy_by_pooling.png", "training_curves.png"):  # smoke's topk runs early-stop on dev
        png = (results / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_seeds_differ_but_repeat_exactly(smoke, tmp_path):
    """Same seed → identical predictions; the two seeds are genuinely different runs."""
    workdir, cfg = smoke
    results = workdir / cfg["results_dir"]
    a = pd.read_parquet(run_dir(results, "imdb", "random-bert", "frozen", "head", 64, "attention", 0) / "predictions.parquet")
    b = pd.read_parquet(run_dir(results, "imdb", "random-bert", "frozen", "head", 64, "attention", 1) / "predictions.parquet")
    assert not a["p_positive"].equals(b["p_positive"])
    # Rerun one job from scratch and compare bit for bit.
    target = run_dir(cfg["results_dir"], "imdb", "random-bert", "frozen", "head", 64, "attention", 0) / "metrics.json"
    run_snakemake(workdir, "--cores", "1", "--forcerun", str(target), str(target))
    again = pd.read_parquet(run_dir(results, "imdb", "random-bert", "frozen", "head", 64, "attention", 0) / "predictions.parquet")
    pd.testing.assert_frame_equal(a, again)


def test_nothing_to_do_after_a_complete_run(smoke):
    workdir, _ = smoke
    proc = run_snakemake(workdir, "--cores", "1", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
