"""A fresh clone with the committed results: nothing retrains, summaries regenerate, new work is exact.

The clone is of the committed HEAD (in CI the repository is itself a fresh clone).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from poolbench.config import expand

from conftest import load_config, run_snakemake
from test_reruns import planned, rules

EXPENSIVE = {"download_wheel", "tokenizer", "model", "imdb_subset", "tailprobe", "features", "train", "evaluate"}


def dry(clone: Path, *args: str) -> list[tuple[str, dict]]:
    proc = run_snakemake(clone, "--dry-run", "--cores", "2", *args, configfile=None, snakefile=clone / "Snakefile")
    return planned(proc.stdout + proc.stderr)


def test_snakemake_on_a_fresh_clone_trains_nothing(clone):
    assert not rules(dry(clone)) & EXPENSIVE


def dry_with(clone: Path, tmp_path: Path, edit) -> list[tuple[str, dict]]:
    """A dry run on the fresh clone with the default config edited by ``edit(cfg)``."""
    import yaml

    cfg = load_config(clone / "workflow" / "config" / "default.yaml")
    edit(cfg)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dry(clone, "--configfile", str(path))


def trained(jobs) -> list[dict]:
    return [wc for rule, wc in jobs if rule == "train"]


def test_a_changed_learning_rate_reruns_exactly_its_runs_on_a_fresh_clone(clone, tmp_path):
    # Snakemake's own records (.snakemake/) are not in a clone: the spec files carry the change.
    jobs = dry_with(clone, tmp_path, lambda cfg: cfg["regimes"]["topk"].update(lr=cfg["regimes"]["topk"]["lr"] * 2))
    cfg = load_config(clone / "workflow" / "config" / "default.yaml")
    topk = {tuple(run.wildcards().values()) for run in expand(cfg) if run.regime == "topk"}
    runs = {(wc["dataset"], wc["model"], wc["regime"], wc["truncation"], int(wc["max_len"]), wc["pooling"],
             int(wc["seed"])) for wc in trained(jobs)}
    # the topk runs, plus (to rebuild its weights) the frozen run the verdict-attention analysis compares them with
    assert topk <= runs and {r[2] for r in runs - topk} <= {"frozen"} and len(runs - topk) <= 1
    evaluated = {wc["regime"] for rule, wc in jobs if rule == "evaluate"}
    assert evaluated == {"topk"}


def test_a_setting_no_job_reads_reruns_nothing_on_a_fresh_clone(clone, tmp_path):
    def edit(cfg):
        cfg["transfer"]["imdb"] = [name for name in cfg["transfer"]["imdb"] if name != "naturaltail"]
        cfg["regimes"]["frozen"]["lr"] *= 10  # head.lr_grid replaces it
        cfg["regimes"]["frozen"]["dropout"] = 0.3  # logistic heads read no dropout; learned ones do

    jobs = dry_with(clone, tmp_path, edit)
    # the learned poolings, the LP-FT runs that start from them (their spec holds the frozen run's), and
    # (to rebuild its weights) the fine-tuned run the verdict-attention analysis compares with them
    assert {wc["pooling"] for wc in trained(jobs)} == {"attention", "hierarchical"}
    assert {wc["regime"] for wc in trained(jobs)} == {"frozen", "lpft", "topk"}
    assert [wc["seed"] for wc in trained(jobs) if wc["regime"] == "topk"] == ["0"]
    jobs = dry_with(clone, tmp_path, lambda cfg: cfg["transfer"].update(imdb=["tailprobe"]))
    assert not rules(jobs) & EXPENSIVE


def test_a_poolings_version_bump_reruns_exactly_its_runs_on_a_fresh_clone(clone, tmp_path):
    import sys

    (tmp_path / "sitecustomize.py").write_text("from poolbench.pooling import POOLINGS\nPOOLINGS['max'].version += 1\n")
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"}
    proc = run_snakemake(clone, "--dry-run", "--cores", "2", configfile=None, snakefile=clone / "Snakefile", env=env)
    jobs = planned(proc.stdout + proc.stderr)
    cfg = load_config(clone / "workflow" / "config" / "default.yaml")
    assert len(trained(jobs)) == sum(run.pooling == "max" for run in expand(cfg)) > 0
    assert {wc["pooling"] for rule, wc in jobs if rule in ("train", "evaluate")} == {"max"}


def test_regenerating_the_summaries_trains_nothing_and_reproduces_them(clone):
    # The README's command: recompute every summary, figure, table and paper number.
    assert not rules(dry(clone, "--forcerun", "aggregate")) & EXPENSIVE
    start = time.perf_counter()
    run_snakemake(clone, "--cores", "2", "--forcerun", "aggregate", configfile=None, snakefile=clone / "Snakefile")
    wall = time.perf_counter() - start
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert changed.strip() == "", f"regenerated files differ from the committed ones:\n{changed}"
    print(f"regenerated every summary in {wall:.0f} s")


def test_a_new_pooling_trains_only_its_runs_and_builds_each_cache_once(clone, tmp_path):
    # A pooling whose results are not committed yet: remove one pooling's run folders.
    cfg = load_config(clone / "workflow" / "config" / "default.yaml")
    new = [run for run in expand(cfg) if run.pooling == "max"]
    work = tmp_path / "work"
    shutil.copytree(clone, work, symlinks=True)
    for folder in (work / cfg["results_dir"] / "runs").glob("*/*/*/*/max"):
        shutil.rmtree(folder)
    jobs = dry(work)
    trained = [wc for rule, wc in jobs if rule == "train"]
    assert len(trained) == len(new) and {wc["pooling"] for wc in trained} == {"max"}
    caches = [tuple(sorted(wc.items())) for rule, wc in jobs if rule == "features"]
    assert len(caches) == len(set(caches)) > 0
    needed = {(r.dataset, r.model, r.truncation, r.max_len) for r in new if r.regime == "frozen"}
    assert {(dict(c)["dataset"], dict(c)["model"], dict(c)["truncation"], int(dict(c)["max_len"])) for c in caches} \
        <= needed | {(t, r.model, r.truncation, r.max_len) for r in new for t in cfg.get("transfer", {}).get(r.dataset, [])}
