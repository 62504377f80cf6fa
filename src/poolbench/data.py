"""Datasets: IMDB from a local directory (or the Hugging Face hub) and fixed, stratified subsets.

Every dataset the pipeline uses is materialised as ``resources/data/<dataset>/{train,test}.parquet``
with at least the columns ``id`` (str), ``text`` (str) and ``label`` (0 = negative, 1 = positive);
extra columns (e.g. the tail probe's metadata) travel along to the predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

DATA_DIR_ENV = "POOLBENCH_DATA_DIR"
# Pinned revision of the hub dataset, used only when no local data directory is set.
IMDB_HUB_ID = "stanfordnlp/imdb"
IMDB_HUB_REVISION = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31"  # verified: pinned in many public projects
SPLITS = ("train", "test")


class DataError(RuntimeError):
    """Input data is missing or malformed; the message says what and where."""


def data_dir() -> Path | None:
    """The local data folder, absolute, or None (then IMDB comes from the hub)."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser().resolve() if value else None


def resolve_data_dir(config_value: str | None, base: Path) -> str | None:
    """The data folder for a pipeline run, resolved once at start-up and exported to every job.

    ``$POOLBENCH_DATA_DIR`` overrides the config's ``data_dir``; a relative path is taken from
    ``base`` (the repository root), whatever the working directory of the run.
    """
    value = os.environ.get(DATA_DIR_ENV) or config_value
    if not value:
        return None
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else Path(base) / path).resolve()
    os.environ[DATA_DIR_ENV] = str(path)
    return str(path)


def load_imdb(split: str) -> pd.DataFrame:
    """The full IMDB ``split`` ("train" or "test"): columns text, label, id, rating, url (hub: text, label).

    Reads ``$POOLBENCH_DATA_DIR/imdb/<split>.parquet`` when the variable is set, else the pinned
    Hugging Face dataset. Fails with one sentence saying what to set when neither works.
    """
    if split not in SPLITS:
        raise DataError(f"unknown IMDB split {split!r}; expected one of {SPLITS}")
    root = data_dir()
    if root is not None:
        path = root / "imdb" / f"{split}.parquet"
        if not path.is_file():
            raise DataError(
                f"{DATA_DIR_ENV}={root} but {path} does not exist; point {DATA_DIR_ENV} at a folder "
                f"holding imdb/train.parquet and imdb/test.parquet"
            )
        try:
            df = pd.read_parquet(path)
            # Invalid UTF-8 inside a string column can read without complaint and fail much later.
            pq.read_table(path).validate(full=True)
        except Exception as exc:
            if isinstance(exc, UnicodeDecodeError) or "UTF8" in str(exc):
                raise DataError(f"{path}: a text is not valid UTF-8 ({exc}); re-encode the file as UTF-8") from exc
            raise DataError(f"{path}: cannot be read as parquet ({type(exc).__name__}: {exc})") from exc
    else:
        try:
            import datasets

            df = datasets.load_dataset(IMDB_HUB_ID, split=split, revision=IMDB_HUB_REVISION).to_pandas()
        except Exception as exc:  # network, auth, missing package: one clear sentence
            raise DataError(
                f"could not load IMDB ({IMDB_HUB_ID}) from the Hugging Face hub ({type(exc).__name__}); "
                f"set {DATA_DIR_ENV} to a folder holding imdb/{{train,test}}.parquet to run offline"
            ) from exc
        df["id"] = np.arange(len(df))
    return validate(df, f"IMDB {split}")


def validate(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Check a labelled text table; raise :class:`DataError` naming the problem and the rows."""
    for col in ("text", "label"):
        if col not in df.columns:
            raise DataError(f"{what}: missing column {col!r} (columns: {list(df.columns)})")
    if df["label"].isna().any():
        rows = df.index[df["label"].isna()].tolist()[:5]
        raise DataError(f"{what}: {int(df['label'].isna().sum())} rows have no label (first rows {rows})")
    bad = ~df["label"].isin([0, 1])
    if bad.any():
        raise DataError(
            f"{what}: labels must be 0 or 1; found {sorted(df.loc[bad, 'label'].unique().tolist())[:5]} "
            f"in {int(bad.sum())} rows"
        )
    texts = df["text"]
    try:
        not_str = ~texts.map(lambda t: isinstance(t, str))
    except Exception as exc:  # e.g. pyarrow refusing a string column that holds invalid UTF-8
        raise DataError(f"{what}: the texts cannot be read as strings ({type(exc).__name__}: {exc}); "
                        f"store texts as a UTF-8 string column") from exc
    if not_str.any():
        kinds = sorted({_kind(t) for t in texts[not_str]})
        raise DataError(
            f"{what}: {int(not_str.sum())} texts are not strings ({', '.join(kinds)}; "
            f"first rows {df.index[not_str].tolist()[:5]}); store texts as a UTF-8 string column"
        )
    empty = texts.str.strip().eq("")
    if empty.any():
        raise DataError(
            f"{what}: {int(empty.sum())} texts are empty or whitespace-only (first rows {df.index[empty].tolist()[:5]})"
        )
    return df.astype({"label": "int64"})


def _kind(value) -> str:
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
            return "bytes"
        except UnicodeDecodeError:
            return "non-UTF-8 bytes"
    return "missing" if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) \
        else type(value).__name__


def stratified_subset(df: pd.DataFrame, n: int, seed: int, what: str) -> pd.DataFrame:
    """``n`` rows, half per label, drawn with ``seed``; fails if the split is too small."""
    if n > len(df):
        raise DataError(f"{what}: asked for {n} examples but the split has only {len(df)}")
    rng = np.random.default_rng(seed)
    parts = []
    for label, group in df.groupby("label", sort=True):
        k = n // 2 + (n % 2 if label == 1 else 0)
        if k > len(group):
            raise DataError(f"{what}: asked for {k} examples of label {label} but there are {len(group)}")
        parts.append(group.iloc[np.sort(rng.choice(len(group), size=k, replace=False))])
    return pd.concat(parts).sort_index()


EXCLUDE_STREAM = 1  # the replacement draws of an exclusion use the generator seeded by (seed, EXCLUDE_STREAM)


def imdb_subset(split: str, n: int, seed: int, exclude=()) -> pd.DataFrame:
    """A fixed stratified IMDB subset in the pipeline's table format (id, text, label, rating).

    ``exclude`` (config ``datasets.imdb.exclude``; opt-in): evaluation sets whose texts come from IMDB
    (:func:`poolbench.evalsets.imdb_overlap`). The subset is drawn as without it; each of its reviews
    that such a set holds is then replaced by a review of the same label drawn from the rest, so the
    subset keeps its size and balance and changes only where it must. Empty: today's subset exactly.
    """
    reviews = load_imdb(split)
    df = stratified_subset(reviews, n, seed, f"IMDB {split}")
    if exclude:
        from .evalsets import imdb_overlap

        df = replace_rows(reviews, df, imdb_overlap(list(exclude), split, reviews), seed,
                          f"IMDB {split} without {', '.join(exclude)}")
    out = pd.DataFrame(
        {
            "id": [f"imdb-{split}-{i}-{l}" for i, l in zip(df["id"], df["label"])],
            "text": df["text"].to_numpy(),
            "label": df["label"].to_numpy(),
        }
    )
    if "rating" in df.columns:
        out["rating"] = df["rating"].to_numpy()
    return out.reset_index(drop=True)


def replace_rows(full: pd.DataFrame, subset: pd.DataFrame, excluded: np.ndarray, seed: int, what: str) -> pd.DataFrame:
    """``subset`` (rows of ``full``, by index) with every row that ``excluded`` (a mask over ``full``)
    marks replaced by a row of the same label from the rest of ``full``, drawn with ``(seed,
    EXCLUDE_STREAM)``. Nothing excluded in ``subset``: ``subset`` unchanged."""
    excluded = pd.Series(np.asarray(excluded, dtype=bool), index=full.index)
    drop = excluded.loc[subset.index]
    if not drop.any():
        return subset
    rng = np.random.default_rng([seed, EXCLUDE_STREAM])
    keep, extra = subset[~drop.to_numpy()], []
    for label in sorted(subset.loc[drop.to_numpy(), "label"].unique()):
        k = int((subset.loc[drop.to_numpy(), "label"] == label).sum())
        pool = full[(full["label"] == label) & ~excluded & ~full.index.isin(subset.index)]
        if k > len(pool):
            raise DataError(f"{what}: {k} reviews of label {label} to replace but only {len(pool)} left")
        extra.append(pool.iloc[np.sort(rng.choice(len(pool), size=k, replace=False))])
    return pd.concat([keep, *extra]).sort_index()
