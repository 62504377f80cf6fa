"""IMDB loading from the local data folder and the fixed stratified subsets."""

from __future__ import annotations

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
