"""The probe and the natural tail set for any Hugging Face classifier (``poolbench export-data``,
``score`` and ``export``).

* :func:`export_data` writes both sets as a Hugging Face dataset folder (parquet + a dataset card
  whose YAML header ``datasets.load_dataset`` reads, with the pipeline's datasheets as its text).
* :func:`probe_report` / :func:`natural_report` are the probe's statistics for one classifier,
  computed by the study's own code (:func:`poolbench.analysis.probe_cells`, ``comparisons`` and
  ``natural_cells``); the ``evaluate`` metric ``metrics/tailprobe`` and :func:`score` both use them.
* :func:`score` runs any ``*ForSequenceClassification`` folder over the sets (batched, dynamic
  padding, the study's truncation) and writes the cell tables, a figure and a verdict.
* :func:`export_run` turns a trained run whose pooling is the one ``*ForSequenceClassification``
  computes (``pooler`` for BERT, ``last`` for decoders) into a standard model folder.

Bad input raises :class:`HubError` with one sentence; the command line prints it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import analysis
from .paths import DATASET

SETS = {"tailprobe": ("train", "test"), "naturaltail": ("test",)}
# Written beside the sets by the tailprobe / naturaltail rules (workflow/rules/data.smk), under results_dir.
DATASHEETS = {"tailprobe": "data/TAILPROBE.md", "naturaltail": "data/NATURALTAIL.md"}


class HubError(ValueError):
    """Bad input to export-data, score or export; the message is one sentence naming the problem."""


# ---- the sets' files --------------------------------------------------------------------------


def pipeline_dirs(config: Path) -> tuple[Path, Path]:
    """(resources_dir, results_dir) of a pipeline config, relative to the working directory as in Snakemake."""
    import yaml

    config = Path(config)
    if not config.is_file():
        raise HubError(f"config {config} does not exist (run from the repository root, or give --config)")
    cfg = yaml.safe_load(config.read_text()) or {}
    return Path(cfg.get("resources_dir", "resources")), Path(cfg.get("results_dir", "results"))


def set_files(root: Path, sets, splits=None, hint: str = "") -> dict[tuple[str, str], Path]:
    """{(set, split): parquet} under ``root`` (a resources_dir or an export-data folder), all present."""
    files = {}
    for name in sets:
        if name not in SETS:
            raise HubError(f"unknown set {name!r}; the sets are {', '.join(SETS)}")
        for split in SETS[name]:
            if splits is None or split in splits:
                path = Path(root) / DATASET.format(dataset=name, split=split)
                if not path.is_file():
                    raise HubError(f"{path} does not exist; {hint or 'run snakemake first'}")
                files[name, split] = path
    return files


def pipeline_files(config: Path, sets, splits=None) -> dict[tuple[str, str], Path]:
    """The pipeline's files of ``sets`` (all splits, or ``splits``), from the config's resources_dir."""
    resources, _ = pipeline_dirs(config)
    return set_files(resources, sets, splits, _snakemake_hint(config))


def pipeline_datasheets(config: Path, sets) -> dict[str, Path]:
    """The datasheets the pipeline wrote beside the sets, from the config's results_dir."""
    _, results = pipeline_dirs(config)
    sheets = {name: results / DATASHEETS[name] for name in sets}
    for path in sheets.values():
        if not path.is_file():
            raise HubError(f"{path} does not exist; {_snakemake_hint(config)}")
    return sheets


def _snakemake_hint(config: Path) -> str:
    return (f"run snakemake first (snakemake --cores all --configfile {config} <that file>), "
            f"or leave that set out with --sets")


def _check_out(out: Path, marker: str, what: str) -> None:
    """Refuse to replace a folder that is not an earlier output of the same command."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        raise HubError(f"{out} exists and is not {what}; give a new folder")


# ---- export-data -------------------------------------------------------------------------------

CARD_INTRO = """\
# poolbench: the tail-sentiment probe and the natural tail set

Two English sentiment test sets that poolbench builds from IMDB reviews to ask one question of any
classifier: **does it catch a verdict in the last sentence?**

- `tailprobe`: a polar verdict sentence placed at the start, middle or end of a body of sentences
  that agrees with it or reads the other way (`condition`), short or long (`length_bin`); the label
  is the verdict's. Its test unit is the verdict (`verdict_review_id`, six rows each).
- `naturaltail`: real IMDB test reviews whose last (`set=tail`) or first (`set=head`) sentence is
  the clear verdict while the rest reads the other way, each also with the verdict removed or moved.

```python
from datasets import load_dataset
probe = load_dataset("{folder}", "tailprobe")         # splits train, test
natural = load_dataset("{folder}", "naturaltail")     # split test
```

Score a classifier: `poolbench score --model <folder> --data {folder} --out scores/`, or the
`evaluate` metric in poolbench's `metrics/tailprobe/`.

**License.** Derived from the Large Movie Review Dataset (Maas et al., 2011), whose reviews come
from IMDb and belong to their authors; for research use, under the terms of the original dataset.
The datasheets follow.
"""


def export_data(files: dict[tuple[str, str], Path], sheets: dict[str, Path], out: Path) -> Path:
    """Copy the sets' parquet files (byte for byte: the datasheets' hashes still hold) and write the card."""
    from .io import atomic_dir

    _check_out(out, "data", "an earlier export-data folder")

    def write(tmp: Path) -> None:
        for (name, split), src in files.items():
            dest = tmp / DATASET.format(dataset=name, split=split)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        (tmp / "README.md").write_text(dataset_card(files, sheets, Path(out).name))

    return atomic_dir(out, write)


def _split_info(split: str, path: Path) -> dict:
    """A split's size as ``datasets`` records it (its Arrow bytes and rows)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {"name": split, "num_bytes": table.nbytes, "num_examples": table.num_rows}


def dataset_card(files: dict[tuple[str, str], Path], sheets: dict[str, Path], folder: str) -> str:
    """README.md of the export: the YAML header that ``datasets`` reads, the intro and the datasheets."""
    import datasets
    import pyarrow.parquet as pq
    import yaml

    configs, infos = [], []
    for name in dict.fromkeys(n for n, _ in files):
        splits = [s for n, s in files if n == name]
        schema = pq.read_schema(files[name, splits[0]])
        features = datasets.Features.from_arrow_schema(schema)
        configs.append({"config_name": name, "data_files": [
            {"split": s, "path": DATASET.format(dataset=name, split=s)} for s in splits]})
        infos.append({"config_name": name, "features": features._to_yaml_list(),
                      "splits": [_split_info(s, files[name, s]) for s in splits]})
    header = {"license": "other", "license_name": "imdb-large-movie-review-dataset",
              "license_link": "https://ai.stanford.edu/~amaas/data/sentiment/", "language": ["en"],
              "task_categories": ["text-classification"], "task_ids": ["sentiment-classification"],
              "source_datasets": ["stanfordnlp/imdb"], "pretty_name": "poolbench tail-sentiment probe",
              "configs": configs, "dataset_info": infos}
    body = [CARD_INTRO.replace("{folder}", folder)]
    for name, path in sheets.items():
        body += ["---", "", Path(path).read_text().rstrip(), ""]
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body) + "\n"


# ---- statistics of one classifier (the study's own code) --------------------------------------


def _run_keys(name: str, dataset: str, truncation: str = "-", max_len: int = 0) -> dict:
    """The run keys :mod:`poolbench.analysis` groups by, for one classifier: one setting, one pooling, one
    seed. ``family`` only selects a baseline pooling to compare with, which is absent here."""
    return dict(dataset=dataset, model=name, family="encoder", regime="hf", truncation=truncation, max_len=max_len,
                pooling=name, seed=0)


def _as_study(table: pd.DataFrame, name: str, dataset: str, truncation: str = "-", max_len: int = 0) -> pd.DataFrame:
    """One classifier's predictions (``pred``, else ``p_positive`` >= 0.5) as a study's predictions."""
    pred = table["pred"] if "pred" in table else (table["p_positive"] >= 0.5).astype(np.int64)
    return table.assign(pred=pred.to_numpy(), **_run_keys(name, dataset, truncation, max_len))


def _study_call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ValueError as err:  # Counts: every unit must have the same number of rows
        raise HubError(f"the predictions do not cover the set evenly ({err}); score whole splits") from None


GAP_COLUMNS = ["length_bin", "a", "b", "units", "diff", "ci_low", "ci_high", "p", "holm_p"]


def probe_report(table: pd.DataFrame, name: str = "model", truncation: str = "-", max_len: int = 0,
                 n_boot: int | None = None, seed: int = analysis.BOOT_SEED) -> dict:
    """The tail probe's statistics for one classifier.

    ``table``: one row per probe item with ``label``, ``body_label``, ``condition``, ``position``,
    ``length_bin``, ``verdict_review_id`` and ``pred`` (0/1) or ``p_positive``. Returns
    ``accuracy``; ``follows_body`` (contrast items predicted as the body's label); ``cells``
    (:func:`poolbench.analysis.probe_cells`: accuracy per condition × position × length_bin with its
    95% CI over verdicts); ``gaps`` (the study's ``position`` comparisons: end − start on contrast
    items per length_bin and over both (``all``), with the verdict-clustered bootstrap CI and p).
    ``n_boot``: draws (default: the study's, 10,000 for a CI and 50,000 for a test).
    """
    missing = {"label", "body_label", *analysis.PROBE_CELL, analysis.VERDICT} - set(table.columns)
    if missing or not {"pred", "p_positive"} & set(table.columns):
        raise HubError(f"probe predictions need the columns {sorted(missing) or ['pred or p_positive']}")
    preds = _as_study(table, name, "tailprobe", truncation, max_len)
    cells = _study_call(analysis.probe_cells, preds, n_boot or analysis.N_BOOT, seed)
    # One call for the three end − start tests (short, long, all): the pooled copy is its own length bin.
    both = pd.concat([preds, preds.assign(length_bin="all")], ignore_index=True)
    comps = _study_call(analysis.comparisons, both, n_boot or analysis.N_BOOT_TESTS, seed)
    gaps = comps[comps["kind"] == "position"] if len(comps) else pd.DataFrame(columns=GAP_COLUMNS + ["kind"])
    gaps = gaps.assign(order=gaps["length_bin"].map({"all": 0, "short": 1, "long": 2})).sort_values("order")
    contrast = preds[preds["condition"] == "contrast"]
    keep = ["condition", "position", "length_bin", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
            "follows_body"]
    return {"accuracy": float((preds["pred"] == preds["label"]).mean()),
            "follows_body": float((contrast["pred"] == contrast["body_label"]).mean()) if len(contrast) else None,
            "cells": cells[keep].reset_index(drop=True),
            "gaps": gaps[GAP_COLUMNS].reset_index(drop=True)}


def natural_report(table: pd.DataFrame, name: str = "model", n_boot: int | None = None,
                   seed: int = analysis.BOOT_SEED) -> pd.DataFrame:
    """Natural tail set accuracy per set (tail/head) × variant with its 95% CI over reviews
    (:func:`poolbench.analysis.natural_cells`)."""
    preds = _as_study(table, name, "naturaltail")
    cells = _study_call(analysis.natural_cells, preds, n_boot or analysis.N_BOOT, seed)
    return cells[["set", "variant", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high"]]


# ---- scoring any *ForSequenceClassification folder --------------------------------------------


@contextlib.contextmanager
def _quiet_transformers():
    """No warnings or progress bars from transformers while loading: errors are ours to word."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


class HFClassifier:
    """A Hugging Face sequence classifier read as P(positive), with the study's truncation."""

    def __init__(self, folder: Path, positive: list[int] | None = None, max_len: int | None = None,
                 truncation: str | None = None):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from .encoding import TRUNCATIONS
        from .train import default_device

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise HubError(f"{folder} is not a Hugging Face model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as err:
            raise HubError(f"{folder}/config.json cannot be read by transformers ({_first_line(err)})") from None
        archs = config.architectures or []
        if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise HubError(f"{folder} holds a {archs[0]}, not a *ForSequenceClassification model")
        self.positive = self._positive_labels(folder, config, positive)
        try:
            self.tokenizer = tok = AutoTokenizer.from_pretrained(folder)
        except Exception as err:
            raise HubError(f"{folder} has no tokenizer that transformers can load ({_first_line(err)})") from None
        self.max_len = max_len or (tok.model_max_length if tok.model_max_length < 1_000_000 else None)
        if not self.max_len:
            raise HubError(f"the tokenizer of {folder} sets no model_max_length, so it cannot truncate; give --max-len")
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if limit and self.max_len > limit:
            raise HubError(f"--max-len {self.max_len} is above the {limit} positions of the model in {folder}")
        self.truncation = truncation or ("tail" if tok.truncation_side == "left" else "head")
        if self.truncation not in TRUNCATIONS:
            raise HubError(f"unknown truncation {self.truncation!r}; expected one of {', '.join(TRUNCATIONS)}")
        pad = next((i for i in (config.pad_token_id, tok.pad_token_id, tok.eos_token_id) if i is not None), None)
        if pad is None:
            raise HubError(f"{folder}: neither the model nor its tokenizer defines a pad or end-of-text token")
        if not any(Path(folder).glob("*.safetensors")):  # pickled weights (*.bin) can run code: not loaded
            raise HubError(f"{folder} holds no *.safetensors weights (poolbench loads no pickled .bin files); "
                           "save the model with save_pretrained(..., safe_serialization=True)")
        try:
            with _quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    folder, output_loading_info=True, use_safetensors=True)
        except Exception as err:
            raise HubError(f"{folder} cannot be loaded as a sequence classifier ({_first_line(err)})") from None
        if info["missing_keys"]:
            raise HubError(f"{folder} is not a trained sequence classifier: {len(info['missing_keys'])} weights are "
                           f"missing (e.g. {sorted(info['missing_keys'])[0]})")
        model.config.pad_token_id = self.pad_id = int(pad)  # decoders find the last token by it
        self.model = model.float().eval().to(default_device())
        self.name = folder.resolve().name

    @staticmethod
    def _positive_labels(folder: Path, config, positive: list[int] | None) -> list[int]:
        n = config.num_labels
        if n < 2:
            raise HubError(f"{folder} has a single output (a regression head); poolbench score needs class labels")
        names = {i: str(config.id2label.get(i, i)) for i in range(n)}
        if positive is None:
            if n > 2:
                raise HubError(f"{folder} has {n} labels ({', '.join(f'{i}={v}' for i, v in names.items())}); "
                               f"say which are positive with --positive-label")
            named = [i for i, v in names.items() if v.lower().startswith("pos")]
            positive = named if len(named) == 1 else [1]
        bad = [i for i in positive if not 0 <= i < n]
        if bad:
            raise HubError(f"--positive-label {bad[0]} is not a label of {folder} (labels 0..{n - 1})")
        return sorted(set(positive))

    def encode(self, text: str) -> list[int]:
        """Token ids as the study makes them (:func:`poolbench.encoding.encode`): ``<br />`` blanked, the
        text tokens cut to fit ``max_len`` by ``truncation`` before the special tokens are added."""
        from .encoding import _special_frame, keep_window
        from .text import clean

        ids = self.tokenizer(clean(text), add_special_tokens=False, verbose=False)["input_ids"]  # cut below
        before, after = _special_frame(self.tokenizer)
        budget = self.max_len - len(before) - len(after)
        if budget < 1:
            raise HubError(f"--max-len {self.max_len} leaves no room for text after the special tokens")
        return before + [ids[i] for i in keep_window(len(ids), budget, self.truncation)] + after

    def p_positive(self, texts, batch_size: int = 32, desc: str = "score") -> np.ndarray:
        """P(positive) per text: longest first, padded per batch to its longest text (right side)."""
        from tqdm.auto import tqdm

        encoded = [self.encode(t) for t in texts]
        order = np.argsort([-len(e) for e in encoded], kind="stable")
        out = np.zeros(len(encoded))
        device = next(self.model.parameters()).device
        with torch.no_grad(), tqdm(total=len(encoded), desc=desc, unit="text") as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                width = max(len(encoded[r]) for r in rows)
                ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, :len(encoded[r])] = torch.tensor(encoded[r])
                    mask[i, :len(encoded[r])] = 1
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                out[rows] = torch.softmax(logits.float(), -1)[:, self.positive].sum(-1).cpu().numpy()
                bar.update(len(rows))
        return out


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def score(clf: HFClassifier, files: dict[tuple[str, str], Path], out: Path, batch_size: int = 32,
          n_boot: int | None = None) -> dict:
    """Score ``clf`` on the test split of each set in ``files``; write predictions, cell tables, a figure
    and ``VERDICT.md`` to ``out``. Returns {"tailprobe": probe_report, "naturaltail": cells}."""
    from .io import write_csv, write_parquet, write_text
    from .run import TEXT_COLUMNS

    out = Path(out)
    results = {}
    for (name, split), path in files.items():
        if split != "test":
            continue
        data = pd.read_parquet(path)
        prob = clf.p_positive(data["text"].tolist(), batch_size, desc=name)
        preds = data.drop(columns=[c for c in TEXT_COLUMNS if c in data]).assign(
            p_positive=prob, pred=(prob >= 0.5).astype(np.int64))
        write_parquet(out / f"predictions-{name}.parquet", preds)
        if name == "tailprobe":
            rep = probe_report(preds, clf.name, clf.truncation, clf.max_len, n_boot=n_boot)
            write_csv(out / "tailprobe_cells.csv", rep["cells"])
            write_csv(out / "tailprobe_gaps.csv", rep["gaps"])
            keys = _run_keys(clf.name, "tailprobe", clf.truncation, clf.max_len)
            analysis.tailprobe_figure(rep["cells"].assign(**keys), out / "tailprobe_by_position.png")
        else:
            rep = natural_report(preds, clf.name, n_boot=n_boot)
            write_csv(out / "naturaltail_cells.csv", rep)
        results[name] = rep
    write_text(out / "VERDICT.md", verdict(clf, results))
    return results


def verdict(clf: HFClassifier, results: dict) -> str:
    """A short Markdown verdict: the end − start gap, the follows-body rate, natural tail vs head."""
    from .analysis import points, pvalue, with_ci

    def acc(row) -> str:
        return with_ci(row, "accuracy", "accuracy_ci_low", "accuracy_ci_high")

    def table(cells: pd.DataFrame, rows: list[tuple], columns: list[str]) -> list[str]:
        return [f"| {' | '.join(map(str, r))} | " + " | ".join(acc(cells.loc[(*r, c)]) if (*r, c) in cells.index
                                                              else "–" for c in columns) + " |" for r in rows]

    lines = [f"# Does {clf.name} catch the last sentence?", "",
             f"`{type(clf.model).__name__}`, positive label(s) {clf.positive}, {clf.truncation} truncation at "
             f"{clf.max_len} tokens. Accuracy in %, differences in points, [95% CI].", ""]
    if "tailprobe" in results:
        rep = results["tailprobe"]
        lines += ["## Tail probe", "", f"- Accuracy: {points(rep['accuracy'])}."]
        if len(rep["gaps"]):
            overall = rep["gaps"].iloc[0]
            said = ("less often than the first" if overall["ci_high"] < 0 else
                    "more often than the first" if overall["ci_low"] > 0 else
                    "about as often as the first (the CI holds 0)")
            lines.append(f"- Contrast texts, verdict at the end − at the start: {with_ci(overall)} "
                         f"(p = {pvalue(overall['p'])}; bootstrap over verdicts): the last sentence is caught {said}.")
            lines += [f"  - {g['length_bin']} texts: {with_ci(g)} (p = {pvalue(g['p'])})"
                      for _, g in rep["gaps"].iloc[1:].iterrows()]
        if rep["follows_body"] is not None:
            lines.append(f"- Follows the body instead of the verdict on {points(rep['follows_body'])}% of contrast "
                         f"texts.")
        cells = rep["cells"].set_index(["condition", "length_bin", "position"])
        rows = list(dict.fromkeys(zip(rep["cells"]["condition"], rep["cells"]["length_bin"])))
        lines += ["", "| condition | length | start | middle | end |", "|---|---|---:|---:|---:|",
                  *table(cells, rows, analysis.POSITIONS), ""]
    if "naturaltail" in results:
        cells = results["naturaltail"].set_index(["set", "variant"])
        lines += ["## Natural tail set", ""]
        if {("tail", "original"), ("head", "original")} <= set(cells.index):
            lines += [f"- Real reviews decided by their last sentence: {acc(cells.loc[('tail', 'original')])}; "
                      f"by their first: {acc(cells.loc[('head', 'original')])}.", ""]
        rows = [(s,) for s in dict.fromkeys(results["naturaltail"]["set"])]
        lines += ["| set | original | removed | moved |", "|---|---:|---:|---:|",
                  *table(cells, rows, ["original", "removed", "moved"]), ""]
    return "\n".join(lines)


# ---- export a trained run -----------------------------------------------------------------------

# The poolings a *ForSequenceClassification class computes, and the model types it does so for.
EXPORTABLE = {"pooler": ("bert",), "last": ("llama", "gpt2")}


def export_run(spec: dict, model_dir: Path, weights: Path, out: Path) -> Path:
    """Write a trained run as a standard folder that ``AutoModelForSequenceClassification`` loads.

    The run's base model gives every weight; the run's trained ones replace theirs: the top layers
    (``topk``: ``top.layers.i`` is layer ``L - k + i``; ``top.norm`` the final norm), the backbone's
    trained weights (``finetune``), BERT's pooler (the ``pooler`` pooling's own copy) and the head
    (``classifier`` / ``score``). Decoder ``score`` layers have no bias: GPT-2 carries the head's
    bias in its final LayerNorm's bias (``W @ delta = b``, exact up to rounding); a Llama final norm
    (RMSNorm) has none, so a Llama run exports only if its two logit biases are equal.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .encoding import _special_frame
    from .io import atomic_dir
    from .models import load_backbone
    from .topk import resolve_trainable_layers
    from .train import _layer_list

    run = spec["run"]
    _check_out(out, "config.json", "an earlier model export")
    if run["pooling"] not in EXPORTABLE:
        raise HubError(f"a {run['pooling']!r} run has no *ForSequenceClassification equivalent; only 'pooler' "
                       f"(BERT) and 'last' (Llama, GPT-2) runs export")
    with _quiet_transformers():
        base = load_backbone(Path(model_dir))
    if base.config.model_type not in EXPORTABLE[run["pooling"]]:
        raise HubError(f"a {run['pooling']!r} run exports for {', '.join(EXPORTABLE[run['pooling']])} models, "
                       f"not {base.config.model_type!r}")
    config = copy.deepcopy(base.config)
    config.num_labels = 2
    config.id2label, config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    with _quiet_transformers():
        hf = AutoModelForSequenceClassification.from_config(config).eval()
    hf.base_model.load_state_dict(base.state_dict())
    head = hf.classifier if hasattr(hf, "classifier") else hf.score

    layers_path = _path_of(base, _layer_list(base))
    L = len(_layer_list(base))
    k = 0  # trained top layers (topk): top.layers.i is layer L - k + i
    if spec["kind"] == "topk":
        k = resolve_trainable_layers(spec["regime"].get("trainable_layers", 0), run["model"])
    target = dict(hf.base_model.named_parameters()) | dict(hf.base_model.named_buffers())
    state = load_file(str(weights))
    unused = []
    with torch.no_grad():
        for key, value in state.items():
            name = _base_name(key, layers_path, L, k)
            if name is None:
                continue  # the head, below, or a part the export does not need
            if name not in target or target[name].shape != value.shape:
                unused.append(key)
                continue
            target[name].copy_(value)
        if unused:
            raise HubError(f"{weights}: cannot map {unused[:3]} onto {type(hf).__name__}")
        weight, bias = state["head.linear.weight"], state.get("head.linear.bias")
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(bias if bias is not None else torch.zeros_like(head.bias))
        elif bias is not None and not torch.equal(bias[0], bias[1]):
            _fold_bias(hf, weight, bias, run)

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # as poolbench.models.load_tokenizer
    if tok.pad_token_id in _special_frame(tok)[1] and spec["family"] == "decoder":
        raise HubError(f"the tokenizer of {run['model']} ends every text with its pad token, so the exported "
                       f"classifier would not read the last real token")
    hf.config.pad_token_id = tok.pad_token_id
    tok.model_max_length = int(run["max_len"])
    tok.truncation_side = "left" if run["truncation"] == "tail" else "right"
    card = (f"# {run['model']} · {run['pooling']} · {run['regime']} (poolbench run)\n\n"
            f"Exported by `poolbench export` from the run below; `AutoModelForSequenceClassification` loads it. "
            f"Label 1 is positive. The run read {run['max_len']} tokens with {run['truncation']} truncation (the "
            f"tokenizer is set to match for head and tail).\n\n```json\n"
            f"{json.dumps(spec, indent=2, sort_keys=True)}\n```\n")

    def write(tmp: Path) -> None:
        with _quiet_transformers():
            hf.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)

    return atomic_dir(out, write)


def _path_of(root: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def _base_name(key: str, layers_path: str, L: int, k: int) -> str | None:
    """The base-model name of a run's saved weight, or None for the head and parts not exported."""
    if key.startswith("head."):
        return None
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        return None if rest.startswith("pooler.") else rest  # the pooling's own pooler copy is what ran
    if key.startswith("pooling.pooler."):
        return "pooler." + key[len("pooling.pooler."):]
    if key.startswith("top.layers."):
        i, rest = key[len("top.layers."):].split(".", 1)
        return f"{layers_path}.{L - k + int(i)}.{rest}"
    if key.startswith("top.norm."):
        return "norm." + key[len("top.norm."):]
    if key.startswith("top.rotary_emb."):
        return None  # buffers computed from the config
    return key  # anything else must be a base-model weight, or the export refuses it


def _fold_bias(hf, weight: torch.Tensor, bias: torch.Tensor, run: dict) -> None:
    """Put the head's bias into the final LayerNorm's bias: logits = W (y + delta) with W delta = b."""
    norm = getattr(hf.base_model, "ln_f", None)
    if norm is None or getattr(norm, "bias", None) is None:
        raise HubError(f"the {run['model']} run's head adds biases ({bias[0]:.4g}, {bias[1]:.4g}) to its logits, "
                       f"which a {type(hf).__name__} cannot hold: its score layer and final norm have no bias; of "
                       f"the decoder runs only GPT-2 ones (bias folded into ln_f) or heads with equal biases export "
                       f"exactly")
    delta = torch.linalg.pinv(weight.double()) @ bias.double()  # the smallest such change
    norm.bias.add_(delta.to(norm.bias.dtype))
