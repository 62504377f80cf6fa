"""Generation of the probe: verdicts, plan, bodies, build.

Construction (deterministic from ``cfg["seed"]``; probe-train from IMDB train, probe-test from IMDB test):

1. **Verdicts.** The last sentence of every review rated 1–2 (negative) or 9–10 (positive) is a
   candidate; it is kept when it passes the verdict filter of :mod:`.filters` for the review's
   label (content rules, then VADER, AFINN and an IMDB-trained bag-of-words agreeing confidently).
   Verdicts are deduplicated (case- and whitespace-insensitive).
2. **Plan.** Each split has ``24 m`` examples (``m = ceil(size / 24)``): 12 cells (condition ×
   position × length_bin), each with ``m`` examples per label. A verdict is used exactly six
   times, in both conditions at each position, with six different bodies in one length bin (paired
   position and condition controls; the strict filter leaves ~300 negative verdicts per split).
   Verdicts are chosen first among those whose film has other reviews of both polarities, so that
   bodies can come from the same film.
3. **Bodies.** For each example a review of the body polarity (rated 1–2 or 9–10, not a verdict's
   source, each used once) is split into sentences (:func:`.common.split_sentences`, fast); reviews of the verdict's film are tried first (when
   ``same_film``), then any review. Its last sentence is never used, nor any sentence that would
   pass the verdict filter's polarity test in either direction or judges explicitly
   (:meth:`.filters.Scorer.evaluative`), nor a sentence of the other split.
   From a random usable sentence the body grows over the usable sentences, in order, forwards (then
   backwards) until the text reaches a random target length within the length bin. The finished
   text is tokenized with every tokenizer and rejected (next review) unless it is in its bin, at
   most ``max_tokens`` long, and the body has at least ``body_min_tokens`` tokens and two sentences.
4. **Split hygiene.** Test reviews whose text also occurs in IMDB train are dropped; a test verdict
   or test body sentence whose text is a train verdict or train body sentence is never used.

Sentences are whitespace-normalised (``<br />`` tags blanked, runs of spaces collapsed) and joined
with one space, so ``text[verdict_start:verdict_end]`` is the verdict exactly.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.data import DataError

from .common import (
    CONDITIONS,
    LENGTH_BINS,
    POSITIONS,
    RATINGS,
    check_tokenizers,
    compose,
    config,
    film_id,
    key,
    quick_first_sentence,
    quick_last_sentence,
    lengths,
    log,
    n_special,
    review_id,
    review_sentences,
    split_sentences,
    version_of,
)
from .filters import Scorer, content_reason

COLUMNS = [
    "id", "text", "label", "body_label", "condition", "position", "length_bin", "verdict_start", "verdict_end",
    "verdict_review_id", "body_review_id", "verdict_film", "body_film", "same_film",
]  # fmt: skip  (then n_tokens_<tokenizer> for each tokenizer)


def polar_reviews(reviews: pd.DataFrame, split: str, exclude_texts: set[str] = frozenset()) -> pd.DataFrame:
    """Reviews rated 1–2 / 9–10, one per distinct text, in a fixed order, with ``review_id`` and ``film``."""
    missing = {"text", "label", "id", "rating"} - set(reviews.columns)
    if missing:
        raise DataError(f"tail probe: IMDB {split} lacks columns {sorted(missing)} (needs text, label, id, rating)")
    keep = pd.Series(False, index=reviews.index)
    for label, ratings in RATINGS.items():
        keep |= reviews["label"].eq(label) & reviews["rating"].isin(ratings)
    cols = ["text", "label", "id", "rating"] + (["url"] if "url" in reviews else [])
    df = reviews.loc[keep, cols]
    df = df.sort_values(["label", "id"], kind="stable").drop_duplicates("text")
    df = df[~df["text"].isin(exclude_texts)].reset_index(drop=True)
    df["review_id"] = [review_id(split, l, i) for l, i in zip(df["label"], df["id"])]
    # without urls every review is its own film (no same-film bodies)
    df["film"] = [film_id(u) for u in df["url"]] if "url" in df else df["review_id"]
    return df


@dataclass(frozen=True)
class Verdict:
    text: str
    label: int
    review_id: str
    film: str


def verdict_candidates(reviews: pd.DataFrame, split: str, cfg: dict, scorer: Scorer, forbidden: set[str], rng,
                       source: str = "last", exclude_ids: frozenset = frozenset()):
    """All verdicts of the split, per label, in a seeded random order; and the filter's funnel counts.

    Candidates are pre-selected on a fast guess at the last (``source="first"``: first) sentence
    (content rules, then VADER, AFINN, the classifier); a survivor is kept only if it is pysbd's
    last (first) sentence of the review. Reviews in ``exclude_ids`` are skipped.
    """
    guess = quick_last_sentence if source == "last" else quick_first_sentence
    pick = -1 if source == "last" else 0
    funnel: dict[int, Counter] = {0: Counter(), 1: Counter()}
    found: dict[int, list[Verdict]] = {}
    sign_of = {0: -1, 1: 1}
    for label in (0, 1):
        cands = reviews[reviews["label"].eq(label) & ~reviews["review_id"].isin(exclude_ids)]
        order = rng.permutation(len(cands))
        f = funnel[label]
        f["reviews"] = len(cands)
        texts, films, rids = cands["text"].to_numpy(), cands["film"].to_numpy(), cands["review_id"].to_numpy()
        content_ok = []
        for pos in order:
            sent = guess(texts[pos])
            reason = content_reason(sent, cfg)
            if reason is not None:
                f[f"rejected_{reason}"] += 1
                continue
            content_ok.append((sent, pos))
        f["pass_content"] = len(content_ok)
        by_film = defaultdict(list)
        for i, (_, pos) in enumerate(content_ok):
            by_film[films[pos]].append(i)
        scores = np.zeros((len(content_ok), 3))
        for film in sorted(by_film):  # cross-fitted classifier: batch per film
            idx = by_film[film]
            scores[idx] = scorer.score([content_ok[i][0] for i in idx], split, film)
        sign = sign_of[label]
        vader_ok = sign * scores[:, 0] >= cfg["vader_threshold"]
        f["pass_vader"] = int(vader_ok.sum())
        f["pass_vader_afinn"] = int((vader_ok & (sign * scores[:, 1] >= cfg["afinn_min"])).sum())
        passed = scorer.passes(scores, label)
        f["pass_polarity"] = int(passed.sum())
        taken: set[str] = set()
        out: list[Verdict] = []
        for (sent, pos), ok in zip(content_ok, passed):
            if not ok:
                continue
            k = key(sent)
            if k in forbidden or k in taken:
                f["dropped_duplicate_or_other_split"] += 1
                continue
            if review_sentences(texts[pos])[pick] != sent:  # the fast guess is not pysbd's sentence
                f["dropped_segmentation"] += 1
                continue
            taken.add(k)
            out.append(Verdict(sent, label, rids[pos], films[pos]))
        f["verdicts"] = len(out)
        found[label] = out
    return found, {str(l): dict(c) for l, c in funnel.items()}


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


def plan(pool: dict[int, list[Verdict]], m: int, film_counts: dict, same_film: bool) -> list[list[Slot]]:
    """``m`` verdicts per (label, length_bin), each in both conditions at all three positions.

    Every verdict is used six times (agree and contrast × start, middle, end) with six different
    bodies of one length bin: a paired position control and a paired condition control. With
    ``same_film``, verdicts are taken first among those whose film has most other reviews of each
    polarity (each count capped at 3; ties in the pool's seeded order). One slot list per verdict.
    Raises :class:`DataError` if the pool is too small.
    """
    groups = []
    for label in (0, 1):
        cands = list(pool[label])
        if len(cands) < 2 * m:
            raise DataError(
                f"tail probe: only {len(cands)} label-{label} verdicts pass the filter, need {2 * m}; "
                "lower the sizes or relax the verdict filter"
            )
        if same_film:
            def avail(v):
                return -(min(film_counts[(v.film, 1 - v.label)], 3) + min(film_counts[(v.film, v.label)] - 1, 3))

            cands = sorted(cands, key=avail)  # stable: ties keep the seeded order
        for i, verdict in enumerate(cands[: 2 * m]):
            groups.append([Slot(verdict, c, p, LENGTH_BINS[i % 2]) for c in CONDITIONS for p in POSITIONS])
    return groups


class BodySource:
    """Draws bodies of one split: candidate reviews per polarity in a seeded order, each used once."""

    def __init__(self, reviews, exclude_ids, forbidden, tokenizers, cfg, scorer, split, rng):
        self.reviews = reviews
        self.forbidden = forbidden
        self.tokenizers = tokenizers
        self.cfg = cfg
        self.scorer = scorer
        self.split = split
        self.rng = rng
        self.special = n_special(tokenizers)
        ok = ~reviews["review_id"].isin(exclude_ids)
        long_ok = reviews["text"].str.len() >= 3 * cfg["long_min_tokens"]  # cheap pre-filter
        self.order = {}
        for label in (0, 1):
            idx = np.flatnonzero(ok & reviews["label"].eq(label))
            idx = idx[rng.permutation(len(idx))]
            self.order[(label, "short")] = idx
            self.order[(label, "long")] = idx[long_ok.to_numpy()[idx]]
        self.film_order = defaultdict(list)  # (film, label) -> candidate indices in the seeded order
        for idx in self.order[(0, "short")].tolist() + self.order[(1, "short")].tolist():
            self.film_order[(reviews.at[idx, "film"], int(reviews.at[idx, "label"]))].append(idx)
        self.cursor = {k: 0 for k in self.order}
        self.used: set[int] = set()
        self.cache: dict[int, tuple] = {}
        self.stats = Counter()

    def _sentences(self, idx: int):
        """(sentences, token counts per tokenizer, usable mask); the last sentence dropped."""
        if idx not in self.cache:
            sents = split_sentences(self.reviews.at[idx, "text"])[:-1]
            if sents:
                lens = lengths(self.tokenizers, [" " + s for s in sents], special=False)
                scores = self.scorer.score(sents, self.split, self.reviews.at[idx, "film"])
                verdict_like = self.scorer.verdict_like(scores)
                evaluative = self.scorer.evaluative(sents, scores)
                vader = scores[:, 0]
            else:
                lens, verdict_like, evaluative, vader = None, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0)
            other_split = np.array([key(s) in self.forbidden for s in sents], dtype=bool)
            self.stats["sentences"] += len(sents)
            self.stats["verdict_like_sentences"] += int(verdict_like.sum())
            self.stats["evaluative_sentences"] += int((evaluative & ~verdict_like).sum())
            self.cache[idx] = (sents, lens, ~verdict_like & ~evaluative & ~other_split, vader)
        return self.cache[idx]

    def _candidates(self, slot: Slot):
        key_ = (slot.body_label, slot.length_bin)
        if self.cfg["same_film"]:
            for idx in self.film_order.get((slot.verdict.film, slot.body_label), []):
                if idx not in self.used:
                    yield idx
        order = self.order[key_]
        while self.cursor[key_] < len(order):
            idx = int(order[self.cursor[key_]])
            self.cursor[key_] += 1
            if idx not in self.used:
                yield idx

    def draw(self, slot: Slot) -> dict:
        """The example for ``slot``; tries candidate reviews until one fits, else :class:`DataError`."""
        for idx in self._candidates(slot):
            example = self._fit(idx, slot)
            if example is not None:
                self.used.add(idx)
                return example
        raise DataError(
            f"tail probe: ran out of label-{slot.body_label} reviews for {slot.length_bin} bodies; lower the sizes"
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
        sents, lens, usable, vader = self._sentences(idx)
        keep = np.flatnonzero(usable)
        if len(keep) < 2:
            return None
        verdict = slot.verdict.text
        fixed = lengths(self.tokenizers, [" " + verdict], special=False)[:, 0] + self.special
        target, cap = self._target(slot.length_bin, fixed)
        run = grow(lens[:, keep], int(self.rng.integers(len(keep))), fixed, target, cap)
        if run is None or run[1] - run[0] < 2:
            return None
        chosen = keep[run[0] : run[1]]
        body = [sents[i] for i in chosen]
        text, v_start, v_end = compose(body, verdict, slot.position)
        n_tokens = lengths(self.tokenizers, [text], special=True)[:, 0]
        body_tokens = lengths(self.tokenizers, [" ".join(body)], special=False)[:, 0]
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
            "verdict_film": slot.verdict.film,
            "body_film": row["film"],
            "same_film": bool(row["film"] == slot.verdict.film),
            **{f"n_tokens_{name}": int(n) for name, n in zip(self.tokenizers, n_tokens)},
            "_body_sentences": body,
        }

    def _in_bin(self, n_tokens: np.ndarray, length_bin: str) -> bool:
        cfg = self.cfg
        if length_bin == "short":
            return bool((n_tokens <= cfg["short_max_tokens"]).all())
        return bool((n_tokens > cfg["long_min_tokens"]).all() and (n_tokens <= cfg["max_tokens"]).all())


def grow(lens, start, fixed, target, cap) -> tuple[int, int] | None:
    """Grow a run ``[i, j)`` of (usable) sentences from ``start``, forwards first, then backwards.

    Token counts are estimated as the sum of per-sentence counts (``lens``, shape (tokenizers,
    sentences)) plus ``fixed`` (verdict and special tokens). Growth stops once every tokenizer
    reaches ``target`` or when the next sentence would take any tokenizer past ``cap``.
    """
    total = fixed + lens[:, start]
    if (total > cap).any():
        return None
    i, j = start, start + 1
    while total.min() < target:
        if j < lens.shape[1] and (total + lens[:, j] <= cap).all():
            total = total + lens[:, j]
            j += 1
        elif i > 0 and (total + lens[:, i - 1] <= cap).all():
            i -= 1
            total = total + lens[:, i]
        else:
            break
    return i, j


def build_split(split, reviews, size, cfg, tokenizers, scorer, forbidden, rng):
    """One probe split, the keys of its verdicts and body sentences (for the next split), and build stats."""
    m = math.ceil(size / (len(CONDITIONS) * len(POSITIONS) * len(LENGTH_BINS) * 2))
    t0 = time.time()
    pool, funnel = verdict_candidates(reviews, split, cfg, scorer, forbidden, rng)
    log(f"  {split}: verdict funnel {funnel} ({time.time() - t0:.1f} s)")
    film_counts = Counter(zip(reviews["film"], reviews["label"].astype(int)))
    groups = plan(pool, m, film_counts, bool(cfg["same_film"]))
    verdicts = [g[0].verdict for g in groups]
    verdict_keys = {key(v.text) for v in verdicts}
    source_ids = {v.review_id for v in verdicts}
    bodies = BodySource(reviews, source_ids, forbidden | verdict_keys, tokenizers, cfg, scorer, split, rng)
    rows = []
    t0 = time.time()
    for n, g in enumerate(rng.permutation(len(groups)), 1):
        for slot in groups[g]:
            rows.append(bodies.draw(slot))
        if n % 200 == 0 or n == len(groups):
            log(f"  {split}: {len(rows)} bodies ({len(bodies.cache)} reviews segmented, {time.time() - t0:.1f} s)")
    body_keys = {key(s) for r in rows for s in r.pop("_body_sentences")}
    df = pd.DataFrame([rows[i] for i in rng.permutation(len(rows))])
    df.insert(0, "id", [f"tp-{split}-{i:06d}" for i in range(len(df))])
    ints = ["label", "body_label", "verdict_start", "verdict_end"] + [c for c in df if c.startswith("n_tokens_")]
    df = df.astype({c: "int64" for c in ints} | {"same_film": bool})
    stats = {"verdict_funnel": funnel, "verdicts_available": {str(l): len(v) for l, v in pool.items()},
             "verdicts_used": len(verdicts), "body_reviews_segmented": len(bodies.cache), **dict(bodies.stats)}
    return df, verdict_keys | body_keys, stats


def build(
    train_reviews: pd.DataFrame, test_reviews: pd.DataFrame, cfg: dict, tokenizers: dict
) -> dict[str, pd.DataFrame]:
    """The probe: ``{"train": df, "test": df}`` built from IMDB train and test reviews respectively.

    ``tokenizers`` maps a name to a fast tokenizer; every length rule holds under all of them and
    each gets a column ``n_tokens_<name>`` (special tokens included). Sizes are rounded up to a
    multiple of 24 (12 cells × 2 labels). Same inputs and ``cfg`` give identical DataFrames.
    Columns: :data:`COLUMNS`, then n_tokens_<name>... . Build statistics (the verdict filter's
    funnel per split) are attached as ``df.attrs["build"]``.
    """
    cfg = config(cfg)
    check_tokenizers(tokenizers)
    t0 = time.time()
    scorer = Scorer(train_reviews, cfg)
    train = polar_reviews(train_reviews, "train")
    test = polar_reviews(test_reviews, "test", exclude_texts=set(train_reviews["text"]))
    if version_of(cfg) == 4:
        from .generate4 import build_v4

        probe = build_v4(train, test, scorer, cfg, tokenizers)
        log(f"built v4 train {len(probe['train'])} / test {len(probe['test'])} examples in {time.time() - t0:.1f} s")
        return probe
    forbidden: set[str] = set()
    probe = {}
    for i, (split, reviews) in enumerate((("train", train), ("test", test))):
        log(f"building probe-{split} from {len(reviews)} polar IMDB {split} reviews")
        rng = np.random.default_rng([int(cfg["seed"]), i])
        df, keys, stats = build_split(split, reviews, int(cfg[f"{split}_size"]), cfg, tokenizers, scorer, forbidden, rng)
        df.attrs["build"] = stats
        probe[split] = df
        forbidden |= keys
    log(f"built train {len(probe['train'])} / test {len(probe['test'])} examples in {time.time() - t0:.1f} s")
    return probe
