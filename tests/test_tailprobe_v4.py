"""Tests of probe v4 (``version: 4``): shared bodies across positions, neutral bodies, windows, sources, audit.

A small v4 build (36 examples a split under one tokenizer; probe-test gets 72, one group per cell and
source) needs IMDB under ``$POOLBENCH_DATA_DIR`` and the bundled MiniLM tokenizer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolbench import tailprobe as tp
from poolbench.data import load_imdb
from poolbench.tailprobe import audit, checks4
from poolbench.tailprobe.filters import descriptive

SMALL4 = {"seed": 0, "train_size": 36, "test_size": 36, "version": 4}


@pytest.fixture(scope="module")
def imdb(data_dir):
    return load_imdb("train"), load_imdb("test")


@pytest.fixture(scope="module")
def tokenizer(bundled) -> dict:
    from poolbench.models import load_tokenizer

    return {"minilm-l6": load_tokenizer(bundled("minilm-l6", tokenizer_only=True))}


@pytest.fixture(scope="module")
def probe4(imdb, tokenizer) -> dict[str, pd.DataFrame]:
    return tp.build(*imdb, SMALL4, tokenizer)


# ---------------------------------------------------------------------------- config


def test_absent_version_is_v3_exactly_and_v4_keys_need_version_4():
    assert tp.config(None) == tp.DEFAULTS  # no v4 key leaks into v3's config (its datasheet prints it)
    assert tp.config({"version": 3}) == tp.DEFAULTS
    v4 = tp.config({"version": 4})
    assert v4["version"] == 4 and v4["test_sources"] == ["last", "first"]
    with pytest.raises(ValueError, match="neutral_body_p"):
        tp.config({"neutral_body_p": [0.4, 0.6]})  # a v4 key without version 4
    with pytest.raises(ValueError, match="version"):
        tp.config({"version": 5})
    with pytest.raises(ValueError, match="test_sources"):
        tp.config({"version": 4, "test_sources": ["middle"]})


def test_descriptive_sentences():
    assert descriptive("He steps off the train and walks to the old house.")
    for voice in ("I walked out after an hour of this.", "The long shot at dawn is spectacular.",
                  "She finds the letter in the attic!", "What happens to the brother next?", "He leaves."):
        assert not descriptive(voice), voice


# ---------------------------------------------------------------------------- the build


def test_a_verdicts_three_texts_share_their_body(probe4):
    for split, df in probe4.items():
        for gid, g in df.groupby("group_id"):
            assert sorted(g["position"]) == sorted(tp.POSITIONS), gid
            bodies = set(tp.bodies_of(g))
            verdicts = {t[s:e] for t, s, e in zip(g["text"], g["verdict_start"], g["verdict_end"])}
            assert len(bodies) == 1 and len(verdicts) == 1, f"{split} {gid}: texts differ beyond the verdict's position"
            assert g[["label", "condition", "length_bin", "body_review_id", "same_film"]].nunique().eq(1).all()
            by = g.set_index("position")
            assert by.at["start", "verdict_start"] == 0
            assert by.at["end", "verdict_end"] == len(by.at["end", "text"])
            assert 0 < by.at["middle", "verdict_start"] and by.at["middle", "verdict_end"] < len(by.at["middle", "text"])
    assert checks4.check_same_body(probe4)["passed"]


def test_same_body_check_catches_a_changed_body(probe4):
    broken = {k: v.copy() for k, v in probe4.items()}
    df = broken["test"]
    i = df.index[(df["position"] == "end")][0]
    df.loc[i, "text"] = "Another sentence. " + df.loc[i, "text"]
    df.loc[i, ["verdict_start", "verdict_end"]] += len("Another sentence. ")
    res = checks4.check_same_body(broken)
    assert not res["passed"] and res["splits"]["test"]["groups_not_sharing"] == 1


def test_cells_conditions_and_sources_are_balanced(probe4):
    train, test = probe4["train"], probe4["test"]
    assert set(train["verdict_source"]) == {"last"}
    assert test["verdict_source"].value_counts().to_dict() == {"last": len(test) // 2, "first": len(test) // 2}
    for df in (train, test):
        counts = df.groupby(["verdict_source", "condition", "position", "length_bin", "label"]).size()
        assert len(counts) == len(set(df["verdict_source"])) * 3 * 3 * 2 * 2 and counts.nunique() == 1
        assert set(df.loc[df["condition"] == "neutral", "body_label"]) == {-1}
        assert (df.loc[df["condition"] == "agree", "body_label"] == df.loc[df["condition"] == "agree", "label"]).all()
        assert (df.loc[df["condition"] == "contrast", "body_label"] != df.loc[df["condition"] == "contrast", "label"]).all()
    # a verdict is its review's last or first sentence, as recorded
    texts = {tp.review_id("test", l, i): t for l, i, t in zip(*(load_imdb("test")[c] for c in ("label", "id", "text")))}
    for source, rid, verdict in zip(test["verdict_source"], test["verdict_review_id"], tp.common.verdict_texts(test)):
        assert tp.review_sentences(texts[rid])[-1 if source == "last" else 0] == verdict


def test_neutral_bodies_describe_and_sit_near_zero(probe4, imdb):
    cfg = tp.config(SMALL4)
    for df in probe4.values():
        neutral = df[(df["condition"] == "neutral") & (df["position"] == "start")]
        assert len(neutral)
        for body in tp.bodies_of(neutral):
            sents = tp.split_sentences(body)
            assert all(descriptive(s) for s in sents), body[:200]
            assert all(abs(tp.common.vader().polarity_scores(s)["compound"]) <= cfg["neutral_sentence_vader"] for s in sents)
    from poolbench.tailprobe.filters import imdb_models

    res = checks4.check_neutral_bodies(probe4, imdb_models(imdb[0])["full"], cfg)
    assert res["passed"], res["measured"]
    # a stricter rule than the generator's fails the check: it measures, it does not echo
    strict = checks4.check_neutral_bodies(probe4, imdb_models(imdb[0])["full"], {**cfg, "neutral_body_vader": 0.0})
    assert not strict["passed"]


def test_every_verdict_fits_its_window(probe4, tokenizer):
    cfg = tp.config(SMALL4)
    for df in probe4.values():
        n = df["n_tokens_minilm-l6"]
        assert (n[df["length_bin"] == "short"] <= cfg["short_max_tokens"]).all()
        long = n[df["length_bin"] == "long"]
        assert ((long > cfg["long_min_tokens"]) & (long <= cfg["max_tokens"])).all()
    assert checks4.check_verdict_visible(probe4, tokenizer, cfg)["passed"]
    assert not checks4.check_verdict_visible(probe4, tokenizer, {**cfg, "max_tokens": 300})["passed"]


def test_same_inputs_give_the_same_probe(probe4, imdb, tokenizer):
    again = tp.build(*imdb, SMALL4, tokenizer)
    for split in probe4:
        pd.testing.assert_frame_equal(probe4[split], again[split])


# ---------------------------------------------------------------------------- audit, checks, datasheet


def test_v4_audit_is_blind_and_counted(probe4, tmp_path):
    path, reading = tmp_path / "audit_v4.csv", tmp_path / "read.md"
    cfg = {**SMALL4, "audit": str(path)}
    rows = audit.write_blank(probe4, cfg, path, reading=reading)
    assert set(rows["kind"]) == {"verdict", "neutral", "agree", "contrast"}
    text = reading.read_text()
    for rid in rows["id"]:
        assert rid not in text  # ids (verdict ids name the polarity) are not shown
    assert "probe_label" not in text
    assert audit.check_audit(probe4, cfg)["status"] == "incomplete"
    # a reader who agrees everywhere except two neutral texts read as mixed
    neutral = [n for n, k in enumerate(rows["kind"], 1) if k == "neutral"]
    readings = {n: (str(lab), "") for n, lab in enumerate(rows["probe_label"], 1)}
    readings.update({n: ("mixed", "both ways") for n in neutral[:2]})
    audit.merge_reading(path, readings)
    res = audit.check_audit(probe4, cfg)
    assert res["status"] == "current" and res["enforced"] == ["neutral", "agree"]
    nk = res["by_kind"]["neutral"]
    assert nk["mixed"] == 2 and nk["agree"] == nk["n"] - 2
    assert res["passed"] == (nk["agreement"] >= audit.MIN_AGREEMENT)
    with pytest.raises(ValueError, match="reader labels"):
        audit.merge_reading(path, {n: ("positive", "") for n in range(1, len(rows) + 1)})


def test_v4_checks_and_datasheet(probe4, imdb, tokenizer):
    checks = tp.run_checks(probe4, imdb[0], tokenizer, SMALL4)
    for name in ("same_body", "verdict_visible", "neutral_bodies"):
        assert checks[name]["passed"], (name, checks[name]["measured"])
    # no v4 reading is committed yet: the check says so and fails (the rule enforces the audit)
    assert checks["read_and_counted"]["status"] == "missing" and not checks["read_and_counted"]["passed"]
    with pytest.raises(ValueError, match="read_and_counted"):
        tp.assert_checks(checks)
    assert checks["truncation_bites"].get("informational")
    shares = checks["same_film_by_position"]["splits"]["test"]
    for c in ("agree", "contrast", "neutral"):
        for b in tp.LENGTH_BINS:
            assert len({shares[f"{c}/{b}/{p}"] for p in tp.POSITIONS}) == 1  # equal across positions
    sheet = tp.datasheet(probe4, checks, SMALL4)
    assert sheet.startswith("# Tail-sentiment probe (v4)")
    for needle in ("neutral", "verdict_source", "Same body at every position", "Verdict visible", "first", "audit_v4.csv"):
        assert needle in sheet, needle
    assert np.isfinite(checks["baselines"]["measured"]["imdb_bow"])

