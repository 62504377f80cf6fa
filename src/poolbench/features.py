"""One backbone forward per (model, dataset, split, truncation, max_len), cached on disk.

Every pooling and seed of the frozen regime trains on the same cached token states, so the
expensive forward runs once; the ``topk`` regime (:mod:`poolbench.topk`) reads the states entering
its trainable layers from the same cache. The cache is ragged (no padding stored):

    <dir>/hidden.npy        (total_tokens, k, H) float16 (or float32) – the last k hidden states
    <dir>/input_ids.npy     (total_tokens,) int64
    <dir>/sentence_ids.npy  (total_tokens,) int32 (-1 for special tokens)
    <dir>/offsets.npy       (n_examples + 1,) int64 – example i owns rows offsets[i]:offsets[i+1]
    <dir>/index.parquet     id, label, n_tokens (in the dataset's row order)
    <dir>/info.json         model, layers, state_indices, hidden size, dtype, tokens, wall time, tokens/s

``state_indices`` are the Hugging Face ``hidden_states`` indices of the k stored states (0 = the
embedding output, L = the final state, after a decoder's final norm). The folder is written with
:func:`poolbench.io.atomic_dir`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import arch
from .encoding import Encoded, encode
from .io import atomic_dir

FP16_MAX = float(np.finfo(np.float16).max)


def encode_all(texts, tokenizer, truncation: str, max_len: int) -> list[Encoded]:
    return [encode(t, tokenizer, truncation, max_len) for t in tqdm(texts, desc="tokenise", unit="text",
                                                                     mininterval=5)]


def length_batches(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Indices grouped longest-first so that each padded batch holds at most ``max_tokens`` tokens."""
    order = np.argsort(-lengths, kind="stable")
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > max_tokens:
            batches.append(np.array(current))
            current = []
        current.append(i)
    if current:
        batches.append(np.array(current))
    return batches


def pad_batch(seqs: list[np.ndarray], pad_value, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D arrays to a (B, T) tensor on ``side`` ("right" or "left"); returns (values, attention_mask)."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    T = max(len(s) for s in seqs)
    values = np.full((len(seqs), T), pad_value, dtype=seqs[0].dtype)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        values[i, span] = s
        mask[i, span] = 1
    return torch.from_numpy(values), torch.from_numpy(mask)


def backbone_hidden_states(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int):
    """The last ``k`` layers' hidden states (list of (B, T, H)); the last entry is the final layer.

    Position ids count real tokens only (:func:`poolbench.arch.position_ids`: 0..n-1 per row, from
    ``padding_idx + 1`` for RoBERTa), so states do not depend on the padding side and match the
    unpadded rows the feature cache stores, i.e. the model's own forward on each row alone.
    """
    position_ids = arch.position_ids(backbone.config, attention_mask)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   output_hidden_states=True)
    return list(out.hidden_states[-k:])


CACHE_DTYPES = {"float16": np.float16, "float32": np.float32}


def extract(examples: pd.DataFrame, backbone, tokenizer, out_dir: Path, *, truncation: str, max_len: int,
            layers: int, max_batch_tokens: int = 8192, model_name: str = "", dtype: str = "float16") -> dict:
    """Run the backbone once over ``examples`` (columns id, text, label) and write the cache.

    ``layers``: how many final hidden states to keep (see :func:`poolbench.topk.layers_to_cache`);
    ``dtype``: float16 (default, half the disk and memory) or float32.
    """
    start = time.perf_counter()
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
    encoded = encode_all(examples["text"].tolist(), tokenizer, truncation, max_len)
    lengths = np.array([len(e.input_ids) for e in encoded])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden_size = backbone.config.hidden_size
    n_layers = arch.num_layers(backbone)
    if layers > n_layers + 1:
        raise ValueError(f"cannot cache {layers} hidden states: {model_name or 'the model'} has {n_layers} "
                         f"layers ({n_layers + 1} states with the embedding output)")
    device = next(backbone.parameters()).device
    info = {}

    def write(tmp: Path) -> None:
        hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=CACHE_DTYPES[dtype],
                                           shape=(int(offsets[-1]), layers, hidden_size))
        fwd_start = time.perf_counter()
        with torch.inference_mode(), tqdm(total=int(offsets[-1]), desc=f"forward {model_name}", unit="tok",
                                          mininterval=10) as bar:
            for idx in length_batches(lengths, max_batch_tokens):
                ids, mask = pad_batch([encoded[i].input_ids for i in idx], tokenizer.pad_token_id)
                states = backbone_hidden_states(backbone, ids.to(device), mask.to(device), layers)
                states = torch.stack(states, dim=2).float().cpu()  # B,T,k,H
                peak = float(states.abs().max())
                if not np.isfinite(peak) or (dtype == "float16" and peak > FP16_MAX):
                    raise FloatingPointError(f"hidden states reach {peak:.3g}, beyond {dtype}'s range")
                for row, i in enumerate(idx):
                    hidden[offsets[i]: offsets[i + 1]] = states[row, : lengths[i]].numpy()
                bar.update(int(lengths[idx].sum()))
        fwd_wall = time.perf_counter() - fwd_start
        hidden.flush()
        del hidden
        np.save(tmp / "input_ids.npy", np.concatenate([e.input_ids for e in encoded]))
        np.save(tmp / "sentence_ids.npy", np.concatenate([e.sentence_ids for e in encoded]))
        np.save(tmp / "offsets.npy", offsets)
        pd.DataFrame({"id": examples["id"].to_numpy(), "label": examples["label"].to_numpy(),
                      "n_tokens": lengths}).to_parquet(tmp / "index.parquet", index=False)
        info.update({"model": model_name, "layers": layers, "num_hidden_layers": n_layers,
                     "state_indices": list(range(n_layers + 1 - layers, n_layers + 1)), "hidden_size": hidden_size,
                     "dtype": dtype, "truncation": truncation, "max_len": max_len, "examples": len(examples),
                     "tokens": int(offsets[-1]), "forward_wall_s": round(fwd_wall, 2),
                     "tokens_per_s": round(offsets[-1] / max(fwd_wall, 1e-9), 1),
                     "wall_s": round(time.perf_counter() - start, 2), "torch_threads": torch.get_num_threads()})
        (tmp / "info.json").write_text(json.dumps(info, indent=2))

    atomic_dir(out_dir, write)
    return info


class FeatureSet:
    """A cached split; ``batch(rows)`` returns padded tensors for the poolings.

    ``states``: the ``hidden_states`` indices to load (default: every stored one), e.g.
    :func:`poolbench.topk.topk_state_indices` for the topk regime; only those are read into memory.
    ``padding_side``: where ``batch`` pads ("right" or "left"; results do not depend on it).
    """

    def __init__(self, path: Path, in_memory: bool = True, states=None, padding_side: str = "right"):
        path = Path(path)
        if not (path / "info.json").is_file():
            raise FileNotFoundError(f"no feature cache at {path} (info.json missing)")
        self.info = json.loads((path / "info.json").read_text())
        hidden = np.load(path / "hidden.npy", mmap_mode="r")
        L, k = self.info["num_hidden_layers"], hidden.shape[1]
        stored = list(self.info.get("state_indices", range(L + 1 - k, L + 1)))  # older caches: the last k
        if states is None:
            columns = list(range(k))
        else:
            missing = [s for s in states if s not in stored]
            if missing:
                raise ValueError(f"feature cache {path} holds hidden states {stored}, not {missing}: rebuild it "
                                 f"with more cached layers (cache_layers)")
            columns = [stored.index(s) for s in states]
        self.state_indices = [stored[c] for c in columns]
        if columns == list(range(k)):
            self.hidden = np.array(hidden) if in_memory else hidden
        else:  # a subset of the stored states: always read into memory
            self.hidden = np.ascontiguousarray(hidden[:, columns])
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side
        self.sentence_ids = np.load(path / "sentence_ids.npy")
        self.offsets = np.load(path / "offsets.npy")
        self.index = pd.read_parquet(path / "index.parquet")
        self.labels = self.index["label"].to_numpy()
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_layers(self) -> int:
        return self.hidden.shape[1]

    def batch(self, rows: np.ndarray) -> dict:
        """hidden_states (list of k (B, T, H) float32), attention_mask, sentence_ids, labels."""
        spans = [(self.offsets[r], self.offsets[r + 1]) for r in rows]
        T = max(b - a for a, b in spans)
        k, H = self.hidden.shape[1:]
        states = np.zeros((len(rows), T, k, H), dtype=np.float32)
        sent = np.full((len(rows), T), -1, dtype=np.int64)
        mask = np.zeros((len(rows), T), dtype=np.int64)
        for i, (a, b) in enumerate(spans):
            at = slice(0, b - a) if self.padding_side == "right" else slice(T - (b - a), T)
            states[i, at] = self.hidden[a:b]
            sent[i, at] = self.sentence_ids[a:b]
            mask[i, at] = 1
        states = torch.from_numpy(states)
        return {
            "hidden_states": [states[:, :, j] for j in range(k)],
            "attention_mask": torch.from_numpy(mask),
            "sentence_ids": torch.from_numpy(sent),
            "labels": torch.from_numpy(self.labels[rows].astype(np.int64)),
        }
