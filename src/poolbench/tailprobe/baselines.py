"""Baselines beside every pooling, on probe-test.

* ``tfidf_probe_train``: position-blind TF-IDF + logistic regression trained on probe-train texts.
  If it does well, the probe can be solved without knowing where the verdict is.
* ``imdb_bow``: the IMDB-trained bag-of-words (TF-IDF + logistic regression on all IMDB train
  reviews) on the whole text.
* ``imdb_bow_verdict_only``: the same model on the verdict alone (how readable the verdict is).
* ``imdb_bow_body_only``: the same model on the body alone (how far the body points its own way).

:func:`baselines` gives accuracy (w.r.t. the verdict label) and the share of predictions that
follow the body, per cell (condition × position × length_bin).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import bodies_of, verdict_texts
from .filters import bag_of_words, imdb_models

BASELINES = ("tfidf_probe_train", "imdb_bow", "imdb_bow_verdict_only", "imdb_bow_body_only")
CELL = ["condition", "position", "length_bin"]


def baseline_predictions(probe: dict[str, pd.DataFrame], train_reviews: pd.DataFrame, imdb_model=None) -> pd.DataFrame:
    """Per-example predictions of every baseline on probe-test: id, cell, label, body_label, baseline, pred."""
    train, test = probe["train"], probe["test"]
    if imdb_model is None:
        imdb_model = imdb_models(train_reviews)["full"]
    probe_model = bag_of_words().fit(train["text"].tolist(), train["label"].to_numpy())
    inputs = {
        "tfidf_probe_train": (probe_model, test["text"].tolist()),
        "imdb_bow": (imdb_model, test["text"].tolist()),
        "imdb_bow_verdict_only": (imdb_model, verdict_texts(test)),
        "imdb_bow_body_only": (imdb_model, bodies_of(test).tolist()),
    }
    frames = []
    for name, (model, texts) in inputs.items():
        frames.append(test[["id", *CELL, "label", "body_label"]].assign(baseline=name, pred=model.predict(texts).astype(np.int64)))
    return pd.concat(frames, ignore_index=True)


def cell_table(preds: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, share following the body and n per baseline × cell (condition × position × length_bin)."""
    preds = preds.assign(correct=(preds["pred"] == preds["label"]).astype(float),
                         follows_body=(preds["pred"] == preds["body_label"]).astype(float))
    out = preds.groupby(["baseline", *CELL], sort=True).agg(
        n=("correct", "size"), accuracy=("correct", "mean"), follows_body=("follows_body", "mean"))
    order = {b: i for i, b in enumerate(BASELINES)}
    out = out.reset_index()
    return out.sort_values(["baseline", *CELL], key=lambda s: s.map(order) if s.name == "baseline" else s,
                           kind="stable").reset_index(drop=True)


def baselines(probe: dict[str, pd.DataFrame], train_reviews: pd.DataFrame) -> pd.DataFrame:
    """Per-cell accuracy of every baseline on probe-test (see :func:`cell_table`)."""
    return cell_table(baseline_predictions(probe, train_reviews))


def summarise(preds: pd.DataFrame) -> dict:
    """The baselines as an (informational) entry of the checks: overall, per condition, per cell."""
    correct = preds["pred"] == preds["label"]
    overall = correct.groupby(preds["baseline"]).mean()
    by_cond = correct.groupby([preds["baseline"], preds["condition"]]).mean()
    return {
        "informational": True,
        "passed": True,
        "split": "test",
        "measured": {b: float(overall[b]) for b in BASELINES if b in overall},
        "by_condition": {b: {c: float(by_cond[(b, c)]) for c in ("contrast", "agree", "neutral") if (b, c) in by_cond} for b in BASELINES},
        "cells": cell_table(preds).to_dict(orient="records"),
    }


def from_checks(checks: dict) -> pd.DataFrame:
    """The per-cell table stored in ``checks["baselines"]`` (what :func:`baselines` returns), without refitting."""
    return pd.DataFrame(checks["baselines"]["cells"])
