"""Everything poolbench knows about a backbone architecture, in one adapter per Hugging Face model type.

An :class:`Arch` says, for one ``config.model_type``:

* ``family`` – ``encoder`` (bidirectional attention) or ``decoder`` (causal attention);
* ``layers`` – the module path of the transformer layer list (``encoder.layer``, ``h``, ``layers``);
* ``norm`` – the final norm the last hidden state passes through (GPT-2 ``ln_f``, Llama ``norm``;
  encoders have none: each layer ends with its own LayerNorm);
* ``rotary`` – the module that turns position ids into rotary embeddings for each layer call (Llama),
  or None where positions enter through the embeddings only;
* ``pooler`` – the pretrained pooler's path (BERT, RoBERTa), or None;
* how many layers and positions the model has (read from its config, under the config's own names),
  and the first position id (RoBERTa counts positions from ``padding_idx + 1``);
* ``exports`` – the poolings whose ``*ForSequenceClassification`` equivalent this type has
  (:func:`export_name` maps a run's saved weights onto that class's base model);
* ``random_config`` – a tiny random-init config of this type, for test backbones (``source: random``).

Position ids (:func:`position_ids`) count each row's real tokens only, so a row's states do not
depend on the padding side and equal those of the unpadded row, which is what the feature cache
stores. Layer calls (:func:`layer_mask`, :func:`call_layer`) take the attention mask built by the
same transformers function the model's own forward uses (bidirectional for encoders, causal for
decoders), so it suits the configured attention implementation.

Adding a family: one entry in :data:`ARCHS` (and the ``arch`` enum of the random source in
``workflow/config/schema.yaml``, if it should be buildable at random).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

@dataclass(frozen=True)
class Arch:
    model_type: str
    family: str
    layers: str                       # module path of the transformer layer list
    norm: str | None                  # module path of the final norm (after the last layer), if any
    rotary: str | None                # module path of the rotary embedding each layer call takes, if any
    pooler: str | None                # module path of a pretrained pooler, if any
    num_layers_key: str               # config attribute: number of layers
    max_positions_key: str            # config attribute: size of the position table (or RoPE's range)
    exports: tuple[str, ...]          # poolings a *ForSequenceClassification of this type computes
    random_positions: int             # usable positions of a random test model of this type
    base_class: str                   # the transformers base-model class (AutoModel's choice)
    random_config: Callable           # (vocab_size, hidden, layers, heads, pad_token_id) -> config
    first_position: Callable = lambda config: 0  # position id of a row's first real token

    @property
    def causal(self) -> bool:
        return self.family == "decoder"


def _bert_config(vocab_size, h, n, heads, pad_token_id):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                      intermediate_size=4 * h, max_position_embeddings=512, pad_token_id=pad_token_id or 0)


def _roberta_config(vocab_size, h, n, heads, pad_token_id):
    from transformers import RobertaConfig

    pad = pad_token_id or 0  # RoBERTa's padding_idx; positions start after it
    return RobertaConfig(vocab_size=vocab_size, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                         intermediate_size=4 * h, max_position_embeddings=512 + pad + 1, pad_token_id=pad,
                         bos_token_id=None, eos_token_id=None)


def _gpt2_config(vocab_size, h, n, heads, pad_token_id):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_embd=h, n_layer=n, n_head=heads, n_positions=1024,
                      pad_token_id=pad_token_id)


def _llama_config(vocab_size, h, n, heads, pad_token_id):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                       num_key_value_heads=heads, intermediate_size=4 * h, max_position_embeddings=2048,
                       pad_token_id=pad_token_id)


ARCHS: dict[str, Arch] = {a.model_type: a for a in (
    Arch("bert", "encoder", layers="encoder.layer", norm=None, rotary=None, pooler="pooler",
         num_layers_key="num_hidden_layers", max_positions_key="max_position_embeddings", exports=("pooler",),
         random_positions=512, base_class="BertModel", random_config=_bert_config),
    # RobertaForSequenceClassification has its own head (dense + tanh + out_proj), not the pooler: no export.
    Arch("roberta", "encoder", layers="encoder.layer", norm=None, rotary=None, pooler="pooler",
         num_layers_key="num_hidden_layers", max_positions_key="max_position_embeddings", exports=(),
         random_positions=512, base_class="RobertaModel", random_config=_roberta_config,
         first_position=lambda config: config.pad_token_id + 1),
    Arch("gpt2", "decoder", layers="h", norm="ln_f", rotary=None, pooler=None,
         num_layers_key="n_layer", max_positions_key="n_positions", exports=("last",),
         random_positions=1024, base_class="GPT2Model", random_config=_gpt2_config),
    Arch("llama", "decoder", layers="layers", norm="norm", rotary="rotary_emb", pooler=None,
         num_layers_key="num_hidden_layers", max_positions_key="max_position_embeddings", exports=("last",),
         random_positions=2048, base_class="LlamaModel", random_config=_llama_config),
)}

# The poolings a *ForSequenceClassification class computes, and the model types it does so for.
EXPORTABLE = {p: tuple(t for t, a in ARCHS.items() if p in a.exports)
              for p in dict.fromkeys(p for a in ARCHS.values() for p in a.exports)}


# --------------------------------------------------------------------------------------------
# Which adapter
# --------------------------------------------------------------------------------------------


def get(model_type: str) -> Arch:
    """The adapter of a Hugging Face ``model_type`` (or a random source's ``arch``)."""
    if model_type not in ARCHS:
        raise ValueError(f"poolbench supports the model types {sorted(ARCHS)}, not {model_type!r}")
    return ARCHS[model_type]


def for_model(model_or_config) -> Arch:
    """The adapter of a model (its ``config.model_type``) or of a config."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise ValueError(f"poolbench supports the model types {sorted(ARCHS)}, not {model_type!r} "
                         f"({type(model_or_config).__name__})")
    return ARCHS[model_type]


# --------------------------------------------------------------------------------------------
# Sizes from the config
# --------------------------------------------------------------------------------------------


def num_layers(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return int(getattr(config, for_model(config).num_layers_key))


def max_positions(model_or_config) -> int:
    """How many tokens one row may hold: the position table's size less the ids below the first
    position (RoBERTa's ``padding_idx + 1`` unused rows)."""
    config = getattr(model_or_config, "config", model_or_config)
    arch = for_model(config)
    return int(getattr(config, arch.max_positions_key)) - arch.first_position(config)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


def _module(root: nn.Module, path: str | None) -> nn.Module | None:
    if path is None:
        return None
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def layers(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's transformer layers, bottom first."""
    arch = for_model(backbone)
    blocks = _module(backbone, arch.layers)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"a {arch.model_type} backbone ({type(backbone).__name__}) has no layer list at "
                         f"{arch.layers!r}: pass the base model (AutoModel), not a task model")
    return blocks


def final_norm(backbone: nn.Module) -> nn.Module | None:
    """The norm applied after the last layer (decoders), or None."""
    return _module(backbone, for_model(backbone).norm)


def rotary(backbone: nn.Module) -> nn.Module | None:
    return _module(backbone, for_model(backbone).rotary)


def pooler(backbone: nn.Module) -> nn.Module | None:
    return _module(backbone, for_model(backbone).pooler)


# --------------------------------------------------------------------------------------------
# Positions, masks and layer calls
# --------------------------------------------------------------------------------------------


def position_ids(config, attention_mask: Tensor) -> Tensor:
    """Each row's real tokens get ``first, first+1, ...`` whichever side it is padded on (pads get a
    valid id too); ``first`` is 0, or RoBERTa's ``padding_idx + 1``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) + for_model(config).first_position(config)


def _accepted(fn, kwargs: dict) -> dict:
    """The arguments ``fn`` takes, under the names this transformers release gives them (5.x renamed
    ``past_key_values`` to ``cache`` and ``input_embeds`` to ``inputs_embeds``, and dropped
    ``cache_position`` from the mask functions)."""
    import inspect

    params = inspect.signature(fn).parameters
    aliases = {"inputs_embeds": ("inputs_embeds", "input_embeds"), "cache": ("cache", "past_key_values")}
    out = {}
    for name, value in kwargs.items():
        for alias in aliases.get(name, (name,)):
            if alias in params:
                out[alias] = value
                break
    return out


def layer_mask(config, states: Tensor, attention_mask: Tensor, positions: Tensor | None = None):
    """The attention mask a layer call takes, from a (B, T) 0/1 mask: built by the transformers
    function the model's own forward uses (bidirectional for encoders, causal for decoders), in the
    form the configured attention implementation expects (a 4-D bias, a boolean mask, or None)."""
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

    causal = for_model(config).causal
    make = create_causal_mask if causal else create_bidirectional_mask
    kwargs = {"config": config, "inputs_embeds": states, "attention_mask": attention_mask, "cache": None,
              "position_ids": positions if causal else None,
              "cache_position": torch.arange(states.shape[1], device=states.device)}
    return make(**_accepted(make, kwargs))


def call_layer(arch: Arch, layer: nn.Module, h: Tensor, mask, positions: Tensor | None = None, rope=None) -> Tensor:
    """One transformer layer on ``h`` (B, T, H) with the mask of :func:`layer_mask`; ``positions`` and
    ``rope`` (the rotary module's output) for rotary architectures."""
    kwargs = {"attention_mask": mask}
    if arch.rotary is not None:
        kwargs.update(position_ids=positions, position_embeddings=rope)
    out = layer(h, **kwargs)
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------------------------
# Random test backbones
# --------------------------------------------------------------------------------------------


def random_model(model_type: str, vocab_size: int, pad_token_id: int | None, *, hidden: int = 64, layers: int = 2,
                 heads: int = 4, seed: int = 0) -> nn.Module:
    """A tiny random-init base model of ``model_type`` (seeded)."""
    import transformers

    arch = get(model_type)
    config = arch.random_config(vocab_size, hidden, layers, heads, pad_token_id)
    torch.manual_seed(seed)
    return getattr(transformers, arch.base_class)(config)


# --------------------------------------------------------------------------------------------
# Export: a run's saved weights -> the base model of a *ForSequenceClassification
# --------------------------------------------------------------------------------------------


def export_name(key: str, config, k: int) -> str | None:
    """The base-model name of a run's saved weight ``key``, or None for the head and parts not exported.

    ``k``: the trained top layers of a topk run (``top.layers.i`` is layer ``L - k + i``; ``top.norm``
    the final norm), 0 otherwise. ``backbone.*`` (finetune) names are the base model's own; the
    ``pooler`` pooling's copy of the pretrained pooler is what ran, so it replaces the backbone's.
    """
    arch = for_model(config)
    if key.startswith("head."):
        return None
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        return None if arch.pooler and rest.startswith(arch.pooler + ".") else rest
    if key.startswith("pooling.pooler.") and arch.pooler:
        return f"{arch.pooler}." + key[len("pooling.pooler."):]
    if key.startswith("top.layers."):
        i, rest = key[len("top.layers."):].split(".", 1)
        return f"{arch.layers}.{num_layers(config) - k + int(i)}.{rest}"
    if key.startswith("top.norm.") and arch.norm:
        return f"{arch.norm}." + key[len("top.norm."):]
    if key.startswith("top.rotary_emb."):
        return None  # buffers computed from the config
    return key  # anything else must be a base-model weight, or the export refuses it
