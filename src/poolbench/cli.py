"""The ``poolbench`` command: use a trained run, the probe and any classifier outside the pipeline.

    poolbench predict --run results/runs/<...>/seed0 --input texts.parquet --out scores.parquet
    poolbench export-data --out tailprobe-hf/            # the probe + natural tail set as a HF dataset
    poolbench score --model <HF classifier folder> --data tailprobe-hf/ --out scores/
    poolbench compare scores/ other-scores/ --out comparison/
    poolbench export --run results/runs/<...>/seed0 --out my-classifier/   # pooler / last runs only

A non-empty --out is refused unless --overwrite is given; every output is written into a temporary
sibling and renamed into place, so an interrupted command (Ctrl-C: exit status 130) leaves none.
The work is done in :mod:`poolbench.run` (predict) and :mod:`poolbench.hub` (the rest).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


class UsageError(RuntimeError):
    """Bad input to a poolbench command; the message is one sentence naming the problem."""


def _read_texts(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a non-parquet file
        raise UsageError(f"{path} cannot be read as parquet ({type(err).__name__})") from None
    if "text" not in table.columns:
        raise UsageError(f"{path} has no 'text' column (columns: {', '.join(map(str, table.columns)) or 'none'})")
    if table.empty:
        raise UsageError(f"{path} holds no rows")
    bad = [i for i, t in enumerate(table["text"]) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise UsageError(f"{path}: {len(bad)} text(s) are empty or not strings (first rows {bad[:5]})")
    return table


def _trained_run(run_dir: Path, resources: Path | None) -> tuple[dict, Path, Path]:
    """(spec, weights file, backbone folder) of a run folder, each checked to exist."""
    from .metrics import RunMetrics
    from .paths import MODEL, WEIGHTS

    metrics_file = Path(run_dir) / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no metrics.json)")
    metrics = RunMetrics.read(metrics_file)
    if not metrics.spec:
        raise UsageError(f"{run_dir} was made by an older poolbench (metrics schema {metrics.schema_version}, "
                         f"no spec); rerun it with snakemake first")
    run = metrics.spec["run"]
    # runs/<dataset>/<model>/<regime>/<truncation>-<max_len>/<pooling>/seed<k> under results_dir
    resources = Path(resources) if resources else Path(run_dir).resolve().parents[6].parent / "resources"
    weights = resources / WEIGHTS.format(**run)
    model_dir = resources / MODEL.format(model=run["model"])
    if not weights.is_file():
        raise UsageError(f"{run_dir} has no trained weights at {weights}; rebuild them with: "
                         f"snakemake --cores all {weights}")
    if not model_dir.is_dir():
        raise UsageError(f"the run's backbone {run['model']!r} is not materialised at {model_dir}; "
                         f"build it with: snakemake --cores all {model_dir}")
    return metrics.spec, weights, model_dir


def predict(run_dir: Path, input_path: Path, output: Path, resources: Path | None = None) -> pd.DataFrame:
    """P(positive) for every row of ``input_path`` from the trained run in ``run_dir``."""
    from .io import write_parquet
    from .run import check_weights, score_texts

    spec, weights, model_dir = _trained_run(run_dir, resources)
    texts = _read_texts(Path(input_path))
    try:
        check_weights(weights, spec)  # before any model loads: one clear sentence
        prob = score_texts(spec, model_dir, weights, texts)
    except ValueError as err:  # weights of another run, or a classifier they do not fit
        raise UsageError(str(err)) from None
    out = texts.drop(columns=["text"]).assign(p_positive=prob, pred=(prob >= 0.5).astype(np.int64))
    write_parquet(output, out)  # atomic: a failed run leaves no partial file
    return out


def export_data(out: Path, config: Path, sets: list[str], overwrite: bool = False) -> Path:
    """The pipeline's probe and natural tail set (paths from ``config``) as a Hugging Face dataset folder."""
    from . import hub

    _, results_dir = hub.pipeline_dirs(config)
    return hub.export_data(hub.pipeline_files(config, sets), hub.pipeline_datasheets(config, sets), out,
                           results_dir, overwrite)


def score(model: Path, out: Path, data: Path | None, config: Path, sets: list[str], positive: str | None,
          max_len: int | None, truncation: str | None, batch_size: int, device: str | None = None,
          dtype: str = "float32", check_invariance: int = 0, overwrite: bool = False) -> dict:
    """Score a *ForSequenceClassification folder on the test splits of an export-data folder (its files checked
    against its MANIFEST.json), else of the pipeline's files (``config``)."""
    from . import hub
    from .hub import common, results
    from .hub import evaldata as ed

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if check_invariance < 0:
        raise UsageError(f"--check-invariance takes a number of texts per set, not {check_invariance}")
    if data is not None:
        files = hub.set_files(data, sets, ("test",), hint=f"is {data} a folder written by poolbench export-data?")
        eval_sets = ed.read_manifest(data, files)["sets"]
        refs_file = Path(data) / ed.REFERENCES
        refs = pd.read_csv(refs_file) if refs_file.is_file() else None
    else:
        files = hub.pipeline_files(config, sets, ("test",))
        eval_sets = ed.manifest(files)["sets"]
        refs = ed.references(hub.pipeline_dirs(config)[1])
    eval_sets = [{**e, "source": str(files[e["name"], e["split"]].resolve())} for e in eval_sets]
    try:
        labels = [int(x) for x in positive.split(",")] if positive else None
    except ValueError:
        raise UsageError(f"--positive-label takes label ids such as 1 or 3,4, not {positive!r}") from None
    common.check_out(out, results.RESULTS, "an earlier poolbench score output", overwrite)  # before loading
    clf = hub.HFClassifier(model, labels, max_len, truncation, device, dtype)
    return hub.score(clf, files, out, eval_sets=eval_sets, references=refs, batch_size=batch_size,
                     check_invariance=check_invariance, overwrite=overwrite)


def export(run_dir: Path, out: Path, resources: Path | None = None, overwrite: bool = False) -> Path:
    """A pooler (BERT) or last-token (decoder) run as a standard *ForSequenceClassification folder."""
    from . import hub
    from .metrics import RunMetrics
    from .run import check_weights

    spec, weights, model_dir = _trained_run(run_dir, resources)
    try:
        check_weights(weights, spec)
    except ValueError as err:
        raise UsageError(str(err)) from None
    metrics = RunMetrics.read(Path(run_dir) / "metrics.json")
    return hub.export_run(spec, model_dir, weights, out, metrics, overwrite)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="poolbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"poolbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    overwrite = dict(action="store_true", help="replace --out if it holds an earlier output of this command")
    p = sub.add_parser("predict", help="score texts with a trained run")
    p.add_argument("--run", required=True, type=Path, help="a run folder under results/runs/ (holds metrics.json)")
    p.add_argument("--input", required=True, type=Path, help="a parquet file with a 'text' column")
    p.add_argument("--out", "--output", dest="output", required=True, type=Path,
                   help="parquet to write: input columns + p_positive, pred (--output: deprecated alias)")
    p.add_argument("--resources", type=Path, help="the resources folder (default: beside the run's results/)")

    sets = dict(nargs="+", default=["tailprobe", "naturaltail"], choices=["tailprobe", "naturaltail"],
                help="which sets (default: both)")
    config = dict(type=Path, default=Path("workflow/config/default.yaml"),
                  help="the pipeline config whose resources_dir / results_dir hold the sets (default: %(default)s)")
    p = sub.add_parser("export-data", help="write the probe and the natural tail set as a Hugging Face dataset folder")
    p.add_argument("--out", required=True, type=Path, help="the folder to write (parquet, README.md card, "
                                                           "MANIFEST.json, references.csv)")
    p.add_argument("--config", **config)
    p.add_argument("--sets", **sets)
    p.add_argument("--overwrite", **overwrite)

    p = sub.add_parser("score", help="score any *ForSequenceClassification model on the probe and natural tail set")
    p.add_argument("--model", required=True, type=Path, help="a Hugging Face model folder (config, weights, tokenizer)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for results.json, VERDICT.md, cell tables, predictions, figure")
    p.add_argument("--data", type=Path, help="a folder written by export-data (default: the pipeline's files)")
    p.add_argument("--config", **config)
    p.add_argument("--sets", **sets)
    p.add_argument("--positive-label", help="the positive label id(s), e.g. 1 or 3,4 (default: the label named "
                                            "positive, else 1; required with more than 2 labels)")
    p.add_argument("--max-len", type=int, help="tokens per text, special tokens included "
                                               "(default: the tokenizer's model_max_length)")
    p.add_argument("--truncation", choices=["head", "tail", "head_tail"],
                   help="which tokens a long text keeps (default: the tokenizer's truncation side)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if present, else CPU), cpu, cuda, "
                                                    "cuda:1, mps (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the model's weights and compute (default: %(default)s)")
    p.add_argument("--check-invariance", type=int, nargs="?", const=64, default=0, metavar="N",
                   help="re-score N texts per set (default 64) under left padding, batch size 1 and, for decoders, "
                        "pad = eos; report prediction flips and the largest change of P(positive)")
    p.add_argument("--overwrite", **overwrite)

    p = sub.add_parser("compare", help="one table and one figure of several poolbench score outputs")
    p.add_argument("folders", nargs="+", type=Path, help="folders written by poolbench score (the first is the "
                                                         "reference of the paired tests)")
    p.add_argument("--out", required=True, type=Path, help="folder for COMPARE.md, compare.csv, compare.png")
    p.add_argument("--overwrite", **overwrite)

    p = sub.add_parser("export", help="a 'pooler' (BERT) or 'last' (decoder) run as a standard HF classifier folder")
    p.add_argument("--run", required=True, type=Path, help="a run folder under results/runs/ (holds metrics.json)")
    p.add_argument("--out", required=True, type=Path, help="the model folder to write")
    p.add_argument("--resources", type=Path, help="the resources folder (default: beside the run's results/)")
    p.add_argument("--overwrite", **overwrite)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:  # outputs are written into a temporary sibling: nothing partial is left
        print(f"poolbench {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


def _run(args) -> int:
    from .hub import HubError, results

    try:
        if args.command == "predict":
            out = predict(args.run, args.input, args.output, args.resources)
            print(f"wrote {len(out)} predictions to {args.output}")
        elif args.command == "export-data":
            print(f"wrote {export_data(args.out, args.config, args.sets, args.overwrite)}")
        elif args.command == "score":
            doc = score(args.model, args.out, args.data, args.config, args.sets, args.positive_label, args.max_len,
                        args.truncation, args.batch_size, args.device, args.dtype, args.check_invariance,
                        args.overwrite)
            for warning in doc["warnings"]:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"wrote {args.out}/VERDICT.md and {args.out}/results.json")
        elif args.command == "compare":
            results.compare(args.folders, args.out, overwrite=args.overwrite)
            print(f"wrote {args.out}/COMPARE.md")
        elif args.command == "export":
            print(f"wrote {export(args.run, args.out, args.resources, args.overwrite)}")
    except (UsageError, HubError) as err:
        print(f"poolbench {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
