"""Tests for poolbench.pooling.

The generic tests are parametrized over every registered pooling and every family it applies
to, so a newly registered class is covered without touching this file.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertPooler

from poolbench.pooling import (
    FAMILIES,
    POOLINGS,
    ClassifierHead,
    Pooling,
    PoolingContext,
    applicable,
    build_pooling,
    register,
)

H = 16  # hidden size
K = 4  # layers handed to the pooling (layers_concat's default k)
LENGTHS = (9, 14, 2, 1, 6)  # real tokens per example; 2 = [CLS][SEP] only, 1 = a single token

CASES = [
    pytest.param(name, family, id=f"{name}-{family}")
    for name in POOLINGS
    for family in FAMILIES
    if applicable(name, family)
]


# ---------------------------------------------------------------------------------------------
# Helpers: examples are built once, then padded in various ways, so padded batches of the same
# examples must give the same pooled vectors.
# ---------------------------------------------------------------------------------------------


def make_pooler(seed: int = 123) -> nn.Module:
    torch.manual_seed(seed)
    return BertPooler(BertConfig(hidden_size=H, num_attention_heads=2, intermediate_size=32))


def make_ctx(family: str, num_layers: int = K, **kwargs) -> PoolingContext:
    pooler = make_pooler() if family == "encoder" else None
    return PoolingContext(hidden_size=H, num_layers=num_layers, family=family, pooler=pooler, **kwargs)


def build(name: str, family: str, seed: int = 0, **kwargs) -> Pooling:
    torch.manual_seed(seed)
    return build_pooling(name, make_ctx(family, **kwargs)).eval()


def sentence_ids_for(length: int, family: str, gen: torch.Generator) -> torch.Tensor:
    """Realistic ids: encoders have [CLS] ... [SEP], decoders a BOS; specials are -1."""
    ids = torch.full((length,), -1, dtype=torch.long)
    start, end = (1, length - 1) if family == "encoder" else (1, length)
    pos, sentence = start, 0
    while pos < end:
        n = int(torch.randint(1, 6, (1,), generator=gen))
        ids[pos : min(pos + n, end)] = sentence
        pos, sentence = pos + n, sentence + 1
    return ids


def make_examples(family: str, lengths=LENGTHS, seed: int = 0, num_layers: int = K):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(num_layers, n, H, generator=gen), sentence_ids_for(n, family, gen)) for n in lengths
    ]


def collate(examples, side: str = "right", extra: int = 0, fill="zero", seed: int = 0):
    """Pad examples to max length + extra on `side`; pad states are 0, huge, NaN or random."""
    num_layers = examples[0][0].shape[0]
    T = max(states.shape[1] for states, _ in examples) + extra
    B = len(examples)
    gen = torch.Generator().manual_seed(seed)
    if fill == "random":
        hidden = torch.randn(num_layers, B, T, H, generator=gen) * 1e3
    else:
        value = {"zero": 0.0, "huge": 1e30, "-huge": -1e30, "nan": float("nan")}[fill]
        hidden = torch.full((num_layers, B, T, H), value)
    mask = torch.zeros(B, T, dtype=torch.long)
    sentence_ids = torch.full((B, T), -1, dtype=torch.long)
    for b, (states, sids) in enumerate(examples):
        n = states.shape[1]
        span = slice(0, n) if side == "right" else slice(T - n, T)
        hidden[:, b, span] = states
        mask[b, span] = 1
        sentence_ids[b, span] = sids
    return list(hidden.unbind(0)), mask, sentence_ids


def run(pool: Pooling, batch) -> torch.Tensor:
    hidden, mask, sentence_ids = batch
    with torch.no_grad():
        return pool(hidden, mask, sentence_ids)


def assert_close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


# ---------------------------------------------------------------------------------------------
# Generic properties, for every registered pooling
# ---------------------------------------------------------------------------------------------


def test_registry_is_documented():
    assert set(POOLINGS) >= {
        "cls", "pooler", "mean", "max", "weighted_mean", "last", "attention", "layers_concat", "hierarchical"
    }
    for name, cls in POOLINGS.items():
        assert cls.name == name
        assert cls.__doc__ and cls.__doc__.strip(), f"pooling {name!r} needs a docstring"
        assert set(cls.families) <= set(FAMILIES) and cls.families


@pytest.mark.parametrize("name,family", CASES)
def test_output_shape_dtype_finite(name, family):
    pool = build(name, family)
    out = run(pool, collate(make_examples(family)))
    assert out.shape == (len(LENGTHS), pool.output_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,family", CASES)
def test_padding_invariance(name, family):
    pool = build(name, family)
    examples = make_examples(family)
    ref = run(pool, collate(examples, "right"))
    for side in ("left", "right"):
        for extra in (0, 5):
            assert_close(run(pool, collate(examples, side, extra)), ref)
    for b, example in enumerate(examples):  # each example alone, unpadded
        assert_close(run(pool, collate([example]))[0], ref[b])


@pytest.mark.parametrize("name,family", CASES)
@pytest.mark.parametrize("fill", ["huge", "-huge", "nan", "random"])
def test_pad_values_do_not_leak(name, family, fill):
    pool = build(name, family)
    examples = make_examples(family)
    for side in ("left", "right"):
        ref = run(pool, collate(examples, side, extra=3))
        out = run(pool, collate(examples, side, extra=3, fill=fill))
        assert_close(out, ref, tol=1e-6)


@pytest.mark.parametrize("name,family", CASES)
def test_row_without_real_tokens_is_finite(name, family):
    pool = build(name, family)
    hidden, mask, sentence_ids = collate(make_examples(family), "right", 2, fill="random")
    mask[1] = 0
    sentence_ids[1] = -1
    assert torch.isfinite(run(pool, (hidden, mask, sentence_ids))).all()


@pytest.mark.parametrize("name,family", CASES)
def test_batch_order_invariance(name, family):
    pool = build(name, family)
    examples = make_examples(family)
    perm = [3, 0, 4, 2, 1]
    ref = run(pool, collate(examples, "left", 2))
    out = run(pool, collate([examples[i] for i in perm], "left", 2))
    assert_close(out, ref[perm])


@pytest.mark.parametrize("name,family", CASES)
def test_gradients_reach_parameters_not_pads(name, family):
    pool = build(name, family).train()
    hidden, mask, sentence_ids = collate(make_examples(family), "left", 2)
    hidden = [h.clone().requires_grad_(True) for h in hidden]
    out = pool(hidden, mask, sentence_ids)
    loss = (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum()
    loss.backward()
    for pname, param in pool.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{pname} has non-finite gradient"
            assert param.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"
    final = hidden[-1].grad
    assert final is not None and torch.isfinite(final).all()
    assert final[mask.bool()].abs().sum() > 0
    for h in hidden:
        if h.grad is not None:
            assert (h.grad[~mask.bool()] == 0).all(), "gradient flows into pad positions"


@pytest.mark.parametrize("name,family", CASES)
def test_determinism(name, family):
    batch = collate(make_examples(family), "right", 1)
    a, b = build(name, family, seed=7), build(name, family, seed=7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    out = run(a, batch)
    assert torch.equal(out, run(b, batch))
    assert torch.equal(out, run(a, batch))


@pytest.mark.parametrize("name,family", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_pool_in_fp32(name, family, dtype):
    pool = build(name, family)
    hidden, mask, sentence_ids = collate(make_examples(family), "left", 2)
    half = [h.to(dtype) for h in hidden]
    out = run(pool, (half, mask, sentence_ids))
    assert out.dtype == torch.float32
    assert torch.equal(out, run(pool, ([h.float() for h in half], mask, sentence_ids)))


# ---------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------

# Example 0: right-padded, 3 real tokens. Example 1: left-padded, 2 real tokens, all-negative
# first dimension (so a pad value 0 would wrongly win a max). Pad states are garbage.
HAND_HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, -1.0], [5.0, 0.0], [100.0, 100.0]],
        [[50.0, -50.0], [0.0, 0.0], [-2.0, 4.0], [-6.0, 1.0]],
    ]
)
HAND_MASK = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
HAND_EXPECTED = {
    "cls": [[1.0, 2.0], [-2.0, 4.0]],
    "last": [[5.0, 0.0], [-6.0, 1.0]],
    "mean": [[3.0, 1 / 3], [-4.0, 2.5]],
    "max": [[5.0, 2.0], [-2.0, 4.0]],
    # weights 1,2,3 and 1,2 over the real tokens
    "weighted_mean": [[22 / 6, 0.0], [-14 / 3, 2.0]],
}


@pytest.mark.parametrize("name", sorted(HAND_EXPECTED))
@pytest.mark.parametrize("family", FAMILIES)
def test_hand_computed_values(name, family):
    ctx = PoolingContext(hidden_size=2, num_layers=1, family=family)
    out = build_pooling(name, ctx)([HAND_HIDDEN], HAND_MASK)
    assert_close(out, torch.tensor(HAND_EXPECTED[name]), tol=1e-6)


def test_attention_matches_loop_reference():
    pool = build("attention", "decoder")
    examples = make_examples("decoder")
    out = run(pool, collate(examples, "left", 3))
    with torch.no_grad():
        for b, (states, _) in enumerate(examples):
            h = states[-1]
            w = torch.softmax(pool.scorer(h).squeeze(-1), dim=0)
            assert_close(out[b], w @ h)


def hierarchical_reference(pool, states, sids):
    """Per-example loop implementation of hierarchical pooling on the unpadded example."""
    h = states[-1]
    vectors = []
    for s in sorted(set(sids.tolist()) - {-1}):
        hs = h[sids == s]
        w = torch.softmax(pool.token_scorer(hs).squeeze(-1), dim=0)
        vectors.append(w @ hs)
    if not vectors:
        return h.mean(dim=0)
    v = torch.stack(vectors)
    w = torch.softmax(pool.sentence_scorer(v).squeeze(-1), dim=0)
    return w @ v


@pytest.mark.parametrize("family", FAMILIES)
def test_hierarchical_matches_loop_reference(family):
    pool = build("hierarchical", family)
    examples = make_examples(family, lengths=(30, 14, 2, 1, 6, 22))
    out = run(pool, collate(examples, "right", 2))
    with torch.no_grad():
        for b, (states, sids) in enumerate(examples):
            assert_close(out[b], hierarchical_reference(pool, states, sids))


def test_hierarchical_one_sentence_equals_token_attention():
    attention = build("attention", "encoder")
    hier = build("hierarchical", "encoder", seed=1)
    hier.token_scorer.load_state_dict(attention.scorer.state_dict())
    hidden, mask, _ = collate(make_examples("encoder", lengths=(8, 5, 11)), "left", 2)
    sentence_ids = torch.full_like(mask, -1)
    for b in range(mask.shape[0]):
        real = mask[b].nonzero().squeeze(-1)
        sentence_ids[b, real[1:-1]] = 0  # everything between [CLS] and [SEP]
    out = run(hier, (hidden, mask, sentence_ids))
    ref = run(attention, (hidden, mask * (sentence_ids == 0), None))
    assert_close(out, ref)


def test_hierarchical_without_sentences_falls_back_to_mean():
    hier = build("hierarchical", "encoder")
    mean = build("mean", "encoder")
    hidden, mask, sentence_ids = collate(make_examples("encoder", lengths=(2, 7, 4)), "right", 1)
    sentence_ids[:] = -1  # no example has any sentence
    out = run(hier, (hidden, mask, sentence_ids))
    assert torch.isfinite(out).all()
    assert_close(out, run(mean, (hidden, mask, None)))


def test_hierarchical_ignores_sentence_ids_on_pads():
    hier = build("hierarchical", "decoder")
    hidden, mask, sentence_ids = collate(make_examples("decoder"), "left", 3)
    ref = run(hier, (hidden, mask, sentence_ids))
    sentence_ids = sentence_ids.masked_fill(mask == 0, 9)
    assert_close(run(hier, (hidden, mask, sentence_ids)), ref)


def test_hierarchical_requires_sentence_ids():
    hier = build("hierarchical", "encoder")
    hidden, mask, _ = collate(make_examples("encoder"))
    with pytest.raises(ValueError, match="sentence_ids"):
        hier(hidden, mask)


# ---------------------------------------------------------------------------------------------
# layers_concat and pooler specifics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family,token", [("encoder", "auto"), ("decoder", "auto"), ("decoder", "first"),
                                          ("encoder", "last"), ("encoder", "mean")])
def test_layers_concat_values(family, token):
    pool = build("layers_concat", family, options={"layers": 2, "token": token})
    assert pool.output_dim == 2 * H
    examples = make_examples(family)
    out = run(pool, collate(examples, "left", 2))
    if token == "auto":
        token = "first" if family == "encoder" else "last"
    for b, (states, _) in enumerate(examples):
        picked = {"first": states[-2:, 0], "last": states[-2:, -1], "mean": states[-2:].mean(dim=1)}[token]
        assert_close(out[b], picked.reshape(-1))  # oldest layer first, final layer last


def test_layers_concat_option_errors():
    with pytest.raises(ValueError, match="layers=5"):
        build_pooling("layers_concat", make_ctx("decoder", options={"layers": 5}))
    with pytest.raises(ValueError, match="layers=4"):  # the default k=4 with only 2 layers
        build_pooling("layers_concat", make_ctx("decoder", num_layers=2))
    with pytest.raises(ValueError, match="token"):
        build_pooling("layers_concat", make_ctx("decoder", options={"token": "middle"}))
    with pytest.raises(ValueError, match="laers"):
        build_pooling("layers_concat", make_ctx("decoder", options={"laers": 2}))
    with pytest.raises(ValueError, match="unknown option"):
        build_pooling("mean", make_ctx("decoder", options={"layers": 2}))


def test_pooler_applies_pretrained_pooler_to_first_real_token():
    ctx = make_ctx("encoder")
    pool = build_pooling("pooler", ctx).eval()
    examples = make_examples("encoder")
    out = run(pool, collate(examples, "left", 2))
    with torch.no_grad():
        cls_states = torch.stack([states[-1, 0] for states, _ in examples])
        assert_close(out, ctx.pooler(cls_states.unsqueeze(1)))


def test_pooler_is_a_copy_and_freezable():
    ctx = make_ctx("encoder")
    pool = build_pooling("pooler", ctx)
    assert all(p.requires_grad for p in pool.parameters())
    with torch.no_grad():
        ctx.pooler.dense.weight.add_(1.0)  # the backbone's pooler changes; ours must not
    assert not torch.equal(pool.pooler.dense.weight, ctx.pooler.dense.weight)
    frozen = build_pooling("pooler", make_ctx("encoder", freeze_pretrained=True))
    assert not any(p.requires_grad for p in frozen.parameters())
    ctx.pooler.requires_grad_(False)  # a frozen backbone does not freeze our copy unless asked
    assert all(p.requires_grad for p in build_pooling("pooler", ctx).parameters())


# ---------------------------------------------------------------------------------------------
# Registry, errors, head
# ---------------------------------------------------------------------------------------------


def test_build_pooling_errors():
    with pytest.raises(ValueError, match="'nonexistent'.*known poolings: .*mean"):
        build_pooling("nonexistent", make_ctx("encoder"))
    with pytest.raises(ValueError, match="encoder backbones only"):
        build_pooling("pooler", make_ctx("decoder"))
    with pytest.raises(ValueError, match="no pretrained pooler"):
        build_pooling("pooler", PoolingContext(hidden_size=H, num_layers=1, family="encoder"))
    with pytest.raises(ValueError, match="family"):
        PoolingContext(hidden_size=H, num_layers=1, family="seq2seq")


def test_applicable():
    assert applicable("pooler", "encoder") and not applicable("pooler", "decoder")
    assert applicable("mean", "encoder") and applicable("last", "decoder")
    with pytest.raises(ValueError, match="'nonexistent'"):
        applicable("nonexistent", "encoder")
    with pytest.raises(ValueError, match="family"):
        applicable("mean", "seq2seq")


def test_register_new_pooling():
    @register("_test_min")
    class MinPooling(Pooling):
        """Masked minimum."""

        families = ("decoder",)

        def forward(self, hidden_states, attention_mask, sentence_ids=None):
            h = hidden_states[-1].masked_fill(~attention_mask.bool().unsqueeze(-1), float("inf"))
            return h.amin(dim=1)

    try:
        assert POOLINGS["_test_min"] is MinPooling and MinPooling.name == "_test_min"
        assert applicable("_test_min", "decoder") and not applicable("_test_min", "encoder")
        pool = build_pooling("_test_min", make_ctx("decoder"))
        out = pool([HAND_HIDDEN], HAND_MASK)
        assert_close(out, torch.tensor([[1.0, -1.0], [-6.0, 1.0]]))
        with pytest.raises(ValueError, match="already registered"):
            register("_test_min")(MinPooling)
        with pytest.raises(TypeError):
            register("_test_not_a_pooling")(nn.Linear)
    finally:
        POOLINGS.pop("_test_min", None)


def test_classifier_head():
    head = ClassifierHead(8, num_labels=3, dropout=0.5).eval()
    assert isinstance(head.dropout, nn.Dropout) and isinstance(head.linear, nn.Linear)
    x = torch.randn(4, 8)
    assert_close(head(x), head.linear(x))
    assert head(x).shape == (4, 3)
    assert ClassifierHead(8, bias=False).linear.bias is None
