"""Configuration, constants and small helpers shared by generation, checks, baselines and datasheet."""

from __future__ import annotations

import re

import numpy as np

from poolbench.polarity import afinn_lexicon, normalise, vader_analyzer
from poolbench.text import sentence_spans

VERSION = 3  # of the generator's rules when the config names none (the committed study's probe)
VERSIONS = (3, 4)  # selectable with the config key ``version``

DEFAULTS = {
    "seed": 0,
    "train_size": 1000,
    "test_size": 1000,
    # verdict filter (polarity): all three must agree with the review's label, confidently
    "vader_threshold": 0.5,  # VADER compound, in the label's direction
    "afinn_min": 2.0,  # AFINN score (sum of word valences), in the label's direction
    "classifier_min": 0.8,  # IMDB-trained bag-of-words P(label | sentence)
    "verdict_min_words": 6,
    "verdict_max_words": 40,
    # bodies
    "same_film": True,  # prefer bodies from another review of the verdict's film
    "short_max_tokens": 128,
    "long_min_tokens": 256,
    "max_tokens": 512,
    "body_min_tokens": 40,
    # the human reading of a sample (None: the file bundled with this package)
    "audit": None,
}
# Version 4 only (``version: 4``): the keys below, over DEFAULTS. Absent ``version`` means v3 and
# exactly v3's config (so v3's outputs do not change).
DEFAULTS_V4 = {
    "version": 4,
    # a neutral body: every sentence descriptive (filters.descriptive), |VADER| <= neutral_sentence_vader and
    # the bag-of-words' P(positive) in [1 - neutral_sentence_p, neutral_sentence_p]; the body's mean sentence VADER
    # within +-neutral_body_vader; the IMDB bag-of-words' P(positive | body) within neutral_body_p
    "neutral_sentence_vader": 0.3,
    "neutral_sentence_p": 0.8,
    "neutral_body_vader": 0.1,
    "neutral_body_p": [0.3, 0.7],
    # where probe-test's verdicts come from (probe-train's are always the reviews' last sentences)
    "test_sources": ["last", "first"],
}
# Keys of the pipeline's dataset spec that are not the generator's business (tokenizers arrive as objects).
IGNORED_KEYS = frozenset({"tokenizers"})
RATINGS = {0: (1, 2), 1: (9, 10)}  # strongly polar reviews, by label
CONDITIONS = ("contrast", "agree")  # v3
CONDITIONS_V4 = ("contrast", "agree", "neutral")
SOURCES = ("last", "first")  # a verdict is its review's last or (v4 probe-test) first sentence
POSITIONS = ("start", "middle", "end")
LENGTH_BINS = ("short", "long")
SPLITS = ("train", "test")


def log(msg: str) -> None:
    print(f"[tailprobe] {msg}", flush=True)


def config(cfg: dict | None) -> dict:
    """``cfg`` over :data:`DEFAULTS`; unknown keys and impossible values raise ``ValueError``.

    Keys in :data:`IGNORED_KEYS` (e.g. the pipeline's list of tokenizer names) are dropped.
    """
    cfg = {k: v for k, v in (cfg or {}).items() if k not in IGNORED_KEYS}
    version = int(cfg.pop("version", VERSION))
    if version not in VERSIONS:
        raise ValueError(f"tail probe: version must be one of {VERSIONS}, got {version}")
    defaults = DEFAULTS if version == 3 else {**DEFAULTS, **DEFAULTS_V4}
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"tail probe: unknown config keys {unknown} for version {version}; known keys: {sorted(defaults)}")
    out = {**defaults, **cfg}
    if version == 4:
        low, high = (float(x) for x in out["neutral_body_p"])
        if not 0 <= low < 0.5 < high <= 1:
            raise ValueError(f"tail probe: neutral_body_p must be [low, high] around 0.5, got {out['neutral_body_p']}")
        bad = [s for s in out["test_sources"] if s not in SOURCES]
        if bad or not out["test_sources"]:
            raise ValueError(f"tail probe: test_sources must be a non-empty list of {SOURCES}, got {out['test_sources']}")
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
    if not 0.5 <= float(out["classifier_min"]) < 1:
        raise ValueError(f"tail probe: classifier_min must be in [0.5, 1), got {out['classifier_min']}")
    return out


def version_of(cfg: dict) -> int:
    """The generator version of a (resolved or raw) config: 3 unless it names another."""
    return int((cfg or {}).get("version", VERSION))


def conditions_of(cfg: dict) -> tuple[str, ...]:
    return CONDITIONS if version_of(cfg) == 3 else CONDITIONS_V4


def key(sentence: str) -> str:
    """Comparison key for deduplication and split hygiene: case- and whitespace-insensitive."""
    return " ".join(sentence.split()).casefold()


def review_sentences(text: str) -> list[str]:
    """The normalised sentences of a review, in order (pysbd via :func:`sentence_spans`)."""
    sents = (normalise(text[s:e]) for s, e in sentence_spans(text))
    return [s for s in sents if s]


_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def quick_last_sentence(text: str, tail_chars: int = 800) -> str:
    """A fast guess at the review's last sentence (a regular-expression split of its normalised tail).

    pysbd takes ~15 ms a review; this takes ~30 µs and agrees with it on ~90% of reviews. It only
    pre-selects candidates: a verdict must equal pysbd's last sentence (:func:`review_sentences`).
    """
    parts = _BOUNDARY.split(normalise(text[-tail_chars:]))
    return parts[-1].strip()


def quick_first_sentence(text: str, head_chars: int = 800) -> str:
    """The mirror of :func:`quick_last_sentence`: a fast guess at the review's first sentence."""
    parts = _BOUNDARY.split(normalise(text[:head_chars]))
    return parts[0].strip()


_ABBREV = "".join(
    rf"(?<!\b{a})" for a in (r"Mr\.", r"Mrs\.", r"Ms\.", r"Dr\.", r"St\.", r"Jr\.", r"Sr\.", r"vs\.", r"No\.", r"Vol\.",
                            r"i\.e\.", r"e\.g\.")
) + r"(?<!\s[A-Z]\.)"
_SENTENCE_BOUNDARY = re.compile(_ABBREV + r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Fast sentence split for bodies (a regular expression with an abbreviation guard; ~20x faster
    than pysbd, same sentence count on IMDB). Text normalised as in :func:`normalise`."""
    return [p.strip() for p in _SENTENCE_BOUNDARY.split(normalise(text)) if p.strip()]


def review_id(split: str, label: int, imdb_id: int) -> str:
    """A review's id, unique across IMDB (its ``id`` is only unique per split and label)."""
    return f"{split}-{'pos' if label == 1 else 'neg'}-{imdb_id}"


_FILM = re.compile(r"(tt\d+)")


def film_id(url: str) -> str:
    """IMDB title id (``tt0012345``) of a review's ``url``; the url itself if it has none."""
    m = _FILM.search(str(url))
    return m.group(1) if m else str(url)


vader = vader_analyzer  # the shared scorers (poolbench.polarity), under this package's names
afinn = afinn_lexicon


def check_tokenizers(tokenizers: dict) -> None:
    if not tokenizers:
        raise ValueError("tail probe: give at least one tokenizer (name -> fast tokenizer)")
    slow = [name for name, tok in tokenizers.items() if not getattr(tok, "is_fast", False)]
    if slow:
        raise ValueError(f"tail probe: tokenizers {slow} are not fast tokenizers (offset mappings are needed)")


def lengths(tokenizers: dict, texts: list[str], special: bool) -> np.ndarray:
    """Token counts, shape (n_tokenizers, n_texts), tokenizers in dict order."""
    rows = []
    for tok in tokenizers.values():
        ids = tok(texts, add_special_tokens=special, verbose=False)["input_ids"]
        rows.append([len(x) for x in ids])
    return np.asarray(rows, dtype=np.int64).reshape(len(tokenizers), len(texts))


def n_special(tokenizers: dict) -> np.ndarray:
    return np.asarray([tok.num_special_tokens_to_add() for tok in tokenizers.values()], dtype=np.int64)


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


def remove_span(text: str, start: int, end: int) -> str:
    """``text`` without ``[start, end)``, the joining spaces tidied: the body alone."""
    return " ".join((text[:start].rstrip() + " " + text[end:].lstrip()).split())


def verdict_texts(df) -> list[str]:
    return [t[s:e] for t, s, e in zip(df["text"], df["verdict_start"], df["verdict_end"])]


def verdicts_of(df):
    """One row per distinct verdict: verdict_review_id, verdict (text), label."""
    import pandas as pd

    out = pd.DataFrame({"verdict_review_id": df["verdict_review_id"], "verdict": verdict_texts(df), "label": df["label"]})
    return out.drop_duplicates("verdict_review_id").sort_values("verdict_review_id").reset_index(drop=True)


def bodies_of(df):
    """Each example's text with the verdict removed."""
    import pandas as pd

    return pd.Series(
        [remove_span(t, s, e) for t, s, e in zip(df["text"], df["verdict_start"], df["verdict_end"])],
        index=df.index,
    )
