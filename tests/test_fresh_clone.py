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
