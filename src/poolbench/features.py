"""One backbone forward per (model, dataset, split, truncation, max_len), cached on disk.

Every pooling and seed of the frozen regime trains on the same cached token states, so the
expensive forward runs once. The cache is ragged (no padding stored):

    <dir>/hidden.npy        (total_tokens, k, H) float16 – the last k layers' states, token-major
    <dir>/input_ids.npy     (total_tokens,) int64
    <dir>/sentence_ids.npy  (total_tokens,) int32 (-1 for special tokens)
    <dir>/offsets.npy       (n_examples + 1,) int64 – example i owns rows offsets[i]:offsets[i+1]
    <dir>/index.parquet     id, label, n_tokens (in the dataset's row order)
    <dir>/info.json         model, layers, hidden size, tokens, wall time, tokens/s

The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .encoding import Encoded, encode

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


def pad_batch(seqs: list[np.ndarray], pad_value) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D arrays to a (B, T) tensor; returns (values, attention_mask)."""
    T = max(len(s) for s in seqs)
    values = np.full((len(seqs), T), pad_value, dtype=seqs[0].dtype)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        values[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return torch.from_numpy(values), torch.from_numpy(mask)


def backbone_hidden_states(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int):
    """The last ``k`` layers' hidden states (list of (B, T, H)); the last entry is the final layer."""
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return list(out.hidden_states[-k:])


def extract(examples: pd.DataFrame, backbone, tokenizer, out_dir: Path, *, truncation: str, max_len: int,
            layers: int, max_batch_tokens: int = 8192, model_name: str = "") -> dict:
    """Run the backbone once over ``examples`` (columns id, text, label) and write the cache."""
    start = time.perf_counter()
    encoded = encode_all(examples["text"].tolist(), tokenizer, truncation, max_len)
    lengths = np.array([len(e.input_ids) for e in encoded])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden_size = backbone.config.hidden_size
    n_layers = backbone.config.num_hidden_layers
    if layers > n_layers:
        raise ValueError(f"cannot cache {layers} layers: {model_name or 'the model'} has {n_layers}")

    device = next(backbone.parameters()).device
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # left by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), layers, hidden_size))
        fwd_start = time.perf_counter()
        with torch.inference_mode(), tqdm(total=int(offsets[-1]), desc=f"forward {model_name}", unit="tok",
                                          mininterval=10) as bar:
            for idx in length_batches(lengths, max_batch_tokens):
                ids, mask = pad_batch([encoded[i].input_ids for i in idx], tokenizer.pad_token_id)
                states = backbone_hidden_states(backbone, ids.to(device), mask.to(device), layers)
                states = torch.stack(states, dim=2).float().cpu()  # B,T,k,H
                peak = float(states.abs().max())
                if not np.isfinite(peak) or peak > FP16_MAX:
                    raise FloatingPointError(f"hidden states reach {peak:.3g}, beyond float16's range")
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
        info = {"model": model_name, "layers": layers, "num_hidden_layers": n_layers, "hidden_size": hidden_size,
                "truncation": truncation, "max_len": max_len, "examples": len(examples),
                "tokens": int(offsets[-1]), "forward_wall_s": round(fwd_wall, 2),
                "tokens_per_s": round(offsets[-1] / max(fwd_wall, 1e-9), 1),
                "wall_s": round(time.perf_counter() - start, 2), "torch_threads": torch.get_num_threads()}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return info


class FeatureSet:
    """A cached split, memory-mapped; ``batch(rows)`` returns padded tensors for the poolings."""

    def __init__(self, path: Path, in_memory: bool = True):
        path = Path(path)
        if not (path / "info.json").is_file():
            raise FileNotFoundError(f"no feature cache at {path} (info.json missing)")
        self.info = json.loads((path / "info.json").read_text())
        self.hidden = np.load(path / "hidden.npy", mmap_mode=None if in_memory else "r")
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
            states[i, : b - a] = self.hidden[a:b]
            sent[i, : b - a] = self.sentence_ids[a:b]
            mask[i, : b - a] = 1
        states = torch.from_numpy(states)
        return {
            "hidden_states": [states[:, :, j] for j in range(k)],
            "attention_mask": torch.from_numpy(mask),
            "sentence_ids": torch.from_numpy(sent),
            "labels": torch.from_numpy(self.labels[rows].astype(np.int64)),
        }
