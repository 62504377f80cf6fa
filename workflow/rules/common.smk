# Shared helpers: semantic config checks, the list of runs, and path functions.
import sys
from pathlib import Path

from poolbench import paths
from poolbench.config import ConfigError, check, expand

try:
    check(config)
except ConfigError as err:
    sys.exit(f"poolbench: {err}")

RUNS = expand(config)
RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def R(pattern, **kw):
    """A path under results_dir (committed outputs)."""
    path = f"{RESULTS}/{pattern}"
    return path.format(**kw) if kw else path


def S(pattern, **kw):
    """A path under resources_dir (downloads, models, data, caches; never committed)."""
    path = f"{RESOURCES}/{pattern}"
    return path.format(**kw) if kw else path


def threads(kind):
    return config.get("threads", {}).get(kind, 1)


def res(kind, key, default):
    """A resource for a kind of rule from config['resources'] (cluster profiles set these)."""
    return config.get("resources", {}).get(kind, {}).get(key, default)


def model_spec(name):
    return config["models"][name]


def transfer_sets(dataset):
    return config.get("transfer", {}).get(dataset, [])


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_.-]+",
    regime="frozen|finetune",
    truncation="head|tail|head_tail",
    max_len=r"\d+",
    pooling="[A-Za-z0-9_]+",
    seed=r"\d+",
    split="train|test",


def run_outputs(run):
    folder = R(paths.RUN, **run.wildcards())
    return [f"{folder}/metrics.json"]


def all_targets():
    return [
        *[out for run in RUNS for out in run_outputs(run)],
        R("summary/runs.csv"),
        R("figures/accuracy_by_pooling.png"),
        R("summary/pooling_stats.csv"),
        R("summary/RESULTS.md"),
        *probe_targets(),
        *([f"{config['paper_dir']}/numbers.tex"] if config.get("paper_dir") else []),
    ]
