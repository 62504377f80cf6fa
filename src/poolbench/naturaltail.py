"""Natural tail set: real IMDB test reviews whose decisive sentence sits at one end.

An evaluation set only (every IMDB-trained run is scored on it; nothing trains on it). No splice:
each item is one IMDB **test** review, unchanged except for whitespace.

Selection rule (deterministic; thresholds in :data:`DEFAULTS`, see :func:`config`):

1. **Reviews.** IMDB test reviews, minus those whose text also occurs in IMDB train and minus
   repeated texts within test (the first in data order is kept). Each review is split into sentences
   with pysbd (:func:`poolbench.text.sentence_spans`). Texts are whitespace-normalised (``<br />``
   blanked, runs of whitespace collapsed to one space): ``original`` is the review, changed in
   whitespace only.
2. **Verdict.** ``set="tail"``: the last sentence; ``set="head"`` (the mirror): the first. It must have
   ``verdict_min_words``–``verdict_max_words`` words, a VADER compound of at least ``vader_threshold``
   in the rating's direction (``label`` 1: ≥ +t; ``label`` 0: ≤ −t) and, when ``afinn_agree``, a
   non-zero AFINN score of the same sign.
3. **Body reads the other way**, by two readers of different kinds. The other sentences (at least
   ``body_min_sentences`` of them and ``body_min_words`` words) are scored by a TF-IDF +
   logistic-regression classifier trained on IMDB **train** only (:func:`classifier`): the
   probability it gives the rating's direction must be at most ``body_max_p``. And the mean VADER
   compound of the body's sentences, signed so that the rating's direction is positive, must be at
   most ``body_vader_max`` (VADER's own neutral band is ±0.05).

Each selected review gives three items (``variant``): ``original`` (the review), ``removed`` (the
verdict deleted: the body alone) and ``moved`` (the verdict moved to the other end, joined by one
space). ``label`` is
always the rating's direction, also for ``removed``, whose text reads the other way: a model that
follows the text *should* miss it there. ``text[verdict_start:verdict_end]`` is the verdict exactly
(``-1`` for ``removed``).

:func:`build` makes the table, :func:`checks` measures it (integrity asserts and non-circular
sanity numbers), :func:`datasheet` writes the Markdown datasheet and :func:`write` writes all three
atomically.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import platform
import time
from importlib import metadata

import numpy as np
import pandas as pd

from poolbench.text import clean, highlight, sentence_spans

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


def _log(msg: str) -> None:
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


def normalise(text: str) -> str:
    """``<br />`` blanked and runs of whitespace collapsed to one space, ends trimmed."""
    return " ".join(clean(text).split())


def _split_all(texts: list[str], workers: int) -> list[list[tuple[int, int]]]:
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


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    return Afinn(language="en")


def vader(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def afinn(text: str) -> float:
    return float(_afinn().score(text))


def _lower_clean(text: str) -> str:
    return clean(text).lower()


_CLASSIFIERS: dict = {}


def _fingerprint(reviews: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(reviews[["text", "label"]], index=False).to_numpy().tobytes())
    return h.hexdigest()


def classifier(train_reviews: pd.DataFrame, cfg: dict | None = None):
    """TF-IDF (1..n-grams, sublinear tf) + L2 logistic regression fitted on ``train_reviews`` (IMDB train).

    Memoised on the reviews' content and the settings, so :func:`checks` reuses :func:`build`'s fit.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    cfg = config(cfg)
    key = (_fingerprint(train_reviews), cfg["classifier_C"], cfg["classifier_ngrams"], cfg["seed"])
    if key not in _CLASSIFIERS:
        t0 = time.time()
        model = make_pipeline(
            TfidfVectorizer(preprocessor=_lower_clean, ngram_range=(1, cfg["classifier_ngrams"]), min_df=2,
                            sublinear_tf=True, dtype=np.float64),
            LogisticRegression(C=cfg["classifier_C"], solver="liblinear", max_iter=1000, random_state=cfg["seed"]),
        )
        model.fit(train_reviews["text"].tolist(), train_reviews["label"].to_numpy())
        _CLASSIFIERS.clear()
        _CLASSIFIERS[key] = model
        _log(f"classifier fitted on {len(train_reviews):,} train reviews in {time.time() - t0:.1f} s")
    return _CLASSIFIERS[key]


def p_label(model, texts: list[str], labels) -> np.ndarray:
    """The classifier's probability of each text's ``label`` (not of class 1)."""
    if not len(texts):
        return np.zeros(0)
    p1 = model.predict_proba(list(texts))[:, list(model.classes_).index(1)]
    labels = np.asarray(labels)
    return np.where(labels == 1, p1, 1.0 - p1)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


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
    _log(f"{len(reviews):,} of {len(test_reviews):,} test reviews eligible (not in train, not repeated)")
    spans = _split_all(reviews["text"].tolist(), max(1, int(workers)))
    _log(f"sentences split in {time.time() - t0:.1f} s")
    cand = candidates(reviews, spans, cfg)
    _log(f"{len(cand):,} (review, set) candidates with a clear verdict")
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
    _log(f"{len(chosen):,} pass the classifier (P <= {cfg['body_max_p']}), {int((signed <= cfg['body_vader_max']).sum()):,} "
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
    _log(f"built {len(table):,} items ({table['review_id'].nunique():,} reviews) in {time.time() - t0:.1f} s")
    return table


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Output: parquet bytes, datasheet, atomic writes
# --------------------------------------------------------------------------------------------


def parquet_bytes(table: pd.DataFrame) -> bytes:
    """The table as Parquet (what :func:`write` puts on disk, byte for byte)."""
    buf = io.BytesIO()
    table.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    return buf.getvalue()


def content_sha256(table: pd.DataFrame) -> str:
    """sha256 of the rows as JSON lines (key columns only): independent of the Parquet writer's version."""
    cols = ["id", "text", "label", "set", "variant", "review_id", "verdict_start", "verdict_end"]
    h = hashlib.sha256()
    for rec in table[cols].to_dict(orient="records"):
        h.update((json.dumps({k: (int(v) if isinstance(v, np.integer) else v) for k, v in rec.items()},
                             ensure_ascii=False, sort_keys=True) + "\n").encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("pysbd", "vaderSentiment", "afinn", "scikit-learn", "numpy", "pandas", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _display(row, context: int = 300) -> str:
    return highlight(row["text"], row["verdict_start"], row["verdict_end"], context)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def datasheet(table: pd.DataFrame, checks_out: dict, cfg: dict | None = None) -> str:
    """Markdown datasheet: selection rule, thresholds, measured sizes, checks, versions, hashes, limits."""
    cfg = config(cfg)
    orig = table[table["variant"] == "original"]
    n = {s: int((orig["set"] == s).sum()) for s in SETS}
    lines = [
        "# Natural tail set: datasheet",
        "",
        f"An **evaluation set only**: {n['tail']} IMDB test reviews whose last sentence is a clear verdict that "
        f"agrees with the rating while the rest reads the other way (`set=tail`), and {n['head']} mirror reviews "
        f"whose first sentence does (`set=head`); each in three variants, {len(table):,} items in all. No splice: "
        "every text is one real review (whitespace normalised) or that review with one sentence removed or moved.",
        "",
        "## Selection rule",
        "",
        "1. IMDB **test** reviews (rating 1–4 → `label` 0, 7–10 → `label` 1). Dropped: reviews whose text "
        "(case/whitespace-insensitively) is also in IMDB train, and repeats of an earlier test review.",
        "2. Sentences by pysbd (`poolbench.text.sentence_spans`); texts with `<br />` blanked and whitespace collapsed "
        "to one space. The *verdict* is the last sentence (`tail`) or the first (`head`); the *body* is the rest of the "
        "review.",
        f"3. **Clear verdict**: {cfg['verdict_min_words']}–{cfg['verdict_max_words']} words; VADER compound "
        f"≥ {cfg['vader_threshold']} in the rating's direction"
        + ("; AFINN score non-zero with the rating's sign." if cfg["afinn_agree"] else "."),
        f"4. **Body reads the other way**: ≥ {cfg['body_min_sentences']} sentences and ≥ {cfg['body_min_words']} words; "
        f"a TF-IDF (1–{cfg['classifier_ngrams']}-grams, sublinear tf, min_df 2) + L2 logistic regression "
        f"(C = {cfg['classifier_C']}, liblinear, seed {cfg['seed']}) trained on the 25,000 IMDB **train** reviews "
        f"gives the rating's direction a probability ≤ {cfg['body_max_p']} on the body alone; **and** the mean VADER "
        f"compound of the body's sentences, signed to the rating's direction, is ≤ {cfg['body_vader_max']}.",
        "5. Variants per selected (review, set): `original` (the review; verdict at its end), `removed` (the body alone; "
        "`verdict_start = verdict_end = -1`), `moved` (the verdict moved to the other end, one-space joins). `label` is "
        "the rating's direction in every variant: on `removed` the text reads the other way, so a model that follows "
        "the text is *expected* to miss it. A review can be in both sets (then its items differ by `set`).",
        "",
        f"Config: `{json.dumps({k: cfg[k] for k in sorted(cfg)}, sort_keys=True)}`.",
        "",
        "## Measured size",
        "",
        "| set | variant | items | label 0 | label 1 |",
        "|---|---|---:|---:|---:|",
    ]
    for key, s in checks_out["sizes"].items():
        set_, variant = key.split("/")
        lines.append(f"| {set_} | {variant} | {s['items']} | {s['label_0']} | {s['label_1']} |")
    r = checks_out["reviews"]
    lines += [
        "",
        f"Distinct reviews: {r['distinct']} ({r['in_both_sets']} in both sets)"
        + (f"; distinct films: {r['distinct_films']}." if r.get("distinct_films") else "."),
        "",
        "## Sanity checks (measured)",
        "",
        f"Integrity (spans, whitespace, variants, ids): {'all passed' if checks_out['integrity_passed'] else 'FAILED'} "
        f"({', '.join(k for k, v in checks_out['integrity'].items() if v)}).",
        "",
    ]
    if "classifier_imdb_test_accuracy" in checks_out:
        lines += [f"The selecting classifier's accuracy on all 25,000 IMDB test reviews: "
                  f"{checks_out['classifier_imdb_test_accuracy']:.4f}.", ""]
    lines += [
        "Bag-of-words accuracy (the selecting classifier) per set × variant. **By construction**, not a finding: "
        "`removed` is 0 (that is the selection rule) and `moved` is close to `original` (only the bigrams across the "
        "verdict's join differ).",
        "",
        "| set | original | removed | moved |",
        "|---|---:|---:|---:|",
    ]
    for s in SETS:
        acc = checks_out["bow_accuracy"]
        if f"{s}/original" in acc:
            lines.append(f"| {s} | " + " | ".join(_pct(acc.get(f"{s}/{v}")) for v in VARIANTS) + " |")
    lines += [
        "",
        "Per set (original items). The body's P(label) and VADER are the selection's own scores; the classifier on "
        "the verdict alone and AFINN (sum) on the body are readings the selection did not use.",
        "",
        "| set | reviews | verdict VADER (signed) min / median | classifier agrees on verdict alone | body P(label) median "
        "| body VADER (signed) median | body AFINN reads other way | verdict opens with a connective | words median "
        "| verdict after word 100 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, p in checks_out["per_set"].items():
        vm, vmed = p["vader_verdict_min_median"]
        lines.append(
            f"| {s} | {p['n']} | {vm:.3f} / {vmed:.3f} | {_pct(p['classifier_agrees_on_verdict_alone'])} | "
            f"{p['p_label_body_median']:.3f} | {p['body_vader_signed_median']:+.3f} | "
            f"{_pct(p['body_afinn_other_way'])} | {_pct(p['verdict_starts_with_connective'])} | "
            f"{p['words_median']:.0f} | {_pct(p['verdict_word_start_over_100'])} |"
        )
    lines += ["", "## Examples (original variant; verdict in bold, long texts cut)", ""]
    for s in SETS:
        sub = orig[orig["set"] == s]
        for label in (0, 1):
            for _, row in sub[sub["label"] == label].head(2).iterrows():
                lines.append(f"- `{row['id']}` ({s}, rating {row['rating']}, body P(label) {row['p_label_body']:.2f}): "
                             f"{_display(row)}")
    lines += [
        "",
        "## Versions and hashes",
        "",
        "Tools: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
        f"- sha256 of the Parquet table (as `naturaltail.write` writes it): `{hashlib.sha256(parquet_bytes(table)).hexdigest()}`",
        f"- sha256 of its content (JSON lines of id, text, label, set, variant, review_id, verdict span; "
        f"independent of the Parquet writer): `{content_sha256(table)}`",
        "",
        "## Known limits",
        "",
        "- *Reads the other way* means: to an IMDB-trained bag of words and to VADER, not to a person. Read by hand, "
        "many bodies are mixed, neutral (plot summary, trivia) or in fact agree with the rating in words both tools "
        "misread (\"ugly, bleak ... a masterpiece\"); only a minority are a clear turn-around that the verdict "
        "decides. Labels are the ratings, so they are right; what varies is how much the verdict carries.",
        "- Some verdicts do not judge the film (a plot line with a polar word, a wish, an aside): VADER and AFINN "
        "pass them alike. First sentences are more often plot openings (\"Five years after the US Civil War, ...\") "
        "than last sentences are asides, so `head` has more of them; `p_label_verdict` (the classifier on the verdict "
        "alone) flags some but also rejects clear verdicts, so it is stored, not used.",
        "- Selected against a bag-of-words model: any model close to it (an IMDB-trained linear classifier on "
        "word counts) is below chance on `original` by construction. Absolute accuracies here say nothing about IMDB; "
        "compare models and positions with each other.",
        "- `tail` and `head` hold different reviews: a tail-vs-head difference mixes position with content. "
        "The clean position contrast is `original` vs `moved` within a set (same words, same review); "
        "`removed` shows what the body alone gives.",
        "- Verdicts are lexically explicit (VADER/AFINN); subtle, ironic or rating-only verdicts (\"3/10\") are absent. "
        "pysbd can merge or cut sentences, so a verdict is occasionally two sentences or a fragment.",
        "- Moved verdicts can carry traces of their old position (\"But…\", \"Overall…\", anaphora); see the "
        "connective column above.",
        "- Whitespace is normalised (`<br />` and paragraph breaks become one space), so `original` is not byte-identical "
        "to the IMDB file.",
        "- Small: with n reviews the binomial SE of an accuracy is about √(0.25/n): "
        + ", ".join(f"{s} ±{100 * (0.25 / max(n[s], 1)) ** 0.5:.1f} points" for s in SETS)
        + "; the three variants of a review are not independent (cluster on `review_id`).",
        "",
        "## Do not use it for",
        "",
        "- Training, tuning, early stopping or model selection: it is IMDB test, selected with test labels.",
        "- Estimating accuracy on IMDB or on reviews in general (it is the adversarial tail of one classifier).",
        "- Claims about human reading without a human-labelled sample, or about sentiment beyond English film reviews.",
        "- Comparing against bag-of-words models trained on IMDB (it was selected to defeat one).",
    ]
    return "\n".join(lines) + "\n"


def write(table: pd.DataFrame, checks_out: dict, cfg: dict | None, parquet_path, checks_path, datasheet_path) -> None:
    """Write the table, the checks (JSON) and the datasheet atomically (:mod:`poolbench.io`)."""
    from poolbench.io import atomic_write, write_text

    data = parquet_bytes(table)
    atomic_write(parquet_path, lambda p: p.write_bytes(data))
    write_text(checks_path, json.dumps(checks_out, indent=2, sort_keys=True) + "\n")
    write_text(datasheet_path, datasheet(table, checks_out, cfg))
