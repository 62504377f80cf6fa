"""The rule is the contract: a setting reruns exactly the jobs that use it, and nothing else.

Each test changes one thing after a complete run of the mini config and asks Snakemake what it
would do (`--dry-run`): the jobs it plans, with their wildcards.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from poolbench.config import expand

from conftest import REPO, load_config, run_snakemake

MINI = REPO / "tests" / "configs" / "mini.yaml"


def planned(output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job in a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((head.group(1), pairs))
    return jobs


def dry_run(workdir: Path, config: dict | Path, tmp_path: Path, env: dict | None = None) -> list[tuple[str, dict]]:
    if isinstance(config, dict):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        config = path
    proc = run_snakemake(workdir, "--dry-run", "--cores", "1", configfile=config, env=env)
    return planned(proc.stdout + proc.stderr)


def rules(jobs) -> set[str]:
    return {rule for rule, _ in jobs}


@pytest.fixture(scope="module")
def done(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("reruns")
    run_snakemake(workdir, "--cores", "2", configfile=MINI)
    return workdir


def test_nothing_changed_nothing_planned(done, tmp_path):
    assert dry_run(done, MINI, tmp_path) == []


def test_reordering_yaml_keys_reruns_nothing(done, tmp_path):
    def reverse(obj):
        return {k: reverse(obj[k]) for k in reversed(list(obj))} if isinstance(obj, dict) else obj

    assert dry_run(done, reverse(load_config(MINI)), tmp_path) == []


def test_one_regimes_learning_rate_reruns_exactly_its_runs(done, tmp_path):
    cfg = load_config(MINI)
    cfg["regimes"]["finetune"]["lr"] *= 2
    jobs = dry_run(done, cfg, tmp_path)
    trained = [wc for rule, wc in jobs if rule == "train"]
    expected = [run for run in expand(cfg) if run.regime == "finetune"]
    assert len(trained) == len(expected) > 0 and all(wc["regime"] == "finetune" for wc in trained)
    # ... and the summaries built from them; no data, model or feature job.
    assert rules(jobs) == {"train", "aggregate", "statistics", "figures", "all"}


def test_bumping_a_poolings_version_reruns_only_that_pooling(done, tmp_path):
    # The version bump a developer would type in pooling.py, applied at interpreter start-up.
    (tmp_path / "sitecustomize.py").write_text(
        "from poolbench.pooling import POOLINGS\nPOOLINGS['max'].version += 1\n")
    jobs = dry_run(done, MINI, tmp_path, env={"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"})
    trained = [wc["pooling"] for rule, wc in jobs if rule == "train"]
    assert trained == ["max"]
    assert rules(jobs) == {"train", "aggregate", "statistics", "figures", "all"}


def test_test_size_rebuilds_the_test_subset_and_its_dependants_only(done, tmp_path):
    cfg = load_config(MINI)
    cfg["datasets"]["imdb"]["test_size"] = 40
    jobs = dry_run(done, cfg, tmp_path)
    subsets = [wc["split"] for rule, wc in jobs if rule == "imdb_subset"]
    assert subsets == ["test"]  # the training subset stays
    assert "model" not in rules(jobs) and "tokenizer" not in rules(jobs)
    features = [wc["split"] for rule, wc in jobs if rule == "features"]
    assert set(features) <= {"test"}


def test_a_rebuilt_subset_retrains_the_runs_that_read_it(done, tmp_path):
    # The subset's job reruns (its params), and so does every run whose spec holds the subset's: the
    # runs' own stamps say so even though Snakemake skips jobs downstream of a rerun through ancient inputs.
    cfg = load_config(MINI)
    cfg["datasets"]["imdb"]["train_size"] = 60
    jobs = dry_run(done, cfg, tmp_path)
    assert [wc["split"] for rule, wc in jobs if rule == "imdb_subset"] == ["train"]
    assert len([wc for rule, wc in jobs if rule == "train"]) == len(expand(cfg))


def test_adding_an_evaluation_set_retrains_nothing(done, tmp_path):
    cfg = load_config(MINI)
    cfg["transfer"] = {"imdb": ["sst2"]}
    cfg["datasets"]["sst2"] = {}
    jobs = dry_run(done, cfg, tmp_path)
    assert "train" not in rules(jobs)
    assert len([wc for rule, wc in jobs if rule == "evaluate"]) == len(expand(cfg))
    assert {"evalset", "evalset_report", "evalset_cells"} <= rules(jobs)


def test_jobs_read_settings_only_through_their_rule():
    """No job touches the global config: the attributes a job reads off `smk` are its rule's own."""
    import ast

    tree = ast.parse((REPO / "src" / "poolbench" / "jobs.py").read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "smk"}
    assert used and used <= {"input", "output", "params", "wildcards", "log", "threads", "rule", "scriptdir"}


# ---- init_from (LP-FT): a fine-tuned regime starting from the frozen runs' pooling and head ----


def with_lpft(cfg: dict) -> dict:
    """``cfg`` (the mini config) plus a topk regime ``lpft`` that starts from the frozen runs (mean, attention)."""
    cfg = {**cfg, "regimes": {**cfg["regimes"], "lpft": {"kind": "topk", "epochs": 1, "batch_size": 16, "lr": 1e-4,
                                                         "trainable_layers": 1, "init_from": "frozen"}}}
    cfg["study"] = [*cfg["study"], {"datasets": ["imdb"], "models": ["random-bert"], "regimes": ["lpft"],
                                    "truncations": ["head"], "max_len": [64], "seeds": [0],
                                    "poolings": ["mean", "attention"]}]
    return cfg


def test_init_from_adds_the_frozen_runs_spec_to_its_runs_only():
    """A regime without init_from keeps today's spec byte for byte (committed runs stay current)."""
    from conftest import DEFAULT_CONFIG
    from poolbench.config import canonical, check, init_counterpart, run_spec

    base = load_config(MINI)
    cfg = with_lpft(base)
    check(cfg)
    for run in expand(base):
        assert canonical(run_spec(cfg, run)) == canonical(run_spec(base, run))
        assert "init_from" not in run_spec(cfg, run) and init_counterpart(cfg, run) is None
    lpft = [run for run in expand(cfg) if run.regime == "lpft"]
    assert len(lpft) == 2
    for run in lpft:
        spec, frozen = run_spec(cfg, run), init_counterpart(cfg, run)
        assert frozen.regime == "frozen" and frozen.pooling == run.pooling and frozen in expand(cfg)
        assert spec["init_from"] == run_spec(cfg, frozen) and spec["regime"]["init_from"] == "frozen"
    # the committed results of the default study are current under today's specs
    from poolbench.config import recorded_run_spec
    from poolbench.paths import METRICS

    default = load_config(DEFAULT_CONFIG)
    stale = [run for run in expand(default) if canonical(run_spec(default, run)) != canonical(
        recorded_run_spec(REPO / default["results_dir"] / METRICS.format(**run.wildcards())))]
    assert stale == []


def train_jobs(output: str) -> dict[tuple[str, str], list[str]]:
    """{(regime, pooling): input paths} of the train jobs of a dry run's listing."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if re.match(r"(?:local)?rule train:", block):
            wc = dict(kv.split("=", 1) for kv in re.search(r"^\s+wildcards: (.*)$", block, re.M).group(1).split(", "))
            found = re.search(r"^\s+input: (.*)$", block, re.M)
            jobs[wc["regime"], wc["pooling"]] = found.group(1).split(", ") if found else []
    return jobs


def test_a_run_with_init_from_takes_its_frozen_runs_weights_and_a_fresh_clone_trains_nothing(tmp_path):
    import json

    from poolbench.config import run_spec
    from poolbench.paths import WEIGHTS, run_dir

    cfg = with_lpft(load_config(MINI))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    work = tmp_path / "work"
    # 1. nothing built: each lpft run waits for its frozen run's weights; no other run takes weights
    proc = run_snakemake(work, "--dry-run", "--cores", "1", configfile=path)
    jobs = train_jobs(proc.stdout + proc.stderr)
    weights = lambda regime, pooling: f"{cfg['resources_dir']}/" + WEIGHTS.format(  # noqa: E731
        dataset="imdb", model="random-bert", regime=regime, truncation="head", max_len=64, pooling=pooling, seed=0)
    for pooling in ("mean", "attention"):
        assert weights("frozen", pooling) in jobs["lpft", pooling]
        assert weights("frozen", pooling) not in jobs["frozen", pooling]
    assert sum("weights/" in p for inputs in jobs.values() for p in inputs) == 2
    # 2. a fresh clone: every result committed and current, no resources: nothing trains
    for run in expand(cfg):
        folder = run_dir(work / cfg["results_dir"], **run.wildcards())
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"spec": run_spec(cfg, run)}))
        (folder / "predictions.parquet").write_bytes(b"")
    proc = run_snakemake(work, "--dry-run", "--cores", "1", configfile=path)
    assert not rules(planned(proc.stdout + proc.stderr)) & {"download_wheel", "tokenizer", "model", "imdb_subset",
                                                              "features", "train", "evaluate"}
    # ... and rerunning a frozen run retrains that run only, not the lpft run that starts from it
    frozen_metrics = run_dir(cfg["results_dir"], "imdb", "random-bert", "frozen", "head", 64, "mean", 0) / "metrics.json"
    proc = run_snakemake(work, "--dry-run", "--cores", "1", "--forcerun", str(frozen_metrics), configfile=path)
    assert set(train_jobs(proc.stdout + proc.stderr)) == {("frozen", "mean")}
    # 3. ... except an lpft run whose results are gone: it and its frozen run (whose weights it needs,
    # with all of that run's inputs) train, nothing else does
    (run_dir(work / cfg["results_dir"], "imdb", "random-bert", "lpft", "head", 64, "mean", 0) / "metrics.json").unlink()
    proc = run_snakemake(work, "--dry-run", "--cores", "1", configfile=path)
    jobs = train_jobs(proc.stdout + proc.stderr)
    assert set(jobs) == {("lpft", "mean"), ("frozen", "mean")}
    assert weights("frozen", "mean") in jobs["lpft", "mean"]
    assert f"{cfg['resources_dir']}/features/imdb/random-bert/head-64/train" in jobs["frozen", "mean"]


def test_a_failed_rerun_keeps_the_outputs_it_was_to_replace(done, tmp_path):
    """Committed outputs are update(): Snakemake keeps them while the job runs and restores them if it fails."""
    import shutil

    from poolbench.paths import FEATURES, METRICS, PREDICTIONS

    work = tmp_path / "work"
    shutil.copytree(done, work, symlinks=True)
    cfg = load_config(MINI)
    run = next(r for r in expand(cfg) if r.regime == "frozen" and r.pooling == "mean")
    metrics = work / cfg["results_dir"] / METRICS.format(**run.wildcards())
    predictions = work / cfg["results_dir"] / PREDICTIONS.format(**run.wildcards())
    before = metrics.read_bytes(), predictions.read_bytes()
    cache = work / cfg["resources_dir"] / FEATURES.format(dataset="imdb", model=run.model, truncation=run.truncation,
                                                          max_len=run.max_len, split="train")
    (cache / "hidden.npy").write_bytes(b"not an array")  # the rerun fails reading its cache
    proc = run_snakemake(work, "--cores", "1", "--forcerun", str(metrics.relative_to(work)),
                         str(metrics.relative_to(work)), configfile=MINI, check=False, timeout=300)
    assert proc.returncode != 0
    assert (metrics.read_bytes(), predictions.read_bytes()) == before
