"""One run = backbone + pooling + linear head, trained on one dataset with one seed.

Three regimes share one training loop:

* ``frozen``   – the backbone's states come from the feature cache (:mod:`poolbench.features`);
  only the pooling and the head train. This is what runs on CPU.
* ``topk``     – the top ``trainable_layers`` layers train too, recomputed from the cached states
  that enter them (:mod:`poolbench.topk`); the frozen layers below never run again.
* ``finetune`` – the backbone runs live; its top ``trainable_layers`` layers train too (``all``:
  full fine-tuning, for GPU configs).

``precision`` (fp32 | bf16 | auto) puts the forward of every regime under bf16 autocast or not;
the loss stays fp32. :attr:`Classifier.precision` is what a run actually used.

The loop is deliberately plain (nanoGPT style): shuffle, batch, forward, loss, step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field


import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import arch
from .encoding import encode
from .features import backbone_hidden_states, pad_batch
from .pooling import ClassifierHead, PoolingContext, build_pooling
from .topk import TopLayers, autocast, resolve_precision, topk_state_indices


class TrainingError(RuntimeError):
    """Training diverged (NaN or infinite loss) or was misconfigured."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    trainable_layers: int | str = 0      # finetune/topk: top layers that train ("all" = every layer, finetune)
    precision: str = "fp32"              # fp32 | bf16 | auto (bf16 autocast where the hardware has native bf16)
    # Early stopping for the fine-tuned regimes (topk, finetune); every key opt-in. Without dev_fraction
    # a run trains exactly `epochs` epochs on all of train, as before these keys existed.
    dev_fraction: float | None = None    # stratified part of train held out (seeded) as the dev split
    patience: int | None = None          # dev evaluations without a lower dev loss before stopping (None: never)
    eval_every: int | None = None        # optimiser steps between dev evaluations (None: after every epoch)
    lr_grid: tuple | None = None         # learning rates tried, each early-stopped; lowest dev loss wins (None: lr)
    log_every: int = 10                  # optimiser steps per point of the recorded training-loss curve
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.lr_grid is not None:
            self.lr_grid = tuple(sorted(float(v) for v in self.lr_grid))
        if self.dev_fraction is None:
            given = [k for k in ("patience", "eval_every", "lr_grid") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"regime setting(s) {given} need dev_fraction (the dev split they are judged on)")
        elif not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must lie strictly between 0 and 1, got {self.dev_fraction}")
        for key in ("patience", "eval_every", "log_every"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")


class Classifier(nn.Module):
    """Pooling + shared head over the last ``layers`` hidden states, from one of three sources.

    * ``backbone`` (live): the states come from running the backbone on ``batch["input_ids"]``.
    * ``top`` (a :class:`poolbench.topk.TopLayers`): ``batch["hidden_states"]`` are cached states
      whose last one enters the top layers; the top layers recompute the states above it.
    * neither: ``batch["hidden_states"]`` are the states themselves (the frozen regime).

    ``precision`` ("fp32" or "bf16", already resolved, see :func:`poolbench.topk.resolve_precision`):
    the forward runs under bf16 autocast for "bf16"; logits are returned as float32.
    """

    def __init__(self, pooling: nn.Module, head: ClassifierHead, backbone: nn.Module | None = None,
                 layers: int = 1, top: nn.Module | None = None, precision: str = "fp32"):
        super().__init__()
        if backbone is not None and top is not None:
            raise ValueError("a Classifier takes a live backbone or cached top layers, not both")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"Classifier precision must be resolved to 'fp32' or 'bf16', got {precision!r}")
        self.backbone, self.top, self.pooling, self.head, self.layers = backbone, top, pooling, head, layers
        self.precision = precision

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch["attention_mask"]
        with autocast(self.precision, mask.device):
            if self.backbone is not None:
                states = backbone_hidden_states(self.backbone, batch["input_ids"], mask, self.layers)
            elif self.top is not None:
                cached = list(batch["hidden_states"])
                states = (cached + self.top(cached[-1], mask))[-self.layers:]
            else:
                states = batch["hidden_states"]
            pooled = self.pooling(states, mask, batch.get("sentence_ids"))
            logits = self.head(pooled)
        return logits.float()


def default_device() -> torch.device:
    """CUDA when available (the paper config on GPUs), else CPU: the same code path for both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    def move(v):
        return [t.to(device) for t in v] if isinstance(v, list) else (v if v is None else v.to(device))

    return {k: move(v) for k, v in batch.items()}


def set_trainable_layers(backbone: nn.Module, n: int | str) -> None:
    """Freeze the backbone except its top ``n`` transformer layers (and a final norm and pooler, if any)."""
    for p in backbone.parameters():
        p.requires_grad = False
    try:
        blocks = arch.layers(backbone)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    n = len(blocks) if n == "all" else int(n)
    if n > len(blocks):
        raise TrainingError(f"trainable_layers={n} but the backbone has {len(blocks)} layers")
    for block in blocks[len(blocks) - n:] if n else []:
        for p in block.parameters():
            p.requires_grad = True
    if n:
        for part in (arch.final_norm(backbone), arch.pooler(backbone)):
            if part is not None:
                for p in part.parameters():
                    p.requires_grad = True
    if n == len(blocks):
        for p in backbone.parameters():
            p.requires_grad = True


class LiveData:
    """Tokenised texts for the finetune regime; batches are padded on the fly (dynamic padding)."""

    def __init__(self, examples: pd.DataFrame, tokenizer, truncation: str, max_len: int,
                 padding_side: str = "right"):
        self.encoded = [encode(t, tokenizer, truncation, max_len) for t in examples["text"]]
        self.labels = examples["label"].to_numpy()
        self.pad_id = tokenizer.pad_token_id
        self.lengths = np.array([len(e.input_ids) for e in self.encoded])
        self.padding_side = padding_side

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray) -> dict:
        ids, mask = pad_batch([self.encoded[r].input_ids for r in rows], self.pad_id, self.padding_side)
        sent, _ = pad_batch([self.encoded[r].sentence_ids.astype(np.int64) for r in rows], -1, self.padding_side)
        return {"input_ids": ids, "attention_mask": mask, "sentence_ids": sent,
                "labels": torch.from_numpy(self.labels[rows].astype(np.int64))}


def build_classifier(name: str, family: str, hidden_size: int, layers: int, cfg: TrainConfig,
                     backbone_for_pooler: nn.Module | None, live_backbone: nn.Module | None,
                     top: nn.Module | None = None, device: torch.device | None = None) -> Classifier:
    """Pooling ``name`` + head over the last ``layers`` states; ``cfg.precision`` resolved for ``device``.

    A pretrained pooler (BERT's) trains with a live backbone or cached ``top`` layers, and is
    frozen when only the pooling and the head train.
    """
    ctx = PoolingContext(hidden_size=hidden_size, num_layers=layers, family=family,
                         pooler=getattr(backbone_for_pooler, "pooler", None),
                         freeze_pretrained=live_backbone is None and top is None, options=cfg.options.get(name, {}))
    pooling = build_pooling(name, ctx)
    head = ClassifierHead(pooling.output_dim, num_labels=2, dropout=cfg.dropout)
    precision = resolve_precision(cfg.precision, device or default_device())
    return Classifier(pooling, head, backbone=live_backbone, layers=layers, top=top, precision=precision)


def build_topk_classifier(name: str, family: str, backbone: nn.Module, cfg: TrainConfig, layers: int,
                          device: torch.device | None = None, k: int | None = None) -> Classifier:
    """The ``topk`` regime's classifier: copies of the top ``k`` (default ``cfg.trainable_layers``)
    layers of ``backbone`` (plus a decoder's final norm) as a :class:`~poolbench.topk.TopLayers`,
    the pooling over the last ``layers`` states (BERT's pooler copied into the ``pooler`` pooling,
    trainable) and the head. Nothing else of the backbone is kept: the caller may drop it.

    Its data: ``FeatureSet(cache, states=model.cache_states)`` (the entry state ``L-k`` and the
    frozen states below it that the pooling sees).
    """
    k = cfg.trainable_layers if k is None else k
    if k == "all" or not isinstance(k, int) or k < 1:
        raise TrainingError(f"the topk regime needs trainable_layers >= 1, got {k!r} "
                            f"(full fine-tuning is the finetune regime)")
    try:
        top = TopLayers(backbone, k)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    model = build_classifier(name, family, backbone.config.hidden_size, layers, cfg, backbone, None,
                             top=top, device=device)
    model.cache_states = topk_state_indices(top.num_hidden_layers, layers, k)
    return model


def dev_scores(model: Classifier, val) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``val``, from :func:`predict`'s probabilities."""
    p = np.clip(predict(model, val), 1e-12, 1 - 1e-12)
    y = np.asarray(val.labels)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))), float(np.mean((p >= 0.5) == y))


def train(model: Classifier, data, cfg: TrainConfig, seed: int, desc: str = "train", val=None,
          patience: int | None = None, eval_every: int | None = None) -> dict:
    """Train ``model`` on ``data`` (FeatureSet or LiveData); returns loss curves and timing.

    The record always holds ``epoch_loss`` (mean training loss per epoch) and ``loss_curve`` (mean
    training loss over each ``cfg.log_every`` optimiser steps, with the step it ends at).

    With ``val`` (same kind of data), the validation loss and accuracy are measured after every
    epoch, or every ``eval_every`` optimiser steps (and after the last), training stops after
    ``patience`` evaluations without a lower validation loss, and the model ends in the state of its
    best evaluation (early stopping). ``evaluations`` lists each (step, epoch, val loss, val accuracy),
    ``best_step`` the step restored, ``stop_reason`` "patience" or "max_epochs". The learning-rate
    schedule spans all ``cfg.epochs`` epochs, whether or not training stops early.
    """
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    warmup = max(1, int(cfg.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    losses, tokens, start = [], 0, time.perf_counter()
    curve, window, step = {"every": cfg.log_every, "step": [], "loss": []}, [], 0
    evals, best, best_state, stop = [], None, None, "max_epochs"

    def evaluate(epoch: int) -> bool:
        """Record a validation point; True when patience has run out."""
        nonlocal best, best_state
        loss, acc = dev_scores(model, val)
        model.train()
        evals.append({"step": step, "epoch": epoch, "val_loss": loss, "val_accuracy": acc})
        if best is None or loss < evals[best]["val_loss"]:
            best, best_state = len(evals) - 1, copy.deepcopy(model.state_dict())
            return False
        return patience is not None and len(evals) - 1 - best >= patience

    with tqdm(total=steps, desc=desc, unit="step", mininterval=10) as bar:
        for epoch in range(cfg.epochs):
            model.train()
            order = rng.permutation(len(data))
            epoch_loss = []
            for i in range(0, len(order), cfg.batch_size):
                batch = to_device(data.batch(order[i: i + cfg.batch_size]), device)
                loss = F.cross_entropy(model(batch), batch["labels"])
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {len(epoch_loss) + 1}; "
                        f"lower the learning rate (lr={cfg.lr}) or check the inputs")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                epoch_loss.append(loss.item())
                tokens += int(batch["attention_mask"].sum())
                step += 1
                window.append(epoch_loss[-1])
                if len(window) == cfg.log_every:
                    curve["step"].append(step)
                    curve["loss"].append(float(np.mean(window)))
                    window = []
                bar.update(1)
                if val is not None and eval_every is not None and step % eval_every == 0 and step < steps:
                    if evaluate(epoch + 1):
                        stop = "patience"
                        break
            losses.append(float(np.mean(epoch_loss)))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if stop == "patience":
                break
            if val is not None and (eval_every is None or step == steps):  # per epoch, or the last step
                if evaluate(epoch + 1):
                    stop = "patience"
                    break
    if window:
        curve["step"].append(step)
        curve["loss"].append(float(np.mean(window)))
    wall = time.perf_counter() - start
    out = {"epoch_loss": losses, "loss_curve": curve, "train_wall_s": wall, "train_tokens": tokens,
           "train_tokens_per_s": tokens / wall, "steps": step}
    if val is not None:
        model.load_state_dict(best_state)
        chosen = evals[best]
        out.update(val_loss=[e["val_loss"] for e in evals], val_accuracy=[e["val_accuracy"] for e in evals],
                   evaluations=evals, best_index=best, best_step=chosen["step"], best_epoch=chosen["epoch"],
                   best_val_loss=chosen["val_loss"], best_val_accuracy=chosen["val_accuracy"],
                   stopped_epoch=len(losses), stop_reason=stop, patience=patience, eval_every=eval_every)
    return out


@torch.inference_mode()
def predict(model: Classifier, data, batch_size: int = 64) -> np.ndarray:
    """P(positive) for every example of ``data``, in its row order."""
    model.eval()
    device = next(model.parameters()).device
    probs = np.zeros(len(data), dtype=np.float64)
    order = np.argsort(-getattr(data, "lengths", np.zeros(len(data))), kind="stable")
    for i in range(0, len(order), batch_size):
        rows = order[i: i + batch_size]
        logits = model(to_device(data.batch(rows), device))
        probs[rows] = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
    return probs
