"""The evaluation-set registry: loaders against the shared data, cells functions on known answers,
and that one entry is enough for a set to be listed, loaded and tabulated."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from poolbench import analysis, evalsets
from poolbench.data import load_imdb
from poolbench.evalsets import ALL, EvalSet, EvalSetError


def _check_frame(frame: pd.DataFrame, unit: str) -> None:
    assert frame["id"].is_unique
    assert set(frame["label"].unique()) <= {0, 1} and frame["label"].dtype == np.int64
    assert frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip())).all()
    assert frame[unit].notna().all()


def test_cad_loader_gives_488_pairs_of_original_and_edit(data_dir):
    cad = evalsets.load("cad_imdb")
    _check_frame(cad, "pair_id")
    assert len(cad) == 976 and cad["pair_id"].nunique() == 488
    per_pair = cad.groupby("pair_id").agg(versions=("version", lambda v: "/".join(sorted(v))),
                                          labels=("label", "nunique"))
    assert (per_pair["versions"] == "new/orig").all() and (per_pair["labels"] == 2).all()


def test_sst2_loaders_give_the_readme_counts(data_dir):
    sst2 = evalsets.load("sst2")
    _check_frame(sst2, "id")
    assert len(sst2) == 1821 and (sst2["subset"] == "but").sum() == 237
    assert (sst2["subset"] == "but").equals(sst2["text"].str.contains(r"\bbut\b"))
    crowd = evalsets.load("sst2_crowd")
    _check_frame(crowd, "id")
    assert len(crowd) == 447 and crowd["n_raters"].isin([9, 10]).all()
    assert set(crowd["sst2_id"]) <= set(sst2["id"])
    clear = crowd[crowd["clarity"] == "clear"]
    # README: 353 clear; on 351 of them the crowd's majority agrees with the gold label; 160 clear "but"
    assert len(clear) == 353 and (clear["crowd_label"] == clear["label"]).sum() == 351
    assert (clear["subset"] == "but").sum() == 160
    assert (crowd.loc[crowd["clarity"] == "unclear", "crowd_label"] == -1).all()


def test_cad_originals_are_found_in_imdb_train_and_not_in_test(data_dir):
    train = load_imdb("train")
    rows = evalsets.imdb_rows_of_cad(train)
    assert rows["pair_id"].nunique() == 488  # every test original has its IMDb train review
    overlap = evalsets.cad_overlap("train", train)
    assert overlap.sum() == len(rows)
    # in IMDb test only where IMDb itself repeats one of those train reviews in test
    test = load_imdb("test")
    in_test = test.loc[evalsets.cad_overlap("test", test), "text"].map(evalsets.match_key)
    assert set(in_test) <= set(train.loc[overlap, "text"].map(evalsets.match_key)) and len(in_test) <= 2
    # The README's byte match (after <br /> and whitespace normalisation) finds 293 of them.
    def strict(t):
        return " ".join(re.sub(r"<br\s*/?>", " ", t).split())
    cad = evalsets.load("cad_imdb")
    originals = {strict(t) for t in cad.loc[cad["version"] == "orig", "text"]}
    assert len(originals & {strict(t) for t in train["text"]}) == 293


def _preds(rows, poolings=("mean",), seeds=(0,)):
    """Predictions of one setting: ``rows`` (id, label, pred, cell columns...) per pooling and seed."""
    base = pd.DataFrame(rows)
    frames = [base.assign(dataset="imdb", model="m", family="encoder", regime="frozen", truncation="head", max_len=128,
                          pooling=p, seed=s) for p in poolings for s in seeds]
    return pd.concat(frames, ignore_index=True)


def _cell(table, **where):
    sel = table[(table[list(where)] == pd.Series(where)).all(axis=1)]
    assert len(sel) == 1, where
    return sel.iloc[0]


def test_cad_cells_give_pair_consistency_by_hand():
    # pair 1 both right, pair 2 original right and edit wrong, pair 3 both wrong, pair 4 edit right only
    rows = [dict(id=f"p{p}-{v}", pair_id=p, version=v, label=lab, pred=pred) for p, v, lab, pred in [
        (1, "orig", 1, 1), (1, "new", 0, 0), (2, "orig", 0, 0), (2, "new", 1, 0),
        (3, "orig", 1, 0), (3, "new", 0, 1), (4, "orig", 0, 1), (4, "new", 1, 1)]]
    table = evalsets.cells("cad_imdb", _preds(rows), n_boot=200)
    assert _cell(table, version="orig")["accuracy"] == 0.5
    assert _cell(table, version="new")["accuracy"] == 0.5
    assert _cell(table, version=ALL)["accuracy"] == 0.5 and _cell(table, version=ALL)["n"] == 8
    consistent = _cell(table, version="consistent")
    assert consistent["accuracy"] == 0.25 and consistent["units"] == 4
    assert consistent["accuracy_ci_low"] <= 0.25 <= consistent["accuracy_ci_high"]
    with pytest.raises(EvalSetError, match="pair 4 has 1 predictions"):
        evalsets.cells("cad_imdb", _preds(rows[:-1]), n_boot=50)


def test_accuracy_cells_per_cell_and_margins_on_known_predictions():
    # ten positive sentences, four with "but"; cls gets s0-s2 right with both seeds, mean all of them
    rows = [dict(id=f"s{i}", label=1, pred=int(i < 3), subset="but" if i < 4 else "rest") for i in range(10)]
    preds = pd.concat([_preds(rows, poolings=("cls",), seeds=(0, 1)),
                       _preds([dict(r, pred=1) for r in rows], poolings=("mean",), seeds=(0, 1))], ignore_index=True)
    table = evalsets.cells("sst2", preds, n_boot=500)
    assert list(table.columns[:8]) == [*analysis.SETTING_KEYS, "pooling", "subset"]
    assert _cell(table, pooling="cls", subset="but")["accuracy"] == 0.75  # 3 of 4 "but" sentences, both seeds
    assert _cell(table, pooling="cls", subset="rest")["accuracy"] == 0.0
    assert _cell(table, pooling="cls", subset=ALL)["accuracy"] == 0.3 and _cell(table, pooling="cls", subset=ALL)["n"] == 10
    perfect = _cell(table, pooling="mean", subset=ALL)
    assert (perfect["accuracy"], perfect["accuracy_ci_low"], perfect["accuracy_ci_high"]) == (1.0, 1.0, 1.0)
    assert _cell(table, pooling="cls", subset="but")["seeds"] == 2
    # the crowd set's two cell columns: every cell, each margin and the whole set
    crowd = [dict(r, clarity="clear" if i % 2 else "unclear") for i, r in enumerate(rows)]
    table = evalsets.cells("sst2_crowd", _preds(crowd), n_boot=200)
    assert len(table) == (2 + 1) * (2 + 1)
    assert _cell(table, clarity="clear", subset=ALL)["accuracy"] == 1 / 5  # of s1, s3, s5, s7, s9 only s1
    assert _cell(table, clarity="unclear", subset="but")["accuracy"] == 1.0  # s0, s2


def _fake_loader(settings):
    if settings.get("broken"):
        return pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"], "label": [0, 1], "group": ["g", "g"]})
    return pd.DataFrame({"id": ["a", "b", "c", "d"], "text": ["good", "bad", "fine", "awful"], "label": [1, 0, 1, 0],
                         "group": ["g1", "g1", "g2", "g2"]})


@pytest.fixture
def fake_set():
    entry = evalsets.register(EvalSet(name="fake_set", version=7, unit="id", cells=("group",),
                                      cell_table=evalsets.cell_function("id", ["group"]), load=_fake_loader,
                                      datasheet="A made-up set.", licence="none",
                                      imdb_overlap=lambda split, reviews: reviews["text"].str.contains("good").to_numpy()))
    yield entry
    evalsets.REGISTRY.pop("fake_set")


def test_one_registry_entry_lists_loads_and_tabulates_a_set(fake_set):
    assert "fake_set" in evalsets.names() and "fake_set" in evalsets.loaded_names()
    assert evalsets.spec("fake_set", {"a": 1}) == {"settings": {"a": 1}, "version": 7}
    assert evalsets.get("fake_set").summary_file() == "summary/fake_set_cells.csv"
    frame = evalsets.load("fake_set")
    preds = _preds(frame.drop(columns="text").assign(pred=[1, 1, 1, 1]).to_dict("records"))
    table = evalsets.cells("fake_set", preds, n_boot=100)
    assert _cell(table, group="g1")["accuracy"] == 0.5 and _cell(table, group=ALL)["accuracy"] == 0.5
    assert "4 texts, 4 units" in evalsets.datasheet("fake_set", frame)
    with pytest.raises(EvalSetError, match="1 ids repeat"):
        evalsets.load("fake_set", {"broken": True})
    with pytest.raises(EvalSetError, match="already registered"):
        evalsets.register(fake_set)
    reviews = pd.DataFrame({"text": ["good film", "bad film"], "label": [1, 0]})
    assert evalsets.imdb_overlap(["fake_set"], "train", reviews).tolist() == [True, False]


def test_bad_names_and_settings_get_one_sentence():
    with pytest.raises(EvalSetError, match="unknown evaluation set 'nope'; registered: cad_imdb"):
        evalsets.get("nope")
    with pytest.raises(EvalSetError, match=r"'sst2' takes no texts from IMDB; the sets that do: cad_imdb"):
        evalsets.imdb_overlap(["sst2"], "train", pd.DataFrame({"text": ["x"], "label": [0]}))
    with pytest.raises(EvalSetError, match=r"datasets.sst2: takes no settings \(got \['clear'\]\)"):
        evalsets.load("sst2", {"clear": 0.3})
    with pytest.raises(EvalSetError, match="built by the 'tailprobe' rule"):
        evalsets.load("tailprobe")


def test_built_sets_keep_todays_specs_and_cells():
    from poolbench import naturaltail, tailprobe

    settings = {"train_size": 24, "test_size": 24, "seed": 0}
    # what workflow/rules/common.smk's spec_of_probe / spec_of_natural compute today
    assert evalsets.spec("tailprobe", settings) == {"settings": settings, "version": tailprobe.VERSION}
    assert evalsets.spec("naturaltail", {}) == {"settings": {}, "version": naturaltail.VERSION}
    probe, natural = evalsets.get("tailprobe"), evalsets.get("naturaltail")
    assert (probe.rule, probe.unit, probe.splits) == ("tailprobe", analysis.VERDICT, ("train", "test"))
    assert (natural.rule, natural.unit, natural.cells) == ("naturaltail", "review_id", tuple(analysis.NATURAL_CELL))
    assert probe.summary_file() == "summary/transfer_tailprobe_cells.csv"
    assert natural.summary_file() == "summary/naturaltail_cells.csv"
    rows = [dict(id=f"n{i}", review_id=f"r{i}", set="tail", variant="original", label=1, pred=int(i < 3))
            for i in range(4)]
    preds = _preds(rows)
    pd.testing.assert_frame_equal(evalsets.cells("naturaltail", preds, n_boot=100),
                                  analysis.natural_cells(preds, n_boot=100))


def test_baseline_is_a_pseudo_run_trained_without_the_sets_imdb_texts(fake_set, monkeypatch):
    from poolbench.tailprobe import filters

    fitted = {}

    class Recorder:
        classes_ = np.array([0, 1])

        def fit(self, texts, labels):
            fitted["texts"] = list(texts)
            return self

        def predict_proba(self, texts):
            p = np.array([0.9 if "good" in t or "fine" in t else 0.1 for t in texts])
            return np.stack([1 - p, p], axis=1)

    monkeypatch.setattr(filters, "bag_of_words", Recorder)
    imdb = pd.DataFrame({"text": ["good movie", "dull", "fine one"], "label": [1, 0, 1]})
    frame = evalsets.load("fake_set")
    preds = evalsets.baseline_predictions("fake_set", frame, imdb)
    assert fitted["texts"] == ["dull", "fine one"]  # the set's own IMDB text left out
    assert preds["pred"].tolist() == [1, 0, 1, 0] and "text" not in preds
    assert (preds[analysis.RUN_KEYS].drop_duplicates().iloc[0].to_dict() == evalsets.BASELINE_RUN)
    table = evalsets.cells("fake_set", preds, n_boot=100)
    assert _cell(table, group=ALL)["accuracy"] == 1.0 and set(table["regime"]) == {"baseline"}
