"""Configuration, constants, sentence splits, the lexicon scorers and the classifier of the natural tail set."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd

from poolbench.polarity import afinn_lexicon, normalise, tfidf_logreg, vader_analyzer
from poolbench.text import clean, sentence_spans

__all__ = ["normalise"]  # re-exported from poolbench.polarity, with the rest of this module

VERSION = 1  # of the selection rule: bump when a code change alters the set (reruns what uses it)

DEFAULTS = {
    "seed": 0,  # random_state of the classifier's solver (liblinear)
    "vader_threshold": 0.5,  # |VADER compound| of the verdict, in the rating's direction
    "afinn_agree": True,  # the verdict's AFINN score must be non-zero with the rating's sign
    "verdict_min_words": 3,
    "verdict_max_words": 60,
    "body_min_sentences": 2,
    "body_min_words": 30,
    "body_max_p": 0.5,  # the classifier's P(rating's direction | body) must be at most this
    "body_vader_max": -0.05,  # mean sentence VADER of the body, signed to the rating, must be at most this
    "classifier_C": 4.0,  # inverse L2 strength of the logistic regression
    "classifier_ngrams": 2,  # TF-IDF n-gram range (1, n)
}
SETS = ("tail", "head")  # tail: verdict is the last sentence; head (mirror): the first
VARIANTS = ("original", "removed", "moved")
COLUMNS = [
    "id", "text", "label", "set", "variant", "review_id", "imdb_id", "rating", "url",
    "verdict_start", "verdict_end", "verdict", "n_sentences", "n_words", "verdict_words",
    "vader_verdict", "afinn_verdict", "p_label_verdict", "p_label_body", "p_label_review", "vader_body",
]
SCORE_DECIMALS = 6  # stored scores are rounded, so the table does not hinge on the last float bit
# Integrity checks must hold exactly; the rest of checks() is measurement, never a gate.


def log(msg: str) -> None:
    print(f"[naturaltail] {msg}", flush=True)


def config(cfg: dict | None) -> dict:
    """``cfg`` over :data:`DEFAULTS`; unknown keys and impossible values raise ``ValueError``."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"natural tail set: unknown config keys {unknown}; known keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    if not 0 < out["vader_threshold"] < 1:
        raise ValueError(f"natural tail set: vader_threshold must be in (0, 1), got {out['vader_threshold']}")
    if not 0 < out["body_max_p"] <= 0.5:
        raise ValueError(f"natural tail set: body_max_p must be in (0, 0.5], got {out['body_max_p']}")
    if not 1 <= out["verdict_min_words"] <= out["verdict_max_words"]:
        raise ValueError("natural tail set: need 1 <= verdict_min_words <= verdict_max_words")
    if not -1 <= out["body_vader_max"] <= 1:
        raise ValueError(f"natural tail set: body_vader_max must be in [-1, 1], got {out['body_vader_max']}")
    if out["body_min_sentences"] < 1 or out["body_min_words"] < 1:
        raise ValueError("natural tail set: body_min_sentences and body_min_words must be >= 1")
    if out["classifier_C"] <= 0 or out["classifier_ngrams"] < 1:
        raise ValueError("natural tail set: need classifier_C > 0 and classifier_ngrams >= 1")
    return out


# --------------------------------------------------------------------------------------------
# Sentences, lexicons, classifier
# --------------------------------------------------------------------------------------------


def split_all(texts: list[str], workers: int) -> list[list[tuple[int, int]]]:
    """:func:`poolbench.text.sentence_spans` of every text, in ``workers`` processes (pysbd is the slow step)."""
    import multiprocessing

    # fork, not spawn: spawn re-runs the caller's main module in each worker (a Snakemake script would
    # run its job again). The workers only run pysbd, so fork's thread-state caveats do not apply.
    if workers <= 1 or len(texts) < 200 or "fork" not in multiprocessing.get_all_start_methods():
        return [sentence_spans(t) for t in texts]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(sentence_spans, texts, chunksize=max(1, len(texts) // (8 * workers)))


def split_at_end(text: str, spans: list[tuple[int, int]], set_: str) -> tuple[str, str, str, int] | None:
    """``(verdict, body, original, verdict_start)`` for the last (``tail``) or first (``head``) sentence.

    ``original`` is the whole review normalised (:func:`normalise`), ``body`` the review without the
    verdict, normalised; ``original[verdict_start:]`` starts with the verdict. The separator between
    verdict and body is the review's own (one space, or none where pysbd split inside a token such as
    ``"end....but"``), so ``original`` differs from the IMDB text in whitespace only. ``None`` when the
    review has fewer than two sentences or the split does not reproduce the normalised review.
    """
    if len(spans) < 2:
        return None
    cleaned = clean(text)
    if set_ == "tail":
        s, e = spans[-1]
        verdict, body, outside = normalise(text[s:e]), normalise(text[:s]), normalise(text[e:])
        sep = " " if cleaned[s - 1].isspace() else ""
        original, start = f"{body}{sep}{verdict}", len(body) + len(sep)
    elif set_ == "head":
        s, e = spans[0]
        verdict, body, outside = normalise(text[s:e]), normalise(text[e:]), normalise(text[:s])
        sep = " " if cleaned[e].isspace() else ""
        original, start = f"{verdict}{sep}{body}", 0
    else:
        raise ValueError(f"unknown set {set_!r}")
    if outside or not verdict or not body or original != normalise(text):
        return None
    return verdict, body, original, start


def vader(text: str) -> float:
    return float(vader_analyzer().polarity_scores(text)["compound"])


def afinn(text: str) -> float:
    return float(afinn_lexicon().score(text))


CLASSIFIERS: dict = {}


def _fingerprint(reviews: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(reviews[["text", "label"]], index=False).to_numpy().tobytes())
    return h.hexdigest()


def classifier(train_reviews: pd.DataFrame, cfg: dict | None = None):
    """TF-IDF (1..n-grams, sublinear tf) + L2 logistic regression fitted on ``train_reviews`` (IMDB train).

    Memoised on the reviews' content and the settings, so :func:`checks` reuses :func:`build`'s fit.
    """
    cfg = config(cfg)
    key = (_fingerprint(train_reviews), cfg["classifier_C"], cfg["classifier_ngrams"], cfg["seed"])
    if key not in CLASSIFIERS:
        t0 = time.time()
        model = tfidf_logreg(ngrams=cfg["classifier_ngrams"], C=cfg["classifier_C"], random_state=cfg["seed"])
        model.fit(train_reviews["text"].tolist(), train_reviews["label"].to_numpy())
        CLASSIFIERS.clear()
        CLASSIFIERS[key] = model
        log(f"classifier fitted on {len(train_reviews):,} train reviews in {time.time() - t0:.1f} s")
    return CLASSIFIERS[key]


def p_label(model, texts: list[str], labels) -> np.ndarray:
    """The classifier's probability of each text's ``label`` (not of class 1)."""
    if not len(texts):
        return np.zeros(0)
    p1 = model.predict_proba(list(texts))[:, list(model.classes_).index(1)]
    labels = np.asarray(labels)
    return np.where(labels == 1, p1, 1.0 - p1)
