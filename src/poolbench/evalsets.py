"""Evaluation sets: one registry entry per set, from which the pipeline, ``score`` and ``export-data``
derive everything they do with it.

An entry (:class:`EvalSet`) says how to get the set's test frame (a *loader* for a set that is read
from the data folder, or the *builder* and rule of a generated one), its version, the column the
bootstrap resamples (``unit``), the columns that group its cells table (``cells``), the function that
makes that table with 95% CIs (``cell_table``), its provenance text and, for a set whose texts come
from IMDB train, which IMDB reviews to drop from a training subset (``imdb_overlap``).

A test frame has the columns ``id`` (unique str), ``text``, ``label`` (0/1) and the set's metadata
(which travel to the predictions, and so to the cells). :func:`load` checks this for every loader.

Entries: ``cad_imdb`` (Kaushik et al. 2020), ``sst2`` and ``sst2_crowd`` (Krishna et al. 2018), read
from ``$POOLBENCH_DATA_DIR`` (their folders' READMEs hold provenance, licence and hashes), and
``tailprobe`` / ``naturaltail``, built by their own modules and rules. :func:`baseline_predictions`
scores any of them with an IMDB-trained TF-IDF + logistic regression, as a pseudo-run whose rows pass
through the same cells function.

Statistics reuse the study's public code: :class:`poolbench.analysis.Counts` (correct rows per
pooling × unit × seed, and its paired bootstrap), ``analysis.SETTING_KEYS``, ``RUN_KEYS``, ``N_BOOT``,
``BOOT_SEED``, ``VERDICT``, ``PROBE_CELL``, ``NATURAL_CELL``, ``probe_cells``, ``natural_cells``, and
:func:`poolbench.stats.summarise_accuracy`.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import analysis
from . import stats as st

ALL = "all"  # the value of a cell column in a margin row (pooled over that column)
CELL_COLUMNS_OUT = ["seeds", "units", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high"]


class EvalSetError(ValueError):
    """A bad evaluation-set name, setting or file; the message is one sentence naming it."""


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set. ``load`` xor ``build``: a loader reads the set (the generic ``evalset``
    rule writes it); a builder's set is made by its own ``rule``, which also writes its datasheet."""

    name: str
    version: int | Callable[[], int]  # bump when a code change alters the set's frame
    unit: str  # what the bootstrap resamples (a CAD pair, a probe verdict, a sentence)
    cells: tuple[str, ...]  # the columns that group the cells table
    cell_table: Callable  # (predictions, n_boot, seed) -> cells table with 95% CIs
    datasheet: str  # provenance (Markdown): source, licence, citation, what a unit and a cell are
    load: Callable[[dict], pd.DataFrame] | None = None  # settings -> the test frame
    build: Callable | None = None  # the generated set's public builder (called by its own rule)
    rule: str = "evalset"  # the pipeline rule that makes ``resources/data/<name>/test.parquet``
    splits: tuple[str, ...] = ("test",)  # splits ``export-data`` copies (a set that also trains has more)
    licence: str = ""
    summary: str = ""  # the cells table under results_dir (default summary/<name>_cells.csv)
    datasheet_file: str = ""  # the datasheet under results_dir (default data/<name>.md)
    imdb_overlap: Callable[[str, pd.DataFrame], np.ndarray] | None = None  # (split, IMDB reviews) -> drop mask
    source: tuple[str, ...] = ()  # files under the data folder the loader reads
    sha256: dict = field(default_factory=dict)  # file -> expected sha256 (from the data folder's README)

    def current_version(self) -> int:
        return int(self.version() if callable(self.version) else self.version)

    def summary_file(self) -> str:
        return self.summary or f"summary/{self.name}_cells.csv"

    def datasheet_path(self) -> str:
        return self.datasheet_file or f"data/{self.name}.md"


REGISTRY: dict[str, EvalSet] = {}


def register(entry: EvalSet) -> EvalSet:
    """Add an entry; a name may be registered once."""
    if entry.name in REGISTRY:
        raise EvalSetError(f"evaluation set {entry.name!r} is already registered")
    if (entry.load is None) == (entry.build is None):
        raise EvalSetError(f"evaluation set {entry.name!r}: give exactly one of load (a loader) and build")
    if entry.build is not None and entry.rule == "evalset":
        raise EvalSetError(f"evaluation set {entry.name!r}: a built set names the pipeline rule that builds it")
    REGISTRY[entry.name] = entry
    return entry


def names() -> list[str]:
    """Every registered evaluation set, in registration order."""
    return list(REGISTRY)


def loaded_names() -> list[str]:
    """The sets the generic ``evalset`` rule makes (those with a loader)."""
    return [n for n, e in REGISTRY.items() if e.load is not None]


def get(name: str) -> EvalSet:
    if name not in REGISTRY:
        raise EvalSetError(f"unknown evaluation set {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def spec(name: str, settings: dict | None) -> dict:
    """What the set's rule depends on: the config's settings for it, as given, and its version. Same
    shape as the tailprobe / naturaltail rules' specs today, so those specs do not change. The
    ``transfer`` lists are in no spec: they only add or remove ``evaluate`` jobs."""
    return {"settings": settings if settings is not None else {}, "version": get(name).current_version()}


def load(name: str, settings: dict | None = None) -> pd.DataFrame:
    """The set's test frame, checked: id unique, text non-empty, label 0/1, unit and cell columns present."""
    from .data import validate

    entry = get(name)
    if entry.load is None:
        raise EvalSetError(f"evaluation set {name!r} is built by the {entry.rule!r} rule, not loaded; "
                           f"read resources/data/{name}/test.parquet")
    frame = validate(entry.load(dict(settings or {})), f"evaluation set {name}")
    check_frame(entry, frame)
    return frame.reset_index(drop=True)


def check_frame(entry: EvalSet, frame: pd.DataFrame) -> None:
    missing = [c for c in ("id", entry.unit, *entry.cells) if c not in frame.columns]
    if missing:
        raise EvalSetError(f"evaluation set {entry.name!r}: its frame lacks the columns {missing}")
    dup = frame["id"].duplicated()
    if dup.any():
        raise EvalSetError(f"evaluation set {entry.name!r}: {int(dup.sum())} ids repeat "
                           f"(first {frame.loc[dup, 'id'].iloc[0]!r})")


def cells(name: str, preds: pd.DataFrame, n_boot: int = analysis.N_BOOT, seed: int = analysis.BOOT_SEED) -> pd.DataFrame:
    """The set's cells table from predictions with run keys (:func:`poolbench.analysis.read_predictions`)."""
    return get(name).cell_table(preds, n_boot, seed)


def imdb_overlap(set_names, split: str, reviews: pd.DataFrame) -> np.ndarray:
    """Rows of the IMDB ``split`` (``reviews``, as :func:`poolbench.data.load_imdb` gives it) whose text
    is in any of ``set_names``: the reviews a training subset must not hold."""
    mask = np.zeros(len(reviews), dtype=bool)
    for name in set_names:
        entry = get(name)
        if entry.imdb_overlap is None:
            with_overlap = [n for n, e in REGISTRY.items() if e.imdb_overlap is not None]
            raise EvalSetError(f"datasets.imdb.exclude: {name!r} takes no texts from IMDB; the sets that do: "
                               f"{', '.join(with_overlap)}")
        mask |= np.asarray(entry.imdb_overlap(split, reviews), dtype=bool)
    return mask


# ---- cells tables -----------------------------------------------------------------------------


def accuracy_cells(preds: pd.DataFrame, unit: str, cell_columns, n_boot: int = analysis.N_BOOT,
                   seed: int = analysis.BOOT_SEED, margins: bool = True) -> pd.DataFrame:
    """Accuracy per setting × pooling × cell, pooled over seeds, with its 95% CI from the study's
    bootstrap over ``unit`` and seeds. With ``margins``, also every margin: a cell column set to
    :data:`ALL` pools its values (all columns ``all`` = the whole set)."""
    cell_columns = list(cell_columns)
    front = analysis.SETTING_KEYS + ["pooling"] + cell_columns
    rows = []
    kept_sets = [cell_columns]
    if margins:
        kept_sets = [list(k) for r in range(len(cell_columns), -1, -1) for k in itertools.combinations(cell_columns, r)]
    for kept in kept_sets:
        frame = preds.assign(**{c: ALL for c in cell_columns if c not in kept})
        frame = frame.astype({c: str for c in cell_columns})
        for keys, sub in frame.groupby(analysis.SETTING_KEYS + cell_columns, sort=True):
            keys = dict(zip(analysis.SETTING_KEYS + cell_columns, keys))
            counts = analysis.Counts(sub, unit, " · ".join(map(str, keys.values())))
            boot = counts.bootstrap(n_boot, seed)
            for pooling in counts.poolings():
                acc = st.summarise_accuracy(counts.total(pooling), boot[pooling], counts.denom)
                rows.append(dict(keys, pooling=pooling, seeds=len(counts.seeds), units=len(counts.units),
                                 n=len(counts.units) * counts.rows_per_unit, accuracy=acc["accuracy"],
                                 accuracy_ci_low=acc["ci_low"], accuracy_ci_high=acc["ci_high"]))
    if not rows:
        return pd.DataFrame(columns=front + CELL_COLUMNS_OUT)
    return pd.DataFrame(rows)[front + CELL_COLUMNS_OUT].reset_index(drop=True)


def cell_function(unit: str, cell_columns) -> Callable:
    """The cells function of a plain set: :func:`accuracy_cells` with margins."""
    def table(preds, n_boot=analysis.N_BOOT, seed=analysis.BOOT_SEED):
        return accuracy_cells(preds, unit, cell_columns, n_boot, seed)
    return table


CAD_UNIT, CAD_CELL = "pair_id", "version"
CONSISTENT = "consistent"  # the CAD cell "both texts of the pair right"


def cad_cells(preds: pd.DataFrame, n_boot: int = analysis.N_BOOT, seed: int = analysis.BOOT_SEED) -> pd.DataFrame:
    """CAD: accuracy on originals (``version`` orig), on the human edits (new), on both pooled (all),
    and pair consistency (``consistent``: both texts of a pair right), each with its 95% CI over pairs
    and seeds."""
    both = (preds.assign(right=preds["pred"] == preds["label"])
            .groupby([*analysis.RUN_KEYS, CAD_UNIT], sort=True)["right"].agg(["all", "size"]).reset_index())
    if len(both) and (both["size"] != 2).any():
        bad = both[both["size"] != 2].iloc[0]
        raise EvalSetError(f"cad_imdb: pair {bad[CAD_UNIT]} has {bad['size']} predictions in a run; "
                           f"every pair has its original and its edit")
    texts = accuracy_cells(preds, CAD_UNIT, [CAD_CELL], n_boot, seed)
    pairs = both.assign(label=1, pred=both["all"].astype(np.int64), **{CAD_CELL: CONSISTENT})
    consistent = accuracy_cells(pairs, CAD_UNIT, [CAD_CELL], n_boot, seed, margins=False)
    order = {"orig": 0, "new": 1, ALL: 2, CONSISTENT: 3}
    out = pd.concat([texts, consistent], ignore_index=True)
    return out.sort_values([*analysis.SETTING_KEYS, "pooling", CAD_CELL], key=lambda s: s.map(order) if s.name == CAD_CELL
                           else s, kind="stable").reset_index(drop=True)


# ---- loaders of the shared data -------------------------------------------------------------


def _file(entry_name: str, relative: str, sha256: str | None) -> Path:
    """A file of the data folder, present and (when a hash is recorded) the one its README describes."""
    from .data import DATA_DIR_ENV, data_dir

    root = data_dir()
    if root is None:
        raise EvalSetError(f"evaluation set {entry_name!r} is read from the data folder; set {DATA_DIR_ENV} to a "
                           f"folder holding {relative}")
    path = root / relative
    if not path.is_file():
        raise EvalSetError(f"evaluation set {entry_name!r}: {path} does not exist ({DATA_DIR_ENV}={root})")
    if sha256 and _sha256(path) != sha256:
        raise EvalSetError(f"evaluation set {entry_name!r}: {path} is not the file its README describes "
                           f"(sha256 {_sha256(path)[:16]}…, expected {sha256[:16]}…)")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _no_settings(name: str, settings: dict) -> None:
    if settings:
        raise EvalSetError(f"datasets.{name}: takes no settings (got {sorted(settings)})")


CAD_FILE = "cad_imdb/test.parquet"
CAD_SHA256 = "b7e1a25d37c7e4c80d204346f92804873efd9087c911967600f820fdf760b9e5"


def load_cad(settings: dict) -> pd.DataFrame:
    """CAD test: 976 texts, 488 pairs (``pair_id``), ``version`` orig (the IMDb review) or new (its human
    edit, label flipped)."""
    _no_settings("cad_imdb", settings)
    df = pd.read_parquet(_file("cad_imdb", CAD_FILE, CAD_SHA256))
    pairs = df.groupby("pair_id")
    bad = pairs["version"].agg(lambda v: sorted(v) != ["new", "orig"]) | pairs["label"].agg(lambda x: x.nunique() != 2)
    if bad.any():
        raise EvalSetError(f"cad_imdb: pair {bad.index[bad][0]} is not one original and one edit with opposite labels")
    return df[["id", "text", "label", "pair_id", "version"]].astype({"pair_id": "int64"})


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def match_key(text: str) -> str:
    """The key that finds a CAD original in IMDb: its letters and digits, lower-cased (``<br />`` as a
    space). The README's byte match (after ``<br />`` and whitespace normalisation) finds 293 of the 488
    test originals; the others differ only by CSV quoting (the text in "…", inner quotes doubled), and
    this key finds all 488 in IMDb train (and one in test too, a review IMDb repeats in both splits)."""
    return _NOT_ALNUM.sub("", _BR.sub(" ", text).casefold())


def cad_overlap(split: str, reviews: pd.DataFrame) -> np.ndarray:
    """Rows of an IMDB split whose text is a CAD test original (matched by :func:`match_key`)."""
    cad = load_cad({})
    keys = {match_key(t) for t in cad.loc[cad["version"] == "orig", "text"]}
    return reviews["text"].map(match_key).isin(keys).to_numpy()


def imdb_rows_of_cad(reviews: pd.DataFrame) -> pd.DataFrame:
    """The IMDB train reviews that CAD's test originals come from: IMDB ``id``, ``label``, ``rating`` (when
    given), the subset id (``imdb-train-<id>-<label>``, as :func:`poolbench.data.imdb_subset` names it),
    and the CAD ``pair_id`` and label. A few originals match two IMDB rows (IMDb repeats them)."""
    cad = load_cad({})
    orig = cad[cad["version"] == "orig"].assign(key=lambda d: d["text"].map(match_key))
    imdb = reviews.assign(key=reviews["text"].map(match_key))
    cols = [c for c in ("id", "label", "rating") if c in imdb]
    out = imdb[cols + ["key"]].merge(orig[["key", "pair_id", "label"]].rename(columns={"label": "cad_label"}), on="key")
    out.insert(0, "subset_id", [f"imdb-train-{i}-{lab}" for i, lab in zip(out["id"], out["label"])])
    return out.drop(columns="key").sort_values(["pair_id", "id"]).reset_index(drop=True)


SST2_FILE, SST2_SHA256 = "sst2/test.parquet", "367817abc99bf35b9a0cef70a4ff2c2d3a35976daa1479dc0c7d249d235b8687"
CROWD_FILE, CROWD_SHA256 = "sst2/crowd_discourse.parquet", "a56cf00db0df5af3ccd5e110a5eddc1988a8aae4a1b7eb95a03f244c81ffa963"
CLEAR_MARGIN = 0.25  # a crowd sentence is clear when its raters' mean score is <= 0.25 or >= 0.75 (README)


def _subset(has_but: pd.Series) -> np.ndarray:
    return np.where(has_but.astype(bool), "but", "rest")


def load_sst2(settings: dict) -> pd.DataFrame:
    """SST-2 test: 1,821 sentences; ``subset`` but (the word "but" occurs: 237) or rest."""
    _no_settings("sst2", settings)
    df = pd.read_parquet(_file("sst2", SST2_FILE, SST2_SHA256))
    return df[["id", "text", "label", "but"]].assign(subset=_subset(df["but"]))


def load_sst2_crowd(settings: dict) -> pd.DataFrame:
    """The 447 crowd-labelled A-but-B / negation sentences of SST-2 test (9-10 raters each), gold =
    SST-2's label. ``clarity``: clear when the raters' mean score is within :data:`CLEAR_MARGIN` of 0
    or 1 (353), else unclear; ``crowd_label``: the clear crowd's direction (-1 when unclear);
    ``subset``: but / rest."""
    _no_settings("sst2_crowd", settings)
    df = pd.read_parquet(_file("sst2_crowd", CROWD_FILE, CROWD_SHA256))
    score = df["mean_score"].astype(float)
    clear = (score <= CLEAR_MARGIN) | (score >= 1 - CLEAR_MARGIN)
    return df[["id", "text", "label", "sst2_id", "mean_score", "n_raters", "but"]].assign(
        clarity=np.where(clear, "clear", "unclear"), crowd_label=np.where(clear, (score >= 0.5).astype(np.int64), -1),
        subset=_subset(df["but"]))


# ---- the generated sets: referenced, not copied (their modules own them) -----------------------


def _tailprobe():
    from . import tailprobe

    return tailprobe


def _naturaltail():
    from . import naturaltail

    return naturaltail


def _probe_cells(preds, n_boot=analysis.N_BOOT, seed=analysis.BOOT_SEED):
    return analysis.probe_cells(preds, n_boot, seed)


def _natural_cells(preds, n_boot=analysis.N_BOOT, seed=analysis.BOOT_SEED):
    return analysis.natural_cells(preds, n_boot, seed)


# ---- bag-of-words baselines ---------------------------------------------------------------------

BASELINE_RUN = dict(dataset="imdb", model="tfidf-lr", family="bow", regime="baseline", truncation="none",
                    max_len=0, pooling="imdb_bow", seed=0)


def baseline_predictions(name: str, test: pd.DataFrame, imdb_train: pd.DataFrame) -> pd.DataFrame:
    """An IMDB-trained TF-IDF + logistic regression (the probe's ``imdb_bow``: all of IMDB train, minus
    any review this set takes from it) on the set's test frame, as a pseudo-run (:data:`BASELINE_RUN`)
    whose predictions go through the set's cells function like a trained run's."""
    from .run import predictions_table
    from .tailprobe.filters import bag_of_words  # the one IMDB bag-of-words of the study

    entry = get(name)
    train = imdb_train
    if entry.imdb_overlap is not None:
        train = imdb_train[~np.asarray(entry.imdb_overlap("train", imdb_train), dtype=bool)]
    model = bag_of_words().fit(train["text"].tolist(), train["label"].to_numpy())
    prob = model.predict_proba(test["text"].tolist())[:, list(model.classes_).index(1)]
    return predictions_table(test.reset_index(drop=True), prob).assign(**BASELINE_RUN)


# ---- the datasheet of a loaded set ---------------------------------------------------------------


def datasheet(name: str, frame: pd.DataFrame) -> str:
    """Markdown: the entry's provenance, the source files' hashes and the frame's counts per cell."""
    entry = get(name)
    lines = [f"# Evaluation set `{name}` (version {entry.current_version()})", "", entry.datasheet.strip(), "",
             f"Licence: {entry.licence}", "", "## Counts (measured when the set was written)", "",
             f"- {len(frame):,} texts, {frame[entry.unit].nunique():,} units (`{entry.unit}`, what the bootstrap "
             f"resamples); labels: {int((frame['label'] == 0).sum()):,} negative, "
             f"{int((frame['label'] == 1).sum()):,} positive."]
    for col in entry.cells:
        counts = frame[col].astype(str).value_counts().sort_index()
        lines.append(f"- `{col}`: " + ", ".join(f"{v} {n:,}" for v, n in counts.items()) + ".")
    if entry.sha256:
        lines += ["", "| source file | sha256 |", "|---|---|", *[f"| `{f}` | `{h}` |" for f, h in entry.sha256.items()]]
    return "\n".join(lines) + "\n"


# ---- the entries --------------------------------------------------------------------------------

CROSS_DOMAIN = ("IMDB-trained classifiers score these texts as given: for them this is a cross-domain "
                "test (other texts than IMDb reviews, or other annotators), so read accuracies beside the "
                "IMDB-trained bag-of-words baseline (regime `baseline`, pooling `imdb_bow`).")

register(EvalSet(
    name="cad_imdb", version=1, unit=CAD_UNIT, cells=(CAD_CELL,), cell_table=cad_cells, load=load_cad,
    imdb_overlap=cad_overlap, source=(CAD_FILE,), sha256={CAD_FILE: CAD_SHA256}, licence="Apache License 2.0",
    datasheet=f"""\
Counterfactually augmented IMDb, test split (Kaushik, Hovy & Lipton, ICLR 2020, *Learning the Difference
that Makes a Difference with Counterfactually-Augmented Data*; repository
`acmi-lab/counterfactually-augmented-data` at commit `6f232a1`, `sentiment/combined/paired/test_paired.tsv`).
Each of 488 IMDb reviews (`version` orig) comes with a minimal human edit that flips its label (new).
Cells: accuracy on originals, on edits, on both, and pair consistency (`consistent`: both texts of a pair
right). Unit: the pair (`pair_id`), so an original and its edit are resampled together. The originals are
IMDb **train** reviews (all 488 found there by `poolbench.evalsets.match_key`; one also occurs in IMDb test,
which repeats it); a study that scores this
set should drop them from its training subset (`datasets.imdb.exclude: [cad_imdb]`). Pair 8893's edit
differs from its original only in punctuation or case. {CROSS_DOMAIN}"""))

register(EvalSet(
    name="sst2", version=1, unit="id", cells=("subset",), cell_table=cell_function("id", ["subset"]), load=load_sst2,
    source=(SST2_FILE,), sha256={SST2_FILE: SST2_SHA256},
    licence="none stated by the source repository; SST is distributed for research use (cite Socher et al. 2013)",
    datasheet=f"""\
SST-2 test (Socher et al., EMNLP 2013): 1,821 single sentences from Rotten Tomatoes reviews, lower-cased
and tokenised, neutral sentences removed; from `martiansideofthemoon/logic-rules-sentiment` at commit
`f911b71`. Cells: `subset` but (the sentence holds the word "but", 237) against the rest; in an A-but-B
sentence the clause after "but" usually decides. Unit: the sentence. No window truncates these
sentences. {CROSS_DOMAIN}"""))

register(EvalSet(
    name="sst2_crowd", version=1, unit="id", cells=("clarity", "subset"),
    cell_table=cell_function("id", ["clarity", "subset"]), load=load_sst2_crowd, source=(CROWD_FILE,),
    sha256={CROWD_FILE: CROWD_SHA256},
    licence="none stated by the source repository; research use (cite Krishna et al. 2018 and Socher et al. 2013)",
    datasheet=f"""\
447 sentences of SST-2 test in A-but-B or negation form, each labelled by 9 or 10 people (Krishna, Jyothi &
Iyyer, EMNLP 2018, *Revisiting the Importance of Encoding Logic Rules in Sentiment Classification*;
`crowd-data/sst_crowd_discourse.txt` at commit `f911b71`). Accuracy is against the SST-2 gold label.
Cells: `clarity` clear (the raters' mean score is at most {CLEAR_MARGIN} or at least {1 - CLEAR_MARGIN}: 353
sentences, on 351 of which the crowd's majority agrees with gold) or unclear, × `subset` but / rest; the
headline is clear sentences (`clarity` clear, `subset` all). Unit: the sentence. {CROSS_DOMAIN}"""))

register(EvalSet(
    name="tailprobe", version=lambda: _tailprobe().VERSION, unit=analysis.VERDICT, cells=tuple(analysis.PROBE_CELL),
    cell_table=_probe_cells, build=lambda *a, **kw: _tailprobe().build(*a, **kw), rule="tailprobe",
    splits=("train", "test"), summary="summary/transfer_tailprobe_cells.csv", datasheet_file="data/TAILPROBE.md",
    licence="derived from the Large Movie Review Dataset (Maas et al. 2011); research use",
    datasheet="The tail-sentiment probe (`poolbench.tailprobe`): a verdict sentence at the start, middle or end "
              "of a body that agrees or contrasts; unit: the verdict (its positions move together). Full datasheet: "
              "results/data/TAILPROBE.md."))

register(EvalSet(
    name="naturaltail", version=lambda: _naturaltail().VERSION, unit="review_id", cells=tuple(analysis.NATURAL_CELL),
    cell_table=_natural_cells, build=lambda *a, **kw: _naturaltail().build(*a, **kw), rule="naturaltail",
    datasheet_file="data/NATURALTAIL.md",
    licence="derived from the Large Movie Review Dataset (Maas et al. 2011); research use",
    datasheet="The natural tail set (`poolbench.naturaltail`): IMDB test reviews decided by their last (or first) "
              "sentence against the rest, with the verdict removed or moved; unit: the review. Full datasheet: "
              "results/data/NATURALTAIL.md."))
