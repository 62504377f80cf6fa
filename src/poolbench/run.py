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

import hashlib
import json
import os
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

# Every package whose version can shape a run's numbers (constraints.txt pins them; README, "Reproducing
# a run bit for bit").
PACKAGES = ("poolbench", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "scipy",
            "scikit-learn", "gguf", "snakemake")
# The environment variables that choose the CPU kernels (instruction set) torch, oneDNN and MKL use.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS")


def cpu_kernels() -> dict:
    """Which CPU kernels this process computes with: torch's chosen capability and the settings that cap it.

    Float results differ in their last bits between instruction sets (AVX-512 against AVX2), so a
    bit-for-bit rebuild needs the same ``capability``; unset variables are recorded as None.
    """
    return {"capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
            "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available(),
            **{name: os.environ.get(name) for name in KERNEL_ENV}}


def versions(names) -> dict:
    """python's and each named package's installed version (None where a package is not installed)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def package_versions() -> dict:
    """The environment part of a run's record: python, :data:`PACKAGES` and the CPU kernels (``kernels``)."""
    return {**versions(PACKAGES), "kernels": cpu_kernels()}


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
    """The run's TrainConfig from its regime settings (absent keys: the dataclass defaults)."""
    regime, name, model = spec["regime"], spec["run"]["regime"], spec["run"]["model"]
    settings = {k: v for k, v in regime.items() if k in TrainConfig.__dataclass_fields__}
    if isinstance(settings.get("lr_grid"), dict):  # {model: [lr, ...]}: a grid per model
        if model not in settings["lr_grid"]:
            raise ValueError(f"regimes.{name}.lr_grid names no learning rates for model {model!r}")
        settings["lr_grid"] = settings["lr_grid"][model]
    try:
        cfg = TrainConfig(**settings, options={spec["pooling"]["name"]: spec["pooling"]["options"]})
    except ValueError as exc:
        raise ValueError(f"regimes.{name}: {exc}") from None
    if spec["kind"] == "frozen" and cfg.dev_fraction is not None:
        raise ValueError(f"regimes.{name}: dev_fraction is for fine-tuned regimes (topk, finetune); "
                         f"a frozen regime holds out head.val_fraction instead")
    return cfg


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


def saved_spec(path: Path) -> dict:
    """The spec of the run that wrote a weights file (its safetensors metadata; {} when absent)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("spec", "{}"))


def check_weights(path: Path, spec: dict) -> None:
    """Refuse weights that another run (model, pooling or regime) made: their spec is in the file."""
    saved = saved_spec(path).get("run", {})
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


INIT_PARTS = ("pooling.", "head.")  # what a fine-tuned run takes from its frozen counterpart (LP-FT)


def load_init(model: torch.nn.Module, path: Path, spec: dict) -> dict:
    """Start ``model``'s pooling and head from a frozen run's weights (the regime's ``init_from``, LP-FT).

    Only the pooling and head parameters load; trained transformer layers keep their pretrained
    values. Refuses, in one sentence, weights that are not those of the run's frozen counterpart
    (same dataset, model, truncation, max_len, pooling and seed, regime ``init_from``) or that were
    made with other settings than the counterpart's spec (``spec["init_from"]``, when present).
    Returns what ``metrics.json`` records: the weights' path and the frozen run.
    """
    from safetensors.torch import load_file

    from .config import canonical
    from .paths import RUN

    run, source = spec["run"], spec["regime"].get("init_from")
    if source is None:
        raise ValueError(f"regime {run['regime']!r} has no init_from; there is nothing to start from")
    expected = {**run, "regime": source}
    made_with = saved_spec(path)
    saved = made_with.get("run", {})
    wrong = [key for key in expected if saved.get(key) != expected[key]]
    if wrong:
        made_by = RUN.format(**saved) if set(expected) <= set(saved) else "an unknown run"
        raise ValueError(f"{path} holds the weights of {made_by}, not of the frozen run "
                         f"{RUN.format(**expected)} that {RUN.format(**run)} starts from "
                         f"(they differ in {', '.join(wrong)})")
    if "init_from" in spec and canonical(made_with) != canonical(spec["init_from"]):
        raise ValueError(f"{path} was made with other settings than the frozen run {RUN.format(**expected)} has "
                         f"in this config; rebuild it (rerun that run) before starting {RUN.format(**run)} from it")
    state = {k: v for k, v in load_file(str(path)).items() if k.startswith(INIT_PARTS)}
    wanted = {k for k in model.state_dict() if k.startswith(INIT_PARTS)}
    if set(state) != wanted:
        raise ValueError(f"{path} does not fit this run's pooling and head (missing {sorted(wanted - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - wanted)[:3]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ
        raise ValueError(f"{path} does not fit this run's pooling and head: {str(exc).splitlines()[-1].strip()}") from None
    where = Path(path)
    if where.is_absolute() and where.is_relative_to(Path.cwd()):  # as the rule gives it: from the workdir
        where = where.relative_to(Path.cwd())
    return {"weights": str(where), "run": RUN.format(**expected)}


def _predict_checked(model, data, what: str, batch_size: int = 64) -> np.ndarray:
    prob = predict(model, data, batch_size)
    if not np.isfinite(prob).all():  # never a silent coin-flip result from NaN scores
        raise TrainingError(f"{what}: {int((~np.isfinite(prob)).sum())} of {len(prob)} predictions are not "
                            f"finite (non-finite inputs or weights); nothing written")
    return prob


def run_one(*, spec: dict, model_dir: Path, datasets: dict, features: dict, metrics_path: Path,
            predictions_path: Path, weights_path: Path, init_weights: Path | None = None,
            git_commit: str = "unknown") -> RunMetrics:
    """Train and evaluate one run; ``datasets``/``features``: {(name, split): path}.

    ``init_weights``: the frozen counterpart's ``model.safetensors`` for a regime with ``init_from``
    (LP-FT: the pooling and head start from it, see :func:`load_init`); required there, refused elsewhere.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = spec["run"]
    source = spec["regime"].get("init_from")
    if source is not None and init_weights is None:
        raise ValueError(f"regime {run['regime']!r} starts from the frozen regime {source!r} (init_from), "
                         f"but the run got no weights to start from")
    if source is None and init_weights is not None:
        raise ValueError(f"regime {run['regime']!r} has no init_from, but the run got weights to start from")
    torch.manual_seed(run["seed"])
    frames = {key: pd.read_parquet(path) for key, path in datasets.items()}
    model, data = build(spec, Path(model_dir), frames, features)
    init = load_init(model, Path(init_weights), spec) if source is not None else None
    desc = f"{run['dataset']}/{run['model']}/{run['pooling']}/seed{run['seed']}"
    if spec["kind"] == "frozen":  # heads trained to their optimum: logistic regression or early stopping
        from .heads import HeadConfig, fit_head

        fit = fit_head(model, data[(run["dataset"], "train")], data[(run["dataset"], "test")], train_config(spec),
                       HeadConfig.from_dict(spec["regime"].get("head")), run["seed"], desc=desc)
    elif train_config(spec).dev_fraction is not None:  # early stopping on a dev split of train, lr grid
        from .heads import fit_finetuned

        fit = fit_finetuned(model, data[(run["dataset"], "train")], train_config(spec), run["seed"], desc=desc)
    else:
        fit = train(model, data[(run["dataset"], "train")], train_config(spec), run["seed"], desc=desc)
    if init is not None:
        fit["init_from"] = init

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
    """Score a trained run on the test split of ``evalset`` (no training); write its predictions.

    ``spec``: the evaluation's spec (:func:`poolbench.config.evaluation_spec`: the run's spec under ``run``);
    the file records it in its schema metadata, which is what tells a later invocation that it is current.
    """
    from .config import SPEC_METADATA, canonical

    run_spec = spec["run"]
    frames = {(evalset, "test"): pd.read_parquet(dataset)}
    model, data = build(run_spec, Path(model_dir), frames, {(evalset, "test"): features} if features else {})
    load_weights(model, Path(weights), run_spec)
    prob = _predict_checked(model, data[(evalset, "test")], f"{run_spec['run']} on {evalset}")
    table = predictions_table(frames[(evalset, "test")], prob)
    write_parquet(out, table, metadata={SPEC_METADATA: canonical(spec).encode()})
    return table


def text_window(spec: dict, model_dir: Path, truncation: str | None = None, max_len: int | None = None) -> tuple:
    """(truncation, max_len) for scoring with a run: the run's own, or others within the model's limit."""
    run = spec["run"]
    truncation, max_len = truncation or run["truncation"], max_len or run["max_len"]
    if truncation not in ("head", "tail", "head_tail"):
        raise ValueError(f"truncation must be head, tail or head_tail, not {truncation!r}")
    limit = spec.get("model", {}).get("max_positions")
    if limit is None:  # a random or hub model without a declared limit: the backbone's own
        limit = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
    if max_len < 2 or (limit is not None and max_len > limit):
        raise ValueError(f"--max-len {max_len} is outside {run['model']}'s limits (2 to {limit} tokens)")
    return truncation, int(max_len)


PREDICT_CACHE = "predict-cache/{model}/{truncation}-{max_len}/{key}"  # under resources_dir


def predict_cache_dir(root: Path, spec: dict, texts: list[str], truncation: str, max_len: int) -> Path:
    """The feature cache of ``texts`` under ``root`` (resources/), shared by every run of one backbone and window.

    The key hashes the texts, in order, with what else makes the cached states: the backbone's spec
    and the cached layers and dtype. So two runs of one backbone scoring one file run it once.
    """
    from .config import canonical

    digest = hashlib.sha256(canonical({"model": spec.get("model", spec["run"]["model"]), "cache": {
        k: spec["cache"][k] for k in ("layers", "dtype")}}).encode())
    for text in texts:
        digest.update(len(text.encode()).to_bytes(8, "little") + text.encode())
    return Path(root) / PREDICT_CACHE.format(model=spec["run"]["model"], truncation=truncation, max_len=max_len,
                                             key=digest.hexdigest()[:32])


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents while they are empty, up to and excluding ``root``."""
    for path in [folder, *folder.parents]:
        if path == root or not path.is_relative_to(root) or not path.is_dir() or any(path.iterdir()):
            return
        path.rmdir()


def score_texts(spec: dict, model_dir: Path, weights: Path, texts: pd.DataFrame, *, truncation: str | None = None,
                max_len: int | None = None, batch_size: int | None = None, cache_root: Path | None = None,
                log=None) -> np.ndarray:
    """P(positive) for ``texts`` (a ``text`` column) from a trained run, through the run's own path.

    Regimes that train from cached states get a cache of these texts first, so a prediction goes
    through exactly the computation the pipeline evaluated. With ``cache_root`` the cache is kept
    there (:func:`predict_cache_dir`) and reused by later calls; without it, it lives in a temporary
    folder. ``truncation`` / ``max_len`` default to the run's (:func:`text_window`); ``batch_size``
    (texts per batch) to the pipeline's (the cache's token budget, 64 for the head). ``log(msg)``
    hears whether the cache was built or reused.
    """
    from .features import extract

    run = spec["run"]
    truncation, max_len = text_window(spec, model_dir, truncation, max_len)
    key = ("input", "test")
    frame = texts[["text"]].assign(id=[str(i) for i in range(len(texts))], label=0)
    batch_tokens = batch_size * max_len if batch_size else spec.get("cache", {}).get("max_batch_tokens", 8192)
    window_spec = {**spec, "run": {**run, "truncation": truncation, "max_len": max_len}}
    with tempfile.TemporaryDirectory() as tmp:
        features = {}
        if reads_cache(spec["kind"]):
            where = (predict_cache_dir(cache_root, spec, frame["text"].tolist(), truncation, max_len) if cache_root
                     else Path(tmp) / "cache")
            if (where / "info.json").is_file():
                (log or (lambda m: None))(f"reused the feature cache {where}")
            else:
                backbone = load_backbone(Path(model_dir)).to(default_device())
                try:
                    extract(frame, backbone, load_tokenizer(Path(model_dir)), where, truncation=truncation,
                            max_len=max_len, layers=spec["cache"]["layers"], dtype=spec["cache"]["dtype"],
                            model_name=run["model"], max_batch_tokens=batch_tokens)
                except BaseException:  # failed or interrupted: no empty folders left above the cache either
                    if cache_root:
                        _prune_empty(where.parent, Path(cache_root))
                    raise
                del backbone
                (log or (lambda m: None))(f"built the feature cache {where}")
            features[key] = where
        model, data = build(window_spec, Path(model_dir), {key: frame}, features)
        load_weights(model, Path(weights), spec)
        return _predict_checked(model, data[key], f"{run['model']}/{run['pooling']}", batch_size or 64)
