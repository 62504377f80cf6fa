"""Execute one run of the study (train, predict, save) or evaluate a trained run on another set.

A run folder (see :data:`poolbench.paths.RUN`) holds ``metrics.json`` (schema:
:class:`poolbench.metrics.RunMetrics`), ``predictions.parquet``, and ``transfer-<set>.parquet`` per
further evaluation set. The trained weights (pooling, head, and any trained backbone layers) go to
``resources/weights/<run>/model.safetensors``. Every file is written atomically, ``metrics.json``
last, so a killed run never leaves a metrics file behind.

Every setting comes from the run's ``spec`` (:func:`poolbench.config.run_spec`), never from a
global config: the spec is what Snakemake compares to decide a rerun.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import reads_cache
from .features import FeatureSet
from .io import atomic_write, write_parquet
from .metrics import RunMetrics
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


TEXT_COLUMNS = ("text", "verdict")  # a dataset's text; predictions keep only its metadata


def predictions_table(examples: pd.DataFrame, prob: np.ndarray) -> pd.DataFrame:
    """id, label, pred, p_positive, plus the dataset's metadata columns (never its text)."""
    meta = examples.drop(columns=[c for c in TEXT_COLUMNS if c in examples])
    return pd.concat([meta[["id", "label"]],
                      pd.DataFrame({"pred": (prob >= 0.5).astype(np.int64), "p_positive": prob}),
                      meta.drop(columns=["id", "label"])], axis=1)


def train_config(spec: dict) -> TrainConfig:
    regime = spec["regime"]
    return TrainConfig(**{k: v for k, v in regime.items() if k in TrainConfig.__dataclass_fields__},
                       options={spec["pooling"]["name"]: spec["pooling"]["options"]})


def build(spec: dict, model_dir: Path, frames: dict, features: dict):
    """The classifier and its data for a run: ``{split_key: FeatureSet | LiveData}``.

    ``frames``: {(dataset, split): DataFrame}; ``features``: {(dataset, split): cache dir} for
    regimes that read cached states.
    """
    run, family, cfg = spec["run"], spec["family"], train_config(spec)
    regime = spec["kind"]
    if regime == "frozen":
        data = {key: FeatureSet(path) for key, path in features.items()}
        # The backbone itself is only needed for a pretrained part a pooling reuses (BERT's pooler).
        backbone = load_backbone(model_dir) if POOLINGS[run["pooling"]].needs_pooler else None
        first = next(iter(data.values()))
        model = build_classifier(run["pooling"], family, first.info["hidden_size"], first.num_layers, cfg,
                                 backbone, None)
    elif regime == "finetune":
        backbone = load_backbone(model_dir)
        tokenizer = load_tokenizer(model_dir)
        from .topk import resolve_trainable_layers

        set_trainable_layers(backbone, resolve_trainable_layers(cfg.trainable_layers, run["model"]))
        data = {key: LiveData(df, tokenizer, run["truncation"], run["max_len"]) for key, df in frames.items()}
        model = build_classifier(run["pooling"], family, backbone.config.hidden_size, spec["cache_layers"], cfg,
                                 backbone, backbone)
    elif regime == "topk":
        # The top k layers train, recomputed from the cached states that enter them (poolbench.topk);
        # the model keeps copies of those layers only, so the loaded backbone is dropped here.
        from .topk import resolve_trainable_layers
        from .train import build_topk_classifier

        k = resolve_trainable_layers(cfg.trainable_layers, run["model"])
        model = build_topk_classifier(run["pooling"], family, load_backbone(model_dir), cfg, spec["cache_layers"], k=k)
        data = {key: FeatureSet(path, states=model.cache_states) for key, path in features.items()}
    else:
        raise ValueError(f"unknown regime kind {regime!r}")
    for key in data:  # a cache must line up with the dataset table, row by row
        if key in frames and not np.array_equal(data[key].labels, frames[key]["label"].to_numpy()):
            raise ValueError(f"feature cache for {key} does not match its dataset table (rebuild it)")
    return model.to(default_device()), data


def trained_state(model: torch.nn.Module) -> dict:
    """Everything of the classifier except the frozen backbone weights (those reload from the model)."""
    frozen = {name for name, p in model.named_parameters() if name.startswith("backbone.") and not p.requires_grad}
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k not in frozen}


def save_weights(model: torch.nn.Module, path: Path, spec: dict) -> None:
    from safetensors.torch import save_file

    from .config import canonical

    state = trained_state(model)
    atomic_write(path, lambda p: save_file(state, str(p), metadata={"spec": canonical(spec)}))


def check_weights(path: Path, spec: dict) -> None:
    """Refuse weights that another run (model, pooling or regime) made: their spec is in the file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = json.loads((f.metadata() or {}).get("spec", "{}")).get("run", {})
    for key in ("model", "pooling", "regime"):
        if saved.get(key) != spec["run"][key]:
            raise ValueError(f"{path} holds weights of a {key} {saved.get(key)!r} run, not {spec['run'][key]!r}")


def load_weights(model: torch.nn.Module, path: Path, spec: dict | None = None) -> None:
    """Load a run's weights; with ``spec``, refuse weights that another run made."""
    from safetensors.torch import load_file

    if spec is not None:
        check_weights(path, spec)
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this run's classifier (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); rebuild the run's weights")


def _predict_checked(model, data, what: str) -> np.ndarray:
    prob = predict(model, data)
    if not np.isfinite(prob).all():  # never a silent coin-flip result from NaN scores
        raise TrainingError(f"{what}: {int((~np.isfinite(prob)).sum())} of {len(prob)} predictions are not "
                            f"finite (non-finite inputs or weights); nothing written")
    return prob


def run_one(*, spec: dict, model_dir: Path, datasets: dict, features: dict, metrics_path: Path,
            predictions_path: Path, weights_path: Path, git_commit: str = "unknown") -> RunMetrics:
    """Train and evaluate one run; ``datasets``/``features``: {(name, split): path}."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = spec["run"]
    torch.manual_seed(run["seed"])
    frames = {key: pd.read_parquet(path) for key, path in datasets.items()}
    model, data = build(spec, Path(model_dir), frames, features)
    desc = f"{run['dataset']}/{run['model']}/{run['pooling']}/seed{run['seed']}"
    if spec["kind"] == "frozen":  # heads trained to their optimum: logistic regression or early stopping
        from .heads import HeadConfig, fit_head

        fit = fit_head(model, data[(run["dataset"], "train")], data[(run["dataset"], "test")], train_config(spec),
                       HeadConfig.from_dict(spec["regime"].get("head")), run["seed"], desc=desc)
    else:
        fit = train(model, data[(run["dataset"], "train")], train_config(spec), run["seed"], desc=desc)

    test_key = (run["dataset"], "test")
    t0 = time.perf_counter()
    prob = _predict_checked(model, data[test_key], desc)
    test = {**scores(frames[test_key]["label"].to_numpy(), prob), "eval_wall_s": time.perf_counter() - t0}
    write_parquet(predictions_path, predictions_table(frames[test_key], prob))
    save_weights(model, Path(weights_path), spec)
    metrics = RunMetrics(
        **run, family=spec["family"], n=test["n"], accuracy=test["accuracy"], macro_f1=test["macro_f1"],
        train={**fit, "eval_wall_s": test["eval_wall_s"]},
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0, torch_threads=torch.get_num_threads(),
        device=str(default_device()), precision=model.precision, spec=spec,
        versions=package_versions(), git_commit=git_commit)
    metrics.write(metrics_path)
    return metrics


def evaluate_one(*, spec: dict, model_dir: Path, weights: Path, dataset: Path, features: Path | None,
                 evalset: str, out: Path) -> pd.DataFrame:
    """Score a trained run on the test split of ``evalset`` (no training); write its predictions."""
    frames = {(evalset, "test"): pd.read_parquet(dataset)}
    model, data = build(spec, Path(model_dir), frames, {(evalset, "test"): features} if features else {})
    load_weights(model, Path(weights), spec)
    prob = _predict_checked(model, data[(evalset, "test")], f"{spec['run']} on {evalset}")
    table = predictions_table(frames[(evalset, "test")], prob)
    write_parquet(out, table)
    return table


def score_texts(spec: dict, model_dir: Path, weights: Path, texts: pd.DataFrame) -> np.ndarray:
    """P(positive) for ``texts`` (a ``text`` column) from a trained run, through the run's own path.

    Regimes that train from cached states get a cache of these texts first (in a temporary
    folder), so a prediction goes through exactly the computation the pipeline evaluated.
    """
    from .features import extract

    key = ("input", "test")
    frame = texts[["text"]].assign(id=[str(i) for i in range(len(texts))], label=0)
    run = spec["run"]
    with tempfile.TemporaryDirectory() as tmp:
        features = {}
        if reads_cache(spec["kind"]):
            backbone = load_backbone(Path(model_dir)).to(default_device())
            extract(frame, backbone, load_tokenizer(Path(model_dir)), Path(tmp) / "cache", truncation=run["truncation"],
                    max_len=run["max_len"], layers=spec["cache"]["layers"], dtype=spec["cache"]["dtype"],
                    model_name=run["model"])
            features[key] = Path(tmp) / "cache"
        model, data = build(spec, Path(model_dir), {key: frame}, features)
        load_weights(model, Path(weights), spec)
        return _predict_checked(model, data[key], f"{run['model']}/{run['pooling']}")


