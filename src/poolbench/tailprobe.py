"""Tail-sentiment probe: does a pooled representation catch a verdict in the LAST sentence?

Every probe example is a *body* (a run of consecutive sentences from one IMDB review) with a
*verdict* (a strongly polar final sentence of another IMDB review) inserted at the start, in the
middle or at the end. The label is the verdict's polarity; the body either agrees with it
(``condition="agree"``) or contradicts it (``condition="contrast"``). Texts are either short (fit in
``short_max_tokens`` of every tokenizer) or long (longer than ``long_min_tokens`` of every
tokenizer), so head truncation hides a verdict placed at the end of a long text.

Construction (deterministic from ``cfg["seed"]``; probe-train from IMDB train, probe-test from IMDB test):

1. **Verdicts.** Reviews rated 1–2 (negative) or 9–10 (positive) are visited in a seeded random
   order; the last sentence of each (:func:`poolbench.text.sentence_spans`) is kept when it has
   6–40 words and VADER's compound score is at least 0.5 in the review's direction. Verdicts are
   deduplicated (case- and whitespace-insensitive). Only as many reviews are visited as the sizes
   need, so a small build is fast.
2. **Plan.** Each split has ``24 m`` examples (``m = ceil(size / 24)``): 12 cells (condition ×
   position × length_bin), each with ``m`` examples per label. A verdict is used exactly three
   times, once per position, with three different bodies in the same condition and length bin:
   a paired position control, and the way around the scarcity of negative verdicts (~900 per
   split in all of IMDB).
3. **Bodies.** For each example a review of the body polarity (rated 1–2 or 9–10, not a verdict's
   source, each used once) is segmented; its last sentence is never used. From a random sentence
   the run grows forwards (then backwards) until the text reaches a random target length within
   the length bin. The finished text is tokenized with every tokenizer and rejected (next review)
   unless it is in its bin, at most ``max_tokens`` long, and the body has at least
   ``body_min_tokens`` tokens and two sentences.
4. **Split hygiene.** Test reviews whose text also occurs in IMDB train are dropped; a test verdict
   or test body sentence whose text is a train verdict or train body sentence is never used.

Sentences are whitespace-normalised (``<br />`` tags blanked, runs of spaces collapsed) and joined
with one space, so ``text[verdict_start:verdict_end]`` is the verdict exactly.

:func:`run_checks` measures three non-circular sanity checks (AFINN on the verdicts; a TF-IDF
logistic regression trained on IMDB train on the bodies alone; where the verdict's first token
falls under head truncation), :func:`assert_checks` turns misses into one error, and
:func:`datasheet` writes the Markdown datasheet.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.data import DataError
from poolbench.text import clean, sentence_spans

DEFAULTS = {
    "seed": 0,
    "train_size": 2000,
    "test_size": 2000,
    "vader_threshold": 0.5,
    "verdict_min_words": 6,
    "verdict_max_words": 40,
    "short_max_tokens": 128,
    "long_min_tokens": 256,
    "max_tokens": 512,
    "body_min_tokens": 40,
}
# Keys of the pipeline's dataset spec that are not the generator's business (tokenizers arrive as objects).
IGNORED_KEYS = frozenset({"tokenizers"})
RATINGS = {0: (1, 2), 1: (9, 10)}  # strongly polar reviews, by label
CONDITIONS = ("contrast", "agree")
POSITIONS = ("start", "middle", "end")
LENGTH_BINS = ("short", "long")
SPLITS = ("train", "test")
# Thresholds of the sanity checks (fixed by the issue, not configurable).
AFINN_MIN_AGREEMENT = 0.90
BODY_MAX_CONTRAST_ACC = 0.25
BODY_MIN_AGREE_ACC = 0.75
TRUNCATION_MIN_FRACTION = 1.0


def _log(msg: str) -> None:
    print(f"[tailprobe] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Configuration and small helpers
# --------------------------------------------------------------------------------------------


def config(cfg: dict | None) -> dict:
    """``cfg`` over :data:`DEFAULTS`; unknown keys and impossible values raise ``ValueError``.

    Keys in :data:`IGNORED_KEYS` (e.g. the pipeline's list of tokenizer names) are dropped.
    """
    cfg = {k: v for k, v in (cfg or {}).items() if k not in IGNORED_KEYS}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"tail probe: unknown config keys {unknown}; known keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    for key in ("train_size", "test_size"):
        if int(out[key]) < 1:
            raise ValueError(f"tail probe: {key} must be positive, got {out[key]}")
    if not out["short_max_tokens"] < out["long_min_tokens"] < out["max_tokens"]:
        raise ValueError(
            "tail probe: need short_max_tokens < long_min_tokens < max_tokens, got "
            f"{out['short_max_tokens']}, {out['long_min_tokens']}, {out['max_tokens']}"
        )
    if not 1 <= out["verdict_min_words"] <= out["verdict_max_words"]:
        raise ValueError("tail probe: need 1 <= verdict_min_words <= verdict_max_words")
    return out


def _key(sentence: str) -> str:
    """Comparison key for deduplication and split hygiene: case- and whitespace-insensitive."""
    return " ".join(sentence.split()).casefold()


def _normalise(sentence: str) -> str:
    """A sentence as it appears in a probe text: ``<br />`` blanked, whitespace collapsed."""
    return " ".join(clean(sentence).split())


def review_sentences(text: str) -> list[str]:
    """The normalised sentences of a review, in order (pysbd via :func:`sentence_spans`)."""
    sents = (_normalise(text[s:e]) for s, e in sentence_spans(text))
    return [s for s in sents if s]


def review_id(split: str, label: int, imdb_id: int) -> str:
    """A review's id, unique across IMDB (its ``id`` is only unique per split and label)."""
    return f"{split}-{'pos' if label == 1 else 'neg'}-{imdb_id}"


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    return Afinn(language="en")


def _check_tokenizers(tokenizers: dict) -> None:
    if not tokenizers:
        raise ValueError("tail probe: give at least one tokenizer (name -> fast tokenizer)")
    slow = [name for name, tok in tokenizers.items() if not getattr(tok, "is_fast", False)]
    if slow:
        raise ValueError(f"tail probe: tokenizers {slow} are not fast tokenizers (offset mappings are needed)")


def _lengths(tokenizers: dict, texts: list[str], special: bool) -> np.ndarray:
    """Token counts, shape (n_tokenizers, n_texts), tokenizers in dict order."""
    rows = []
    for tok in tokenizers.values():
        ids = tok(texts, add_special_tokens=special, verbose=False)["input_ids"]
        rows.append([len(x) for x in ids])
    return np.asarray(rows, dtype=np.int64).reshape(len(tokenizers), len(texts))


def _n_special(tokenizers: dict) -> np.ndarray:
    return np.asarray([tok.num_special_tokens_to_add() for tok in tokenizers.values()], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Reviews and verdicts
# --------------------------------------------------------------------------------------------


def _polar_reviews(reviews: pd.DataFrame, split: str, exclude_texts: set[str] = frozenset()) -> pd.DataFrame:
    """Reviews rated 1–2 / 9–10, one per distinct text, in a fixed order, with a ``review_id``."""
    missing = {"text", "label", "id", "rating"} - set(reviews.columns)
    if missing:
        raise DataError(f"tail probe: IMDB {split} lacks columns {sorted(missing)} (needs text, label, id, rating)")
    keep = pd.Series(False, index=reviews.index)
    for label, ratings in RATINGS.items():
        keep |= reviews["label"].eq(label) & reviews["rating"].isin(ratings)
    df = reviews.loc[keep, ["text", "label", "id", "rating"]]
    df = df.sort_values(["label", "id"], kind="stable").drop_duplicates("text")
    df = df[~df["text"].isin(exclude_texts)].reset_index(drop=True)
    df["review_id"] = [review_id(split, l, i) for l, i in zip(df["label"], df["id"])]
    return df


@dataclass(frozen=True)
class Verdict:
    text: str
    label: int
    review_id: str


def _final_verdict(text: str, label: int, cfg: dict) -> str | None:
    """The review's last sentence, if it qualifies as a verdict of polarity ``label``."""
    sents = review_sentences(text)
    if not sents:
        return None
    last = sents[-1]
    if not cfg["verdict_min_words"] <= len(last.split()) <= cfg["verdict_max_words"]:
        return None
    compound = _vader().polarity_scores(last)["compound"]
    agrees = compound >= cfg["vader_threshold"] if label == 1 else compound <= -cfg["vader_threshold"]
    return last if agrees else None


def verdict_pool(reviews: pd.DataFrame, need: int, cfg: dict, forbidden: set[str], rng) -> dict[int, list[Verdict]]:
    """``need`` distinct verdicts per label, visiting reviews in a seeded random order.

    A verdict whose key is in ``forbidden`` (train material, when building test) or already taken
    is skipped. Raises :class:`DataError` if a label runs out of reviews.
    """
    pool: dict[int, list[Verdict]] = {}
    for label in (0, 1):
        cands = reviews[reviews["label"] == label]
        taken: set[str] = set()
        found: list[Verdict] = []
        visited = 0
        for pos in rng.permutation(len(cands)):
            if len(found) == need:
                break
            visited += 1
            row = cands.iloc[pos]
            verdict = _final_verdict(row["text"], label, cfg)
            if verdict is None or _key(verdict) in forbidden or _key(verdict) in taken:
                continue
            taken.add(_key(verdict))
            found.append(Verdict(verdict, label, row["review_id"]))
        if len(found) < need:
            raise DataError(
                f"tail probe: only {len(found)} label-{label} verdicts in {len(cands)} reviews, need {need}; "
                f"lower the sizes or vader_threshold"
            )
        _log(f"  label {label}: {need} verdicts from {visited} of {len(cands)} reviews")
        pool[label] = found
    return pool


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One example to fill: a verdict, its cell, and the polarity its body must have."""

    verdict: Verdict
    condition: str
    position: str
    length_bin: str

    @property
    def label(self) -> int:
        return self.verdict.label

    @property
    def body_label(self) -> int:
        return self.label if self.condition == "agree" else 1 - self.label


def plan(pool: dict[int, list[Verdict]], m: int, rng) -> list[Slot]:
    """Every verdict at all three positions; ``m`` verdicts per (label, condition, length_bin)."""
    combos = [(c, b) for c in CONDITIONS for b in LENGTH_BINS]
    slots = []
    for label in (0, 1):
        for i, verdict in enumerate(pool[label]):
            condition, length_bin = combos[i % len(combos)]
            slots.extend(Slot(verdict, condition, p, length_bin) for p in POSITIONS)
    return [slots[i] for i in rng.permutation(len(slots))]


def compose(body: list[str], verdict: str, position: str) -> tuple[str, int, int]:
    """Join body sentences and the verdict with single spaces; return (text, verdict_start, verdict_end).

    ``middle`` inserts the verdict at the sentence boundary that best balances the characters on
    either side (never before the first or after the last body sentence).
    """
    if position == "start":
        cut = 0
    elif position == "end":
        cut = len(body)
    elif position == "middle":
        total = len(" ".join(body))
        cut = min(range(1, len(body)), key=lambda i: abs(2 * len(" ".join(body[:i])) - total))
    else:
        raise ValueError(f"unknown position {position!r}")
    before = " ".join(body[:cut])
    start = len(before) + (1 if before else 0)
    text = " ".join(body[:cut] + [verdict] + body[cut:])
    return text, start, start + len(verdict)


def _remove_span(text: str, start: int, end: int) -> str:
    """``text`` without ``[start, end)``, the joining spaces tidied: the body alone."""
    return " ".join((text[:start].rstrip() + " " + text[end:].lstrip()).split())


class BodySource:
    """Draws bodies of one split: candidate reviews per polarity in a seeded order, each used once."""

    def __init__(self, reviews, exclude_ids, forbidden, tokenizers, cfg, rng):
        self.reviews = reviews
        self.forbidden = forbidden
        self.tokenizers = tokenizers
        self.cfg = cfg
        self.rng = rng
        self.special = _n_special(tokenizers)
        ok = ~reviews["review_id"].isin(exclude_ids)
        long_ok = reviews["text"].str.len() >= 3 * cfg["long_min_tokens"]  # cheap pre-filter
        self.order = {}
        for label in (0, 1):
            idx = np.flatnonzero(ok & reviews["label"].eq(label))
            idx = idx[rng.permutation(len(idx))]
            self.order[(label, "short")] = idx
            self.order[(label, "long")] = idx[long_ok.to_numpy()[idx]]
        self.cursor = {k: 0 for k in self.order}
        self.used: set[int] = set()
        self.cache: dict[int, tuple[list[str], np.ndarray, np.ndarray]] = {}

    def _sentences(self, idx: int):
        """(usable sentences, their token counts per tokenizer, allowed mask); last sentence dropped."""
        if idx not in self.cache:
            sents = review_sentences(self.reviews.at[idx, "text"])[:-1]
            lens = _lengths(self.tokenizers, [" " + s for s in sents], special=False) if sents else None
            allowed = np.array([_key(s) not in self.forbidden for s in sents], dtype=bool)
            self.cache[idx] = (sents, lens, allowed)
        return self.cache[idx]

    def draw(self, slot: Slot) -> dict:
        """The example for ``slot``; tries candidate reviews until one fits, else :class:`DataError`."""
        key = (slot.body_label, slot.length_bin)
        order = self.order[key]
        while self.cursor[key] < len(order):
            idx = int(order[self.cursor[key]])
            self.cursor[key] += 1
            if idx in self.used:
                continue
            example = self._fit(idx, slot)
            if example is not None:
                self.used.add(idx)
                return example
        raise DataError(
            f"tail probe: ran out of label-{slot.body_label} reviews for {slot.length_bin} bodies "
            f"({len(order)} candidates); lower the sizes"
        )

    def _target(self, length_bin: str, fixed: np.ndarray) -> tuple[int, int]:
        """(target, cap) in tokens for the whole text: the target is drawn uniformly within the bin."""
        cfg = self.cfg
        if length_bin == "short":
            low, cap = int(fixed.max()) + cfg["body_min_tokens"], cfg["short_max_tokens"]
        else:
            low, cap = cfg["long_min_tokens"] + 1, cfg["max_tokens"]
        return int(self.rng.integers(min(low, cap), cap + 1)), cap

    def _fit(self, idx: int, slot: Slot) -> dict | None:
        sents, lens, allowed = self._sentences(idx)
        if len(sents) < 2:
            return None
        verdict = slot.verdict.text
        fixed = _lengths(self.tokenizers, [" " + verdict], special=False)[:, 0] + self.special
        target, cap = self._target(slot.length_bin, fixed)
        run = _grow(lens, allowed, int(self.rng.integers(len(sents))), fixed, target, cap)
        if run is None or run[1] - run[0] < 2:
            return None
        body = sents[run[0] : run[1]]
        text, v_start, v_end = compose(body, verdict, slot.position)
        n_tokens = _lengths(self.tokenizers, [text], special=True)[:, 0]
        body_tokens = _lengths(self.tokenizers, [" ".join(body)], special=False)[:, 0]
        if not self._in_bin(n_tokens, slot.length_bin) or body_tokens.min() < self.cfg["body_min_tokens"]:
            return None
        row = self.reviews.loc[idx]
        return {
            "text": text,
            "label": slot.label,
            "body_label": slot.body_label,
            "condition": slot.condition,
            "position": slot.position,
            "length_bin": slot.length_bin,
            "verdict_start": v_start,
            "verdict_end": v_end,
            "verdict_review_id": slot.verdict.review_id,
            "body_review_id": row["review_id"],
            **{f"n_tokens_{name}": int(n) for name, n in zip(self.tokenizers, n_tokens)},
            "_body_sentences": body,
        }

    def _in_bin(self, n_tokens: np.ndarray, length_bin: str) -> bool:
        cfg = self.cfg
        if length_bin == "short":
            return bool((n_tokens <= cfg["short_max_tokens"]).all())
        return bool((n_tokens > cfg["long_min_tokens"]).all() and (n_tokens <= cfg["max_tokens"]).all())


def _grow(lens, allowed, start, fixed, target, cap) -> tuple[int, int] | None:
    """Grow a run ``[i, j)`` of allowed sentences from ``start``, forwards first, then backwards.

    Token counts are estimated as the sum of per-sentence counts (``lens``, shape (tokenizers,
    sentences)) plus ``fixed`` (verdict and special tokens). Growth stops once every tokenizer
    reaches ``target`` or when the next sentence would take any tokenizer past ``cap``.
    """
    if not allowed[start]:
        return None
    total = fixed + lens[:, start]
    if (total > cap).any():
        return None
    i, j = start, start + 1
    while total.min() < target:
        if j < lens.shape[1] and allowed[j] and (total + lens[:, j] <= cap).all():
            total = total + lens[:, j]
            j += 1
        elif i > 0 and allowed[i - 1] and (total + lens[:, i - 1] <= cap).all():
            i -= 1
            total = total + lens[:, i]
        else:
            break
    return i, j


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _build_split(split, reviews, size, cfg, tokenizers, forbidden, rng) -> tuple[pd.DataFrame, set[str]]:
    """One probe split and the keys of its verdicts and body sentences (for the next split's hygiene)."""
    m = math.ceil(size / (len(CONDITIONS) * len(POSITIONS) * len(LENGTH_BINS) * 2))
    t0 = time.time()
    pool = verdict_pool(reviews, m * len(CONDITIONS) * len(LENGTH_BINS), cfg, forbidden, rng)
    verdict_keys = {_key(v.text) for vs in pool.values() for v in vs}
    _log(f"  {split}: verdicts in {time.time() - t0:.1f} s")
    source_ids = {v.review_id for vs in pool.values() for v in vs}
    bodies = BodySource(reviews, source_ids, forbidden | verdict_keys, tokenizers, cfg, rng)
    rows = []
    t0 = time.time()
    slots = plan(pool, m, rng)
    for n, slot in enumerate(slots, 1):
        rows.append(bodies.draw(slot))
        if n % 500 == 0 or n == len(slots):
            _log(f"  {split}: {n}/{len(slots)} bodies ({len(bodies.cache)} reviews segmented, {time.time() - t0:.1f} s)")
    body_keys = {_key(s) for r in rows for s in r.pop("_body_sentences")}
    df = pd.DataFrame([rows[i] for i in rng.permutation(len(rows))])
    df.insert(0, "id", [f"tp-{split}-{i:06d}" for i in range(len(df))])
    ints = ["label", "body_label", "verdict_start", "verdict_end"] + [c for c in df if c.startswith("n_tokens_")]
    return df.astype({c: "int64" for c in ints}), verdict_keys | body_keys


def build(
    train_reviews: pd.DataFrame, test_reviews: pd.DataFrame, cfg: dict, tokenizers: dict
) -> dict[str, pd.DataFrame]:
    """The probe: ``{"train": df, "test": df}`` built from IMDB train and test reviews respectively.

    ``tokenizers`` maps a name to a fast tokenizer; every length rule holds under all of them and
    each gets a column ``n_tokens_<name>`` (special tokens included). Sizes are rounded up to a
    multiple of 24 (12 cells × 2 labels). Same inputs and ``cfg`` give identical DataFrames.
    Columns: id, text, label, body_label, condition, position, length_bin, verdict_start,
    verdict_end, verdict_review_id, body_review_id, n_tokens_<name>...
    """
    cfg = config(cfg)
    _check_tokenizers(tokenizers)
    t0 = time.time()
    train = _polar_reviews(train_reviews, "train")
    test = _polar_reviews(test_reviews, "test", exclude_texts=set(train_reviews["text"]))
    forbidden: set[str] = set()
    probe = {}
    for i, (split, reviews) in enumerate((("train", train), ("test", test))):
        _log(f"building probe-{split} from {len(reviews)} polar IMDB {split} reviews")
        rng = np.random.default_rng([int(cfg["seed"]), i])
        probe[split], keys = _build_split(split, reviews, int(cfg[f"{split}_size"]), cfg, tokenizers, forbidden, rng)
        forbidden |= keys
    _log(f"built train {len(probe['train'])} / test {len(probe['test'])} examples in {time.time() - t0:.1f} s")
    return probe


# --------------------------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------------------------


def verdicts_of(df: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct verdict: verdict_review_id, verdict (text), label."""
    v = df.apply(lambda r: r["text"][r["verdict_start"] : r["verdict_end"]], axis=1)
    out = pd.DataFrame({"verdict_review_id": df["verdict_review_id"], "verdict": v, "label": df["label"]})
    return out.drop_duplicates("verdict_review_id").sort_values("verdict_review_id").reset_index(drop=True)


def bodies_of(df: pd.DataFrame) -> pd.Series:
    """Each example's text with the verdict removed."""
    return pd.Series(
        [_remove_span(t, s, e) for t, s, e in zip(df["text"], df["verdict_start"], df["verdict_end"])],
        index=df.index,
    )


def check_labels_clean(probe: dict[str, pd.DataFrame]) -> dict:
    """AFINN (a lexicon other than VADER, which selected the verdicts) against the verdict labels."""
    out = {"threshold": AFINN_MIN_AGREEMENT, "splits": {}}
    for split, df in probe.items():
        v = verdicts_of(df)
        scores = np.array([_afinn().score(t) for t in v["verdict"]])
        labels = v["label"].to_numpy()
        scored = scores != 0  # AFINN abstains on a zero score
        agree = (scores > 0) == (labels == 1)
        per_label = {}
        for l in (0, 1):
            sel = scored & (labels == l)
            per_label[str(l)] = float(agree[sel].mean()) if sel.any() else None
        out["splits"][split] = {
            "n_verdicts": int(len(v)),
            "abstention_rate": float(1 - scored.mean()),
            "n_scored": int(scored.sum()),
            "agreement": float(agree[scored].mean()) if scored.any() else 0.0,
            "agreement_by_label": per_label,
        }
    out["passed"] = all(s["agreement"] >= AFINN_MIN_AGREEMENT for s in out["splits"].values())
    out["measured"] = {k: s["agreement"] for k, s in out["splits"].items()}
    return out


def _lower_clean(text: str) -> str:
    return clean(text).lower()


def body_classifier(train_reviews: pd.DataFrame):
    """TF-IDF (unigrams) + logistic regression trained on full IMDB train reviews (not on the probe)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(preprocessor=_lower_clean, min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, solver="liblinear", max_iter=1000),
    )
    return model.fit(train_reviews["text"].tolist(), train_reviews["label"].to_numpy())


def check_bodies(probe: dict[str, pd.DataFrame], train_reviews: pd.DataFrame) -> dict:
    """Bag-of-words accuracy w.r.t. the verdict label on the bodies alone, per split, condition and cell."""
    t0 = time.time()
    model = body_classifier(train_reviews)
    out = {
        "thresholds": {"contrast_max": BODY_MAX_CONTRAST_ACC, "agree_min": BODY_MIN_AGREE_ACC},
        "note": "the classifier was trained on IMDB train, the source of probe-train's bodies: the test split is the clean measurement",
        "splits": {},
    }
    for split, df in probe.items():
        correct = pd.Series(model.predict(bodies_of(df).tolist()) == df["label"].to_numpy(), index=df.index)
        cells = correct.groupby([df["condition"], df["position"], df["length_bin"]]).mean()
        out["splits"][split] = {
            "by_condition": {c: float(v) for c, v in correct.groupby(df["condition"]).mean().items()},
            "by_cell": {"/".join(k): float(v) for k, v in cells.items()},
        }
    out["passed"] = all(
        s["by_condition"].get("contrast", 1.0) <= BODY_MAX_CONTRAST_ACC and s["by_condition"].get("agree", 0.0) >= BODY_MIN_AGREE_ACC
        for s in out["splits"].values()
    )
    out["measured"] = {k: s["by_condition"] for k, s in out["splits"].items()}
    _log(f"body check in {time.time() - t0:.1f} s")
    return out


def first_verdict_token(tokenizer, texts: list[str], starts: list[int]) -> np.ndarray:
    """Index (special tokens counted) of the first token overlapping each verdict, from offset mappings."""
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
    out = []
    for offsets, start in zip(enc["offset_mapping"], starts):
        hits = [k for k, (a, b) in enumerate(offsets) if b > start and b > a]
        out.append(hits[0] if hits else -1)
    return np.asarray(out, dtype=np.int64)


def check_truncation(probe: dict[str, pd.DataFrame], tokenizers: dict, cfg: dict) -> dict:
    """Long examples: where the verdict's first token sits; passes if, with the verdict at the end, it
    lies beyond ``short_max_tokens`` (head truncation there removes it) for all of them."""
    cfg = config(cfg)
    limit, longer = cfg["short_max_tokens"], cfg["long_min_tokens"]
    out = {"threshold": {"token": limit, "min_fraction": TRUNCATION_MIN_FRACTION, "also_reported_token": longer}, "splits": {}}
    passed = True
    measured = {}
    for split, df in probe.items():
        out["splits"][split] = {}
        for name, tok in tokenizers.items():
            per_pos = {}
            for position in POSITIONS:
                sel = df[(df["length_bin"] == "long") & (df["position"] == position)]
                first = first_verdict_token(tok, sel["text"].tolist(), sel["verdict_start"].tolist())
                per_pos[position] = {
                    "n": int(len(first)),
                    f"frac_beyond_{limit}": float((first >= limit).mean()) if len(first) else None,
                    f"frac_beyond_{longer}": float((first >= longer).mean()) if len(first) else None,
                    "first_token_min": int(first.min()) if len(first) else None,
                    "first_token_median": float(np.median(first)) if len(first) else None,
                    "first_token_max": int(first.max()) if len(first) else None,
                }
            frac = per_pos["end"][f"frac_beyond_{limit}"]
            measured[f"{split}/{name}"] = frac
            passed &= frac is not None and frac >= TRUNCATION_MIN_FRACTION
            out["splits"][split][name] = per_pos
    out["passed"] = bool(passed)
    out["measured"] = measured
    return out


def run_checks(probe: dict[str, pd.DataFrame], train_reviews: pd.DataFrame, tokenizers: dict, cfg: dict) -> dict:
    """The three sanity checks, each ``{"passed", "measured", thresholds, details}``; never raises on a miss."""
    _check_tokenizers(tokenizers)
    return {
        "labels_clean": check_labels_clean(probe),
        "bodies_point_their_own_way": check_bodies(probe, train_reviews),
        "truncation_bites": check_truncation(probe, tokenizers, cfg),
    }


def assert_checks(checks: dict) -> None:
    """Raise ``ValueError`` naming every failed check and its measured values."""
    failed = [f"{name} (measured {c.get('measured')})" for name, c in checks.items() if not c.get("passed", False)]
    if failed:
        raise ValueError("tail-probe sanity checks failed: " + "; ".join(failed))


# --------------------------------------------------------------------------------------------
# Datasheet
# --------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def _display(row, context: int = 240) -> str:
    """The example with the verdict in bold, long sides cut to ``context`` characters."""
    text, s, e = row["text"], row["verdict_start"], row["verdict_end"]
    before, after = text[:s], text[e:]
    if len(before) > context:
        before = "…" + before[-context:]
    if len(after) > context:
        after = after[:context] + "…"
    return f"{_md_escape(before)}**{_md_escape(text[s:e])}**{_md_escape(after)}"


def _counts_table(probe: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| split | condition | position | length_bin | label 0 | label 1 |", "|---|---|---|---|---:|---:|"]
    for split, df in probe.items():
        counts = df.groupby(["condition", "position", "length_bin", "label"]).size()
        for c in CONDITIONS:
            for p in POSITIONS:
                for b in LENGTH_BINS:
                    n0, n1 = (int(counts.get((c, p, b, l), 0)) for l in (0, 1))
                    lines.append(f"| {split} | {c} | {p} | {b} | {n0} | {n1} |")
    return lines


def _length_summary(probe: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| split | length_bin | tokenizer | min | median | max |", "|---|---|---|---:|---:|---:|"]
    for split, df in probe.items():
        for col in [c for c in df if c.startswith("n_tokens_")]:
            for b in LENGTH_BINS:
                n = df.loc[df["length_bin"] == b, col]
                if len(n):
                    lines.append(f"| {split} | {b} | {col[len('n_tokens_'):]} | {n.min()} | {n.median():.0f} | {n.max()} |")
    return lines


def datasheet(probe: dict[str, pd.DataFrame], checks: dict, cfg: dict) -> str:
    """Markdown datasheet: construction, counts per cell, examples, the checks' numbers, limitations."""
    cfg = config(cfg)
    sizes = ", ".join(f"{s} {len(df):,}" for s, df in probe.items())
    distinct = ", ".join(f"{s} {df['verdict_review_id'].nunique():,}" for s, df in probe.items())
    lines = [
        "# Tail-sentiment probe: datasheet",
        "",
        f"Examples: {sizes}. Distinct verdicts: {distinct} (each used at the three positions). "
        f"Config: `{ {k: cfg[k] for k in sorted(cfg)} }`.",
        "",
        "## Construction",
        "",
        f"- **Verdicts**: last sentences (pysbd) of IMDB reviews rated 1–2 (negative) or 9–10 (positive), "
        f"{cfg['verdict_min_words']}–{cfg['verdict_max_words']} words, kept when VADER's compound is ≥ "
        f"{cfg['vader_threshold']} in the review's direction; deduplicated (case/whitespace-insensitive). "
        "Reviews are visited in a seeded random order until enough verdicts are found.",
        "- **Bodies**: a run of consecutive sentences of another review rated 1–2 / 9–10 with the body's polarity "
        "(never that review's last sentence; each review gives at most one body). The run grows from a random "
        "sentence to a random target length within the length bin.",
        f"- **Example**: the verdict inserted at the start, middle (sentence boundary balancing the characters) or "
        f"end of the body, sentences joined by single spaces; `label` = verdict polarity; `condition` = agree / contrast. "
        f"`short`: ≤ {cfg['short_max_tokens']} tokens under every tokenizer; `long`: > {cfg['long_min_tokens']} and "
        f"≤ {cfg['max_tokens']} under every tokenizer (special tokens included); body ≥ {cfg['body_min_tokens']} tokens.",
        "- **Design**: 12 cells (condition × position × length_bin), equal size and label-balanced in both splits. "
        "Every verdict appears once at each position, with three different bodies of the same condition and "
        "length bin (a paired position control).",
        "- **Split hygiene**: probe-train from IMDB train only, probe-test from IMDB test only; test reviews whose "
        "text is in IMDB train are dropped, and no verdict or body sentence of probe-test equals (case/whitespace-"
        "insensitively) a verdict or body sentence of probe-train.",
        "",
        "## Counts per cell",
        "",
        *_counts_table(probe),
        "",
        "## Lengths (tokens, special tokens included)",
        "",
        *_length_summary(probe),
        "",
        "## Examples (probe-test; verdict in bold, long texts cut)",
        "",
    ]
    df = probe.get("test", next(iter(probe.values())))
    for condition in CONDITIONS:
        lines += [f"### {condition}", ""]
        sub = df[df["condition"] == condition]
        picks = sub.groupby(["position", "length_bin"], sort=True).head(1).head(5)
        for _, row in picks.iterrows():
            lines.append(
                f"- `{row['id']}` label {row['label']}, body {row['body_label']}, {row['position']}, "
                f"{row['length_bin']}: {_display(row)}"
            )
        lines.append("")
    lines += ["## Sanity checks", "", *_checks_lines(checks), "", *_limitations(cfg)]
    return "\n".join(lines) + "\n"


def _checks_lines(checks: dict) -> list[str]:
    lines = []
    lc = checks.get("labels_clean")
    if lc:
        lines += [
            f"**Labels clean** (AFINN agreement with the verdict labels on non-abstained verdicts ≥ {lc['threshold']:.0%}): "
            f"{'passed' if lc['passed'] else 'FAILED'}.",
            "",
            "| split | verdicts | AFINN abstains | agreement | agreement neg / pos |",
            "|---|---:|---:|---:|---|",
        ]
        for split, s in lc["splits"].items():
            by = s["agreement_by_label"]
            fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
            lines.append(
                f"| {split} | {s['n_verdicts']} | {s['abstention_rate']:.3f} | {s['agreement']:.3f} | {fmt(by['0'])} / {fmt(by['1'])} |"
            )
        lines.append("")
    bc = checks.get("bodies_point_their_own_way")
    if bc:
        th = bc["thresholds"]
        lines += [
            f"**Bodies point their own way** (TF-IDF + logistic regression trained on IMDB train, applied to the body "
            f"alone; accuracy w.r.t. the verdict label ≤ {th['contrast_max']} on contrast, ≥ {th['agree_min']} on agree): "
            f"{'passed' if bc['passed'] else 'FAILED'}. {bc['note'][0].upper() + bc['note'][1:]}.",
            "",
            "| split | contrast | agree | weakest contrast cell | weakest agree cell |",
            "|---|---:|---:|---|---|",
        ]
        for split, s in bc["splits"].items():
            cells = s["by_cell"]
            worst_c = max((v, k) for k, v in cells.items() if k.startswith("contrast"))
            worst_a = min((v, k) for k, v in cells.items() if k.startswith("agree"))
            lines.append(
                f"| {split} | {s['by_condition']['contrast']:.3f} | {s['by_condition']['agree']:.3f} | "
                f"{worst_c[1]} {worst_c[0]:.3f} | {worst_a[1]} {worst_a[0]:.3f} |"
            )
        lines.append("")
    tc = checks.get("truncation_bites")
    if tc:
        k = tc["threshold"]["token"]
        lines += [
            f"**Truncation bites** (long examples, verdict at the end: first verdict token at index ≥ {k} under head "
            f"truncation, for all of them and every tokenizer): {'passed' if tc['passed'] else 'FAILED'}.",
            "",
            f"| split | tokenizer | position | n | first verdict token min / median / max | beyond {k} | beyond {tc['threshold']['also_reported_token']} |",
            "|---|---|---|---:|---|---:|---:|",
        ]
        for split, per_tok in tc["splits"].items():
            for name, per_pos in per_tok.items():
                for position, s in per_pos.items():
                    fracs = [v for key, v in s.items() if key.startswith("frac_beyond_")]
                    if not s["n"]:
                        continue
                    lines.append(
                        f"| {split} | {name} | {position} | {s['n']} | {s['first_token_min']} / "
                        f"{s['first_token_median']:.0f} / {s['first_token_max']} | {fracs[0]:.3f} | {fracs[1]:.3f} |"
                    )
        lines.append("")
    return lines


def _limitations(cfg: dict) -> list[str]:
    return [
        "## Known limitations",
        "",
        "- Examples are synthetic splices: the verdict comes from another review (often another film), so a model "
        "may detect the seam or a topic change; sentences are re-joined with single spaces (no `<br />`).",
        "- Verdicts are selected by VADER and are short, lexically explicit final sentences; subtle or ironic "
        "verdicts are excluded, so the probe measures *where* a model reads, not how well it reads subtle sentiment.",
        "- Negative verdicts are scarce (~900 per split in all of IMDB); each verdict appears three times (once per "
        "position), so a split has a third as many distinct verdicts as examples.",
        "- The body check's classifier was trained on IMDB train, which includes probe-train's body reviews: its "
        "probe-train numbers are optimistic; probe-test's are the clean measurement.",
        f"- Length bins are defined by the given tokenizers; another tokenizer may put a text outside its bin. Texts "
        f"between {cfg['short_max_tokens']} and {cfg['long_min_tokens']} tokens are deliberately absent.",
        "- Bodies come only from reviews rated 1–2 / 9–10, so they are more polar than average IMDB text.",
    ]
