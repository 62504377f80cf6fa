"""The warm job worker (poolbench.worker): same results as a job in its own process, one worker per
environment and code version, failures and exit statuses passed through."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_a_job_script_runs_in_the_worker_with_its_status_stdio_and_folder(tmp_path, capfd, monkeypatch):
    import signal

    script = tmp_path / "job.py"
    script.write_text("import os, sys\nprint('folder', os.getcwd(), 'argv', sys.argv[1:], 'worker', os.getpid())\n"
                      "sys.exit(int(sys.argv[1]))\n")
    monkeypatch.chdir(tmp_path)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert worker.submit(str(script), [str(script), "0"]) == 0
    assert worker.submit(str(script), [str(script), "3"]) == 3
    out = capfd.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == [str(tmp_path)] * 2 and "['3']" in out[1]
    assert out[0].split()[-1] != out[1].split()[-1]  # a fresh child per job
    assert worker.socket_path(worker.worker_key()).exists()  # one worker answered both, and still listens
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back


def test_a_failing_job_prints_its_traceback_where_the_job_would(tmp_path, capfd):
    script = tmp_path / "job.py"
    script.write_text("raise KeyError('no_such_rule')\n")
    assert worker.submit(str(script), [str(script)]) == 1
    assert "KeyError: 'no_such_rule'" in capfd.readouterr().err


def test_a_job_that_cannot_be_handed_over_is_run_by_job_py_itself(tmp_path):
    with pytest.raises(worker.WorkerUnavailable):
        worker.submit(str(tmp_path / "not-there.py"), [])


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
