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
    assert not list(REPO.glob("trainer*")), "the benchmark must not write into the repository"
    print(f"bench_finetune --quick: {wall:.0f} s")
