"""Where [CLS] looks (poolbench.attention): attention mass on the probe's verdict, per layer and pooling.

A tiny random BERT (transformers config, no downloads) with a word-level fast tokenizer saved as a
model folder; runs' weights are written by ``poolbench.run.save_weights`` as the pipeline does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from poolbench.attention import (cls_attention_mass, encode_examples, figure, pooling_attention_mass, summarise,
                                 verdict_mask)
from poolbench.encoding import encode
from poolbench.models import load_backbone
from poolbench.pooling import masked_softmax
from poolbench.run import save_weights
from poolbench.topk import TopLayers
from poolbench.train import TrainConfig, build_classifier, build_topk_classifier

from conftest import WORDS
from conftest import word_tokenizer as tokenizer

H, L, K, MAX_LEN = 32, 4, 2, 32


pytestmark = pytest.mark.usefixtures("one_thread")




def backbone(uniform: bool = False) -> BertModel:
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=70, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=128, pad_token_id=0)).eval()
    if uniform:  # zero queries and keys: every score is 0, so attention is uniform over real tokens
        with torch.no_grad():
            for layer in model.encoder.layer:
                for lin in (layer.attention.self.query, layer.attention.self.key):
                    lin.weight.zero_()
                    lin.bias.zero_()
    return model


def model_dir(tmp_path, uniform: bool = False):
    out = tmp_path / ("uniform" if uniform else "bert")
    backbone(uniform).save_pretrained(out, safe_serialization=True)
    tokenizer().save_pretrained(out)
    return out


def arch_dir(tmp_path, model_type: str):
    """A random base model of another architecture (poolbench.arch), saved with its tokenizer."""
    from poolbench import arch

    tok = tokenizer(arch.get(model_type).family == "encoder")
    out = tmp_path / model_type
    arch.random_model(model_type, len(tok), tok.pad_token_id, hidden=H, layers=L, heads=4).save_pretrained(out)
    tok.save_pretrained(out)
    return out, tok


def sentence(rng, n=None) -> str:
    return " ".join(rng.choice(WORDS, n or int(rng.integers(3, 7)))) + "."


def probe(n: int = 12, seed: int = 0, long_end: bool = False) -> pd.DataFrame:
    """Probe-like rows: a body of 1-4 sentences and one verdict sentence at the start, middle or end."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        position = ("start", "middle", "end")[i % 3]
        body = [sentence(rng) for _ in range(int(rng.integers(2, 5)) + (8 if long_end and position == "end" else 0))]
        verdict = sentence(rng)
        at = {"start": 0, "middle": len(body) // 2, "end": len(body)}[position]
        parts = body[:at] + [verdict] + body[at:]
        start = len(" ".join(parts[:at])) + (1 if at else 0)
        text = " ".join(parts)
        assert text[start:start + len(verdict)] == verdict
        rows.append({"id": f"p{i}", "text": text, "label": i % 2, "condition": ("agree", "contrast")[(i // 3) % 2],
                     "position": position, "length_bin": "long" if long_end and position == "end" else "short",
                     "verdict_start": start, "verdict_end": start + len(verdict)})
    return pd.DataFrame(rows)


def spec(regime: str, pooling: str = "attention", trainable_layers=None, kind: str | None = None,
         family: str = "encoder") -> dict:
    return {"run": {"dataset": "tailprobe", "model": "tiny-bert", "regime": regime, "truncation": "head",
                    "max_len": MAX_LEN, "pooling": pooling, "seed": 0}, "kind": kind or regime,
            "family": family, "regime": {"trainable_layers": trainable_layers or 0},
            "pooling": {"name": pooling, "version": 1, "options": {}}, "cache_layers": 1}


def topk_weights(tmp_path, pooling: str = "attention"):
    """A topk run's weights: the top K layers perturbed (as if trained), pooling and head."""
    model = build_topk_classifier(pooling, "encoder", backbone(), TrainConfig(trainable_layers=K), layers=1,
                                  device=torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.top.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = tmp_path / f"topk-{pooling}" / "model.safetensors"
    save_weights(model, path, spec("topk", pooling, {"tiny-bert": K}))
    return path, model


def frozen_weights(tmp_path):
    model = build_classifier("attention", "encoder", H, 1, TrainConfig(), None, None, device=torch.device("cpu"))
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.pooling.parameters():
            p.mul_(4.0)  # sharper weights than at init
    path = tmp_path / "frozen-attention" / "model.safetensors"
    save_weights(model, path, spec("frozen"))
    return path, model


# ---- verdict tokens --------------------------------------------------------------------------


def test_verdict_mask_marks_exactly_the_verdict_words():
    tok = tokenizer()
    for _, row in probe(9).iterrows():
        enc = encode(row["text"], tok, "head", MAX_LEN)
        mask = verdict_mask(enc, row["verdict_start"], row["verdict_end"])
        words = tok.convert_ids_to_tokens(enc.input_ids[mask].tolist())
        assert " ".join(words).replace(" .", ".") == row["text"][row["verdict_start"]:row["verdict_end"]]
        assert not mask[0] and not mask[-1]  # [CLS] and [SEP] never


def test_head_truncation_cuts_the_verdict_which_is_counted_not_averaged(tmp_path):
    rows = probe(12, long_end=True)
    items = encode_examples(rows, tokenizer(), "head", 16)
    cut = items["verdict_cut"].to_numpy()
    assert cut.any() and (rows.loc[cut, "position"] == "end").all()
    assert (items.loc[cut, "verdict_tokens"] == 0).all() and (items.loc[cut, "verdict_tokens_full"] > 0).all()
    assert not encode_examples(rows, tokenizer(), "tail", 16)["verdict_cut"][rows["position"] == "end"].any()

    folder = model_dir(tmp_path)
    df = cls_attention_mass(folder, rows, None, truncation="head", max_len=16)
    assert df.loc[df["verdict_cut"], "mass"].isna().all() and df.loc[~df["verdict_cut"], "mass"].notna().all()
    summary = summarise(df, n_boot=200)
    pooled = summary[(summary["layer"] == 1) & (summary["condition"] == "all") & (summary["position"] == "all")]
    first = df[df["layer"] == 1]
    assert pooled["n_cut"].item() == first["verdict_cut"].sum() == cut.sum()
    assert pooled["n"].item() == (~first["verdict_cut"]).sum() == len(rows) - cut.sum()
    assert pooled["mean"].item() == pytest.approx(first.loc[~first["verdict_cut"], "mass"].mean())
    assert pooled["uniform"].item() == pytest.approx((first["verdict_tokens"] / first["tokens"])[~cut].mean())


# ---- [CLS] attention ---------------------------------------------------------------------------


def test_uniform_attention_gives_the_uniform_mass(tmp_path):
    rows = probe(12)
    df = cls_attention_mass(model_dir(tmp_path, uniform=True), rows, None, batch_size=5)
    assert len(df) == len(rows) * L and sorted(df["layer"].unique()) == list(range(1, L + 1))
    expected = df["verdict_tokens"] / df["tokens"]
    assert np.abs(df["mass"] - expected).max() < 1e-5
    assert np.abs(df["mass_head_max"] - expected).max() < 1e-5
    summary = summarise(df, n_boot=200)
    assert np.allclose(summary["mean"], summary["uniform"], atol=1e-5)


def test_cls_mass_does_not_depend_on_batching(tmp_path):
    folder, rows = model_dir(tmp_path), probe(10)
    a = cls_attention_mass(folder, rows, None, batch_size=1)
    b = cls_attention_mass(folder, rows, None, batch_size=7)
    assert np.allclose(a["mass"], b["mass"], atol=1e-6) and (a["mass"] > 0).all() and (a["mass"] < 1).all()


def test_topk_weights_change_the_top_layers_only(tmp_path):
    folder, rows = model_dir(tmp_path), probe(12)
    weights, _ = topk_weights(tmp_path)
    before = cls_attention_mass(folder, rows, None, max_len=MAX_LEN)  # the run's max_len
    after = cls_attention_mass(folder, rows, weights)
    assert (after["regime"] == "topk").all() and (after["trained_layers"] == K).all()
    lower = before["layer"] <= L - K
    assert np.array_equal(before.loc[lower, "mass"].to_numpy(), after.loc[lower, "mass"].to_numpy())
    for layer in range(L - K + 1, L + 1):
        top = before["layer"] == layer
        assert np.abs(before.loc[top, "mass"].to_numpy() - after.loc[top, "mass"].to_numpy()).max() > 1e-3


def test_copied_top_layers_compute_what_the_runs_top_layers_compute(tmp_path):
    """The backbone with the run's top layers copied in gives the states the topk classifier pools."""
    from poolbench.attention import apply_trained_backbone, read_run

    folder = model_dir(tmp_path)
    weights, model = topk_weights(tmp_path)
    state, run_spec = read_run(weights)
    live = load_backbone(folder)
    assert apply_trained_backbone(live, state, run_spec) == K
    enc = encode(probe(1)["text"][0], tokenizer(), "head", MAX_LEN)
    ids = torch.from_numpy(enc.input_ids)[None]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        entry = load_backbone(folder)(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        entry = entry.hidden_states[L - K]
        expected = model.top.eval()(entry, mask)[-1]
        got = live(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5)


def finetune_weights(tmp_path, topk_model, regime: str = "finetune"):
    """A finetune run (live backbone, top K layers trained) whose top layers are the topk run's."""
    from poolbench.train import set_trainable_layers

    bb = backbone()
    set_trainable_layers(bb, K)
    model = build_classifier("attention", "encoder", H, 1, TrainConfig(trainable_layers=K), bb, bb,
                             device=torch.device("cpu"))
    with torch.no_grad():
        for i in range(K):
            bb.encoder.layer[L - K + i].load_state_dict(topk_model.top.layers[i].state_dict())
    model.pooling.load_state_dict(topk_model.pooling.state_dict())
    path = tmp_path / f"{regime}-attention" / "model.safetensors"
    save_weights(model, path, spec(regime, trainable_layers=K, kind="finetune"))
    return path


def test_finetune_weights_load_into_the_backbone_like_topk_ones(tmp_path):
    folder, rows = model_dir(tmp_path), probe(9)
    topk, model = topk_weights(tmp_path)
    finetune = finetune_weights(tmp_path, model)
    a, b = cls_attention_mass(folder, rows, topk), cls_attention_mass(folder, rows, finetune)
    assert (b["regime"] == "finetune").all() and (b["trained_layers"] == K).all()
    assert np.abs(a["mass"] - b["mass"]).max() < 1e-6
    # The pooling: same states but for the topk cache's float16 rounding of the entry state.
    p, q = pooling_attention_mass(folder, rows, topk, cache_dtype=None), pooling_attention_mass(folder, rows, finetune)
    assert np.abs(p["mass"] - q["mass"]).max() < 1e-5
    rounded = pooling_attention_mass(folder, rows, topk)
    assert 0 < np.abs(rounded["mass"] - q["mass"]).max() < 1e-2


def test_what_trained_is_read_from_the_regimes_kind_not_its_name(tmp_path):
    """A finetune-kind regime named 'full' (its name is no kind) measures like one named 'finetune'."""
    folder, rows = model_dir(tmp_path), probe(6)
    _, model = topk_weights(tmp_path)
    named, full = finetune_weights(tmp_path, model), finetune_weights(tmp_path, model, regime="full")
    a, b = cls_attention_mass(folder, rows, named), cls_attention_mass(folder, rows, full)
    assert (b["regime"] == "full").all() and (b["trained_layers"] == K).all()
    assert np.array_equal(a["mass"].to_numpy(), b["mass"].to_numpy())
    p, q = pooling_attention_mass(folder, rows, named), pooling_attention_mass(folder, rows, full)
    assert np.array_equal(p["mass"].to_numpy(), q["mass"].to_numpy())


def test_run_settings_are_the_runs_own(tmp_path):
    folder, rows = model_dir(tmp_path), probe(3)
    weights, _ = topk_weights(tmp_path)
    with pytest.raises(ValueError, match="truncation='head'"):
        cls_attention_mass(folder, rows, weights, truncation="tail")
    with pytest.raises(ValueError, match="max_len=32"):
        cls_attention_mass(folder, rows, weights, max_len=64)
    cls_weights, _ = topk_weights(tmp_path, pooling="cls")
    with pytest.raises(ValueError, match="not an 'attention' one"):
        pooling_attention_mass(folder, rows, cls_weights)


# ---- attention pooling --------------------------------------------------------------------------


def direct_pooling_mass(folder, rows, model, top: TopLayers | None, tok=None) -> np.ndarray:
    """softmax(scorer(h)) over one unpadded example at a time, summed over its verdict tokens."""
    tok, bb = tok or tokenizer(), load_backbone(folder)
    out = []
    for _, row in rows.iterrows():
        enc = encode(row["text"], tok, "head", MAX_LEN)
        ids = torch.from_numpy(enc.input_ids)[None]
        mask = torch.ones_like(ids)
        with torch.no_grad():
            hs = bb(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            h = hs[L - K] if top is not None else hs[L]
            h = h.half().float()  # the feature cache's float16
            if top is not None:
                h = top.eval()(h, mask)[-1]
            w = torch.softmax(model.pooling.scorer(h).squeeze(-1), dim=-1)[0]
        out.append(float(w[torch.from_numpy(verdict_mask(enc, row["verdict_start"], row["verdict_end"]))].sum()))
    return np.array(out)


@pytest.mark.parametrize("regime", ["frozen", "topk"])
def test_pooling_mass_is_the_softmax_weight_on_the_verdict(tmp_path, regime):
    folder, rows = model_dir(tmp_path), probe(12)
    weights, model = frozen_weights(tmp_path) if regime == "frozen" else topk_weights(tmp_path)
    df = pooling_attention_mass(folder, rows, weights, batch_size=5)
    assert len(df) == len(rows) and (df["regime"] == regime).all() and (df["layer"] == L).all()
    expected = direct_pooling_mass(folder, rows, model, model.top if regime == "topk" else None)
    assert np.abs(df["mass"].to_numpy() - expected).max() < 1e-5
    # Not the uniform mass: the learned scorer weights tokens unevenly.
    assert np.abs(df["mass"] - df["verdict_tokens"] / df["tokens"]).max() > 1e-3
    # masked_softmax is the pooling's own softmax: same weights as a plain softmax over real tokens.
    scores = torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    assert torch.allclose(masked_softmax(scores, mask)[0, :3], torch.softmax(scores[0, :3], -1))


# ---- other architectures -------------------------------------------------------------------------


def test_roberta_cls_mass_is_its_first_tokens_attention_in_its_own_forward(tmp_path):
    """Batched and padded, the mass equals <s>'s attention in RoBERTa's own forward on each row alone
    (positions from padding_idx + 1)."""
    folder, tok = arch_dir(tmp_path, "roberta")
    rows = probe(9)
    df = cls_attention_mass(folder, rows, None, max_len=MAX_LEN, batch_size=4)
    bb = load_backbone(folder)
    bb.set_attn_implementation("eager")
    for i, row in rows.reset_index(drop=True).iterrows():
        enc = encode(row["text"], tok, "head", MAX_LEN)
        verdict = torch.from_numpy(verdict_mask(enc, row["verdict_start"], row["verdict_end"])).double()
        ids = torch.from_numpy(enc.input_ids)[None]
        with torch.no_grad():
            att = bb(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
        expected = [float((a[0, :, 0, :].double() @ verdict).mean()) for a in att]
        got = df[df["id"] == row["id"]].sort_values("layer")["mass"].to_numpy()
        assert np.abs(got - expected).max() < 1e-5


def test_cls_mass_refuses_a_decoder(tmp_path):
    folder, _ = arch_dir(tmp_path, "llama")
    with pytest.raises(ValueError, match="encoders only"):
        cls_attention_mass(folder, probe(3), None)


def test_gpt2_topk_pooling_mass_is_the_softmax_weight_on_the_verdict(tmp_path):
    folder, tok = arch_dir(tmp_path, "gpt2")
    rows = probe(9)
    model = build_topk_classifier("attention", "decoder", load_backbone(folder), TrainConfig(trainable_layers=K),
                                  layers=1, device=torch.device("cpu"))
    torch.manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    weights = tmp_path / "gpt2-topk" / "model.safetensors"
    save_weights(model, weights, spec("topk", trainable_layers=K, family="decoder"))
    df = pooling_attention_mass(folder, rows, weights, batch_size=4)
    expected = direct_pooling_mass(folder, rows, model, model.top, tok)
    assert np.abs(df["mass"].to_numpy() - expected).max() < 1e-5
    assert np.abs(df["mass"] - df["verdict_tokens"] / df["tokens"]).max() > 1e-3


# ---- summary and figure ---------------------------------------------------------------------------


def test_summary_and_figure_are_deterministic(tmp_path):
    folder, rows = model_dir(tmp_path), probe(12, long_end=True)
    topk, _ = topk_weights(tmp_path)
    frozen, _ = frozen_weights(tmp_path)
    frames = [cls_attention_mass(folder, rows, None), cls_attention_mass(folder, rows, topk),
              pooling_attention_mass(folder, rows, frozen), pooling_attention_mass(folder, rows, topk)]
    summary = summarise(*frames, n_boot=300)
    again = summarise(*reversed(frames), n_boot=300)
    pd.testing.assert_frame_equal(summary, again)
    assert set(summary["measure"]) == {"cls_attention", "attention_pooling"}
    assert set(summary["regime"]) == {"frozen", "topk"}
    assert {"all", "agree", "contrast"} == set(summary["condition"])
    ok = summary["n"] > 1
    assert (summary.loc[ok, "ci_low"] <= summary.loc[ok, "mean"] + 1e-12).all()
    assert (summary.loc[ok, "mean"] <= summary.loc[ok, "ci_high"] + 1e-12).all()
    a, b = figure(summary, tmp_path / "a.png"), figure(summary, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in a.read_bytes()
