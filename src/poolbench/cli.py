"""The ``poolbench`` command: use a trained run outside the pipeline.

    poolbench predict --run results/runs/<...>/seed0 --input texts.parquet --output scores.parquet
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


def predict(run_dir: Path, input_path: Path, output: Path, resources: Path | None = None) -> pd.DataFrame:
    """P(positive) for every row of ``input_path`` from the trained run in ``run_dir``."""
    from .io import write_parquet
    from .metrics import RunMetrics
    from .paths import MODEL, WEIGHTS
    from .run import check_weights, score_texts

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
    texts = _read_texts(Path(input_path))
    try:
        check_weights(weights, metrics.spec)  # before any model loads: one clear sentence
        prob = score_texts(metrics.spec, model_dir, weights, texts)
    except ValueError as err:  # weights of another run, or a classifier they do not fit
        raise UsageError(str(err)) from None
    out = texts.drop(columns=["text"]).assign(p_positive=prob, pred=(prob >= 0.5).astype(np.int64))
    write_parquet(output, out)  # atomic: a failed run leaves no partial file
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poolbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="score texts with a trained run")
    p.add_argument("--run", required=True, type=Path, help="a run folder under results/runs/ (holds metrics.json)")
    p.add_argument("--input", required=True, type=Path, help="a parquet file with a 'text' column")
    p.add_argument("--output", required=True, type=Path, help="parquet to write: input columns + p_positive, pred")
    p.add_argument("--resources", type=Path, help="the resources folder (default: beside the run's results/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "predict":
            out = predict(args.run, args.input, args.output, args.resources)
            print(f"wrote {len(out)} predictions to {args.output}")
    except UsageError as err:
        print(f"poolbench {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
