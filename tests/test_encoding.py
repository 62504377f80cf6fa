"""Truncation strategies, special tokens and sentence ids (real tokenizers)."""

from __future__ import annotations

import numpy as np
import pytest

from poolbench.encoding import TRUNCATIONS, encode, keep_window
from poolbench.models import load_tokenizer
from poolbench.text import clean, sentence_spans

LONG = " ".join(f"Sentence number {i} is here." for i in range(80)) + " <br /><br />The ending was superb!"


@pytest.fixture(scope="module")
def bert_tok(bundled):
    return load_tokenizer(bundled("minilm-l6", tokenizer_only=True))


@pytest.fixture(scope="module")
def smol_tok(bundled):
    return load_tokenizer(bundled("smollm2-135m", tokenizer_only=True))


@pytest.mark.parametrize("truncation", TRUNCATIONS)
@pytest.mark.parametrize("max_len", [16, 64, 512])
def test_encoder_input_is_framed_by_cls_and_sep(bert_tok, truncation, max_len):
    for text in (LONG, "Short and sweet."):
        enc = encode(text, bert_tok, truncation, max_len)
        tokens = bert_tok.convert_ids_to_tokens(enc.input_ids.tolist())
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert tokens.count("[CLS]") == 1 and tokens.count("[SEP]") == 1
        assert len(tokens) <= max_len
        assert enc.sentence_ids[0] == -1 and enc.sentence_ids[-1] == -1 and (enc.sentence_ids[1:-1] >= 0).all()


def test_truncation_keeps_the_right_end(bert_tok):
    head = bert_tok.decode(encode(LONG, bert_tok, "head", 32).input_ids[1:-1])
    tail = bert_tok.decode(encode(LONG, bert_tok, "tail", 32).input_ids[1:-1])
    both = bert_tok.decode(encode(LONG, bert_tok, "head_tail", 32).input_ids[1:-1])
    assert head.startswith("sentence number 0") and "superb" not in head
    assert tail.endswith("the ending was superb!") and "number 0 " not in tail
    assert both.startswith("sentence number 0") and both.endswith("superb!")
    assert "<" not in head + tail + both, "<br /> tags are blanked out before tokenisation"


def test_keep_window_sizes():
    assert len(keep_window(10, 20, "head")) == 10
    for t in TRUNCATIONS:
        kept = keep_window(1000, 100, t)
        assert len(kept) == 100 and len(set(kept)) == 100 and (np.diff(kept) > 0).all()
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        keep_window(10, 5, "middle")


def test_sentence_ids_follow_the_text(smol_tok):
    text = "I loved it.<br /><br />But the end was bad! Really bad."
    enc = encode(text, smol_tok, "head", 64)
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["I loved it.", "But the end was bad!", "Really bad."]
    # Every token's non-blank characters fall inside the sentence it is assigned to.
    cleaned = clean(text)
    for (a, b), s in zip(enc.offsets, enc.sentence_ids):
        piece = cleaned[a:b]
        if piece.strip():
            lo, hi = spans[s]
            assert lo <= a + len(piece) - len(piece.lstrip()) and b <= hi
    assert sorted(set(enc.sentence_ids.tolist())) == [0, 1, 2]
