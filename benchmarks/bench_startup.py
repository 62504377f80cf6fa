"""Per-job start-up: one pipeline run with the warm worker against one with a process per job.

Runs the same config (default: tests/configs/mini.yaml, 5 runs and 15 jobs on tiny random backbones) in two
fresh working folders, once with POOLBENCH_WORKER=0 (each job imports torch, transformers and poolbench
itself) and once with the worker (poolbench.worker), alternating the order over --repeats, and prints the
wall times, their ratio, and whether the two runs' predictions are byte-identical.

    python benchmarks/bench_startup.py --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def processor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def pipeline(workdir: Path, config: Path, cores: int, worker: bool) -> float:
    env = {**os.environ, "POOLBENCH_WORKER": "1" if worker else "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                    str(workdir), "--configfile", str(config), "--cores", str(cores), "--quiet"], check=True,
                   env=env, capture_output=True)
    return time.perf_counter() - start


def predictions(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("predictions.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "tests" / "configs" / "mini.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    times = {True: [], False: []}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs = {}
            for worker in ((False, True) if i % 2 == 0 else (True, False)):
                work = Path(tmp) / f"{i}-{'worker' if worker else 'processes'}"
                times[worker].append(pipeline(work, args.config, args.cores, worker))
                runs[worker] = predictions(work)
            same &= runs[True] == runs[False] and bool(runs[True])
    load = os.getloadavg()
    print(f"processor: {processor()} ({os.cpu_count()} CPUs), --cores {args.cores}; config {args.config.name}")
    for worker, label in ((False, "a process per job (POOLBENCH_WORKER=0)"), (True, "warm worker")):
        print(f"{label:42s} wall s: " + ", ".join(f"{t:.1f}" for t in times[worker])
              + f"  (median {statistics.median(times[worker]):.1f})")
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"RATIO process per job / warm worker (medians, same config, this run): {ratio:.2f}x")
    print(f"predictions byte-identical between the two: {'yes' if same else 'NO'}")
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
