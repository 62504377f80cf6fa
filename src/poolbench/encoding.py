"""Tokenisation with truncation strategies, special tokens, and per-token sentence ids.

``encode`` is the one place where text becomes model input. Truncation happens on the text tokens
*before* special tokens are added, so an encoder's input always starts with [CLS] and ends with
[SEP] (or the model's equivalents), whatever the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .text import clean, sentence_spans

TRUNCATIONS = ("head", "tail", "head_tail")


@dataclass
class Encoded:
    input_ids: np.ndarray      # (T,) int64, special tokens included
    sentence_ids: np.ndarray   # (T,) int32: sentence index of each token, -1 for special tokens
    offsets: np.ndarray        # (T, 2) int64 character span in the text, (-1, -1) for special tokens


def _special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP])."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain):])
    raise ValueError(f"cannot locate the text tokens inside {type(tokenizer).__name__}'s special-token frame")


def keep_window(n: int, budget: int, truncation: str) -> np.ndarray:
    """Indices of the ``n`` text tokens kept under ``truncation`` with room for ``budget`` tokens."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {truncation!r}; expected one of {TRUNCATIONS}")
    if n <= budget:
        return np.arange(n)
    if truncation == "head":
        return np.arange(budget)
    if truncation == "tail":
        return np.arange(n - budget, n)
    head = budget // 4  # Sun et al. (2019) keep 128 head + 382 tail tokens of 510
    return np.concatenate([np.arange(head), np.arange(n - (budget - head), n)])


def encode(text: str, tokenizer, truncation: str = "head", max_len: int = 256) -> Encoded:
    """Token ids of ``text`` (at most ``max_len`` including special tokens) and sentence ids."""
    # <br /> tags are blanked out (same length, so offsets still index the original text).
    enc = tokenizer(clean(text), add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    # Sentence of each token: the last sentence starting at or before the token's last character
    # (byte-level BPE tokens such as "ĠBut" start on the preceding space).
    spans = sentence_spans(text)
    starts = np.array([s for s, _ in spans] or [0])
    sent = np.searchsorted(starts, offsets[:, 1] - 1, side="right").astype(np.int32) - 1
    sent = np.maximum(sent, 0) if len(spans) else np.full(len(ids), -1, np.int32)

    before, after = _special_frame(tokenizer)
    budget = max_len - len(before) - len(after)
    if budget < 1:
        raise ValueError(f"max_len {max_len} leaves no room for text after the special tokens")
    keep = keep_window(len(ids), budget, truncation)
    ids, sent, offsets = ids[keep], sent[keep], offsets[keep]
    # Renumber sentences 0..S-1 within the kept window.
    if len(sent):
        _, sent = np.unique(sent, return_inverse=True)
    nb, na = len(before), len(after)
    return Encoded(
        input_ids=np.concatenate([before, ids, after]).astype(np.int64),
        sentence_ids=np.concatenate([np.full(nb, -1), sent, np.full(na, -1)]).astype(np.int32),
        offsets=np.concatenate([np.full((nb, 2), -1), offsets, np.full((na, 2), -1)]).astype(np.int64),
    )
