"""The warm job worker (poolbench.worker): same results as a job in its own process, one worker per
environment and code version, failures and exit statuses passed through."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from poolbench import worker

from conftest import REPO, run_snakemake

MINI = REPO / "tests" / "configs" / "mini.yaml"


def test_the_key_follows_the_environment_and_the_code(monkeypatch):
    key = worker.worker_key()
    monkeypatch.setenv("POOLBENCH_SOME_SETTING", "1")
    assert worker.worker_key() != key
    monkeypatch.delenv("POOLBENCH_SOME_SETTING")
    assert worker.worker_key() == key
    module = REPO / "src" / "poolbench" / "stats.py"  # an edited module: a new worker
    st = module.stat()
    try:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        assert worker.worker_key() != key
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert not worker.enabled()


def test_a_failing_job_reports_its_status_and_traceback_and_the_worker_serves_the_next(capfd):
    job = types.SimpleNamespace(rule="no_such_rule", log=[])
    assert worker.submit(job) == 1
    assert worker.submit(job) == 1
    err = capfd.readouterr().err
    assert err.count("KeyError: 'no_such_rule'") == 2  # the job's own traceback, on job.py's stderr
    # one worker answered both (it is still listening)
    assert worker.socket_path(worker.worker_key()).exists()


def test_a_job_that_cannot_be_sent_to_a_worker_is_run_by_job_py_itself():
    class Local:  # defined here: the worker cannot unpickle it
        pass

    with pytest.raises(worker.WorkerUnavailable):
        worker.submit(Local())


def test_jobs_in_the_worker_write_what_jobs_in_their_own_process_write(tmp_path, data_dir):
    target = "smoke/mini/resources/data/imdb/train.parquet"
    outputs = {}
    for mode in ("1", "0"):
        work = tmp_path / f"worker-{mode}"
        run_snakemake(work, "--cores", "1", target, configfile=MINI, timeout=300, env={"POOLBENCH_WORKER": mode})
        outputs[mode] = (work / target).read_bytes()
    assert outputs["1"] == outputs["0"]


def test_job_script_hands_jobs_to_the_worker():
    script = (REPO / "workflow" / "scripts" / "job.py").read_text()
    assert "from poolbench.worker import run_job" in script
    # poolbench.worker itself imports nothing heavy: job.py starts in well under a second
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import poolbench.worker"], capture_output=True,
                         text=True).stderr
    assert "torch" not in out and "pandas" not in out
