"""Checks of the natural tail set: integrity (must hold) and sanity measurements (never a gate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import VARIANTS, afinn, classifier, config, p_label


def integrity(table: pd.DataFrame) -> dict[str, bool]:
    """Properties that hold by construction; each False is a bug."""
    ok = {}
    ok["ids_unique"] = bool(table["id"].is_unique)
    ok["labels_binary"] = bool(table["label"].isin([0, 1]).all())
    ok["three_variants_per_review_and_set"] = bool(
        (table.groupby(["set", "review_id"])["variant"].apply(lambda v: sorted(v) == sorted(VARIANTS))).all()
    )
    clean_ws = table["text"].map(lambda t: t == " ".join(t.split()) and len(t) > 0)
    ok["texts_whitespace_clean"] = bool(clean_ws.all())
    has = table["variant"] != "removed"
    spans = table[has].apply(lambda r: r["text"][r["verdict_start"]:r["verdict_end"]] == r["verdict"], axis=1)
    ok["span_is_verdict"] = bool(spans.all()) if len(spans) else True
    ok["removed_has_no_span"] = bool(((table.loc[~has, ["verdict_start", "verdict_end"]]) == -1).all().all())
    at_end = table["verdict_end"] == table["text"].str.len()
    at_start = table["verdict_start"] == 0
    tail, head = table["set"] == "tail", table["set"] == "head"
    orig, moved = table["variant"] == "original", table["variant"] == "moved"
    ok["verdict_at_declared_end"] = bool(
        at_end[tail & orig].all() and at_start[head & orig].all()
        and at_start[tail & moved].all() and at_end[head & moved].all()
    )
    # Removing the verdict from original or moved gives the removed text exactly.
    by = table.set_index(["set", "review_id", "variant"])["text"]
    def strip(r):
        return " ".join((r["text"][:r["verdict_start"]] + " " + r["text"][r["verdict_end"]:]).split())
    stripped = table[has].apply(lambda r: strip(r) == by[(r["set"], r["review_id"], "removed")], axis=1)
    ok["removed_equals_variant_minus_verdict"] = bool(stripped.all()) if len(stripped) else True
    return ok


def _bow_accuracy(model, table: pd.DataFrame) -> dict:
    correct = p_label(model, table["text"].tolist(), table["label"]) > 0.5
    return {f"{s}/{v}": float(x) for (s, v), x in
            pd.Series(correct, index=table.index).groupby([table["set"], table["variant"]]).mean().items()}


def checks(table: pd.DataFrame, train_reviews: pd.DataFrame, test_reviews: pd.DataFrame | None = None,
           cfg: dict | None = None) -> dict:
    """Integrity (must all be True) and sanity measurements of the set; never raises on a measurement.

    Measurements: sizes and label balance per set × variant; the selecting classifier's accuracy on
    IMDB test (when ``test_reviews`` is given); its accuracy per set × variant (0 on ``removed`` *by
    construction*, and low on ``original``, which is the same words plus one sentence: that is the
    selection, not a finding; ``moved`` differs from ``original`` only by the bigrams at the joins);
    readings not used for selection (the classifier on the verdict alone, AFINN on the body); and the
    share of verdicts opening with a connective ("But", "Overall"), which a moved verdict carries along.
    """
    cfg = config(cfg)
    out: dict = {"integrity": integrity(table)}
    out["integrity_passed"] = all(out["integrity"].values())
    out["sizes"] = {
        f"{s}/{v}": {"items": int(len(g)), "label_0": int((g["label"] == 0).sum()), "label_1": int((g["label"] == 1).sum())}
        for (s, v), g in table.groupby(["set", "variant"], sort=False)
    }
    orig = table[table["variant"] == "original"]
    out["reviews"] = {"tail": int((orig["set"] == "tail").sum()), "head": int((orig["set"] == "head").sum()),
                      "distinct": int(orig["review_id"].nunique()),
                      "in_both_sets": int(orig.groupby("review_id")["set"].nunique().gt(1).sum()),
                      "distinct_films": int(orig["url"].nunique()) if orig["url"].ne("").any() else None}
    model = classifier(train_reviews, cfg)
    if test_reviews is not None and len(test_reviews):
        out["classifier_imdb_test_accuracy"] = float(
            (p_label(model, test_reviews["text"].tolist(), test_reviews["label"]) > 0.5).mean()
        )
    out["bow_accuracy"] = _bow_accuracy(model, table) if len(table) else {}
    per = {}
    for s, g in orig.groupby("set", sort=False):
        sign = np.where(g["label"] == 1, 1.0, -1.0)
        body_afinn = np.array([afinn(b) for b in table[(table["set"] == s) & (table["variant"] == "removed")]["text"]])
        opens = g["verdict"].str.lower().map(lambda v: v.startswith(CONNECTIVES))
        per[s] = {
            "n": int(len(g)),
            "vader_verdict_min_median": [float((sign * g["vader_verdict"]).min()), float((sign * g["vader_verdict"]).median())],
            "classifier_agrees_on_verdict_alone": float((g["p_label_verdict"] > 0.5).mean()),
            "p_label_body_median": float(g["p_label_body"].median()),
            "body_vader_signed_median": float((sign * g["vader_body"]).median()),
            "body_afinn_other_way": float((sign * body_afinn < 0).mean()),
            "verdict_starts_with_connective": float(opens.mean()),
            "words_median": float(g["n_words"].median()),
            "verdict_word_start_over_100": float(
                (g.apply(lambda r: len(r["text"][:r["verdict_start"]].split()), axis=1) > 100).mean()
            ),
        }
    out["per_set"] = per
    return out


# Openings that tie a sentence to what came before it: a verdict moved away from its end may read oddly.
CONNECTIVES = ("but ", "but,", "still", "however", "overall", "so ", "so,", "yet ", "anyway", "nevertheless",
               "nonetheless", "although", "though", "despite", "regardless", "otherwise", "ultimately", "finally",
               "all in all", "in conclusion", "in the end", "in short", "in summary", "bottom line", "to sum up",
               "and ", "even so", "that said", "having said")


def assert_checks(out: dict) -> None:
    """Raise ``ValueError`` naming every failed integrity property (measurements never fail)."""
    failed = [k for k, v in out["integrity"].items() if not v]
    if failed:
        raise ValueError(f"natural tail set: integrity checks failed: {failed}")
