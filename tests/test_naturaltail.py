"""Natural tail set (poolbench.naturaltail): selection rule, variants, integrity, determinism, outputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from poolbench import naturaltail as nt

POS = ["wonderful", "great", "brilliant", "superb", "lovely", "excellent", "delightful", "beautiful"]
NEG = ["terrible", "awful", "dreadful", "boring", "horrible", "stupid", "dull", "pathetic"]
NOUNS = ["acting", "plot", "music", "script", "camera work", "ending", "cast", "dialogue", "pacing", "story"]


def _sentence(words, rng) -> str:
    a, b = rng.choice(words, 2, replace=False)
    return f"The {rng.choice(NOUNS)} was {a} and {b}."


def _review(words, n, rng) -> str:
    return " ".join(_sentence(words, rng) for _ in range(n))


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(0)
    rows = [{"text": _review(POS if i % 2 else NEG, 4, rng), "label": i % 2, "id": i, "rating": 9 if i % 2 else 2,
             "url": f"http://film/{i % 7}"} for i in range(300)]
    return pd.DataFrame(rows)


NEG_VERDICT = "But honestly this is a terrible, awful and horrible waste of time."
POS_VERDICT = "I absolutely loved this wonderful, brilliant movie!"
BODY_POS = ("The acting was wonderful and great. The music was lovely and brilliant.<br /><br />The camera work "
            "was superb and  beautiful. The cast was excellent and delightful.")
BODY_NEG = ("The plot was terrible and boring. The script was dull and stupid. The pacing was dreadful and "
            "awful.<br /><br />The dialogue was pathetic and horrible.")


@pytest.fixture(scope="module")
def test_reviews(train):
    rows = [
        # tail, negative rating: positive body, negative last sentence
        {"text": f"{BODY_POS} {NEG_VERDICT}", "label": 0, "id": 1, "rating": 2, "url": "u1"},
        # head (mirror), positive rating: positive first sentence, negative body
        {"text": f"{POS_VERDICT} {BODY_NEG}", "label": 1, "id": 2, "rating": 10, "url": "u2"},
        # the verdict agrees with the body: not selected
        {"text": f"{BODY_NEG} {NEG_VERDICT}", "label": 0, "id": 3, "rating": 1, "url": "u3"},
        # a neutral last sentence: not a clear verdict
        {"text": f"{BODY_POS} I saw it on a Tuesday with my brother.", "label": 0, "id": 4, "rating": 3, "url": "u4"},
        # body too short (one sentence)
        {"text": f"The music was lovely and brilliant. {NEG_VERDICT}", "label": 0, "id": 5, "rating": 2, "url": "u5"},
        # qualifies, but its text is also in train: dropped
        {"text": f"{BODY_NEG} {POS_VERDICT}", "label": 1, "id": 6, "rating": 8, "url": "u6"},
        # a repeat of review 1 under another id: dropped (first kept)
        {"text": f"{BODY_POS}  {NEG_VERDICT}", "label": 0, "id": 7, "rating": 2, "url": "u1"},
        # tail, positive rating
        {"text": f"{BODY_NEG} {POS_VERDICT}", "label": 1, "id": 8, "rating": 9, "url": "u8"},
    ]
    df = pd.DataFrame(rows)
    df.loc[df["id"] == 8, "text"] = f"{BODY_NEG} Still, {POS_VERDICT[0].lower()}{POS_VERDICT[1:]}"
    return df


@pytest.fixture(scope="module")
def train_with_leak(train, test_reviews):
    leak = test_reviews[test_reviews["id"] == 6].assign(id=10_000)
    return pd.concat([train, leak], ignore_index=True)


CFG = {"body_min_words": 10}


@pytest.fixture(scope="module")
def table(train_with_leak, test_reviews):
    return nt.build(train_with_leak, test_reviews, CFG)


def test_config_fills_defaults_and_rejects_bad_values():
    cfg = nt.config({"body_max_p": 0.2})
    assert cfg["body_max_p"] == 0.2 and cfg["vader_threshold"] == nt.DEFAULTS["vader_threshold"]
    assert nt.config(None) == nt.DEFAULTS
    for bad in ({"nope": 1}, {"body_max_p": 0.7}, {"vader_threshold": 0}, {"verdict_min_words": 9, "verdict_max_words": 3}):
        with pytest.raises(ValueError):
            nt.config(bad)


def test_compose_single_spaces_and_spans():
    text, s, e = nt.compose("Great film.", "It was long. Too long.", "start")
    assert text == "Great film. It was long. Too long." and text[s:e] == "Great film."
    text, s, e = nt.compose("Great film.", "It was long. Too long.", "end")
    assert text == "It was long. Too long. Great film." and text[s:e] == "Great film." and e == len(text)


def test_selects_exactly_the_reviews_that_fit_the_rule(table):
    got = sorted(set(zip(table["set"], table["review_id"])))
    assert got == [("head", "test-pos-2"), ("tail", "test-neg-1"), ("tail", "test-pos-8")]
    assert len(table) == 9 and table["id"].is_unique
    assert set(table.columns) >= {"id", "text", "label", "set", "variant", "review_id", "verdict_start", "verdict_end",
                                  "vader_verdict", "afinn_verdict", "p_label_body"}
    # label is the rating's direction in every variant
    assert (table.groupby("review_id")["label"].nunique() == 1).all()
    assert dict(zip(table["review_id"], table["label"])) == {"test-neg-1": 0, "test-pos-2": 1, "test-pos-8": 1}
    # the scores used for selection are stored and satisfy the thresholds
    sign = np.where(table["label"] == 1, 1, -1)
    assert (sign * table["vader_verdict"] >= 0.5).all() and (sign * table["afinn_verdict"] > 0).all()
    assert (table["p_label_body"] <= nt.DEFAULTS["body_max_p"]).all()
    assert (sign * table["vader_body"] <= nt.DEFAULTS["body_vader_max"]).all()


def test_variants_are_clean_and_the_verdict_is_where_declared(table):
    rows = {(r.set, r.review_id, r.variant): r for r in table.itertuples()}
    o, rm, mv = (rows[("tail", "test-neg-1", v)] for v in nt.VARIANTS)
    assert o.text == " ".join(f"{BODY_POS} {NEG_VERDICT}".replace("<br />", " ").split())
    assert o.text.endswith(NEG_VERDICT) and o.text[o.verdict_start:o.verdict_end] == NEG_VERDICT
    assert rm.text == " ".join(BODY_POS.replace("<br />", " ").split()) and (rm.verdict_start, rm.verdict_end) == (-1, -1)
    assert mv.text == f"{NEG_VERDICT} {rm.text}" and (mv.verdict_start, mv.verdict_end) == (0, len(NEG_VERDICT))
    o, rm, mv = (rows[("head", "test-pos-2", v)] for v in nt.VARIANTS)
    assert o.text.startswith(POS_VERDICT) and o.verdict_start == 0
    assert mv.text == f"{rm.text} {POS_VERDICT}" and mv.verdict_end == len(mv.text)
    for t in table["text"]:
        assert "  " not in t and t == t.strip() and "<br" not in t
    assert all(nt.integrity(table).values())


def test_integrity_catches_a_broken_table(table):
    bad = table.copy()
    i = bad.index[(bad["variant"] == "original") & (bad["set"] == "tail")][0]
    bad.loc[i, "text"] = bad.loc[i, "text"] + "  Extra."
    ok = nt.integrity(bad)
    assert not ok["texts_whitespace_clean"] and not ok["verdict_at_declared_end"]
    assert not ok["removed_equals_variant_minus_verdict"]
    with pytest.raises(ValueError, match="integrity"):
        nt.assert_checks({"integrity": ok})
    bad2 = table.copy()
    bad2.loc[bad2.index[0], "verdict_start"] += 1
    assert not nt.integrity(bad2)["span_is_verdict"]


def test_threshold_is_applied(train_with_leak, test_reviews, table):
    strict = nt.build(train_with_leak, test_reviews, {**CFG, "body_max_p": 1e-6})
    assert len(strict) == 0 and list(strict.columns) == nt.COLUMNS
    assert len(nt.build(train_with_leak, test_reviews, {**CFG, "body_vader_max": -0.99})) == 0
    lax = nt.build(train_with_leak, test_reviews, {**CFG, "vader_threshold": 0.99})
    assert len(lax) < len(table)


def test_same_inputs_give_byte_identical_parquet(train_with_leak, test_reviews, table):
    nt.CLASSIFIERS.clear()  # refit, not reuse
    again = nt.build(train_with_leak, test_reviews, CFG)
    assert nt.parquet_bytes(again) == nt.parquet_bytes(table)
    assert nt.content_sha256(again) == nt.content_sha256(table)


def test_checks_datasheet_and_write(tmp_path, train_with_leak, test_reviews, table):
    out = nt.checks(table, train_with_leak, test_reviews, CFG)
    assert out["integrity_passed"]
    assert out["sizes"]["tail/original"] == {"items": 2, "label_0": 1, "label_1": 1}
    assert out["reviews"] == {"tail": 2, "head": 1, "distinct": 3, "in_both_sets": 0, "distinct_films": 3}
    assert out["bow_accuracy"]["tail/removed"] == 0.0  # by construction
    assert set(out["bow_accuracy"]) == {f"{s}/{v}" for s in nt.SETS for v in nt.VARIANTS}
    assert out["per_set"]["tail"]["body_vader_signed_median"] <= nt.DEFAULTS["body_vader_max"]
    assert out["per_set"]["tail"]["verdict_starts_with_connective"] == 1.0  # "But honestly", "Still,"
    json.dumps(out)  # serialisable
    paths = [tmp_path / "natural.parquet", tmp_path / "checks.json", tmp_path / "DATASHEET.md"]
    nt.write(table, out, CFG, *paths)
    sheet = paths[2].read_text()
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() in sheet
    assert "| tail | original | 2 | 1 | 1 |" in sheet and "| head | moved | 1 | 0 | 1 |" in sheet
    assert "≤ 0.5 on the body alone" in sheet and "≥ 0.5 in the rating" in sheet and "≤ -0.05" in sheet
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), table)


def test_missing_columns_are_named(train, test_reviews):
    with pytest.raises(ValueError, match="label"):
        nt.build(train, test_reviews.drop(columns=["label"]), CFG)


def test_split_at_end_keeps_the_reviews_own_separator():
    text = "It dragged on....but the cast was lovely.<br /><br />Overall a dreadful film."
    b, o = text.index("but"), text.index("Overall")
    spans = [(0, b), (b, text.index("<br")), (o, len(text))]  # pysbd may split inside "on....but"
    verdict, body, original, start = nt.split_at_end(text, spans, "tail")
    assert verdict == "Overall a dreadful film." and original == nt.normalise(text) and original[start:] == verdict
    assert body == "It dragged on....but the cast was lovely."
    verdict, body, original, start = nt.split_at_end(text, spans, "head")
    assert verdict == "It dragged on...." and body.startswith("but the cast") and start == 0
    assert original == "It dragged on....but the cast was lovely. Overall a dreadful film."  # no space invented
    moved, s, e = nt.compose(verdict, body, "end")
    assert moved == "but the cast was lovely. Overall a dreadful film. It dragged on...." and moved[s:e] == verdict
    assert nt.split_at_end("One sentence only.", [(0, 18)], "tail") is None


# The rule as measured on 2026-11-26 (pinned here, so a change of DEFAULTS does not silently change this test).
REAL_CFG = {"vader_threshold": 0.5, "afinn_agree": True, "verdict_min_words": 3, "verdict_max_words": 60,
            "body_min_sentences": 2, "body_min_words": 30, "body_max_p": 0.5, "body_vader_max": -0.05,
            "classifier_C": 4.0, "classifier_ngrams": 2, "seed": 0}


@pytest.mark.slow
def test_real_imdb_slice_selects_the_measured_reviews(data_dir):
    """Full IMDB train for the classifier; the test reviews with id < 500 in each class (1,000 of 25,000)."""
    train = pd.read_parquet(data_dir / "imdb" / "train.parquet")
    test = pd.read_parquet(data_dir / "imdb" / "test.parquet")
    test = test[test["id"] < 500].reset_index(drop=True)
    table = nt.build(train, test, REAL_CFG, workers=1)
    orig = table[table["variant"] == "original"]
    assert sorted(zip(orig["set"], orig["review_id"])) == [
        ("head", "test-neg-109"), ("head", "test-neg-17"), ("head", "test-neg-281"), ("head", "test-pos-382"),
        ("tail", "test-neg-17"), ("tail", "test-neg-453"), ("tail", "test-pos-101"), ("tail", "test-pos-382"),
    ]
    out = nt.checks(table, train, test, REAL_CFG)
    assert out["integrity_passed"], out["integrity"]
    assert out["classifier_imdb_test_accuracy"] >= 0.88  # 0.905 on all of IMDB test
    assert out["bow_accuracy"]["tail/removed"] == 0.0 and out["bow_accuracy"]["head/removed"] == 0.0
    raw = dict(zip(test["label"].map({0: "neg", 1: "pos"}) + "-" + test["id"].astype(str), test["text"]))
    for r in orig.itertuples():
        assert r.text == nt.normalise(raw[r.review_id[len("test-"):]])  # whitespace is all that changed
    pos = table[table["review_id"] == "test-pos-101"].set_index(["set", "variant"])
    assert pos.loc[("tail", "original"), "text"].endswith("it's amazingly compelling and not like anything I've ever seen before.")
    assert pos.loc[("tail", "moved"), "text"].startswith("This is when the film becomes exciting")
