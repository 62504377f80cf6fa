"""One architecture adapter (poolbench.arch): every path gives each model's own hidden states.

Tiny random BERT, RoBERTa, GPT-2 and Llama base models (3 layers, hidden 32; no downloads) and the
word-level fast tokenizer of conftest. The reference is the model's own forward on each example
alone (no padding, default position ids, ``output_hidden_states``). Against it, under left and
right padding: the live path (``features.backbone_hidden_states``, what the finetune regime runs),
the cached path (``features.extract`` + ``FeatureSet``) and the top-k path (``TopLayers`` from the
cached entry state). RoBERTa's positions start at ``padding_idx + 1``; GPT-2's final state is after
``ln_f``. The export mapping (``arch.export_name``) is checked by loading a run's weights into the
``*ForSequenceClassification`` of its type and comparing logits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from poolbench import arch
from poolbench.encoding import encode
from poolbench.features import FeatureSet, backbone_hidden_states, extract, pad_batch
from poolbench.topk import TopLayers
from poolbench.train import TrainConfig, build_topk_classifier

from conftest import WORDS
from conftest import word_tokenizer

TYPES = ["bert", "roberta", "gpt2", "llama"]
L, H, MAX_LEN = 3, 32, 24
SIDES = ["right", "left"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tokenizer(model_type: str):
    return word_tokenizer(encoder=arch.get(model_type).family == "encoder")


def model(model_type: str):
    tok = tokenizer(model_type)
    return arch.random_model(model_type, len(tok), tok.pad_token_id, hidden=H, layers=L, heads=4, seed=0).eval()


def frame(n: int = 7, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(" ".join(rng.choice(WORDS, rng.integers(2, 6))) + "." for _ in range(rng.integers(1, 4)))
             for _ in range(n)]
    return pd.DataFrame({"id": [f"x{i}" for i in range(n)], "text": texts, "label": [i % 2 for i in range(n)]})


def reference(bb, ids: list[np.ndarray]) -> list[list[torch.Tensor]]:
    """The model's own forward on each row alone: its L+1 hidden states, each (n, H)."""
    out = []
    with torch.no_grad():
        for row in ids:
            x = torch.from_numpy(row)[None]
            hs = bb(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True).hidden_states
            out.append([h[0] for h in hs])
    return out


def real(states: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
    return states[i][mask[i].bool()]


@pytest.fixture(scope="module", params=TYPES)
def case(request, tmp_path_factory):
    """(model type, backbone, token ids per row, reference states, float32 cache folder)."""
    t = request.param
    bb, tok, df = model(t), tokenizer(t), frame()
    ids = [encode(text, tok, "head", MAX_LEN).input_ids for text in df["text"]]
    assert len({len(x) for x in ids}) > 2  # rows of several lengths: padding happens
    cache = tmp_path_factory.mktemp(f"cache-{t}")
    extract(df, bb, tok, cache, truncation="head", max_len=MAX_LEN, layers=L + 1, dtype="float32",
            max_batch_tokens=64)  # several forward batches, each padded on the right
    return t, bb, ids, reference(bb, ids), cache


def test_adapter_reads_sizes_and_parts_from_the_model():
    for t in TYPES:
        bb = model(t)
        a = arch.for_model(bb)
        assert a is arch.get(t) and a.model_type == t == bb.config.model_type
        assert arch.num_layers(bb) == L == len(arch.layers(bb))
        assert arch.max_positions(bb) == a.random_positions  # what config.model_max_positions assumes
        assert (arch.final_norm(bb) is not None) == (t in ("gpt2", "llama"))
        assert (arch.rotary(bb) is not None) == (t == "llama")
        assert dict(bb.named_modules())[a.layers] is arch.layers(bb)
    assert arch.get("roberta").first_position(model("roberta").config) == 1  # padding_idx 0, positions from 1
    with pytest.raises(ValueError, match="not 't5'"):
        arch.get("t5")


def test_positions_count_real_tokens_on_either_side():
    mask_r = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    mask_l = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    for t, first in (("bert", 0), ("roberta", 1), ("gpt2", 0), ("llama", 0)):
        cfg = model(t).config
        r, l_ = arch.position_ids(cfg, mask_r), arch.position_ids(cfg, mask_l)
        assert r[0, :3].tolist() == l_[0, 1:].tolist() == [first, first + 1, first + 2]
        assert r[1].tolist() == list(range(first, first + 4))


@pytest.mark.parametrize("side", SIDES)
def test_live_states_are_the_models_own(case, side):
    t, bb, ids, ref, _ = case
    x, mask = pad_batch(ids, tokenizer(t).pad_token_id, side)
    with torch.no_grad():
        states = backbone_hidden_states(bb, x, mask, L + 1)
    assert len(states) == L + 1
    for j, s in enumerate(states):
        for i in range(len(ids)):
            torch.testing.assert_close(real(s, mask, i), ref[i][j], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("side", SIDES)
def test_cached_states_are_the_models_own(case, side):
    t, bb, ids, ref, cache = case
    data = FeatureSet(cache, padding_side=side)
    assert data.state_indices == list(range(L + 1))
    batch = data.batch(np.arange(len(ids)))
    mask = batch["attention_mask"]
    for j, s in enumerate(batch["hidden_states"]):
        for i in range(len(ids)):
            torch.testing.assert_close(real(s, mask, i), ref[i][j], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("side", SIDES)
def test_top_layers_from_the_cache_are_the_models_own(case, side, k):
    t, bb, ids, ref, cache = case
    top = TopLayers(bb, k).eval()
    data = FeatureSet(cache, states=[L - k], padding_side=side)
    batch = data.batch(np.arange(len(ids)))
    mask = batch["attention_mask"]
    with torch.no_grad():
        outs = top(batch["hidden_states"][-1], mask)
    assert len(outs) == k
    for j, s in enumerate(outs):  # hidden_states[L-k+1 .. L], the last after a decoder's final norm
        for i in range(len(ids)):
            torch.testing.assert_close(real(s, mask, i), ref[i][L - k + 1 + j], atol=1e-5, rtol=1e-4)


# ---- export mapping ------------------------------------------------------------------------------

EXPORTS = [("bert", "pooler"), ("gpt2", "last"), ("llama", "last")]


@pytest.mark.parametrize("model_type,pooling", EXPORTS)
def test_export_names_load_a_topk_run_into_its_sequence_classifier(model_type, pooling):
    """A topk run's weights, mapped by ``export_name``, make the *ForSequenceClassification compute its logits."""
    from transformers import AutoModelForSequenceClassification

    assert model_type in arch.EXPORTABLE[pooling]
    bb, tok, k = model(model_type), tokenizer(model_type), 2
    family = arch.get(model_type).family
    clf = build_topk_classifier(pooling, family, bb, TrainConfig(trainable_layers=k, dropout=0.0), 1, k=k,
                                device=torch.device("cpu"))
    torch.manual_seed(3)
    with torch.no_grad():  # as if trained: every saved weight differs from the base model's
        for p in clf.parameters():
            p.add_(0.1 * torch.randn_like(p))
        clf.head.linear.bias.fill_(0.25)  # equal logit biases: decoders' score layers have none
    state = clf.state_dict()

    config = bb.config
    config.num_labels = 2
    hf = AutoModelForSequenceClassification.from_config(config).eval()
    hf.base_model.load_state_dict(bb.state_dict())
    target = dict(hf.base_model.named_parameters()) | dict(hf.base_model.named_buffers())
    head = hf.classifier if hasattr(hf, "classifier") else hf.score
    mapped = set()
    with torch.no_grad():
        for key, value in state.items():
            name = arch.export_name(key, config, k)
            if name is None:
                continue
            assert name in target and target[name].shape == value.shape, key
            target[name].copy_(value)
            mapped.add(key)
        head.weight.copy_(state["head.linear.weight"])
        if head.bias is not None:
            head.bias.copy_(state["head.linear.bias"])
    assert any(key.startswith("top.layers.") for key in mapped)
    if arch.final_norm(bb) is not None:
        assert any(key.startswith("top.norm.") for key in mapped)  # GPT-2: ln_f; Llama: norm

    ids = [encode(text, tok, "head", MAX_LEN).input_ids for text in frame()["text"]]
    x, mask = pad_batch(ids, tok.pad_token_id, "right")
    with torch.no_grad():
        entry = bb(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[L - k]
        ours = clf.eval()({"hidden_states": [entry], "attention_mask": mask})
        theirs = hf(input_ids=x, attention_mask=mask).logits
    if head.bias is None:
        theirs = theirs + 0.25
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert ours.std() > 1e-3


def test_a_finetune_runs_backbone_names_are_the_base_models():
    bb = model("gpt2")
    for key in ("backbone.h.1.attn.c_attn.weight", "backbone.ln_f.bias"):
        assert arch.export_name(key, bb.config, 0) == key[len("backbone."):]
    bert = model("bert").config
    assert arch.export_name("backbone.pooler.dense.weight", bert, 0) is None  # the pooling's copy ran
    assert arch.export_name("pooling.pooler.dense.weight", bert, 0) == "pooler.dense.weight"
    assert arch.export_name("top.layers.0.output.dense.bias", bert, 1) == f"encoder.layer.{L - 1}.output.dense.bias"
    assert arch.export_name("top.rotary_emb.inv_freq", model("llama").config, 1) is None
    assert arch.export_name("head.linear.weight", bert, 0) is None


@pytest.mark.parametrize("model_type", TYPES)
def test_a_random_source_of_every_type_materialises_and_verifies(model_type, tmp_path):
    """``source: random`` builds each type; the sizes the config assumes are the model's own."""
    from poolbench.config import model_layers, model_max_positions
    from poolbench.models import load_backbone, materialize, verify_spec

    tok_dir = tmp_path / "tok"
    tokenizer(model_type).save_pretrained(tok_dir)
    spec = {"family": arch.get(model_type).family,
            "source": {"type": "random", "arch": model_type, "tokenizer": "real", "hidden": H, "layers": L}}
    folder = materialize("tiny", spec, tmp_path / "model", tokenizer_dir=tok_dir)
    bb = load_backbone(folder)
    assert bb.config.model_type == model_type and arch.num_layers(bb) == model_layers(spec) == L
    assert arch.max_positions(bb) == model_max_positions(spec)
    verify_spec("tiny", {**spec, "layers": L, "max_positions": model_max_positions(spec)}, folder)


def test_the_schema_lets_a_random_source_name_every_adapter():
    import re
    from pathlib import Path

    schema = (Path(__file__).parents[1] / "workflow" / "config" / "schema.yaml").read_text()
    enum = re.search(r"arch: \{type: string, enum: \[([^\]]*)\]\}", schema)
    assert enum and {a.strip() for a in enum.group(1).split(",")} == set(arch.ARCHS)
