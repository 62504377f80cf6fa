"""``poolbench export-data``: the evaluation sets as a Hugging Face dataset folder that travels.

The folder holds the sets' parquet files (byte for byte as the pipeline wrote them), a dataset card
(``README.md``, made with ``huggingface_hub``'s :class:`~huggingface_hub.DatasetCard`; its YAML header
is what ``datasets.load_dataset`` reads), ``MANIFEST.json`` (each set's generator version, rows and
sha256: :func:`read_manifest` checks them before anything is scored) and, where the pipeline has
made them, ``references.csv``: the rows a scored model is placed against (chance is computed from
the data; the bag-of-words baselines and the study's own models come from the committed summaries).

A new evaluation set plugs in by adding its name, splits, datasheet and version to :data:`SETS`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..paths import DATASET
from .common import HubError, check_out

MANIFEST = "MANIFEST.json"
MANIFEST_SCHEMA = 1
REFERENCES = "references.csv"


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: its splits, its datasheet under results_dir, and the version of its generator."""

    name: str
    splits: tuple[str, ...]
    datasheet: str

    @property
    def version(self) -> str:
        if self.name == "tailprobe":
            from ..tailprobe.common import VERSION
        else:
            from ..naturaltail import VERSION
        return f"v{VERSION}"


SETS = {s.name: s for s in (EvalSet("tailprobe", ("train", "test"), "data/TAILPROBE.md"),
                            EvalSet("naturaltail", ("test",), "data/NATURALTAIL.md"))}
DATASHEETS = {name: s.datasheet for name, s in SETS.items()}


# ---- the sets' files --------------------------------------------------------------------------


def pipeline_dirs(config: Path) -> tuple[Path, Path]:
    """(resources_dir, results_dir) of a pipeline config, relative to the working directory as in Snakemake."""
    import yaml

    config = Path(config)
    if not config.is_file():
        raise HubError(f"config {config} does not exist (run from the repository root, give --config, or score "
                       f"a folder written by poolbench export-data with --data)")
    cfg = yaml.safe_load(config.read_text()) or {}
    return Path(cfg.get("resources_dir", "resources")), Path(cfg.get("results_dir", "results"))


def set_files(root: Path, sets, splits=None, hint: str = "") -> dict[tuple[str, str], Path]:
    """{(set, split): parquet} under ``root`` (a resources_dir or an export-data folder), all present."""
    files = {}
    for name in sets:
        if name not in SETS:
            raise HubError(f"unknown set {name!r}; the sets are {', '.join(SETS)}")
        for split in SETS[name].splits:
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
    sheets = {name: results / SETS[name].datasheet for name in sets}
    for path in sheets.values():
        if not path.is_file():
            raise HubError(f"{path} does not exist; {_snakemake_hint(config)}")
    return sheets


def _snakemake_hint(config: Path) -> str:
    return (f"run snakemake first (snakemake --cores all --configfile {config} <that file>), "
            f"or leave that set out with --sets")


# ---- the manifest: versions and hashes ---------------------------------------------------------


def manifest(files: dict[tuple[str, str], Path]) -> dict:
    """Each file's set, split, generator version, rows and sha256, as recorded in MANIFEST.json and results.json."""
    import pyarrow.parquet as pq

    from .. import __version__
    from ..models import sha256sum

    return {"schema_version": MANIFEST_SCHEMA, "poolbench_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sets": [{"name": name, "split": split, "version": SETS[name].version,
                      "path": DATASET.format(dataset=name, split=split), "rows": pq.read_metadata(path).num_rows,
                      "sha256": sha256sum(path)} for (name, split), path in files.items()]}


def read_manifest(folder: Path, files: dict[tuple[str, str], Path]) -> dict:
    """The MANIFEST.json of an export-data folder, with every file of ``files`` checked against its sha256."""
    from ..models import sha256sum

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise HubError(f"{folder} has no {MANIFEST}; write it again with poolbench export-data")
    recorded = {(s["name"], s["split"]): s for s in json.loads(path.read_text())["sets"]}
    for key, file in files.items():
        if key not in recorded:
            raise HubError(f"{MANIFEST} of {folder} does not list {file}; write the folder again with export-data")
        if sha256sum(file) != recorded[key]["sha256"]:
            raise HubError(f"{file} does not match the sha256 in {path} (changed since export-data wrote it); "
                           f"write the folder again with poolbench export-data")
    return {**json.loads(path.read_text()), "sets": [recorded[k] for k in files]}


# ---- reference rows ---------------------------------------------------------------------------

# Written by the pipeline under results_dir (committed): the probe's bag-of-words baselines and the study's
# IMDB-trained runs scored on the probe and on the natural tail set.
REFERENCE_SOURCES = {"baselines": "data/tailprobe_baselines.csv", "natural_checks": "data/naturaltail_checks.json",
                     "study_probe": "summary/transfer_tailprobe_cells.csv",
                     "study_natural": "summary/naturaltail_cells.csv"}
HF_POOLING = {"encoder": ("pooler", "cls"), "decoder": ("last",)}  # what *ForSequenceClassification computes
REFERENCE_COLUMNS = ["set", "reference", "kind", "metric", "value"]


def _probe_metrics(cells: pd.DataFrame) -> dict:
    """Overall accuracy and contrast start / end accuracy (n-weighted over length bins) of probe cells."""
    def acc(df):
        return float((df["accuracy"] * df["n"]).sum() / df["n"].sum())

    contrast = cells[cells["condition"] == "contrast"]
    start, end = acc(contrast[contrast["position"] == "start"]), acc(contrast[contrast["position"] == "end"])
    return {"accuracy": acc(cells), "contrast_start": start, "contrast_end": end, "end_minus_start": end - start}


def references(results_dir: Path) -> pd.DataFrame:
    """Reference rows from the committed summaries under ``results_dir`` (empty where they are absent):
    the probe's and the natural set's bag-of-words baselines, and per fine-tuned study setting (IMDB-trained,
    every regime but ``frozen``) its ``*ForSequenceClassification`` pooling (``pooler``/``cls``, ``last``) and
    its most accurate pooling on the probe."""
    paths = {k: Path(results_dir) / v for k, v in REFERENCE_SOURCES.items()}
    rows = []
    if paths["baselines"].is_file():
        for name, cells in pd.read_csv(paths["baselines"]).groupby("baseline", sort=False):
            rows += [("tailprobe", name, "baseline", m, v) for m, v in _probe_metrics(cells).items()]
    if paths["natural_checks"].is_file():  # the natural set's IMDB-trained bag-of-words, per set/variant
        bow = json.loads(paths["natural_checks"].read_text()).get("bow_accuracy", {})
        rows += [("naturaltail", "imdb_bow", "baseline", f"{s}_original", float(bow[f"{s}/original"]))
                 for s in ("tail", "head") if f"{s}/original" in bow]
    if paths["study_probe"].is_file():
        probe = pd.read_csv(paths["study_probe"])
        natural = pd.read_csv(paths["study_natural"]) if paths["study_natural"].is_file() else None
        tuned = probe[probe["regime"] != "frozen"]
        for (model, family, regime, trunc, max_len), sub in tuned.groupby(
                ["model", "family", "regime", "truncation", "max_len"], sort=True):
            scored = {p: _probe_metrics(c) for p, c in sub.groupby("pooling")}
            hf = next((p for p in HF_POOLING[family] if p in scored), None)
            best = max(scored, key=lambda p: scored[p]["accuracy"])
            for pooling in dict.fromkeys(p for p in (hf, best) if p):
                what = "best pooling on the probe" if pooling == best and pooling != hf else "HF pooling"
                name = f"study: {model} · {regime} · {trunc}-{max_len} · {pooling} ({what})"
                rows += [("tailprobe", name, "study", m, v) for m, v in scored[pooling].items()]
                if natural is not None:
                    cells = natural[(natural["model"] == model) & (natural["regime"] == regime)
                                    & (natural["truncation"] == trunc) & (natural["max_len"] == max_len)
                                    & (natural["pooling"] == pooling) & (natural["variant"] == "original")]
                    rows += [("naturaltail", name, "study", f"{s}_original", float(a))
                             for s, a in zip(cells["set"], cells["accuracy"])]
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


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

Score a classifier: `poolbench score --model <folder> --data {folder} --out scores/` (it checks the
files against `MANIFEST.json`: versions and sha256), or the `evaluate` metric that ships with
poolbench (`evaluate.load(poolbench.hub.METRIC)`).

**License.** Derived from the Large Movie Review Dataset (Maas et al., 2011), whose reviews come
from IMDb and belong to their authors; for research use, under the terms of the original dataset.
The datasheets follow.
"""


def export_data(files: dict[tuple[str, str], Path], sheets: dict[str, Path], out: Path,
                results_dir: Path | None = None, overwrite: bool = False) -> Path:
    """Copy the sets' parquet files (byte for byte: the datasheets' hashes still hold); write the card,
    MANIFEST.json and (from ``results_dir``'s summaries, where present) references.csv."""
    from ..io import atomic_dir

    check_out(out, MANIFEST, "an earlier export-data folder", overwrite)
    refs = references(results_dir) if results_dir is not None else pd.DataFrame(columns=REFERENCE_COLUMNS)

    def write(tmp: Path) -> None:
        for (name, split), src in files.items():
            dest = tmp / DATASET.format(dataset=name, split=split)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        dataset_card(files, sheets, Path(out).name).save(tmp / "README.md")
        (tmp / MANIFEST).write_text(json.dumps(manifest(files), indent=2) + "\n")
        if len(refs):
            refs.to_csv(tmp / REFERENCES, index=False)

    return atomic_dir(out, write)


def _split_info(split: str, path: Path) -> dict:
    """A split's size as ``datasets`` records it (its Arrow bytes and rows)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {"name": split, "num_bytes": table.nbytes, "num_examples": table.num_rows}


def _features(path: Path) -> list[dict]:
    """The ``dataset_info.features`` entries of a parquet file's columns (scalar columns only)."""
    import datasets
    import pyarrow.parquet as pq

    out = []
    for name, feature in datasets.Features.from_arrow_schema(pq.read_schema(path)).items():
        if not isinstance(feature, datasets.Value):
            raise HubError(f"{path}: column {name!r} is not a scalar ({feature}); the card lists scalar columns only")
        out.append({"name": name, "dtype": feature.dtype})
    return out


def dataset_card(files: dict[tuple[str, str], Path], sheets: dict[str, Path], folder: str):
    """The export's :class:`huggingface_hub.DatasetCard`: the YAML header ``datasets`` reads, the intro
    and the datasheets."""
    from huggingface_hub import DatasetCard, DatasetCardData

    configs, infos = [], []
    for name in dict.fromkeys(n for n, _ in files):
        splits = [s for n, s in files if n == name]
        configs.append({"config_name": name, "data_files": [
            {"split": s, "path": DATASET.format(dataset=name, split=s)} for s in splits]})
        infos.append({"config_name": name, "features": _features(files[name, splits[0]]),
                      "splits": [_split_info(s, files[name, s]) for s in splits]})
    data = DatasetCardData(license="other", license_name="imdb-large-movie-review-dataset",
                           license_link="https://ai.stanford.edu/~amaas/data/sentiment/", language=["en"],
                           task_categories=["text-classification"], task_ids=["sentiment-classification"],
                           source_datasets=["stanfordnlp/imdb"], pretty_name="poolbench tail-sentiment probe",
                           configs=configs, dataset_info=infos)
    body = [CARD_INTRO.replace("{folder}", folder)]
    for name, path in sheets.items():
        body += ["---", "", Path(path).read_text().rstrip(), ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
