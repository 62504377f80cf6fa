"""IMDB loading from the local data folder and the fixed stratified subsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolbench.data import DataError, imdb_subset, load_imdb, stratified_subset


def test_imdb_from_local_dir_is_complete_and_balanced(data_dir):
    for split in ("train", "test"):
        df = load_imdb(split)
        assert len(df) == 25_000
        assert df["label"].value_counts().to_dict() == {0: 12_500, 1: 12_500}


def test_subsets_are_fixed_stratified_and_disjoint_by_split(data_dir):
    a, b = imdb_subset("train", 100, 0), imdb_subset("train", 100, 0)
    pd.testing.assert_frame_equal(a, b)
    assert a["label"].value_counts().to_dict() == {0: 50, 1: 50} and a["id"].is_unique
    assert not a["id"].equals(imdb_subset("train", 100, 1)["id"])
    assert set(a["id"]).isdisjoint(imdb_subset("test", 100, 0)["id"])


def test_missing_data_dir_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("POOLBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="POOLBENCH_DATA_DIR"):
        load_imdb("train")


def test_subset_larger_than_split_is_refused():
    df = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    with pytest.raises(DataError, match="asked for 10"):
        stratified_subset(df, 10, 0, "toy")


def test_no_exclusion_gives_todays_subset_byte_for_byte(data_dir, tmp_path):
    from poolbench.io import write_parquet

    write_parquet(tmp_path / "a.parquet", imdb_subset("train", 200, 0))
    write_parquet(tmp_path / "b.parquet", imdb_subset("train", 200, 0, exclude=[]))
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_cad_exclusion_replaces_exactly_the_cad_originals_in_the_subset(data_dir):
    from poolbench.evalsets import imdb_rows_of_cad

    cad_ids = set(imdb_rows_of_cad(load_imdb("train"))["subset_id"])
    today = imdb_subset("train", 1000, 0)
    excluded = imdb_subset("train", 1000, 0, exclude=["cad_imdb"])
    removed, added = set(today["id"]) - set(excluded["id"]), set(excluded["id"]) - set(today["id"])
    assert removed and removed == set(today["id"]) & cad_ids  # every CAD original it held, and only those
    assert not set(excluded["id"]) & cad_ids and len(added) == len(removed)
    assert excluded["label"].value_counts().to_dict() == {0: 500, 1: 500} and excluded["id"].is_unique
    kept = excluded[excluded["id"].isin(today["id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, today[~today["id"].isin(removed)].reset_index(drop=True))
    pd.testing.assert_frame_equal(excluded, imdb_subset("train", 1000, 0, exclude=["cad_imdb"]))  # fixed


def test_replace_rows_keeps_size_and_balance_and_refuses_when_too_few_are_left():
    from poolbench.data import replace_rows

    full = pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": [0, 1] * 6})
    subset = full.iloc[[0, 1, 2, 3]]
    excluded = full["text"].isin(["t0", "t3", "t5"]).to_numpy()
    out = replace_rows(full, subset, excluded, 0, "toy")
    assert len(out) == 4 and out["label"].value_counts().to_dict() == {0: 2, 1: 2}
    assert {"t1", "t2"} <= set(out["text"]) and not {"t0", "t3", "t5"} & set(out["text"])
    assert replace_rows(full, subset, np.zeros(12, dtype=bool), 0, "toy") is subset
    with pytest.raises(DataError, match="toy: 1 reviews of label 0 to replace but only 0 left"):
        replace_rows(full, subset, (full["label"] == 0).to_numpy() & ~full.index.isin([2]), 0, "toy")
