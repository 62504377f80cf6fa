"""Building the natural tail set: eligible reviews, candidates, the selection, the three variants."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .common import (
    COLUMNS,
    SCORE_DECIMALS,
    SETS,
    VARIANTS,
    split_all,
    afinn,
    classifier,
    config,
    log,
    normalise,
    p_label,
    split_at_end,
    vader,
)


def review_id(label: int, imdb_id: int) -> str:
    """A test review's id (IMDB's ``id`` is unique only within a label)."""
    return f"test-{'pos' if int(label) == 1 else 'neg'}-{int(imdb_id)}"


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def eligible_reviews(train_reviews: pd.DataFrame, test_reviews: pd.DataFrame) -> pd.DataFrame:
    """Test reviews not in train (case/whitespace-insensitive) and not a repeat of an earlier test review."""
    train_keys = {_key(t) for t in train_reviews["text"]}
    keys = test_reviews["text"].map(_key)
    keep = ~keys.isin(train_keys) & ~keys.duplicated(keep="first")
    return test_reviews[keep.to_numpy()]


def compose(verdict: str, body: str, at: str) -> tuple[str, int, int]:
    """``verdict`` placed before (``at="start"``) or after (``"end"``) ``body`` with one space; its span."""
    if at == "start":
        return f"{verdict} {body}", 0, len(verdict)
    if at == "end":
        return f"{body} {verdict}", len(body) + 1, len(body) + 1 + len(verdict)
    raise ValueError(f"unknown position {at!r}")


def _verdict_ok(sentence: str, label: int, cfg: dict) -> tuple[bool, float, float]:
    n = len(sentence.split())
    if not cfg["verdict_min_words"] <= n <= cfg["verdict_max_words"]:
        return False, float("nan"), float("nan")
    v = vader(sentence)
    sign = 1 if label == 1 else -1
    if sign * v < cfg["vader_threshold"]:
        return False, v, float("nan")
    a = afinn(sentence)
    if cfg["afinn_agree"] and sign * a <= 0:
        return False, v, a
    return True, v, a


def candidates(reviews: pd.DataFrame, spans: list[list[tuple[int, int]]], cfg: dict) -> pd.DataFrame:
    """One row per (review, set) whose verdict and body pass every rule except the classifier's."""
    rows = []
    has_rating, has_url = "rating" in reviews, "url" in reviews
    for r, sp in zip(reviews.itertuples(index=False), spans):
        if len(sp) < cfg["body_min_sentences"] + 1:
            continue
        label = int(r.label)
        for set_ in SETS:
            parts = split_at_end(r.text, sp, set_)
            if parts is None:
                continue
            verdict, body, original, start = parts
            body_spans = sp[:-1] if set_ == "tail" else sp[1:]
            if len(body.split()) < cfg["body_min_words"]:
                continue
            ok, v, a = _verdict_ok(verdict, label, cfg)
            if ok:
                rows.append({"set": set_, "label": label, "imdb_id": int(r.id),
                             "rating": int(r.rating) if has_rating else -1, "url": str(r.url) if has_url else "",
                             "verdict": verdict, "body": body, "original": original, "verdict_start": start,
                             "n_sentences": len(sp), "vader_verdict": v, "afinn_verdict": a,
                             "body_sentences": [normalise(r.text[bs:be]) for bs, be in body_spans]})
    return pd.DataFrame(rows, columns=["set", "label", "imdb_id", "rating", "url", "verdict", "body", "original",
                                       "verdict_start", "n_sentences", "vader_verdict", "afinn_verdict",
                                       "body_sentences"])


def _items(c) -> list[dict]:
    moved, ms, me = compose(c.verdict, c.body, "start" if c.set == "tail" else "end")
    rid = review_id(c.label, c.imdb_id)
    common = {"label": c.label, "set": c.set, "review_id": rid, "imdb_id": c.imdb_id, "rating": c.rating,
              "url": c.url, "verdict": c.verdict, "n_sentences": c.n_sentences,
              "verdict_words": len(c.verdict.split()), "vader_verdict": c.vader_verdict,
              "afinn_verdict": c.afinn_verdict, "p_label_verdict": c.p_label_verdict,
              "p_label_body": c.p_label_body, "p_label_review": c.p_label_review, "vader_body": c.vader_body}
    out = []
    for variant, text, s, e in (("original", c.original, c.verdict_start, c.verdict_start + len(c.verdict)),
                                ("removed", c.body, -1, -1),
                                ("moved", moved, ms, me)):
        out.append({"id": f"nt-{c.set}-{variant}-{rid}", "text": text, "variant": variant, "verdict_start": s,
                    "verdict_end": e, "n_words": len(text.split()), **common})
    return out


def build(train_reviews: pd.DataFrame, test_reviews: pd.DataFrame, cfg: dict | None = None,
          workers: int = 2) -> pd.DataFrame:
    """The natural tail set: one row per (review, set, variant); see the module docstring for the rule.

    ``workers`` processes split sentences (pysbd, the slow step); the table does not depend on it.
    """
    cfg = config(cfg)
    for name, df in (("train", train_reviews), ("test", test_reviews)):
        missing = {"text", "label", "id"} - set(df.columns)
        if missing:
            raise ValueError(f"natural tail set: IMDB {name} lacks columns {sorted(missing)}")
    t0 = time.time()
    reviews = eligible_reviews(train_reviews, test_reviews)
    log(f"{len(reviews):,} of {len(test_reviews):,} test reviews eligible (not in train, not repeated)")
    spans = split_all(reviews["text"].tolist(), max(1, int(workers)))
    log(f"sentences split in {time.time() - t0:.1f} s")
    cand = candidates(reviews, spans, cfg)
    log(f"{len(cand):,} (review, set) candidates with a clear verdict")
    model = classifier(train_reviews, cfg)
    if len(cand):
        cand["p_label_body"] = p_label(model, cand["body"].tolist(), cand["label"])
        cand["p_label_verdict"] = p_label(model, cand["verdict"].tolist(), cand["label"])
        cand["p_label_review"] = p_label(model, cand["original"].tolist(), cand["label"])
        for col in ("p_label_body", "p_label_verdict", "p_label_review", "vader_verdict", "afinn_verdict"):
            cand[col] = cand[col].round(SCORE_DECIMALS)
    else:
        cand = cand.assign(p_label_body=[], p_label_verdict=[], p_label_review=[])
    chosen = cand[cand["p_label_body"] <= cfg["body_max_p"]].copy()
    # VADER over every body sentence is slow, so only for the bodies the classifier already passed.
    chosen["vader_body"] = [round(float(np.mean([vader(x) for x in ss if x] or [0.0])), SCORE_DECIMALS)
                            for ss in chosen["body_sentences"]]
    signed = np.where(chosen["label"] == 1, 1.0, -1.0) * chosen["vader_body"]
    log(f"{len(chosen):,} pass the classifier (P <= {cfg['body_max_p']}), {int((signed <= cfg['body_vader_max']).sum()):,} "
         f"also VADER on the body (<= {cfg['body_vader_max']})")
    chosen = chosen[signed <= cfg["body_vader_max"]]
    rows = [item for c in chosen.itertuples(index=False) for item in _items(c)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {"set": {s: i for i, s in enumerate(SETS)}, "variant": {v: i for i, v in enumerate(VARIANTS)}}
    table = table.sort_values(
        ["set", "label", "imdb_id", "variant"], key=lambda s: s.map(order[s.name]) if s.name in order else s
    ).reset_index(drop=True)
    table = table.astype({"label": "int64", "imdb_id": "int64", "rating": "int64", "verdict_start": "int64",
                          "verdict_end": "int64", "n_sentences": "int64", "n_words": "int64",
                          "verdict_words": "int64"})
    log(f"built {len(table):,} items ({table['review_id'].nunique():,} reviews) in {time.time() - t0:.1f} s")
    return table
