"""The ``poolbench`` command: use a trained run, the probe and any classifier outside the pipeline.

    poolbench predict --run results/runs/<...>/seed0 --input texts.parquet --out scores.parquet
    poolbench rebuild results/runs/<...>/seed0           # retrain a committed run, compare its predictions
    poolbench export-data --out tailprobe-hf/            # the probe + natural tail set as a HF dataset
    poolbench score --model <HF classifier folder> --data tailprobe-hf/ --out scores/
    poolbench compare scores/ other-scores/ --out comparison/
    poolbench export --run results/runs/<...>/seed0 --out my-classifier/   # pooler / last runs only

A non-empty --out is refused unless --overwrite is given; every output is written into a temporary
sibling and renamed into place, so an interrupted command (Ctrl-C: exit status 130; SIGTERM: 143)
leaves none. The work is done in :mod:`poolbench.run` (predict, rebuild) and :mod:`poolbench.hub` (the rest).
"""

from __future__ import annotations

import argparse
import json
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


def _hint_path(path: Path) -> str:
    """A path as a command typed in the current folder takes it (Snakemake wants targets relative to its workdir)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _trained_run(run_dir: Path, resources: Path | None) -> tuple[dict, Path, Path]:
    """(spec, weights file, backbone folder) of a run folder, each checked to exist."""
    from .paths import MODEL, WEIGHTS

    spec = _run_spec(run_dir)
    run = spec["run"]
    resources = _resources(run_dir, resources)
    weights = resources / WEIGHTS.format(**run)
    model_dir = resources / MODEL.format(model=run["model"])
    if not weights.is_file():
        raise UsageError(f"{run_dir} has no trained weights at {weights}; rebuild them with: "
                         f"poolbench rebuild {_hint_path(run_dir)}")
    if not model_dir.is_dir():
        raise UsageError(f"the run's backbone {run['model']!r} is not materialised at {model_dir}; "
                         f"build it with: snakemake --cores all {_hint_path(model_dir)}")
    return spec, weights, model_dir


def _resources(run_dir: Path, resources: Path | None) -> Path:
    """The resources folder: as given, else the ``resources_dir`` of the workflow config whose ``results_dir``
    holds the run (``results/paper`` for paper.yaml), else ``resources`` beside that results folder."""
    if resources:
        return Path(resources)
    import yaml

    # runs/<dataset>/<model>/<regime>/<truncation>-<max_len>/<pooling>/seed<k> under results_dir
    results = Path(run_dir).resolve().parents[6]
    for workdir in results.parents:
        for config in sorted((workdir / "workflow" / "config").glob("*.yaml")):
            cfg = yaml.safe_load(config.read_text()) or {}
            if "results_dir" in cfg and (workdir / cfg["results_dir"]).resolve() == results:
                return workdir / cfg.get("resources_dir", "resources")
    return results.parent / "resources"


def _run_spec(run_dir: Path) -> dict:
    """The spec recorded in a run folder's metrics.json."""
    from .metrics import RunMetrics

    metrics_file = Path(run_dir) / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no metrics.json)")
    metrics = RunMetrics.read(metrics_file)
    if not metrics.spec:
        raise UsageError(f"{run_dir} was made by an older poolbench (metrics schema {metrics.schema_version}, "
                         f"no spec); rerun it with snakemake first")
    return metrics.spec


def _labels(table: pd.DataFrame, path: Path) -> np.ndarray | None:
    """The input's gold labels (a ``label`` column of 0/1), or None without one."""
    if "label" not in table.columns:
        return None
    labels = pd.to_numeric(table["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise UsageError(f"{path}: the label column must hold 0 or 1; {int(bad.sum())} row(s) do not "
                         f"(first rows {list(np.flatnonzero(bad.to_numpy())[:5])})")
    return labels.to_numpy(dtype=np.int64)


def predict(run_dir: Path, input_path: Path, output: Path, resources: Path | None = None, *,
            truncation: str | None = None, max_len: int | None = None, batch_size: int | None = None,
            threads: int | None = None, log=None) -> pd.DataFrame:
    """P(positive) for every row of ``input_path`` from the trained run in ``run_dir``.

    Cached regimes keep the backbone's states of these texts in ``<resources>/predict-cache/`` (one
    cache per backbone, window and text file, shared by all its runs). With a ``label`` column, the
    returned table's ``attrs["scores"]`` holds n, accuracy and macro-F1.
    """
    from .io import write_parquet
    from .run import check_weights, score_texts, scores

    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, not {threads}")
        import torch

        torch.set_num_threads(threads)
    spec, weights, model_dir = _trained_run(run_dir, resources)
    texts = _read_texts(Path(input_path))
    labels = _labels(texts, Path(input_path))
    try:
        check_weights(weights, spec)  # before any model loads: one clear sentence
        prob = score_texts(spec, model_dir, weights, texts, truncation=truncation, max_len=max_len,
                           batch_size=batch_size, cache_root=_resources(run_dir, resources), log=log)
    except ValueError as err:  # weights of another run, a window beyond the model, a classifier they do not fit
        raise UsageError(str(err)) from None
    out = texts.drop(columns=["text"]).assign(p_positive=prob, pred=(prob >= 0.5).astype(np.int64))
    write_parquet(output, out)  # atomic: a failed run leaves no partial file
    if labels is not None:
        out.attrs["scores"] = scores(labels, prob)
    return out


def rebuild(run_dir: Path, configfile: Path | None = None, directory: Path | None = None,
            snakefile: Path | None = None, cores: str = "all", replace: bool = False, tolerance: float = 1e-4,
            log=print) -> dict:
    """Rebuild a committed run (its weights and results) with Snakemake and compare it with the committed one.

    The run trains into a temporary results folder (``<resources>/rebuild/<run>/``) with
    ``--config results_dir=...``, so Snakemake never removes the committed files: it deletes a job's
    outputs before running it, and those outputs are the temporary ones. The weights land where
    ``predict`` reads them. Only after success are the predictions compared (max |ΔP(positive)|,
    label flips, accuracy, bytes); with ``replace`` the rebuilt metrics.json and predictions.parquet
    then replace the committed ones. The temporary folder is removed in every case.
    """
    import os
    import shutil
    import subprocess
    import time

    import yaml

    from .io import atomic_write
    from .paths import PREDICTIONS, RUN, WEIGHTS

    spec = _run_spec(run_dir)
    run = spec["run"]
    workdir = Path(directory or Path.cwd()).resolve()
    snakefile = Path(snakefile or workdir / "Snakefile").resolve()
    if not snakefile.is_file():
        raise UsageError(f"no Snakefile at {snakefile}; run this from the repository root or pass --snakefile")
    config_path = Path(configfile) if configfile else snakefile.parent / "workflow" / "config" / "default.yaml"
    cfg = yaml.safe_load(config_path.read_text())
    results, resources = cfg.get("results_dir", "results"), cfg.get("resources_dir", "resources")
    where = RUN.format(**run)
    if Path(run_dir).resolve() != (workdir / results / where).resolve():
        raise UsageError(f"{run_dir} is not {Path(results) / where} under {workdir} (the results_dir of "
                         f"{config_path}); pass the --configfile and --directory that made it")
    scratch = Path(resources) / "rebuild" / where  # relative to the workdir, as the rules' paths are
    weights = Path(resources) / WEIGHTS.format(**run)
    targets = [str(weights), str(scratch / "results" / where / "metrics.json")]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           *(["--configfile", str(Path(configfile).resolve())] if configfile else []), "--cores", str(cores),
           "--config", f"results_dir={scratch / 'results'}", "--rerun-incomplete", *targets]
    log(f"rebuilding {where} (committed files are left alone until the rebuild is complete)")
    start = time.perf_counter()
    proc = None
    try:
        shutil.rmtree(workdir / scratch, ignore_errors=True)
        proc = subprocess.Popen(cmd)
        code = proc.wait()
        wall = time.perf_counter() - start
        if code != 0:
            raise UsageError(f"snakemake failed (exit {code}) rebuilding {where}; its output is above, and the "
                             f"committed results are untouched")
        rebuilt = workdir / scratch / "results" / where
        report = compare_predictions(Path(run_dir) / "predictions.parquet", rebuilt / "predictions.parquet",
                                     tolerance)
        from .config import canonical
        from .metrics import RunMetrics

        # the config may hold other settings for this run than those it was committed with
        report["same_spec"] = canonical(RunMetrics.read(rebuilt / "metrics.json").spec) == canonical(spec)
        report["reproduced"] = report["reproduced"] and report["same_spec"]
        report.update(run=str(Path(results) / where), wall_s=round(wall, 1), processor=processor(),
                      kernels=RunMetrics.read(rebuilt / "metrics.json").versions.get("kernels"),
                      weights=str(weights), replaced=False)
        if replace:
            for name in ("predictions.parquet", "metrics.json"):
                atomic_write(Path(run_dir) / name, lambda tmp, name=name: shutil.copyfile(rebuilt / name, tmp))
            report["replaced"] = True
        return report
    finally:
        if proc is not None and proc.poll() is None:  # interrupted: stop Snakemake before cleaning up
            proc.terminate()
            proc.wait()
        shutil.rmtree(workdir / scratch, ignore_errors=True)
        for parent in (workdir / scratch).parents:  # the emptied folders above it, up to resources/rebuild
            if parent == workdir / resources or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()


def compare_predictions(committed: Path, rebuilt: Path, tolerance: float = 1e-4) -> dict:
    """How a rebuilt predictions.parquet compares with the committed one (rows matched by id)."""
    old, new = pd.read_parquet(committed), pd.read_parquet(rebuilt)
    if sorted(old["id"]) != sorted(new["id"]):
        raise UsageError(f"{rebuilt} holds other examples than {committed}")
    new = new.set_index("id").loc[old["id"]]
    delta = np.abs(new["p_positive"].to_numpy() - old["p_positive"].to_numpy())
    flips = int((new["pred"].to_numpy() != old["pred"].to_numpy()).sum())
    report = {"n": len(old), "max_abs_dp": float(delta.max()), "label_flips": flips,
              "accuracy_committed": float((old["pred"] == old["label"]).mean()),
              "accuracy_rebuilt": float((new["pred"].to_numpy() == old["label"].to_numpy()).mean()),
              "byte_identical": Path(committed).read_bytes() == Path(rebuilt).read_bytes()}
    report["reproduced"] = bool(flips == 0 and report["max_abs_dp"] <= tolerance)
    return report


def processor() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    p.add_argument("--truncation", choices=["head", "tail", "head_tail"],
                   help="which tokens a long text keeps (default: the run's)")
    p.add_argument("--max-len", type=int, help="tokens per text, special tokens included, up to the model's "
                                               "limit (default: the run's)")
    p.add_argument("--batch-size", type=int, help="texts per batch (default: the pipeline's batches)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")

    p = sub.add_parser("rebuild", help="retrain a committed run, its weights included, and compare it with the "
                                       "committed predictions")
    p.add_argument("run", type=Path, help="a committed run folder, e.g. results/runs/imdb/minilm-l6/frozen/"
                                          "head-128/mean/seed0")
    p.add_argument("--configfile", type=Path, help="the config that made the run (default: the default config)")
    p.add_argument("--directory", type=Path, help="Snakemake's workdir (default: the current folder)")
    p.add_argument("--snakefile", type=Path, help="default: <directory>/Snakefile")
    p.add_argument("--cores", default="all", help="Snakemake's --cores (default: %(default)s)")
    p.add_argument("--replace", action="store_true",
                   help="replace the committed metrics.json and predictions.parquet with the rebuilt ones")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest |dP(positive)| that counts as reproduced (default: %(default)s)")
    p.add_argument("--report", type=Path, help="also write the comparison as JSON to this file")


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
    import signal

    args = _parser().parse_args(argv)

    def terminated(signum, frame):  # SIGTERM unwinds like Ctrl-C, so every temporary file is removed
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        return _run(args)
    except KeyboardInterrupt:  # outputs are written into a temporary sibling: nothing partial is left
        print(f"poolbench {args.command}: interrupted; temporary files removed, no output written", file=sys.stderr)
        return 130
    except Terminated:
        print(f"poolbench {args.command}: terminated; temporary files removed, no output written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    from .hub import HubError, results

    try:
        if args.command == "predict":
            out = predict(args.run, args.input, args.output, args.resources, truncation=args.truncation,
                          max_len=args.max_len, batch_size=args.batch_size, threads=args.threads,
                          log=lambda msg: print(msg, file=sys.stderr))
            print(f"wrote {len(out)} predictions to {args.output}")
            if "scores" in out.attrs:
                sc = out.attrs["scores"]
                print(f"accuracy {sc['accuracy']:.4f}, macro-F1 {sc['macro_f1']:.4f} on {sc['n']} labelled texts")
        elif args.command == "rebuild":
            report = rebuild(args.run, args.configfile, args.directory, args.snakefile, args.cores, args.replace,
                             args.tolerance)
            print(rebuild_summary(report))
            if args.report:
                from .io import write_text

                write_text(args.report, json.dumps(report, indent=2))
            return 0 if report["reproduced"] else 1
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


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that cleanup (``finally``) runs."""


def rebuild_summary(report: dict) -> str:
    same = "byte-identical" if report["byte_identical"] else "not byte-identical"
    if not report["same_spec"]:
        same += "; the config's settings for this run differ from the committed run's spec"
    verdict = "reproduced" if report["reproduced"] else "NOT reproduced"
    lines = [f"{report['run']}: {verdict} ({same})",
             f"  max |dP(positive)| {report['max_abs_dp']:.3g} over {report['n']} test examples, "
             f"{report['label_flips']} label flip(s)",
             f"  accuracy: committed {report['accuracy_committed']:.4f}, rebuilt {report['accuracy_rebuilt']:.4f}",
             f"  {report['wall_s']} s on {report['processor']} ({(report['kernels'] or {}).get('capability')} kernels); "
             f"weights: {report['weights']}",
             "  committed results " + ("replaced by the rebuilt ones" if report["replaced"] else "kept as they were")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
