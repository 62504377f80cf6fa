"""Our poolings + ClassifierHead reproduce Hugging Face's *ForSequenceClassification logits.

Tiny randomly initialised models built from configs (no downloads), eval mode. The hidden
states come from the same forward call as the reference logits, so what is tested is that our
pooling picks/transforms the same token the HF class does.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from poolbench.pooling import ClassifierHead, PoolingContext, build_pooling

VOCAB, HIDDEN, LAYERS, HEADS, LABELS = 100, 64, 2, 4, 3
PAD = 0
LENGTHS = (9, 4, 7, 1)


def make_batch(side: str, first_token: int | None = None, last_token: int | None = None):
    """Token ids in 1..VOCAB-1 (never PAD) with PAD at pad positions, and the attention mask."""
    gen = torch.Generator().manual_seed(0)
    T = max(LENGTHS) + 2
    input_ids = torch.full((len(LENGTHS), T), PAD)
    mask = torch.zeros(len(LENGTHS), T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        ids = torch.randint(1, VOCAB, (n,), generator=gen)
        if first_token is not None:
            ids[0] = first_token
        if last_token is not None and n > 1:
            ids[-1] = last_token
        span = slice(0, n) if side == "right" else slice(T - n, T)
        input_ids[b, span] = ids
        mask[b, span] = 1
    return input_ids, mask


def test_pooler_matches_bert_for_sequence_classification():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=128, max_position_embeddings=64, num_labels=LABELS, pad_token_id=PAD,
    )
    model = BertForSequenceClassification(config).eval()
    input_ids, mask = make_batch("right", first_token=2, last_token=3)  # [CLS] ... [SEP]
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=mask).logits
        bert_out = model.bert(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    hidden = bert_out.hidden_states
    ctx = PoolingContext(hidden_size=HIDDEN, num_layers=len(hidden), family="encoder", pooler=model.bert.pooler)
    pooling = build_pooling("pooler", ctx).eval()
    head = ClassifierHead(HIDDEN, num_labels=LABELS).eval()
    head.linear.load_state_dict(model.classifier.state_dict())
    with torch.no_grad():
        logits = head(pooling(hidden, mask))
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64,
        num_labels=LABELS, pad_token_id=PAD,
    )
    return LlamaForSequenceClassification(config).eval()


def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64,
        num_labels=LABELS, pad_token_id=PAD, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )
    return GPT2ForSequenceClassification(config).eval()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("make_model", [llama, gpt2])
def test_last_matches_decoder_for_sequence_classification(make_model, side):
    model = make_model()
    input_ids, mask = make_batch(side)
    fwd = {}
    if side == "left":  # positions count real tokens only, as in generation with left padding
        fwd["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, **fwd)
    hidden = out.hidden_states
    with torch.no_grad():  # hidden_states[-1] is the final (normed) layer the score head reads
        last_hidden = model.base_model(input_ids=input_ids, attention_mask=mask, **fwd).last_hidden_state
    assert torch.equal(hidden[-1], last_hidden)
    ctx = PoolingContext(hidden_size=HIDDEN, num_layers=2, family="decoder")
    pooling = build_pooling("last", ctx).eval()
    head = ClassifierHead(HIDDEN, num_labels=LABELS, bias=False).eval()
    head.linear.load_state_dict(model.score.state_dict())
    with torch.no_grad():
        logits = head(pooling(hidden[-2:], mask))
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


def test_last_token_vector_does_not_depend_on_padding_side():
    """With position ids counting real tokens, a decoder's last-token vector is the same for left/right padding."""
    model = llama()
    results = []
    for side in ("left", "right"):
        input_ids, mask = make_batch(side)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.no_grad():
            hidden = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                           output_hidden_states=True).hidden_states
        pooling = build_pooling("last", PoolingContext(hidden_size=HIDDEN, num_layers=1, family="decoder"))
        with torch.no_grad():
            results.append(pooling(hidden[-1:], mask))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)
