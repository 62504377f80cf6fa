"""Text utilities shared by every stage: HTML clean-up and sentence splitting.

Sentence boundaries are character spans in the *original* text, so they can be mapped to tokens
through a fast tokenizer's offsets (see :mod:`poolbench.encoding`) and used to locate spans
such as the tail probe's verdict.
"""

from __future__ import annotations

import functools
import re

_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)


def clean(text: str) -> str:
    """Blank out IMDB's ``<br />`` tags with as many spaces, so character offsets are unchanged."""
    return _BR.sub(lambda m: " " * len(m.group(0)), text)


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, whitespace trimmed.

    Uses pysbd (rule-based, deterministic). ``<br />`` tags count as whitespace; the spans
    index the original ``text``.
    """
    cleaned = clean(text)
    spans = []
    for seg in _segmenter().segment(cleaned):
        start, end = seg.start, seg.end
        while start < end and cleaned[start].isspace():
            start += 1
        while end > start and cleaned[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table or paragraph (datasheets)."""
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def highlight(text: str, start: int, end: int, context: int = 240) -> str:
    """Markdown of ``text`` with ``text[start:end]`` in bold, each side cut to ``context`` characters."""
    before, after = text[:start], text[end:]
    if len(before) > context:
        before = "…" + before[-context:]
    if len(after) > context:
        after = after[:context] + "…"
    return f"{md_escape(before)}**{md_escape(text[start:end])}**{md_escape(after)}"
