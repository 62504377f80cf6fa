"""Partial fine-tuning from the feature cache (the ``topk`` regime), and numeric precision.

With the top ``k`` of a backbone's ``L`` layers trainable and everything below frozen, the frozen
part computes the same states at every step: the states *entering* layer ``L-k`` (Hugging Face's
``hidden_states[L-k]``). The feature cache stores them once (:mod:`poolbench.features`), and a
:class:`TopLayers` module – a copy of the backbone's top ``k`` layers, plus the final norm of
decoders – recomputes the rest at each step. The classifier holds only what trains.

Indices below are Hugging Face ``hidden_states`` indices: 0 is the embedding output, ``i`` the
output of layer ``i`` (1-based) and ``L`` the final state, which for decoders is taken *after*
the final norm (GPT-2's ``ln_f``, Llama's RMSNorm; encoders have none). ``tests/test_topk.py``
proves that this is the live backbone with its lower layers frozen: same logits, same training
steps (dropout off).

Positions: the cache holds unpadded rows, so every example's tokens sat at the positions of an
unpadded row when its states were computed. :class:`TopLayers` gives rotary layers the same
positions (:func:`poolbench.arch.position_ids`), whichever side a batch is padded on;
``backbone_hidden_states`` does the same for the live backbone.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from . import arch

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


def top_layer_count(state: dict, prefix: str = "top.") -> int:
    """k of a saved :class:`TopLayers` (a topk run's weights): its number of ``<prefix>layers.<i>`` blocks."""
    start = prefix + "layers."
    found = {int(k[len(start):].split(".")[0]) for k in state if k.startswith(start)}
    if found != set(range(len(found))):
        raise ValueError(f"top layers {sorted(found)} are not 0..k-1")
    return len(found)


class TopLayers(nn.Module):
    """Copies of a backbone's top ``k`` layers (+ its final norm, if any: GPT-2's ``ln_f``, Llama's ``norm``).

    ``forward(entry, attention_mask)`` takes ``hidden_states[L-k]`` (B, T, H) and returns the
    ``k`` states after it, ``hidden_states[L-k+1 .. L]``, the last one normed as the backbone's.
    Layers, norm, positions and the attention mask come from the backbone's
    :class:`poolbench.arch.Arch` adapter, so any architecture it knows works here.
    """

    def __init__(self, backbone: nn.Module, k: int):
        super().__init__()
        self.adapter = arch.for_model(backbone)
        blocks = arch.layers(backbone)
        L = len(blocks)
        if not 1 <= int(k) <= L:
            raise ValueError(f"trainable_layers={k} must be between 1 and the backbone's {L} layers")
        self.k, self.num_hidden_layers = int(k), L
        self.config = backbone.config
        self.layers = nn.ModuleList(copy.deepcopy(blocks[L - self.k:]))
        norm, rope = arch.final_norm(backbone), arch.rotary(backbone)
        self.norm = copy.deepcopy(norm) if norm is not None else None
        self.rotary_emb = copy.deepcopy(rope) if rope is not None else None
        self.float().requires_grad_(True)
        if self.rotary_emb is not None:
            self.rotary_emb.requires_grad_(False)  # buffers only, but be explicit

    def forward(self, entry: Tensor, attention_mask: Tensor) -> list[Tensor]:
        entry = entry.float()
        positions = arch.position_ids(self.config, attention_mask)
        mask = arch.layer_mask(self.config, entry, attention_mask, positions)
        rope = self.rotary_emb(entry, position_ids=positions) if self.rotary_emb is not None else None
        outs, h = [], entry
        for layer in self.layers:
            h = arch.call_layer(self.adapter, layer, h, mask, positions, rope)
            outs.append(h)
        if self.norm is not None:
            outs[-1] = self.norm(outs[-1])
        return outs

    def extra_repr(self) -> str:
        return f"arch={self.adapter.model_type!r}, top {self.k} of {self.num_hidden_layers} layers"


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
