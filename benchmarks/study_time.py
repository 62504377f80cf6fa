"""What a study cost: job wall times read from Snakemake's own logs, summed per rule and per setting.

A long study runs over several sessions (Snakemake resumes it), so no single wall clock measures it.
Every job's start and finish are in the logs that Snakemake keeps in ``.snakemake/log/``. This
script keeps the last finished run of each job (a job rerun after a settings change counts once, and
the superseded runs are reported apart), sums their wall times, and divides by the cores the study
ran with: the wall time the study takes when it runs uninterrupted on that many cores (a lower
bound: two jobs share the machine's memory bandwidth, and the scheduler sometimes waits).

    python benchmarks/study_time.py --cores 2                  # all logs in .snakemake/log/
    python benchmarks/study_time.py --cores 2 --since 2026-11-27T02:00   # logs started after a time
    python benchmarks/study_time.py --cores 2 LOG [LOG ...]    # chosen logs

The logs do not name the processor; the script prints the current one. Quote it only for logs written
on this machine.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import platform
import re
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]")
RULE = re.compile(r"^(?:local)?rule (\w+):")
JOBID = re.compile(r"^\s+jobid: (\d+)")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def jobs(log: Path):
    """(rule, wildcards, start, seconds) of every job that finished in one Snakemake log."""
    now = rule = job = None
    started: dict[str, tuple] = {}
    for line in log.read_text(errors="replace").splitlines():
        if m := STAMP.match(line):
            now = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := RULE.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule:
            job = m.group(1)
            started[job] = (rule, "", now)
        elif (m := WILDCARDS.match(line)) and job in started:
            started[job] = (started[job][0], m.group(1), started[job][2])
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            name, wc, start = started.pop(m.group(1))
            yield name, wc, start, (now - start).total_seconds()


def setting(wildcards: str) -> str:
    w = dict(kv.split("=", 1) for kv in wildcards.split(", ") if "=" in kv)
    parts = [w.get(k) for k in ("dataset", "model", "regime")]
    return "/".join(p for p in parts if p) + (f" -> {w['evalset']}" if "evalset" in w else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="*", type=Path)
    ap.add_argument("--cores", type=int, required=True, help="cores the study ran with (--cores N)")
    ap.add_argument("--since", help="only logs started at or after this time (YYYY-MM-DDTHH:MM), e.g. when the "
                                    "study's first run began; earlier studies' jobs would otherwise count")
    args = ap.parse_args()
    logs = args.logs or sorted(Path(".snakemake/log").glob("*.snakemake.log"))
    if args.since:  # Snakemake names its logs by start time: 2026-11-27T051553.075920.snakemake.log
        since = dt.datetime.fromisoformat(args.since)
        logs = [p for p in logs if dt.datetime.strptime(p.name[:17], "%Y-%m-%dT%H%M%S") >= since]
    last: dict[tuple, tuple] = {}
    superseded = collections.Counter()
    for log in logs:
        for rule, wc, start, seconds in jobs(log):
            key = (rule, wc)
            if key in last:
                superseded[rule] += last[key][1]
            last[key] = (start, seconds)
    if not last:
        raise SystemExit(f"no finished jobs in {len(logs)} log(s)")
    by_rule, by_setting, count = collections.Counter(), collections.Counter(), collections.Counter()
    for (rule, wc), (_, seconds) in last.items():
        by_rule[rule] += seconds
        count[rule] += 1
        if rule in ("train", "evaluate", "features"):
            by_setting[f"{rule:9s} {setting(wc)}"] += seconds
    total = sum(by_rule.values())
    print(f"processor now: {platform.processor() or platform.machine()} ({_cpu_name()}); logs: {len(logs)}")
    print(f"{len(last)} jobs, {total / 3600:.2f} h of job wall time; on {args.cores} cores: "
          f"{total / args.cores / 3600:.2f} h (lower bound)")
    print(f"superseded runs (reruns after a settings change, not counted): {sum(superseded.values()) / 3600:.2f} h")
    print("\nby rule              jobs   hours   median s")
    for rule, seconds in by_rule.most_common():
        times = sorted(s for (r, _), (_, s) in last.items() if r == rule)
        print(f"  {rule:18s} {count[rule]:5d} {seconds / 3600:7.2f} {times[len(times) // 2]:10.0f}")
    print("\nby setting                                          hours")
    for name, seconds in sorted(by_setting.items()):
        print(f"  {name:50s} {seconds / 3600:5.2f}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
