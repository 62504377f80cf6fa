"""Heads trained to their optimum (frozen regime).

Two ways to fit the head of a :class:`~poolbench.train.Classifier` whose backbone states come from
the feature cache, chosen by the pooling itself:

* **Fixed poolings** (no parameter requires grad once built with ``freeze_pretrained=True``: cls,
  pooler, mean, max, weighted_mean, last, layers_concat, ...) pool the train and test sets once
  (:func:`pool_features`), then fit L2 logistic regression to convergence (lbfgs) on standardised
  features, with C chosen by stratified k-fold cross-validation on train only (accuracy, ties to
  the smaller C). The fitted weights, with the scaling folded in, are loaded into ``head.linear``
  so that prediction, saving and export go through the same Classifier. A reference check fits
  scikit-learn's ``LogisticRegressionCV`` on the same features, folds and C grid; the job fails
  (:class:`HeadBelowReference`) when the head's test accuracy is more than
  ``reference_tolerance`` points below the reference's.
* **Learned poolings** (attention, hierarchical, ...) hold out a stratified part of train for
  validation and train with the ordinary loop (:func:`poolbench.train.train`) once per learning
  rate of a small grid; the (lr, epoch) state with the lowest validation loss is kept.

:func:`fit_head` dispatches and returns the dict that goes into ``metrics.json``'s ``train``.
"""

from __future__ import annotations

import copy
import inspect
import time
import warnings
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from .train import Classifier, TrainConfig, TrainingError, predict, to_device, train


class HeadBelowReference(TrainingError):
    """A fixed-pooling head ends more than the tolerance below scikit-learn's LogisticRegressionCV."""


@dataclass
class HeadConfig:
    """Settings of head fitting (config: ``regimes.frozen.head``; every key optional)."""

    cv_folds: int = 5                                     # stratified folds for choosing C (train only)
    c_grid: tuple = tuple(float(c) for c in np.logspace(-4, 1, 11))  # C = 1/lambda, features standardised
    max_iter: int = 10_000                                # lbfgs iterations: "to convergence"
    tol: float = 1e-6                                     # lbfgs tolerance
    reference_tolerance: float = 0.5                      # accuracy points the head may lag LogisticRegressionCV
    val_fraction: float = 0.15                            # learned poolings: stratified held-out part of train
    lr_grid: tuple = (1e-3, 3e-3, 1e-2)                   # learned poolings: learning rates tried (see below)
    patience: int | None = 3                              # epochs without a better validation loss before stopping
    batch_size: int = 64                                  # batch size for pooling features / evaluation

    # lr_grid, measured on MiniLM IMDB (head-128, seed 0), lowest validation loss per lr:
    # attention 3e-4: 0.599, 1e-3: 0.545, 3e-3: 0.521 (chosen), 1e-2: 0.538;
    # hierarchical 3e-4: 0.563, 1e-3: 0.516 (chosen, epoch 8 of 10), 3e-3: 0.547, 1e-2: 0.533.
    # The default grid brackets both optima.

    @classmethod
    def from_dict(cls, d: dict | None) -> "HeadConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown head setting(s) {unknown}; known: {sorted(known)}")
        for key in ("c_grid", "lr_grid"):
            if key in d:
                d[key] = tuple(sorted(float(v) for v in d[key]))
        return cls(**d)


# What each path of the frozen regime reads (poolbench.config.regime_settings puts exactly these in a
# run's spec): logistic regression for a fixed pooling; early-stopped training over lr_grid for a learned
# one, which also reads these TrainConfig settings (its lr comes from lr_grid).
LOGISTIC_HEAD_SETTINGS = ("cv_folds", "c_grid", "max_iter", "tol", "reference_tolerance", "batch_size")
LEARNED_HEAD_SETTINGS = ("val_fraction", "lr_grid", "patience")
LEARNED_TRAIN_SETTINGS = ("epochs", "batch_size", "weight_decay", "dropout", "warmup_ratio", "precision")


def is_fixed(pooling: nn.Module) -> bool:
    """True when no parameter of ``pooling`` trains (BERT's pooler counts once frozen)."""
    return not any(p.requires_grad for p in pooling.parameters())


class Rows:
    """A view of some rows of a FeatureSet-like ``data`` (len, batch, labels, lengths)."""

    def __init__(self, data, rows: np.ndarray):
        self.data, self.rows = data, np.asarray(rows)
        self.labels = np.asarray(data.labels)[self.rows]
        lengths = getattr(data, "lengths", None)
        self.lengths = None if lengths is None else np.asarray(lengths)[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, rows: np.ndarray) -> dict:
        return self.data.batch(self.rows[np.asarray(rows)])


def _device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def pool_features(pooling: nn.Module, data, batch_size: int = 64, device: torch.device | None = None) -> np.ndarray:
    """The pooled vector of every example of ``data``, (n, output_dim) float32, in row order."""
    pooling.eval()
    device = device or _device(pooling)
    lengths = getattr(data, "lengths", None)
    order = np.argsort(-np.asarray(lengths), kind="stable") if lengths is not None else np.arange(len(data))
    out = None
    for i in range(0, len(order), batch_size):
        rows = order[i: i + batch_size]
        b = to_device(data.batch(rows), device)
        pooled = pooling(b["hidden_states"], b["attention_mask"], b.get("sentence_ids")).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(data), pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
    return out


def cross_entropy(labels: np.ndarray, p_positive: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log) of P(positive) against 0/1 labels."""
    p = np.clip(np.asarray(p_positive, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def _logistic(C: float, cfg: HeadConfig, warm_start: bool = False):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="lbfgs", max_iter=cfg.max_iter, tol=cfg.tol, warm_start=warm_start)


def _blas_threads():
    """BLAS threads capped at torch's (the job's thread budget): busy-waiting OpenBLAS threads on a
    shared CPU made the fits 10x slower."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads())


def _fit_quiet(clf, X, y):
    """Fit; returns whether lbfgs converged (no ConvergenceWarning)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X, y)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def choose_c(X: np.ndarray, y: np.ndarray, folds, cfg: HeadConfig) -> dict:
    """Mean held-out accuracy and cross-entropy per C; the best accuracy wins, ties to the smaller C.

    Each fold walks the grid from the smallest C up, warm-starting from the previous solution.
    """
    if list(cfg.c_grid) != sorted(cfg.c_grid):
        raise ValueError(f"c_grid must be ascending, got {list(cfg.c_grid)}")
    acc = np.zeros((len(folds), len(cfg.c_grid)))
    loss = np.zeros_like(acc)
    converged = True
    for f, (tr, va) in enumerate(folds):
        clf = _logistic(cfg.c_grid[0], cfg, warm_start=True)
        for j, C in enumerate(cfg.c_grid):
            clf.set_params(C=C)
            converged &= _fit_quiet(clf, X[tr], y[tr])
            p = clf.predict_proba(X[va])[:, 1]
            acc[f, j] = np.mean((p >= 0.5) == y[va])
            loss[f, j] = cross_entropy(y[va], p)
    mean_acc = acc.mean(axis=0)
    best = int(np.argmax(mean_acc))  # first maximum = smallest C among ties
    return {"folds": len(folds), "Cs": list(cfg.c_grid), "accuracy": mean_acc.tolist(),
            "log_loss": loss.mean(axis=0).tolist(), "best_index": best, "C": float(cfg.c_grid[best]),
            "all_converged": bool(converged)}


def load_logistic(linear: nn.Linear, w: np.ndarray, b: float, mean: np.ndarray, scale: np.ndarray) -> None:
    """Load P(positive) = sigmoid(w . (x - mean) / scale + b) into a 2-logit linear layer.

    softmax([-z/2, z/2])[1] = sigmoid(z): the logits are split +-z/2, with the standardisation folded
    into the weights (w' = w / scale, b' = b - w' . mean).
    """
    if linear.out_features != 2 or linear.bias is None:
        raise ValueError("load_logistic needs nn.Linear(in_dim, 2) with a bias")
    w_raw = np.asarray(w, dtype=np.float64) / scale
    b_raw = float(b) - float(w_raw @ mean)
    weight = np.stack([-w_raw / 2, w_raw / 2])
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor([-b_raw / 2, b_raw / 2], dtype=linear.bias.dtype))


def _reference(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, folds, cfg: HeadConfig) -> dict:
    """scikit-learn's LogisticRegressionCV on the same standardised features, folds and C grid."""
    from sklearn.linear_model import LogisticRegressionCV

    kwargs = dict(Cs=list(cfg.c_grid), cv=folds, scoring="accuracy", solver="lbfgs", max_iter=cfg.max_iter,
                  tol=cfg.tol, refit=True)
    params = inspect.signature(LogisticRegressionCV).parameters
    if params.get("l1_ratios") is not None and params["l1_ratios"].default == "warn":  # sklearn >= 1.8
        kwargs["l1_ratios"] = (0.0,)
    if "use_legacy_attributes" in params:
        kwargs["use_legacy_attributes"] = False
    ref = LogisticRegressionCV(**kwargs)
    converged = _fit_quiet(ref, X, y)
    return {"method": "sklearn LogisticRegressionCV (same features, folds and Cs; scoring=accuracy, lbfgs)",
            "C": float(np.ravel(ref.C_)[0]), "test_accuracy": float(np.mean(ref.predict(X_test) == y_test)),
            "converged": bool(converged)}


def fit_logistic_head(model: Classifier, train_data, test_data, cfg: HeadConfig | None = None, seed: int = 0) -> dict:
    """Fixed pooling: pool once, fit L2 logistic regression with C by CV on train, load it into the head.

    ``test_data`` is used only for the reference check after the head is fitted (never to choose C).
    """
    from sklearn.preprocessing import StandardScaler

    cfg = cfg or HeadConfig()
    start, cpu0 = time.perf_counter(), time.process_time()
    X = pool_features(model.pooling, train_data, cfg.batch_size).astype(np.float64)
    X_test = pool_features(model.pooling, test_data, cfg.batch_size).astype(np.float64)
    pool_wall = time.perf_counter() - start
    y, y_test = np.asarray(train_data.labels), np.asarray(test_data.labels)
    if not (np.isfinite(X).all() and np.isfinite(X_test).all()):
        raise TrainingError("pooled features are not finite (non-finite inputs in the feature cache)")
    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    Z, Z_test = (X - scaler.mean_) / scale, (X_test - scaler.mean_) / scale

    folds = stratified_folds(y, cfg.cv_folds, seed)
    with _blas_threads():
        cv = choose_c(Z, y, folds, cfg)
        clf = _logistic(cv["C"], cfg)
        converged = _fit_quiet(clf, Z, y)
    load_logistic(model.head.linear, clf.coef_[0], clf.intercept_[0], scaler.mean_, scale)
    fit_wall = time.perf_counter() - start

    # The loaded head must give sklearn's probabilities (float32 round-off only).
    with torch.no_grad():
        model.head.eval()
        logits = model.head(torch.as_tensor(X, dtype=torch.float32, device=_device(model.head)))
        p_head = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
    p_sklearn = clf.predict_proba(Z)[:, 1]
    head_vs_sklearn = float(np.max(np.abs(p_head - p_sklearn)))

    # Reference check: the head, through the pipeline's own predict(), against LogisticRegressionCV.
    p_test = predict(model, test_data)
    head_acc = float(np.mean((p_test >= 0.5) == y_test))
    with _blas_threads():
        ref = _reference(Z, y, Z_test, y_test, folds, cfg)
    gap = 100 * (ref["test_accuracy"] - head_acc)
    ref.update(head_test_accuracy=head_acc, gap_points=gap, tolerance_points=cfg.reference_tolerance)
    if gap > cfg.reference_tolerance:
        raise HeadBelowReference(
            f"fixed-pooling head reaches {100 * head_acc:.1f}% test accuracy, {gap:.2f} points below "
            f"LogisticRegressionCV's {100 * ref['test_accuracy']:.1f}% on the same features "
            f"(tolerance {cfg.reference_tolerance}); the head is not trained to its optimum")
    return {
        "method": "logistic_cv",
        "chosen": {"C": cv["C"], "cv_accuracy": cv["accuracy"][cv["best_index"]], "converged": bool(converged),
                   "n_iter": int(np.ravel(clf.n_iter_)[0])},
        "train_loss": cross_entropy(y, p_head),
        "cv": {**cv, "seed": seed, "criterion": "mean held-out accuracy, ties to the smaller C",
               "standardised": True},
        "reference": ref,
        "head_vs_sklearn_max_abs_diff": head_vs_sklearn,
        "features_dim": int(X.shape[1]),
        "pool_wall_s": pool_wall,
        "fit_wall_s": fit_wall - pool_wall,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu0,
        "precision": "fp32",
    }


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows): ``fraction`` of each label held out, drawn with ``seed``."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    fit, val = train_test_split(rows, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(fit), np.sort(val)


def lr_search(model: Classifier, train_data, cfg: TrainConfig, *, val_fraction: float, lr_grid, patience: int | None,
              seed: int, eval_every: int | None = None, desc: str = "train") -> dict:
    """Early stopping over a learning-rate grid, judged on a held-out part of train only.

    A stratified ``val_fraction`` of ``train_data`` (drawn with ``seed``) is held out; for each lr of
    ``lr_grid`` the model restarts from its initial state (and ``torch.manual_seed(seed)``), trains on
    the rest with :func:`poolbench.train.train` (validation every epoch or every ``eval_every`` steps,
    ``patience``) and keeps its best evaluation. The lr whose best validation loss is lowest wins;
    the model ends in that state. A diverging lr is recorded, not fatal, unless every lr diverges.
    Nothing but ``train_data`` is seen: a test set cannot influence the choice.

    Returns {"best": the winning lr's record, "runs": one record per lr, "fit_rows", "val_rows"}.
    """
    fit_rows, val_rows = stratified_split(np.asarray(train_data.labels), val_fraction, seed)
    fit_data, val_data = Rows(train_data, fit_rows), Rows(train_data, val_rows)
    several = len(lr_grid) > 1  # one lr: train() already ends in its best state, no copies needed
    initial = copy.deepcopy(model.state_dict()) if several else None
    runs, best, best_state = [], None, None
    for i, lr in enumerate(lr_grid):
        if i:
            model.load_state_dict(initial)
        torch.manual_seed(seed)
        try:
            out = train(model, fit_data, replace(cfg, lr=lr), seed, desc=f"{desc} lr={lr:g}", val=val_data,
                        patience=patience, eval_every=eval_every)
        except TrainingError as exc:  # a diverging lr is a result of the grid, not a failed job
            runs.append({"lr": lr, "error": str(exc)})
            continue
        runs.append({"lr": lr, **out})
        if best is None or out["best_val_loss"] < best["best_val_loss"]:
            best, best_state = runs[-1], copy.deepcopy(model.state_dict()) if several else None
    if best is None:
        raise TrainingError(f"{desc}: every learning rate of {list(lr_grid)} diverged: "
                            + "; ".join(r["error"] for r in runs))
    if several:
        model.load_state_dict(best_state)
    return {"best": best, "runs": runs, "fit_rows": fit_rows, "val_rows": val_rows}


def fit_learned_head(model: Classifier, train_data, cfg: TrainConfig, head_cfg: HeadConfig | None = None,
                     seed: int = 0, desc: str = "train") -> dict:
    """Learned pooling: train on a stratified part of train for each lr of the grid; keep the
    (lr, epoch) state with the lowest validation loss (early stopping, :func:`lr_search`)."""
    head_cfg = head_cfg or HeadConfig()
    start, cpu0 = time.perf_counter(), time.process_time()
    search = lr_search(model, train_data, cfg, val_fraction=head_cfg.val_fraction, lr_grid=head_cfg.lr_grid,
                       patience=head_cfg.patience, seed=seed, desc=desc)
    best, runs = search["best"], search["runs"]
    p_train = predict(model, train_data)
    return {
        "method": "sgd_early_stopping",
        "chosen": {"lr": best["lr"], "epoch": best["best_epoch"], "val_loss": best["best_val_loss"],
                   "val_accuracy": best["best_val_accuracy"]},
        "train_loss": cross_entropy(train_data.labels, p_train),
        "cv": {"val_fraction": head_cfg.val_fraction, "fit_examples": len(search["fit_rows"]),
               "val_examples": len(search["val_rows"]), "seed": seed, "lr_grid": list(head_cfg.lr_grid),
               "patience": head_cfg.patience, "criterion": "lowest validation cross-entropy over (lr, epoch)",
               "runs": runs},
        "reference": None,
        "epoch_loss": best["epoch_loss"],
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu0,
        "precision": best.get("precision", getattr(model, "precision", "fp32")),
    }


def fit_finetuned(model: Classifier, train_data, cfg: TrainConfig, seed: int = 0, desc: str = "train") -> dict:
    """A fine-tuned regime (topk, finetune) with ``cfg.dev_fraction``: early stopping on a dev split of
    train over ``cfg.lr_grid`` (or ``cfg.lr`` alone), through the same :func:`lr_search` as the learned heads.

    The record keeps the keys of a plain :func:`poolbench.train.train` record for the chosen lr (loss
    curves, timings, ``evaluations``, ``best_step``, ``stop_reason``), plus ``chosen`` and ``search``.
    """
    if cfg.dev_fraction is None:
        raise ValueError("fit_finetuned needs cfg.dev_fraction (the dev split early stopping is judged on)")
    start, cpu0 = time.perf_counter(), time.process_time()
    grid = cfg.lr_grid or (cfg.lr,)
    search = lr_search(model, train_data, cfg, val_fraction=cfg.dev_fraction, lr_grid=grid, patience=cfg.patience,
                       eval_every=cfg.eval_every, seed=seed, desc=desc)
    best = search["best"]
    return {
        **{k: v for k, v in best.items() if k != "lr"},
        "method": "early_stopping",
        "chosen": {"lr": best["lr"], "step": best["best_step"], "epoch": best["best_epoch"],
                   "dev_loss": best["best_val_loss"], "dev_accuracy": best["best_val_accuracy"],
                   "stop_reason": best["stop_reason"]},
        "search": {"dev_fraction": cfg.dev_fraction, "fit_examples": len(search["fit_rows"]),
                   "dev_examples": len(search["val_rows"]), "seed": seed, "lr_grid": list(grid),
                   "max_epochs": cfg.epochs, "patience": cfg.patience, "eval_every": cfg.eval_every or "epoch",
                   "criterion": "lowest dev cross-entropy over (lr, evaluation); test never seen",
                   "runs": search["runs"]},
        "search_wall_s": time.perf_counter() - start,
        "search_cpu_s": time.process_time() - cpu0,
    }


def fit_head(model: Classifier, train_data, test_data, cfg: TrainConfig, head_cfg: HeadConfig | None = None,
             seed: int = 0, desc: str = "train") -> dict:
    """Frozen regime: logistic regression for fixed poolings, early-stopped SGD for learned ones."""
    if model.backbone is not None or getattr(model, "top", None) is not None:
        raise ValueError("fit_head is for the frozen regime (pooling + head over cached states); use train()")
    if is_fixed(model.pooling):
        return fit_logistic_head(model, train_data, test_data, head_cfg, seed)
    return fit_learned_head(model, train_data, cfg, head_cfg, seed, desc)
