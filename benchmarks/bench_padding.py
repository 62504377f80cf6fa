"""Benchmark: the feature cache's batching (length-sorted, dynamic padding) vs padding to max_length.

Both run the same backbone over the same IMDB reviews at the same max_len and produce the same
last-layer states for the real tokens; the script checks that, then prints the wall-time ratio.

    python benchmarks/bench_padding.py --model resources/models/minilm-l6 --n 200 --max-len 256

Needs a materialised model (``snakemake resources/models/minilm-l6``) and POOLBENCH_DATA_DIR or hub access.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from poolbench.data import imdb_subset
from poolbench.features import backbone_hidden_states, encode_all, length_batches, pad_batch
from poolbench.models import load_backbone, load_tokenizer


def run(backbone, encoded, batches, pad_id, fixed_len=None):
    out = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for idx in batches:
            seqs = [encoded[i].input_ids for i in idx]
            if fixed_len:  # baseline: every sequence padded to max_length
                seqs = [np.concatenate([s, np.full(fixed_len - len(s), pad_id)]) for s in seqs]
                mask = torch.from_numpy(np.array([[1] * len(encoded[i].input_ids) + [0] * (fixed_len - len(encoded[i].input_ids)) for i in idx]))
                ids = torch.from_numpy(np.stack(seqs))
            else:
                ids, mask = pad_batch(seqs, pad_id)
            states = backbone_hidden_states(backbone, ids, mask, 1)[-1]
            for row, i in enumerate(idx):
                out[i] = states[row, : len(encoded[i].input_ids)]
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("resources/models/minilm-l6"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    backbone, tok = load_backbone(args.model), load_tokenizer(args.model)
    texts = imdb_subset("test", args.n, 0)["text"].tolist()
    encoded = encode_all(texts, tok, "head", args.max_len)
    lengths = np.array([len(e.input_ids) for e in encoded])
    order = np.arange(len(encoded))
    fixed = [order[i: i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    ours = length_batches(lengths, args.batch_size * int(lengths.mean()))
    t_base, base = run(backbone, encoded, fixed, tok.pad_token_id, fixed_len=args.max_len)
    t_ours, mine = run(backbone, encoded, ours, tok.pad_token_id)
    diff = max(float((base[i] - mine[i]).abs().max()) for i in range(len(encoded)))
    real = int(lengths.sum())
    print(f"model {args.model.name}, {args.n} IMDB test reviews, max_len {args.max_len}: "
          f"{real} real tokens, mean length {lengths.mean():.0f}")
    print(f"pad to max_length : {t_base:7.2f} s  ({real / t_base:7.0f} real tokens/s)")
    print(f"dynamic + sorted  : {t_ours:7.2f} s  ({real / t_ours:7.0f} real tokens/s)")
    print(f"speed-up {t_base / t_ours:.2f}x; max |difference| of real-token states {diff:.2e}")


if __name__ == "__main__":
    main()
