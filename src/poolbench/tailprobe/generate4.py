"""Generation of probe v4 (``version: 4``): only the position changes.

What differs from v3 (:mod:`.generate`, whose verdict filter, body sentence rules and length bins v4
keeps):

1. **One body per verdict and condition, at all three positions.** A *group* is a verdict, a
   condition and one body; its three texts put the verdict at the start, in the middle and at the
   end of the *same* body sentences (``group_id`` names the group). Every length rule must hold
   for all three texts under every tokenizer. Same-film shares are therefore equal across
   positions by construction.
2. **Three conditions.** ``agree`` and ``contrast`` as in v3, and ``neutral``: a body that
   describes without judging. Its sentences pass v3's body rules, are descriptive
   (:func:`.filters.descriptive`: third person, no exclamation or question, no AFINN word or judging
   adjective, nothing about the film, its making or its audience),
   each has |VADER| at most ``neutral_sentence_vader`` and the bag-of-words' P(positive) within
   1 - ``neutral_sentence_p`` .. ``neutral_sentence_p``; the body's mean sentence VADER lies within ±``neutral_body_vader``
   and the IMDB-trained bag-of-words' P(positive | body) within ``neutral_body_p``. Its reviews
   may be of either polarity (``body_label`` = -1). The verdict is then the text's only sentiment.
3. **Every verdict is visible in the window.** Short texts fit ``short_max_tokens`` (128) and long
   ones ``max_tokens`` (512) under every tokenizer, special tokens included, as in v3; the checks
   verify that the whole verdict lies inside that window.
4. **Cross-source test verdicts.** probe-train's verdicts are the reviews' last sentences, as in
   v3. probe-test's come from each source in ``test_sources`` in equal numbers (default: the last
   sentence, and the *first* sentence of other reviews), recorded per example in
   ``verdict_source``: a head that learned probe-train's verdict style shows it on ``first``.
5. Bodies never use their review's first or last sentence (either can be a verdict of its own).
6. **Neutral bodies join reviews.** Few reviews describe at length without a judgement, so a
   neutral body is the descriptive sentences of up to ``MAX_JOINED`` reviews (of the verdict's
   film first), each review's in order; ``body_review_id`` lists them joined by ``+``.

Each split has, per source, ``m`` verdicts per (label, length_bin) with ``m = ceil(size / (36 ×
n_sources))``: 18 cells (condition × position × length_bin) × 2 labels, each verdict in all 9
(condition, position) pairs with three bodies.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.data import DataError

from .common import CONDITIONS_V4, LENGTH_BINS, POSITIONS, compose, key, lengths, log, split_sentences
from .filters import descriptive
from .generate import BodySource, Slot, Verdict, grow, polar_reviews, verdict_candidates

COLUMNS_V4 = [
    "id", "text", "label", "body_label", "condition", "position", "length_bin", "verdict_start", "verdict_end",
    "verdict_review_id", "verdict_source", "group_id", "body_review_id", "verdict_film", "body_film", "same_film",
]  # fmt: skip  (then n_tokens_<tokenizer> for each tokenizer)
NEUTRAL = -1  # body_label of a neutral body
MAX_JOINED = 40  # reviews a neutral body may join (few describe for long without a judgement)


@dataclass(frozen=True)
class GroupSlot(Slot):
    """A verdict (with its source) and a condition: one body, three texts (one per position)."""

    verdict_source: str = "last"

    @property
    def body_label(self) -> int:
        if self.condition == "neutral":
            return NEUTRAL
        return self.label if self.condition == "agree" else 1 - self.label


class BodySourceV4(BodySource):
    """v3's body source with shared bodies across positions, neutral bodies and first sentences left out."""

    def __init__(self, reviews, exclude_ids, forbidden, tokenizers, cfg, scorer, split, rng):
        super().__init__(reviews, exclude_ids, forbidden, tokenizers, cfg, scorer, split, rng)
        low, high = (float(x) for x in cfg["neutral_body_p"])
        self.p_range = (low, high)
        for length_bin in LENGTH_BINS:  # neutral bodies come from reviews of either polarity
            both = np.concatenate([self.order[(0, length_bin)], self.order[(1, length_bin)]])
            self.order[(NEUTRAL, length_bin)] = both[rng.permutation(len(both))]
            self.cursor[(NEUTRAL, length_bin)] = 0

    def _sentences(self, idx: int):
        """(sentences, token counts, usable mask, VADER, usable-for-neutral mask); first and last dropped."""
        if idx not in self.cache:
            sents = split_sentences(self.reviews.at[idx, "text"])[1:-1]
            if sents:
                lens = lengths(self.tokenizers, [" " + s for s in sents], special=False)
                scores = self.scorer.score(sents, self.split, self.reviews.at[idx, "film"])
                verdict_like = self.scorer.verdict_like(scores)
                evaluative = self.scorer.evaluative(sents, scores)
                vader, p_pos = scores[:, 0], scores[:, 2]
            else:
                lens, verdict_like, evaluative = None, np.zeros(0, bool), np.zeros(0, bool)
                vader, p_pos = np.zeros(0), np.full(0, 0.5)
            other_split = np.array([key(s) in self.forbidden for s in sents], dtype=bool)
            self.stats["sentences"] += len(sents)
            self.stats["verdict_like_sentences"] += int(verdict_like.sum())
            self.stats["evaluative_sentences"] += int((evaluative & ~verdict_like).sum())
            usable = ~verdict_like & ~evaluative & ~other_split
            calm = usable & (np.abs(vader) <= self.cfg["neutral_sentence_vader"]) & (
                np.abs(p_pos - 0.5) <= self.cfg["neutral_sentence_p"] - 0.5) & np.array(
                [descriptive(s) for s in sents], dtype=bool)
            self.cache[idx] = (sents, lens, usable, vader, calm)
        return self.cache[idx]

    def _candidates(self, slot: Slot):
        if slot.body_label != NEUTRAL:
            yield from super()._candidates(slot)
            return
        if self.cfg["same_film"]:
            for label in (0, 1):
                for idx in self.film_order.get((slot.verdict.film, label), []):
                    if idx not in self.used:
                        yield idx
        key_ = (NEUTRAL, slot.length_bin)
        order = self.order[key_]
        while self.cursor[key_] < len(order):
            idx = int(order[self.cursor[key_]])
            self.cursor[key_] += 1
            if idx not in self.used:
                yield idx

    def draw_group(self, slot: Slot) -> list[dict]:
        """The three examples (start, middle, end) of ``slot``; tries reviews until one fits."""
        if slot.body_label == NEUTRAL:
            return self._draw_joined(slot)
        for idx in self._candidates(slot):
            rows = self._fit_group(idx, slot)
            if rows is not None:
                self.used.add(idx)
                return rows
        raise DataError(
            f"tail probe v4: ran out of reviews for {slot.condition} {slot.length_bin} bodies "
            f"(body polarity {slot.body_label}); lower the sizes"
        )

    def _draw_joined(self, slot: Slot) -> list[dict]:
        """A neutral body: the descriptive sentences of one or more reviews (the verdict's film first),
        each review's in order, joined until the text reaches its target length. Few reviews describe
        for long without a judgement, so one review rarely suffices."""
        verdict = slot.verdict.text
        fixed = lengths(self.tokenizers, [" " + verdict], special=False)[:, 0] + self.special
        target, cap = self._target(slot.length_bin, fixed)
        parts: list[tuple[int, list[int]]] = []  # (review index, chosen sentence indices)
        total = fixed.copy()
        for idx in self._candidates(slot):
            sents, lens, usable, vader, calm = self._sentences(idx)
            taken = []
            for i in np.flatnonzero(calm).tolist():
                if (total + lens[:, i] <= cap).all():
                    taken.append(i)
                    total = total + lens[:, i]
            if taken:
                parts.append((idx, taken))
            if total.min() >= target or len(parts) >= MAX_JOINED:
                rows = self._joined_rows(parts, slot)
                if rows is not None:
                    self.used.update(i for i, _ in parts)
                    return rows
                self.stats["neutral_joined_rejected"] += 1
                parts, total = [], fixed.copy()
        raise DataError(f"tail probe v4: ran out of reviews for {slot.length_bin} neutral bodies; lower the sizes")

    def _joined_rows(self, parts, slot: Slot) -> list[dict] | None:
        body = [self._sentences(idx)[0][i] for idx, chosen in parts for i in chosen]
        vader = np.concatenate([self._sentences(idx)[3][chosen] for idx, chosen in parts])
        if len(body) < 2 or not self.neutral_enough(body, vader):
            return None
        return self._rows(body, slot, [idx for idx, _ in parts])

    def neutral_enough(self, body: list[str], vader: np.ndarray) -> bool:
        """A neutral body's whole-body rules: mean sentence VADER near 0 and the bag-of-words unsure."""
        if abs(float(np.mean(vader))) > self.cfg["neutral_body_vader"]:
            return False
        p = float(self.scorer.full.predict_proba([" ".join(body)])[0, 1])
        return self.p_range[0] <= p <= self.p_range[1]

    def _fit_group(self, idx: int, slot: Slot) -> list[dict] | None:
        sents, lens, usable, vader, calm = self._sentences(idx)
        neutral = slot.body_label == NEUTRAL
        keep = np.flatnonzero(calm if neutral else usable)
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
        if neutral and not self.neutral_enough(body, vader[chosen]):
            self.stats["neutral_bodies_rejected_whole"] += 1
            return None
        return self._rows(body, slot, [idx])

    def _rows(self, body: list[str], slot: Slot, idxs: list[int]) -> list[dict] | None:
        """The three texts of a body, or ``None`` unless all three are in the bin under every tokenizer."""
        verdict = slot.verdict.text
        if lengths(self.tokenizers, [" ".join(body)], special=False)[:, 0].min() < self.cfg["body_min_tokens"]:
            return None
        composed = [compose(body, verdict, position) for position in POSITIONS]
        n_tokens = lengths(self.tokenizers, [c[0] for c in composed], special=True)  # (tokenizers, 3)
        if not all(self._in_bin(n_tokens[:, k], slot.length_bin) for k in range(len(POSITIONS))):
            return None
        films = [self.reviews.at[i, "film"] for i in idxs]
        common = {
            "label": slot.label,
            "body_label": slot.body_label,
            "condition": slot.condition,
            "length_bin": slot.length_bin,
            "verdict_review_id": slot.verdict.review_id,
            "verdict_source": slot.verdict_source,
            "body_review_id": "+".join(self.reviews.at[i, "review_id"] for i in idxs),
            "verdict_film": slot.verdict.film,
            "body_film": "+".join(dict.fromkeys(films)),
            "same_film": all(f == slot.verdict.film for f in films),
        }
        out = []
        for k, (position, (text, v_start, v_end)) in enumerate(zip(POSITIONS, composed)):
            out.append({"text": text, "position": position, "verdict_start": v_start, "verdict_end": v_end, **common,
                        **{f"n_tokens_{name}": int(n) for name, n in zip(self.tokenizers, n_tokens[:, k])}})
        out[0]["_body_sentences"] = body
        return out


def plan_v4(pool: dict[int, list[Verdict]], m: int, film_counts: dict, same_film: bool, source: str) -> list[list[Slot]]:
    """``m`` verdicts per (label, length_bin) of one source, each in all three conditions (one group each)."""
    groups = []
    for label in (0, 1):
        cands = list(pool[label])
        if len(cands) < 2 * m:
            raise DataError(
                f"tail probe v4: only {len(cands)} label-{label} verdicts from the reviews' {source} sentences pass "
                f"the filter, need {2 * m}; lower the sizes or relax the verdict filter"
            )
        if same_film:
            def avail(v):
                return -(min(film_counts[(v.film, 1 - v.label)], 3) + min(film_counts[(v.film, v.label)] - 1, 3))

            cands = sorted(cands, key=avail)  # stable: ties keep the seeded order
        for i, verdict in enumerate(cands[: 2 * m]):
            groups.append([GroupSlot(verdict, c, "all", LENGTH_BINS[i % 2], source) for c in CONDITIONS_V4])
    return groups


def build_split_v4(split, reviews, size, cfg, tokenizers, scorer, forbidden, rng):
    """One v4 split, the keys of its verdicts and body sentences (for the next split), and build stats."""
    sources = ["last"] if split == "train" else list(cfg["test_sources"])
    m = math.ceil(size / (len(CONDITIONS_V4) * len(POSITIONS) * len(LENGTH_BINS) * 2 * len(sources)))
    film_counts = Counter(zip(reviews["film"], reviews["label"].astype(int)))
    groups, funnels, available = [], {}, {}
    taken_ids: set[str] = set()
    taken_keys: set[str] = set()
    for source in sources:
        t0 = time.time()
        pool, funnel = verdict_candidates(reviews, split, cfg, scorer, forbidden | taken_keys, rng, source=source,
                                          exclude_ids=frozenset(taken_ids))
        log(f"  {split}/{source}: verdict funnel {funnel} ({time.time() - t0:.1f} s)")
        funnels[source], available[source] = funnel, {str(l): len(v) for l, v in pool.items()}
        chosen = plan_v4(pool, m, film_counts, bool(cfg["same_film"]), source)
        taken_ids |= {g[0].verdict.review_id for g in chosen}
        taken_keys |= {key(g[0].verdict.text) for g in chosen}
        groups += chosen
    verdicts = [g[0].verdict for g in groups]
    bodies = BodySourceV4(reviews, taken_ids, forbidden | taken_keys, tokenizers, cfg, scorer, split, rng)
    rows = []
    t0 = time.time()
    for n, g in enumerate(rng.permutation(len(groups)), 1):
        for slot in groups[g]:
            group = bodies.draw_group(slot)
            gid = f"tp4-{split}-g{len(rows) // len(POSITIONS):05d}"
            rows += [{**r, "group_id": gid} for r in group]
        if n % 100 == 0 or n == len(groups):
            log(f"  {split}: {len(rows)} texts ({len(bodies.cache)} reviews segmented, {time.time() - t0:.1f} s)")
    body_keys = {key(s) for r in rows if "_body_sentences" in r for s in r.pop("_body_sentences")}
    df = pd.DataFrame([rows[i] for i in rng.permutation(len(rows))])
    df.insert(0, "id", [f"tp-{split}-{i:06d}" for i in range(len(df))])
    ints = ["label", "body_label", "verdict_start", "verdict_end"] + [c for c in df if c.startswith("n_tokens_")]
    df = df.astype({c: "int64" for c in ints} | {"same_film": bool})
    df = df[COLUMNS_V4 + [c for c in df if c.startswith("n_tokens_")]]
    stats = {"sources": sources,
             "verdict_funnel_by_source": funnels, "verdicts_available_by_source": available,
             "verdicts_available": {l: sum(a[l] for a in available.values()) for l in ("0", "1")},
             "verdicts_used": len(verdicts), "body_reviews_segmented": len(bodies.cache), **dict(bodies.stats)}
    return df, taken_keys | body_keys, stats


def build_v4(train, test, scorer, cfg, tokenizers) -> dict[str, pd.DataFrame]:
    """Both v4 splits from the polar reviews of IMDB train and test (see :func:`.generate.build`)."""
    forbidden: set[str] = set()
    probe = {}
    for i, (split, reviews) in enumerate((("train", train), ("test", test))):
        log(f"building probe-{split} (v4) from {len(reviews)} polar IMDB {split} reviews")
        rng = np.random.default_rng([int(cfg["seed"]), i, 4])
        df, keys, stats = build_split_v4(split, reviews, int(cfg[f"{split}_size"]), cfg, tokenizers, scorer, forbidden, rng)
        df.attrs["build"] = stats
        probe[split] = df
        forbidden |= keys
    return probe


__all__ = ["COLUMNS_V4", "NEUTRAL", "build_v4", "polar_reviews"]
