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

from conftest import SMOKE_CONFIG
from test_fresh_clone import dry
from test_reruns import rules

# The cheapest committed run: frozen MiniLM on IMDB with a fixed pooling (one feature cache, a linear head).
COMMITTED = "results/runs/imdb/minilm-l6/frozen/head-128/mean/seed0"
SMALL = "smoke/results/runs/imdb/random-bert/frozen/head-64/attention/seed0"
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"
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


@pytest.fixture
def small_run(smoke, tmp_path):
    """A copy of the smoke pipeline's workdir (hard links: Snakemake and poolbench replace files, never
    write into them), so that rebuilding in it leaves the session's smoke run as it was."""
    workdir, _ = smoke
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, symlinks=True, copy_function=os.link)
    return copy


def rebuild_small(workdir: Path, *args: str, env: dict | None = None):
    return rebuild(workdir, SMALL, "--configfile", str(SMOKE_CONFIG), "--snakefile", str(SNAKEFILE), *args, env=env)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_small_run_rebuilds_byte_identically_under_the_recipe(small_run):
    before = files(small_run / SMALL)
    # The run made under the recipe (its rebuilt results replace the smoke run's) ...
    proc, made = rebuild_small(small_run, "--replace", env=RECIPE)
    assert proc.returncode == 0 and made["replaced"] and "replaced by the rebuilt ones" in proc.stdout
    made_files = files(small_run / SMALL)
    assert made_files["metrics.json"] != before["metrics.json"]  # the rebuild's own record (timings differ)
    metrics = json.loads(made_files["metrics.json"])
    assert metrics["versions"]["kernels"]["capability"] == "AVX2"  # the run's record names its kernels
    assert metrics["versions"]["kernels"]["ATEN_CPU_CAPABILITY"] == "avx2"
    # ... rebuilds to the same bytes under it, and the committed files are kept.
    proc, report = rebuild_small(small_run, env=RECIPE)
    assert proc.returncode == 0 and report["reproduced"] and report["byte_identical"], proc.stdout
    assert "reproduced (byte-identical)" in proc.stdout and "kept as they were" in proc.stdout
    assert files(small_run / SMALL) == made_files
    assert not (small_run / "smoke" / "resources" / "rebuild").exists()


def test_a_failed_rebuild_keeps_the_committed_files(small_run, tmp_path):
    committed = files(small_run / SMALL)
    # No data subsets and a data folder without IMDB: the rebuild fails before anything trains.
    shutil.rmtree(small_run / "smoke" / "resources" / "data")
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "rebuild", SMALL, "--configfile", str(SMOKE_CONFIG),
                           "--snakefile", str(SNAKEFILE), "--cores", "1"], cwd=small_run, capture_output=True,
                          text=True, env={**os.environ, "POOLBENCH_DATA_DIR": str(tmp_path / "nowhere")})
    assert proc.returncode == 2 and "committed results are untouched" in proc.stderr, proc.stderr[-2000:]
    assert files(small_run / SMALL) == committed
    assert not (small_run / "smoke" / "resources" / "rebuild").exists()


def test_a_run_outside_the_configs_results_is_refused(small_run, tmp_path):
    elsewhere = tmp_path / "copy"
    shutil.copytree(small_run / SMALL, elsewhere)
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "rebuild", str(elsewhere), "--configfile",
                           str(SMOKE_CONFIG), "--snakefile", str(SNAKEFILE)], cwd=small_run, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "pass the --configfile and --directory that made it" in proc.stderr


def test_the_commit_is_dirty_only_when_the_code_is_and_names_the_diff(tmp_path):
    import hashlib

    from poolbench.jobs import git_commit

    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "results").mkdir()
    for name in ("src/code.py", "results/metrics.json", "Snakefile"):
        (repo / name).write_text("one\n")

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, check=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    head = git("rev-parse", "HEAD").decode().strip()
    assert git_commit(repo / "src") == head
    (repo / "results" / "metrics.json").write_text("rewritten by a study\n")  # results are not code
    assert git_commit(repo) == head
    (repo / "src" / "code.py").write_text("two\n")
    diff = git("diff", "HEAD", "--binary", "--", "src", "workflow", "Snakefile")
    assert git_commit(repo) == f"{head}-dirty+{hashlib.sha256(diff).hexdigest()[:16]}"
    assert git_commit(tmp_path / "not-a-repo") == "unknown"


def test_the_probe_checks_name_the_audit_file_without_machine_folders(tmp_path):
    from poolbench.tailprobe.audit import AUDIT_FILE
    from poolbench.tailprobe.checks import portable_file

    assert portable_file({"file": str(AUDIT_FILE), "sha256_file": "x"}) == {
        "file": "src/poolbench/tailprobe/audit.csv", "sha256_file": "x"}
    assert portable_file({"file": str(tmp_path / "reading.csv")})["file"] == "reading.csv"
