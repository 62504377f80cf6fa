"""Checks of probe v4 (beside v3's, see :mod:`.checks`), each ``{"passed", "measured", ...}``.

* ``same_body`` (enforced): every group has exactly one text per position, and its three texts
  share the verdict, the cell and the body sentences (the text minus the verdict is identical).
* ``verdict_visible`` (enforced): re-tokenized, every text fits its window under every tokenizer
  (short: ``short_max_tokens``, long: ``max_tokens``; special tokens included), so no window the
  study uses cuts the verdict.
* ``neutral_bodies`` (enforced): every neutral body, re-split, meets the generator's whole-body rule
  (mean sentence VADER within ±``neutral_body_vader``, the IMDB bag-of-words' P(positive) within
  ``neutral_body_p``); also reported: VADER and AFINN on the whole body, and how often the
  bag-of-words on the body alone matches the verdict's label (about half: the body says nothing).
* ``same_film_by_position`` and ``sources`` (informational).
* v3's ``bodies_point_their_own_way`` is kept but informational: v4's bodies lean less than v3's
  thresholds ask (probe-test contrast 0.29 > 0.25, agree 0.71 < 0.75 in the default-size build).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import LENGTH_BINS, POSITIONS, afinn, bodies_of, lengths, split_sentences, vader, verdict_texts

NEUTRAL_MIN_SHARE = 1.0


def check_same_body(probe: dict[str, pd.DataFrame]) -> dict:
    out = {"splits": {}}
    passed = True
    for split, df in probe.items():
        d = df.assign(body=bodies_of(df).to_numpy(), verdict=verdict_texts(df))
        g = d.groupby("group_id")
        positions_ok = g["position"].apply(lambda p: sorted(p) == sorted(POSITIONS))
        shared = g[["body", "verdict", "label", "condition", "length_bin", "body_review_id"]].nunique().eq(1).all(axis=1)
        n_bad = int((~(positions_ok & shared)).sum())
        out["splits"][split] = {"groups": int(len(positions_ok)), "groups_not_sharing": n_bad}
        passed &= n_bad == 0
    out["passed"] = bool(passed)
    out["measured"] = {s: v["groups_not_sharing"] for s, v in out["splits"].items()}
    return out


def check_verdict_visible(probe: dict[str, pd.DataFrame], tokenizers: dict, cfg: dict) -> dict:
    window = {"short": int(cfg["short_max_tokens"]), "long": int(cfg["max_tokens"])}
    out = {"windows": window, "splits": {}}
    passed = True
    for split, df in probe.items():
        n = lengths(tokenizers, df["text"].tolist(), special=True)
        per = {}
        for t, name in enumerate(tokenizers):
            for b in LENGTH_BINS:
                sel = (df["length_bin"] == b).to_numpy()
                if sel.any():
                    fits = n[t, sel] <= window[b]
                    per[f"{name}/{b}"] = {"n": int(sel.sum()), "max_tokens": int(n[t, sel].max()),
                                          "fit": float(fits.mean())}
                    passed &= bool(fits.all())
        out["splits"][split] = per
    out["passed"] = bool(passed)
    out["measured"] = {s: min(v["fit"] for v in per.values()) for s, per in out["splits"].items()}
    return out


def check_neutral_bodies(probe: dict[str, pd.DataFrame], model, cfg: dict) -> dict:
    low, high = (float(x) for x in cfg["neutral_body_p"])
    out = {"thresholds": {"mean_sentence_vader": cfg["neutral_body_vader"], "p_positive": [low, high],
                          "min_share": NEUTRAL_MIN_SHARE}, "splits": {}}
    passed = True
    for split, df in probe.items():
        sub = df[(df["condition"] == "neutral") & (df["position"] == "start")]  # one row per neutral body
        if not len(sub):
            continue
        bodies = bodies_of(sub).tolist()
        mean_v = np.array([np.mean([vader().polarity_scores(s)["compound"] for s in split_sentences(b)]) for b in bodies])
        whole_v = np.array([vader().polarity_scores(b)["compound"] for b in bodies])
        whole_a = np.array([afinn().score(b) for b in bodies])
        p = model.predict_proba(bodies)[:, 1]
        ok = (np.abs(mean_v) <= cfg["neutral_body_vader"]) & (p >= low) & (p <= high)
        follows = (p > 0.5).astype(int) == sub["label"].to_numpy()
        out["splits"][split] = {
            "n_bodies": int(len(sub)), "meet_rule": float(ok.mean()),
            "mean_sentence_vader_median_abs": float(np.median(np.abs(mean_v))),
            "whole_body_vader_median_abs": float(np.median(np.abs(whole_v))),
            "whole_body_afinn_zero": float((whole_a == 0).mean()),
            "whole_body_afinn_median_abs": float(np.median(np.abs(whole_a))),
            "p_positive_min_median_max": [float(p.min()), float(np.median(p)), float(p.max())],
            "bow_body_matches_verdict_label": float(follows.mean()),
            "joined_reviews_share": float(sub["body_review_id"].str.contains("+", regex=False).mean()),
        }
        passed &= ok.mean() >= NEUTRAL_MIN_SHARE
    out["passed"] = bool(passed)
    out["measured"] = {s: v["meet_rule"] for s, v in out["splits"].items()}
    return out


def check_same_film_by_position(probe: dict[str, pd.DataFrame]) -> dict:
    out = {"informational": True, "passed": True, "splits": {}}
    for split, df in probe.items():
        cells = df.groupby(["condition", "length_bin", "position"])["same_film"].mean()
        out["splits"][split] = {"/".join(k): float(v) for k, v in cells.items()}
    out["measured"] = {s: float(df["same_film"].mean()) for s, df in probe.items()}
    return out


def check_sources(probe: dict[str, pd.DataFrame]) -> dict:
    out = {"informational": True, "passed": True, "splits": {}}
    for split, df in probe.items():
        counts = df.groupby(["verdict_source", "condition", "label"]).size()
        out["splits"][split] = {"/".join(map(str, k)): int(v) for k, v in counts.items()}
    out["measured"] = {s: sorted(df["verdict_source"].unique().tolist()) for s, df in probe.items()}
    return out


def run_checks_v4(probe, train_reviews, tokenizers, cfg, models) -> dict:
    """v4's own checks plus v3's that still apply (the truncation check becomes informational)."""
    from .audit import check_audit
    from .baselines import baseline_predictions, summarise
    from .checks import check_bodies, check_counter_verdicts, check_labels_clean, check_truncation

    bodies = check_bodies(probe, models["full"])
    # v4's bodies are v3's rules minus first sentences, one body for three texts: v3's lean thresholds
    # are reported against, not enforced (the datasheet shows the numbers)
    bodies.update(informational=True, note=bodies["note"] + "; v4: reported against v3's thresholds, not enforced",
                  passed_v3_thresholds=bodies["passed"])
    truncation = check_truncation(probe, tokenizers, cfg)
    truncation.update(informational=True, note="v4 scores long texts at a window that holds them; this says "
                      "where head truncation at the short window would cut")
    preds = baseline_predictions(probe, train_reviews, imdb_model=models["full"])
    baselines = summarise(preds)
    by_source = preds.merge(probe["test"][["id", "verdict_source"]], on="id")
    correct = by_source["pred"] == by_source["label"]
    baselines["by_source"] = {f"{b}/{s}/{c}": float(v) for (b, s, c), v in correct.groupby(
        [by_source["baseline"], by_source["verdict_source"], by_source["condition"]]).mean().items()}
    return {
        "same_body": check_same_body(probe),
        "verdict_visible": check_verdict_visible(probe, tokenizers, cfg),
        "neutral_bodies": check_neutral_bodies(probe, models["full"], cfg),
        "labels_clean": check_labels_clean(probe),
        "bodies_point_their_own_way": bodies,
        "no_counter_verdicts": check_counter_verdicts(probe, models, cfg),
        "same_film_by_position": check_same_film_by_position(probe),
        "sources": check_sources(probe),
        "truncation_bites": truncation,
        "read_and_counted": check_audit(probe, cfg),
        "baselines": baselines,
    }
