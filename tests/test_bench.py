"""benchmarks/bench_finetune.py runs end to end (``--quick``) and prints its ratio lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "bench_finetune.py"
NUMBER = r"([0-9]+\.[0-9]+)x"


@pytest.mark.slow
def test_bench_finetune_quick_prints_ratios(bundled, data_dir, tmp_path):
    model = bundled("minilm-l6")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "work"),
                           "--model-dir", str(model)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "POOLBENCH_DATA_DIR": str(data_dir)})
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("processor: ")
    for label in ("RATIO full fine-tuning, training loop", "RATIO top-2", "RATIO fine-tuned grid"):
        lines = [line for line in out.splitlines() if line.startswith("[fp32] " + label)]
        assert lines, f"no {label!r} line in:\n{out}"
        assert float(re.search(NUMBER, lines[0]).group(1)) > 0
    assert "EXTRAPOLATED" in out  # the grid line says what is not measured
    assert re.search(r"\[fp32\] ACCURACY test \(16 reviews\): recipe [01]\.[0-9]{3}, poolbench finetune [01]\.", out)
    memory = re.search(r"\[fp32\] MEMORY peak RSS per side \(GB\): recipe ([0-9.]+), finetune ([0-9.]+)", out)
    assert memory and 0 < float(memory.group(1)) < 4 and 0 < float(memory.group(2)) < 4
    assert "% peak" in out and "GEMM peak" in out
    # issue 18: the top-2 pooler, early-stopped on a dev split of the same reviews, against the recipe
    assert re.search(r"\[fp32\] POOLER vs RECIPE test accuracy \(16 reviews, trained on the same 16\): seed recipe "
                     r".* [01]\.[0-9]{3} \+- n/a .* vs poolbench top-2 pooler .*early stopping on a 0\.1 dev split", out)
    assert re.search(r"\[fp32\] POOLER chosen on dev: seed 42: lr 0\.0001, step [0-9]+ \((patience|max_epochs)\)", out)
    assert re.search(r"\[fp32\] POOLER vs RECIPE time per seed .* = " + NUMBER, out)
    assert not list(REPO.glob("trainer*")), "the benchmark must not write into the repository"
    print(f"bench_finetune --quick: {wall:.0f} s")


LOG = """Building DAG of jobs...
[Fri Nov 27 05:16:00 2026]
localrule train:
    output: a/metrics.json
    jobid: 7
    wildcards: dataset=imdb, model=m, regime=topk, truncation=head, max_len=128, pooling=cls, seed=0
Select jobs to execute...
[Fri Nov 27 05:16:30 2026]
localrule evaluate:
    jobid: 9
    wildcards: dataset=imdb, model=m, regime=topk, truncation=head, max_len=128, pooling=cls, seed=0, evalset=tailprobe
[Fri Nov 27 05:17:40 2026]
Finished jobid: 7 (Rule: train)
[Fri Nov 27 05:17:50 2026]
Finished jobid: 9 (Rule: evaluate)
"""


def test_study_time_sums_the_last_run_of_each_job(tmp_path):
    first = tmp_path / "2026-11-27T051553.000000.snakemake.log"
    first.write_text(LOG)
    # a later log reruns the same train job (100 s -> 40 s) and fails one job, which does not count
    second = tmp_path / "2026-11-27T061553.000000.snakemake.log"
    second.write_text(LOG.replace("05:17:40", "05:16:40").replace("Finished jobid: 9 (Rule: evaluate)",
                                                                  "Error in rule evaluate:"))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_time.py"), "--cores", "2",
                           str(first), str(second)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # train: 40 s (its last run), evaluate: 80 s (the only finished run); 120 s on 2 cores = 60 s
    assert "2 jobs, 0.03 h of job wall time; on 2 cores: 0.02 h" in proc.stdout
    assert re.search(r"superseded runs .*: 0\.03 h", proc.stdout)  # the first train run, 100 s
    assert re.search(r"train\s+1\s+0\.01\s+40\b", proc.stdout)
    assert re.search(r"evaluate\s+1\s+0\.02\s+80\b", proc.stdout)
    assert "evaluate  imdb/m/topk -> tailprobe" in proc.stdout
