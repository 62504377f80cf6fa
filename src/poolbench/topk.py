"""Partial fine-tuning from the feature cache (the ``topk`` regime), and numeric precision.

With the top ``k`` of a backbone's ``L`` layers trainable and everything below frozen, the frozen
part computes the same states at every step: the states *entering* layer ``L-k`` (Hugging Face's
``hidden_states[L-k]``). The feature cache stores them once (:mod:`poolbench.features`), and a
:class:`TopLayers` module – a copy of the backbone's top ``k`` layers, plus the final norm of
decoders – recomputes the rest at each step. The classifier holds only what trains.

Indices below are Hugging Face ``hidden_states`` indices: 0 is the embedding output, ``i`` the
output of layer ``i`` (1-based) and ``L`` the final state, which for Llama-like decoders is taken
*after* the final RMSNorm (BERT has none). ``tests/test_topk.py`` proves that this is the live
backbone with its lower layers frozen: same logits, same training steps (dropout off).

Positions: the cache holds unpadded rows, so every example's tokens sat at positions 0..n-1 when
its states were computed. :class:`TopLayers` gives rotary layers the same positions
(``cumsum(mask) - 1``), whichever side a batch is padded on; ``backbone_hidden_states`` does the
same for the live backbone.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16", "auto")


# --------------------------------------------------------------------------------------------
# Which states the cache keeps
# --------------------------------------------------------------------------------------------


def layers_to_cache(cache_layers: int, trainable_layers=()) -> int:
    """How many final ``hidden_states`` the feature cache must keep.

    The frozen regime reads the last ``cache_layers``; a ``topk`` regime with ``k`` trainable layers
    needs the entry state ``hidden_states[L-k]``, i.e. the last ``k + 1``.
    """
    ks = [int(k) for k in trainable_layers if k != "all"]
    return max([int(cache_layers), *[k + 1 for k in ks]])


def resolve_trainable_layers(value, model: str):
    """A regime's ``trainable_layers`` for one model: an int, ``"all"``, or a {model: int} mapping."""
    if isinstance(value, dict):
        if model not in value:
            raise ValueError(f"trainable_layers names {sorted(value)}, not the model {model!r}")
        return value[model]
    return value


def topk_state_indices(num_hidden_layers: int, pool_layers: int, k: int) -> list[int]:
    """``hidden_states`` indices a top-``k`` classifier reads from the cache, oldest first.

    The last one is the entry state ``L-k``; those before it are the frozen states the poolings
    see among their last ``pool_layers`` (``layers_concat`` reads 4). The states above ``L-k`` are
    recomputed by :class:`TopLayers`, never read.
    """
    L = int(num_hidden_layers)
    if not 1 <= k <= L:
        raise ValueError(f"trainable_layers={k} must be between 1 and the backbone's {L} layers")
    first = max(0, L - max(int(pool_layers), k + 1) + 1)
    return list(range(first, L - k + 1))


# --------------------------------------------------------------------------------------------
# The trainable top block
# --------------------------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0..n-1 over each row's real tokens, left or right padding alike (pads get a valid 0 or n-1)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _blocks(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    if hasattr(backbone, "encoder") and hasattr(backbone.encoder, "layer"):
        return "bert", backbone.encoder.layer
    if hasattr(backbone, "layers") and hasattr(backbone, "rotary_emb"):
        return "llama", backbone.layers
    raise ValueError(f"the topk regime supports BERT-like encoders and Llama-like decoders, "
                     f"not {type(backbone).__name__}")


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


class TopLayers(nn.Module):
    """Copies of a backbone's top ``k`` layers (+ final norm of a Llama-like decoder).

    ``forward(entry, attention_mask)`` takes ``hidden_states[L-k]`` (B, T, H) and returns the
    ``k`` states after it, ``hidden_states[L-k+1 .. L]``, the last one normed as the backbone's.
    The attention mask is built by the same transformers function the backbone uses (bidirectional
    for encoders, causal for decoders), so it suits the configured attention implementation.
    """

    def __init__(self, backbone: nn.Module, k: int):
        super().__init__()
        self.arch, blocks = _blocks(backbone)
        L = len(blocks)
        if not 1 <= int(k) <= L:
            raise ValueError(f"trainable_layers={k} must be between 1 and the backbone's {L} layers")
        self.k, self.num_hidden_layers = int(k), L
        self.config = backbone.config
        self.layers = nn.ModuleList(copy.deepcopy(blocks[L - self.k:]))
        self.norm = copy.deepcopy(backbone.norm) if self.arch == "llama" else None
        self.rotary_emb = copy.deepcopy(backbone.rotary_emb) if self.arch == "llama" else None
        self.float().requires_grad_(True)
        if self.rotary_emb is not None:
            self.rotary_emb.requires_grad_(False)  # buffers only, but be explicit

    def attention_bias(self, entry: Tensor, attention_mask: Tensor, position_ids: Tensor | None):
        from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

        make = create_causal_mask if self.arch == "llama" else create_bidirectional_mask
        kwargs = {"config": self.config, "inputs_embeds": entry, "attention_mask": attention_mask, "cache": None,
                  "position_ids": position_ids,
                  "cache_position": torch.arange(entry.shape[1], device=entry.device)}
        return make(**_accepted(make, kwargs))

    def forward(self, entry: Tensor, attention_mask: Tensor) -> list[Tensor]:
        entry = entry.float()
        outs, h = [], entry
        if self.arch == "llama":
            position_ids = position_ids_from_mask(attention_mask)
            bias = self.attention_bias(entry, attention_mask, position_ids)
            rope = self.rotary_emb(entry, position_ids=position_ids)
            for layer in self.layers:
                h = layer(h, attention_mask=bias, position_ids=position_ids, position_embeddings=rope)
                h = h[0] if isinstance(h, tuple) else h
                outs.append(h)
            outs[-1] = self.norm(outs[-1])
        else:
            bias = self.attention_bias(entry, attention_mask, None)
            for layer in self.layers:
                h = layer(h, bias)
                h = h[0] if isinstance(h, tuple) else h
                outs.append(h)
        return outs

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, top {self.k} of {self.num_hidden_layers} layers"


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 matrix units: x86 AMX-BF16 or AVX512-BF16, or Arm BF16.

    Reads the flags of /proc/cpuinfo (``cpuinfo`` overrides it, for tests); False where it is
    unreadable. torch's ``get_cpu_capability()`` cannot tell (it says "AVX512" for both kinds).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})


def resolve_precision(setting: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: what a run with ``precision: setting`` computes in on ``device``.

    ``auto`` is bf16 autocast where the hardware has native bf16 matrix units (CPU AMX or
    AVX512-BF16; a CUDA GPU that supports bf16), fp32 elsewhere. ``bf16`` forces it everywhere.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != "auto":
        return setting
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device | str):
    """bf16 autocast on ``device`` for ``precision == 'bf16'``; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
