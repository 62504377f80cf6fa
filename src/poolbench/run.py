"""Execute one run of the study and write its results atomically.

A run folder (see :data:`poolbench.paths.RUN`) holds ``metrics.json`` and ``predictions.parquet``
(and ``transfer-<dataset>.parquet`` per transfer set). Files are written under temporary names and
renamed; ``metrics.json`` is renamed last, so a killed run never leaves a metrics file behind.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .features import FeatureSet
from .models import load_backbone, load_tokenizer
from .pooling import POOLINGS
from .train import (LiveData, TrainConfig, TrainingError, build_classifier, default_device, predict,
                    set_trainable_layers, train)

PACKAGES = ("poolbench", "torch", "transformers", "numpy", "pandas", "scikit-learn", "snakemake")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def macro_f1(labels: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted mean of the F1 of both classes (a class never predicted nor present scores 0)."""
    f1 = []
    for c in (0, 1):
        tp = np.sum((pred == c) & (labels == c))
        denom = np.sum(pred == c) + np.sum(labels == c)
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def scores(labels: np.ndarray, prob: np.ndarray) -> dict:
    pred = (prob >= 0.5).astype(int)
    return {"n": int(len(labels)), "accuracy": float((pred == labels).mean()), "macro_f1": macro_f1(labels, pred)}


def predictions_table(examples: pd.DataFrame, prob: np.ndarray) -> pd.DataFrame:
    """id, label, pred, p_positive, plus the dataset's metadata columns (never the text)."""
    meta = examples.drop(columns=["text"])
    return pd.concat([meta[["id", "label"]],
                      pd.DataFrame({"pred": (prob >= 0.5).astype(np.int64), "p_positive": prob}),
                      meta.drop(columns=["id", "label"])], axis=1)


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename onto ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when write() failed


def run_one(*, run: dict, model_spec: dict, regime_cfg: dict, model_dir: Path, datasets: dict, out_dir: Path,
            features: dict | None = None, transfer: tuple = (), pooling_options: dict | None = None,
            cache_layers: int = 4, git_commit: str = "unknown") -> dict:
    """Train and evaluate one (dataset, model, regime, truncation, max_len, pooling, seed).

    ``datasets``: {name: {split: parquet path}}; ``features``: {(name, split): cache dir} for the
    frozen regime; ``transfer``: names of datasets whose test split is also evaluated.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(run["seed"])
    cfg = TrainConfig(**{k: v for k, v in regime_cfg.items() if k in TrainConfig.__dataclass_fields__},
                      options=pooling_options or {})
    frame = {(name, split): pd.read_parquet(path) for name, splits in datasets.items() for split, path in splits.items()}
    family, regime = model_spec["family"], run["regime"]

    if regime == "frozen":
        data = {key: FeatureSet(path) for key, path in features.items()}
        # The backbone itself is only needed for a pretrained part a pooling reuses (BERT's pooler).
        backbone = load_backbone(model_dir) if POOLINGS[run["pooling"]].needs_pooler else None
        train_data = data[(run["dataset"], "train")]
        model = build_classifier(run["pooling"], family, train_data.info["hidden_size"], train_data.num_layers,
                                 cfg, backbone, None)
    elif regime == "finetune":
        backbone = load_backbone(model_dir)
        tokenizer = load_tokenizer(model_dir)
        set_trainable_layers(backbone, cfg.trainable_layers)
        data = {key: LiveData(df, tokenizer, run["truncation"], run["max_len"]) for key, df in frame.items()
                if key[1] == "test" or key[0] == run["dataset"]}
        model = build_classifier(run["pooling"], family, backbone.config.hidden_size, cache_layers, cfg,
                                 backbone, backbone)
    else:
        raise ValueError(f"unknown regime {regime!r}")

    for key in data:  # the cache must line up with the dataset table, row by row
        if key in frame and not np.array_equal(data[key].labels, frame[key]["label"].to_numpy()):
            raise ValueError(f"feature cache for {key} does not match resources/data (rebuild it)")

    model.to(default_device())
    desc = f"{run['dataset']}/{run['model']}/{run['pooling']}/seed{run['seed']}"
    fit = train(model, data[(run["dataset"], "train")], cfg, run["seed"], desc=desc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in (run["dataset"], *transfer):
        key = (name, "test")
        t0 = time.perf_counter()
        prob = predict(model, data[key])
        if not np.isfinite(prob).all():  # never a silent coin-flip result from NaN scores
            raise TrainingError(f"{desc}: {int((~np.isfinite(prob)).sum())} of {len(prob)} predictions on "
                                f"{name}/test are not finite (non-finite inputs or weights); no metrics written")
        table = predictions_table(frame[key], prob)
        fname = "predictions.parquet" if name == run["dataset"] else f"transfer-{name}.parquet"
        atomic_write(out_dir / fname, lambda p: table.to_parquet(p, index=False))
        results[name] = {**scores(frame[key]["label"].to_numpy(), prob), "eval_wall_s": time.perf_counter() - t0}

    metrics = {
        **run,
        **{k: v for k, v in results[run["dataset"]].items()},
        "transfer": {k: v for k, v in results.items() if k != run["dataset"]},
        "family": family,
        "train": {k: v for k, v in fit.items()},
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "torch_threads": torch.get_num_threads(),
        "device": str(default_device()),
        "config": {"model": model_spec, "regime": regime_cfg, "pooling_options": (pooling_options or {}).get(run["pooling"], {}),
                   "cache_layers": cache_layers},
        "versions": package_versions(),
        "git_commit": git_commit,
    }
    atomic_write(out_dir / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    return metrics
