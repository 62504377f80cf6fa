"""`poolbench rebuild`: a committed run retrains from a fresh clone, loses nothing, and gives its predictions back.

README, "Using a trained run" and "Reproducing a run bit for bit".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMOKE_CONFIG, run_snakemake
from test_fresh_clone import dry
from test_reruns import rules

# The cheapest committed run: frozen MiniLM on IMDB with a fixed pooling (one feature cache, a linear head).
COMMITTED = "results/runs/imdb/minilm-l6/frozen/head-128/mean/seed0"
SMALL = "smoke/results/runs/imdb/random-bert/frozen/head-64/attention/seed0"
RECIPE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def rebuild(workdir: Path, run: str, *args: str, env: dict | None = None, src: Path | None = None):
    """The documented command, `poolbench rebuild <run>`, run in ``workdir`` with ``src``'s poolbench."""
    report = workdir / "rebuild-report.json"
    env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(src)} if src else {})}
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "rebuild", run, "--cores", "2", "--report",
                           str(report), *args], cwd=workdir, capture_output=True, text=True, env=env, timeout=1800)
    assert report.is_file(), f"rebuild failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads(report.read_text())
    report.unlink()
    return proc, out


def tracked(repo: Path) -> dict[str, bytes]:
    files = subprocess.run(["git", "ls-files", "results"], cwd=repo, capture_output=True, text=True).stdout.split()
    return {f: (repo / f).read_bytes() for f in files if (repo / f).is_file()}


def test_the_weights_target_of_a_committed_run_gets_its_inputs(clone):
    # Before: the train job ran without inputs (asked_for looked for results/runs/<run> in the targets).
    weights = f"resources/weights/{COMMITTED.removeprefix('results/')}/model.safetensors"
    planned = rules(dry(clone, weights))
    assert {"train", "features", "model", "imdb_subset"} <= planned


@pytest.mark.slow
def test_a_committed_run_rebuilds_on_a_fresh_clone_with_its_predictions(clone, data_dir):
    before = tracked(clone)
    proc, report = rebuild(clone, COMMITTED, src=clone / "src")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["label_flips"] == 0 and report["max_abs_dp"] <= 1e-4 and report["same_spec"]
    assert report["accuracy_rebuilt"] == report["accuracy_committed"]
    assert tracked(clone) == before, "a committed file changed or went missing"
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                          text=True).stdout.strip() == ""
    assert (clone / report["weights"]).is_file() and not (clone / "resources" / "rebuild").exists()
    print(f"rebuilt {COMMITTED}: max |dP| {report['max_abs_dp']:.3g}, {report['label_flips']} flips, accuracy "
          f"{report['accuracy_committed']:.4f} -> {report['accuracy_rebuilt']:.4f}, {report['wall_s']} s on "
          f"{report['processor']} ({report['kernels']['capability']} kernels), byte-identical "
          f"{report['byte_identical']}")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_dir):
    """One random-backbone run of the smoke config, built under the recipe's kernel settings: its workdir."""
    workdir = tmp_path_factory.mktemp("small")
    run_snakemake(workdir, "--cores", "2", f"{SMALL}/metrics.json", env=RECIPE)
    return workdir


def rebuild_small(workdir: Path, *args: str, env: dict | None = None):
    return rebuild(workdir, SMALL, "--configfile", str(SMOKE_CONFIG), "--snakefile",
                   str(Path(__file__).resolve().parents[1] / "Snakefile"), *args, env=env)


def test_a_small_run_rebuilds_byte_identically_under_the_recipe(small_run):
    committed = {p.name: p.read_bytes() for p in (small_run / SMALL).iterdir()}
    proc, report = rebuild_small(small_run, env=RECIPE)
    assert proc.returncode == 0 and report["reproduced"] and report["byte_identical"], proc.stdout
    assert report["kernels"]["capability"] == "AVX2" and report["kernels"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert {p.name: p.read_bytes() for p in (small_run / SMALL).iterdir()} == committed  # kept, not replaced
    assert "reproduced (byte-identical)" in proc.stdout
    metrics = json.loads((small_run / SMALL / "metrics.json").read_text())
    assert metrics["versions"]["kernels"]["capability"] == "AVX2"  # the run's own record names its kernels


def test_a_failed_rebuild_keeps_the_committed_files(small_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(small_run, work, symlinks=True)
    committed = {p.name: p.read_bytes() for p in (work / SMALL).iterdir()}
    # No data subsets and a data folder without IMDB: the rebuild fails before anything trains.
    shutil.rmtree(work / "smoke" / "resources" / "data")
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "rebuild", SMALL, "--configfile", str(SMOKE_CONFIG),
                           "--snakefile", str(Path(__file__).resolve().parents[1] / "Snakefile"), "--cores", "1"],
                          cwd=work, capture_output=True, text=True,
                          env={**os.environ, "POOLBENCH_DATA_DIR": str(tmp_path / "nowhere")})
    assert proc.returncode == 2 and "committed results are untouched" in proc.stderr, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (work / SMALL).iterdir()} == committed
    assert not (work / "smoke" / "resources" / "rebuild").exists()


def test_replace_swaps_in_the_rebuilt_results(small_run):
    before = {p.name: p.read_bytes() for p in (small_run / SMALL).iterdir()}
    proc, report = rebuild_small(small_run, "--replace", env=RECIPE)
    assert proc.returncode == 0 and report["replaced"] and "replaced by the rebuilt ones" in proc.stdout
    after = {p.name: p.read_bytes() for p in (small_run / SMALL).iterdir()}
    assert after["predictions.parquet"] == before["predictions.parquet"]  # byte-identical under the recipe
    assert after["metrics.json"] != before["metrics.json"]  # the rebuild's own record (its timings differ)
    assert json.loads(after["metrics.json"])["accuracy"] == json.loads(before["metrics.json"])["accuracy"]


def test_a_run_outside_the_configs_results_is_refused(small_run, tmp_path):
    elsewhere = tmp_path / "copy"
    shutil.copytree(small_run / SMALL, elsewhere)
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "rebuild", str(elsewhere), "--configfile",
                           str(SMOKE_CONFIG), "--snakefile", str(Path(__file__).resolve().parents[1] / "Snakefile")],
                          cwd=small_run, capture_output=True, text=True)
    assert proc.returncode == 2 and "pass the --configfile and --directory that made it" in proc.stderr
