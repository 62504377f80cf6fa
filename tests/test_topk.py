"""The topk regime is the live backbone with its lower layers frozen, computed from the feature cache.

Tiny random BERT, RoBERTa, GPT-2 and Llama backbones (transformers configs, no downloads) and a tiny word-level
fast tokenizer. The cache is written by the real ``extract``; the live reference is the backbone
with ``set_trainable_layers(k)``, fed by ``LiveData``. Same logits (1e-4 with a float32 cache,
within float16 rounding with the default one) and the same parameters after three AdamW steps
(dropout off), for encoders (RoBERTa: positions from padding_idx + 1) and decoders (rotary or
absolute positions, causal mask, a final norm), padded on the right and on the left.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel, RobertaConfig,
                          RobertaModel)

from poolbench.arch import final_norm
from poolbench.arch import layers as arch_layers
from poolbench.features import FeatureSet, extract
from poolbench.topk import (autocast, cpu_has_native_bf16, layers_to_cache, resolve_precision,
                            resolve_trainable_layers, topk_state_indices)
from poolbench.train import (Classifier, LiveData, TrainConfig, build_classifier, build_topk_classifier,
                             predict, set_trainable_layers, train)

from conftest import WORDS
from conftest import word_tokenizer as tokenizer

H, POOL_LAYERS = 32, 4




def texts(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS, rng.integers(2, 7))) + "." for _ in range(rng.integers(1, 5))]
        rows.append({"id": f"t{i}", "text": " ".join(sentences), "label": int(rng.integers(0, 2))})
    return pd.DataFrame(rows)


def backbone(arch: str, layers: int):
    torch.manual_seed(0)
    if arch == "bert":  # dropout off: the frozen layers of a live backbone would otherwise drop out in training
        return BertModel(BertConfig(vocab_size=70, hidden_size=H, num_hidden_layers=layers, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, pad_token_id=0)).eval()
    if arch == "roberta":  # positions from padding_idx + 1
        return RobertaModel(RobertaConfig(vocab_size=70, hidden_size=H, num_hidden_layers=layers,
                                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                          pad_token_id=0)).eval()
    if arch == "gpt2":  # absolute positions, final norm ln_f
        return GPT2Model(GPT2Config(vocab_size=70, n_embd=H, n_layer=layers, n_head=4, n_positions=64, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)).eval()
    return LlamaModel(LlamaConfig(vocab_size=70, hidden_size=H, num_hidden_layers=layers, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                  pad_token_id=0)).eval()


# (arch, family, backbone layers, trainable top layers, padding side)
CASES = [("bert", "encoder", 4, 2, "right"), ("llama", "decoder", 3, 1, "right"),
         ("llama", "decoder", 3, 1, "left"), ("llama", "decoder", 3, 2, "left"), ("bert", "encoder", 4, 1, "left"),
         ("roberta", "encoder", 3, 2, "left"), ("gpt2", "decoder", 3, 2, "left")]
IDS = ["bert-top2-right", "llama-top1-right", "llama-top1-left", "llama-top2-left", "bert-top1-left",
       "roberta-top2-left", "gpt2-top2-left"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add synchronisation cost


def setup(case, tmp_path, pooling: str, dtype: str = "float32", n: int = 12):
    """(topk classifier, its cached data, live classifier with lower layers frozen, its live data)."""
    arch, family, L, k, side = case
    bb, tok = backbone(arch, L), tokenizer(family == "encoder")
    frame = texts(n)
    cache = tmp_path / f"cache-{dtype}"
    if not cache.exists():
        extract(frame, bb, tok, cache, truncation="head", max_len=32, layers=layers_to_cache(POOL_LAYERS, [k]),
                dtype=dtype)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, dropout=0.0, trainable_layers={arch: k},
                      options={"layers_concat": {"layers": POOL_LAYERS}})
    torch.manual_seed(1)
    topk = build_topk_classifier(pooling, family, bb, cfg, POOL_LAYERS,
                                 k=resolve_trainable_layers(cfg.trainable_layers, arch))
    assert topk.cache_states == topk_state_indices(L, POOL_LAYERS, k)
    cached = FeatureSet(cache, states=topk.cache_states, padding_side=side)
    live_bb = copy.deepcopy(bb)
    set_trainable_layers(live_bb, k)
    live = build_classifier(pooling, family, H, POOL_LAYERS, cfg, live_bb, live_bb)
    live.pooling.load_state_dict(topk.pooling.state_dict())
    live.head.load_state_dict(topk.head.state_dict())
    return topk, cached, live, LiveData(frame, tok, "head", 32, padding_side=side), cfg


def logits(model, data):
    model.eval()
    with torch.no_grad():
        return model(data.batch(np.arange(len(data))))


@pytest.mark.parametrize("pooling", ["mean", "layers_concat", "attention"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_topk_logits_match_the_live_backbone_with_an_fp32_cache(case, pooling, tmp_path):
    topk, cached, live, live_data, _ = setup(case, tmp_path, pooling)
    assert cached.state_indices[-1] == case[2] - case[3]  # the entry state hidden_states[L-k]
    expected = logits(live, live_data)
    torch.testing.assert_close(logits(topk, cached), expected, atol=1e-4, rtol=1e-4)
    assert expected.std() > 1e-3  # not a degenerate comparison


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
def test_topk_logits_with_the_default_fp16_cache_are_within_fp16_rounding(case, tmp_path):
    pooling = "pooler" if case[0] == "bert" else "last"
    topk, cached, live, live_data, _ = setup(case, tmp_path, pooling, dtype="float16")
    got, expected = logits(topk, cached), logits(live, live_data)
    torch.testing.assert_close(got, expected, atol=5e-3, rtol=5e-3)


TRAINED = [0, 1, 2, 3, 5, 6]


@pytest.mark.parametrize("case", [CASES[i] for i in TRAINED], ids=[IDS[i] for i in TRAINED])
def test_topk_training_steps_match_the_live_backbone(case, tmp_path):
    """Three AdamW steps (dropout off) from the same start end with the same parameters."""
    pooling = "pooler" if case[0] == "bert" else "layers_concat"
    topk, cached, live, live_data, cfg = setup(case, tmp_path, pooling)
    L, k = case[2], case[3]
    blocks = arch_layers(live.backbone)
    before = [p.detach().clone() for p in topk.top.layers.parameters()]
    fit_topk = train(topk, cached, cfg, seed=0)
    fit_live = train(live, live_data, cfg, seed=0)
    assert fit_topk["train_tokens"] == fit_live["train_tokens"] == int(cached.lengths.sum())
    np.testing.assert_allclose(fit_topk["epoch_loss"], fit_live["epoch_loss"], atol=1e-5)
    pairs = list(zip(topk.top.layers.parameters(), blocks[L - k:].parameters()))
    if final_norm(live.backbone) is not None:  # GPT-2's ln_f, Llama's norm
        pairs += list(zip(topk.top.norm.parameters(), final_norm(live.backbone).parameters()))
    pairs += list(zip(topk.pooling.parameters(), live.pooling.parameters()))
    pairs += list(zip(topk.head.parameters(), live.head.parameters()))
    for a, b in pairs:
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(topk.top.layers.parameters(), before))
    assert moved > 1e-4  # the top layers did train
    torch.testing.assert_close(torch.as_tensor(predict(topk, cached)), torch.as_tensor(predict(live, live_data)),
                               atol=1e-4, rtol=1e-4)


def test_the_topk_classifier_holds_only_what_trains(tmp_path):
    bb = backbone("llama", 3)
    cfg = TrainConfig(trainable_layers=2, dropout=0.0)
    model = build_topk_classifier("last", "decoder", bb, cfg, 1)
    n_top = sum(p.numel() for p in model.top.parameters())
    assert n_top == sum(p.numel() for p in bb.layers[1:].parameters()) + bb.norm.weight.numel()
    assert model.backbone is None
    assert all(p.requires_grad for p in model.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.top.layers.parameters(), bb.layers[1:].parameters()))
    # BERT: the pooler pooling holds a trainable copy of the pretrained pooler
    bert = backbone("bert", 2)
    model = build_topk_classifier("pooler", "encoder", bert, TrainConfig(trainable_layers=1), 1)
    torch.testing.assert_close(model.pooling.pooler.dense.weight, bert.pooler.dense.weight)
    assert model.pooling.pooler.dense.weight.requires_grad


def test_the_cache_layout_and_its_errors(tmp_path):
    assert layers_to_cache(4, []) == 4 and layers_to_cache(4, [1, 2]) == 4 and layers_to_cache(2, [2, "all"]) == 3
    assert topk_state_indices(6, 4, 2) == [3, 4]          # MiniLM top-2: hs[3] frozen, entry hs[4]
    assert topk_state_indices(30, 4, 1) == [27, 28, 29]   # SmolLM2 top-1: entry hs[29]
    assert topk_state_indices(6, 1, 2) == [4]             # poolings of the final layer only: just the entry
    with pytest.raises(ValueError, match="between 1 and"):
        topk_state_indices(6, 4, 7)
    assert resolve_trainable_layers({"minilm-l6": 2, "smollm2-135m": 1}, "smollm2-135m") == 1
    assert resolve_trainable_layers(2, "any") == 2 and resolve_trainable_layers("all", "any") == "all"
    with pytest.raises(ValueError, match="not the model"):
        resolve_trainable_layers({"minilm-l6": 2}, "gpt2")
    bb, tok = backbone("bert", 4), tokenizer(True)
    info = extract(texts(5), bb, tok, tmp_path / "c", truncation="head", max_len=16, layers=2)
    assert info["state_indices"] == [3, 4] and info["dtype"] == "float16"
    assert not list(tmp_path.glob(".c.partial-*"))  # atomic_dir cleaned up
    full = FeatureSet(tmp_path / "c")
    assert full.state_indices == [3, 4] and full.num_layers == 2
    with pytest.raises(ValueError, match="rebuild it"):  # top-2 needs hs[2], which this cache lacks
        FeatureSet(tmp_path / "c", states=topk_state_indices(4, 2, 2))
    with pytest.raises(ValueError, match="4 layers"):
        extract(texts(2), bb, tok, tmp_path / "d", truncation="head", max_len=16, layers=6)
    with pytest.raises(Exception, match="topk regime needs trainable_layers"):
        build_topk_classifier("mean", "encoder", bb, TrainConfig(trainable_layers="all"), 1)
    with pytest.raises(Exception, match="between 1 and"):
        build_topk_classifier("mean", "encoder", bb, TrainConfig(trainable_layers=5), 1)


def test_left_and_right_padded_cache_batches_give_the_same_topk_logits(tmp_path):
    case = CASES[1]
    topk, cached, _, _, _ = setup(case, tmp_path, "attention")
    left = FeatureSet(tmp_path / "cache-float32", states=cached.state_indices, padding_side="left")
    torch.testing.assert_close(logits(topk, left), logits(topk, cached), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------

AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma f16c\n"


def test_native_bf16_detection_reads_cpu_flags(monkeypatch):
    assert cpu_has_native_bf16(AMX)
    assert cpu_has_native_bf16("flags : avx512f avx512_bf16\n")
    assert not cpu_has_native_bf16(AVX2)
    assert not cpu_has_native_bf16("")
    import poolbench.topk as topk_mod

    monkeypatch.setattr(topk_mod, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(topk_mod, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_bf16_precision_runs_the_forward_in_bf16_and_returns_fp32_logits(tmp_path):
    topk, cached, _, _, cfg = setup(CASES[0], tmp_path, "mean")
    batch = cached.batch(np.arange(len(cached)))
    seen = []
    hook = topk.top.layers[0].intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    ref = topk(batch)
    topk.precision = "bf16"
    out = topk(batch)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)
    assert not torch.equal(out, ref)
    with pytest.raises(ValueError, match="resolved"):
        Classifier(topk.pooling, topk.head, precision="auto")
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_build_classifier_records_the_resolved_precision(monkeypatch):
    import poolbench.topk as topk_mod

    monkeypatch.setattr(topk_mod, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    model = build_classifier("mean", "decoder", 8, 1, TrainConfig(precision="auto"), None, None,
                             device=torch.device("cpu"))
    assert model.precision == "fp32"
    model = build_classifier("mean", "decoder", 8, 1, TrainConfig(precision="bf16"), None, None,
                             device=torch.device("cpu"))
    assert model.precision == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_topk_matches_the_live_backbone_on_cuda(case, tmp_path):
    """The same equivalence on a GPU (fp32; TF32 off), and bf16 autocast there stays close."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    topk, cached, live, live_data, cfg = setup(case, tmp_path, "layers_concat")
    topk.cuda()
    live.cuda()
    rows = np.arange(len(cached))
    to = lambda b: {k: ([t.cuda() for t in v] if isinstance(v, list) else v.cuda()) for k, v in b.items()}  # noqa: E731
    topk.eval()
    live.eval()
    with torch.no_grad():
        expected = live(to(live_data.batch(rows)))
        torch.testing.assert_close(topk(to(cached.batch(rows))), expected, atol=1e-4, rtol=1e-4)
        assert resolve_precision("auto", "cuda") == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
        topk.precision = "bf16"
        torch.testing.assert_close(topk(to(cached.batch(rows))), expected, atol=0.05, rtol=0.05)
        topk.precision = "fp32"
    fit_topk, fit_live = train(topk, cached, cfg, seed=0), train(live, live_data, cfg, seed=0)
    np.testing.assert_allclose(fit_topk["epoch_loss"], fit_live["epoch_loss"], atol=1e-5)
    torch.testing.assert_close(torch.as_tensor(predict(topk, cached)), torch.as_tensor(predict(live, live_data)),
                               atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# LP-FT: a topk run whose regime has init_from starts its pooling and head from the frozen run
# ---------------------------------------------------------------------------------------------

LPFT_LAYERS, LPFT_K = 3, 1


def lpft_config() -> dict:
    """A study config of one tiny Llama: frozen, topk from the frozen heads (lr 0: no step moves anything)
    and plain topk (random pooling and head), and the same two with a live backbone (finetune);
    mean and attention pooling."""
    head = {"cv_folds": 2, "reference_tolerance": 100.0, "lr_grid": [1e-2], "val_fraction": 0.25}
    topk = {"kind": "topk", "epochs": 1, "batch_size": 8, "lr": 0.0, "dropout": 0.0, "trainable_layers": LPFT_K}
    live = {**topk, "kind": "finetune"}
    return {"study": [{"datasets": ["toy"], "models": ["tiny"],
                       "regimes": ["frozen", "lpft", "topk", "lpft_live", "live"],
                       "truncations": ["head"], "max_len": [32], "seeds": [0], "poolings": ["mean", "attention"]}],
            "models": {"tiny": {"family": "decoder", "source": {"type": "random", "arch": "llama", "tokenizer": "x",
                                                                "hidden": H, "layers": LPFT_LAYERS, "heads": 4}}},
            "regimes": {"frozen": {"epochs": 3, "batch_size": 8, "lr": 1e-2, "dropout": 0.0, "head": head},
                        "lpft": {**topk, "init_from": "frozen"}, "topk": topk,
                        "lpft_live": {**live, "init_from": "frozen"}, "live": live},
            "poolings": {"decoder": ["mean", "attention"]}, "cache_layers": 1,
            "datasets": {"toy": {"train_size": 8, "test_size": 8, "seed": 0}}}


@pytest.fixture(scope="module")
def lpft(tmp_path_factory):
    """A tiny Llama saved as a model folder, its toy data and feature caches (float32 and float16)."""
    root = tmp_path_factory.mktemp("lpft")
    bb, tok = backbone("llama", LPFT_LAYERS), tokenizer(False)
    bb.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    datasets, caches = {}, {"float32": {}, "float16": {}}
    for split, (n, seed) in {"train": (32, 0), "test": (24, 1)}.items():
        frame = texts(n, seed)
        datasets[("toy", split)] = root / f"{split}.parquet"
        frame.to_parquet(datasets[("toy", split)], index=False)
        for dtype in caches:
            caches[dtype][("toy", split)] = root / f"cache-{dtype}-{split}"
            extract(frame, bb, tok, caches[dtype][("toy", split)], truncation="head", max_len=32,
                    layers=layers_to_cache(1, [LPFT_K]), dtype=dtype)
    return root, datasets, caches


def lpft_run(lpft, regime: str, pooling: str, dtype: str = "float32", init: bool = True):
    """run_one of one run of :func:`lpft_config` (the spec from run_spec); (metrics, P(positive), weights)."""
    from poolbench.config import Run, run_spec
    from poolbench.run import run_one

    root, datasets, caches = lpft
    cfg = lpft_config()
    run = Run("toy", "tiny", regime, "head", 32, pooling, 0)
    out = root / "runs" / dtype / regime / pooling
    frozen = root / "runs" / dtype / "frozen" / pooling / "model.safetensors"
    metrics = run_one(spec=run_spec(cfg, run), model_dir=root / "model", datasets=datasets, features=caches[dtype],
                      metrics_path=out / "metrics.json", predictions_path=out / "predictions.parquet",
                      weights_path=out / "model.safetensors",
                      init_weights=frozen if init and "init_from" in cfg["regimes"][regime] else None)
    return metrics, pd.read_parquet(out / "predictions.parquet")["p_positive"].to_numpy(), out / "model.safetensors"


@pytest.mark.parametrize("regimes,pooling,dtype,tolerance", [
    (("lpft", "topk"), "mean", "float32", 1e-4), (("lpft", "topk"), "attention", "float32", 1e-4),
    (("lpft", "topk"), "mean", "float16", 5e-3), (("lpft_live", "live"), "attention", "float32", 1e-4)],
    ids=["topk-mean-fp32", "topk-attention-fp32", "topk-mean-fp16", "finetune-attention-fp32"])
def test_lpft_with_a_zero_learning_rate_predicts_what_its_frozen_run_predicts(lpft, regimes, pooling, dtype, tolerance):
    """init_from loads the frozen run's pooling and head (logistic regression for mean, early-stopped SGD
    for attention); the top layer recomputes the cached final state (topk) or the live backbone computes
    it (finetune), so with lr 0 the run is the probe."""
    frozen_metrics, frozen, _ = lpft_run(lpft, "frozen", pooling, dtype)
    assert frozen_metrics.train["method"] == ("logistic_cv" if pooling == "mean" else "sgd_early_stopping")
    metrics, lpft_p, _ = lpft_run(lpft, regimes[0], pooling, dtype)
    np.testing.assert_allclose(lpft_p, frozen, atol=tolerance, rtol=0)
    assert frozen.std() > 1e-3  # not a degenerate comparison
    # ... while the same run from a random pooling and head (no init_from) predicts something else
    _, random_init, _ = lpft_run(lpft, regimes[1], pooling, dtype)
    assert np.abs(random_init - frozen).max() > 100 * tolerance
    root = lpft[0]
    assert metrics.train["init_from"] == {"weights": str(root / "runs" / dtype / "frozen" / pooling / "model.safetensors"),
                                          "run": f"runs/toy/tiny/frozen/head-32/{pooling}/seed0"}
    assert metrics.spec["regime"]["init_from"] == "frozen" and metrics.spec["init_from"] == frozen_metrics.spec
    assert "init_from" not in frozen_metrics.spec and "init_from" not in frozen_metrics.train


def test_lpft_loads_only_the_pooling_and_head_and_refuses_other_weights(lpft, tmp_path):
    import shutil

    from poolbench.config import Run, run_spec
    from poolbench.run import build, load_init

    root, datasets, caches = lpft
    lpft_run(lpft, "frozen", "mean")
    lpft_run(lpft, "frozen", "attention")
    frozen = lambda pooling: root / "runs" / "float32" / "frozen" / pooling / "model.safetensors"  # noqa: E731
    cfg = lpft_config()
    spec = run_spec(cfg, Run("toy", "tiny", "lpft", "head", 32, "attention", 0))
    frames = {key: pd.read_parquet(path) for key, path in datasets.items()}
    torch.manual_seed(0)
    model, _ = build(spec, root / "model", frames, caches["float32"])
    top = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("top.")}
    load_init(model, frozen("attention"), spec)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in top.items())  # the top layer keeps its pretrained values
    from safetensors.torch import load_file

    saved = load_file(str(frozen("attention")))
    assert {k for k in after if k.startswith(("pooling.", "head."))} == set(saved)
    assert all(torch.equal(after[k], v) for k, v in saved.items())
    # the mean run's weights are not the attention run's counterpart: one sentence naming both
    with pytest.raises(ValueError, match=r"holds the weights of runs/toy/tiny/frozen/head-32/mean/seed0, not of the "
                                         r"frozen run runs/toy/tiny/frozen/head-32/attention/seed0 .*differ in pooling"):
        load_init(model, frozen("mean"), spec)
    # the right run, made with other settings than this config gives it
    other = copy.deepcopy(cfg)
    other["regimes"]["frozen"]["head"]["val_fraction"] = 0.5
    with pytest.raises(ValueError, match="was made with other settings"):
        load_init(model, frozen("attention"), run_spec(other, Run("toy", "tiny", "lpft", "head", 32, "attention", 0)))
    # init_from without weights, and weights without init_from, fail before training
    with pytest.raises(ValueError, match="starts from the frozen regime 'frozen' .* no weights to start from"):
        lpft_run(lpft, "lpft", "attention", init=False)
    shutil.copy(frozen("attention"), tmp_path / "w.safetensors")
    from poolbench.run import run_one

    with pytest.raises(ValueError, match="has no init_from"):
        run_one(spec=run_spec(cfg, Run("toy", "tiny", "topk", "head", 32, "attention", 0)), model_dir=root / "model",
                datasets=datasets, features=caches["float32"], metrics_path=tmp_path / "m.json",
                predictions_path=tmp_path / "p.parquet", weights_path=tmp_path / "w2.safetensors",
                init_weights=tmp_path / "w.safetensors")
