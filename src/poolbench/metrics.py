"""The schema of a run's ``metrics.json``: one typed record per run, with a version field.

Version history:
  1  (implicit: no ``schema_version`` key) the first study; transfer scores inside ``transfer``.
  2  adds ``schema_version``, ``spec`` (the canonical run spec the job got), ``precision``; transfer
     sets are scored by the ``evaluate`` rule into ``transfer-<set>.parquet`` instead.
Readers accept the current version and refuse others with a clear error (every committed run is version 2).

``train`` is the training record (free-form within a version; new keys only add to it). Every
trained run has ``epoch_loss`` and, since early stopping for fine-tuned regimes, ``loss_curve``
({every, step, loss}: mean training loss per ``every`` optimiser steps) and ``steps``. A fine-tuned
run of a regime with ``dev_fraction`` (:func:`poolbench.heads.fit_finetuned`) adds
``method: early_stopping``, ``evaluations`` (step, epoch, val_loss, val_accuracy: the dev split),
``best_step``, ``stop_reason`` (patience | max_epochs), ``chosen`` (lr, step, epoch, dev_loss,
dev_accuracy, stop_reason) and ``search`` (dev_fraction, fit/dev sizes, lr_grid, patience,
eval_every, one record per lr in ``runs``). Records without these keys stay valid (version 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import Run
from .io import write_text

SCHEMA_VERSION = 2
RUN_KEYS = Run.keys()


class MetricsError(ValueError):
    """A metrics.json file that cannot be read as any known schema version."""


@dataclass
class RunMetrics:
    # what ran (the path wildcards)
    dataset: str
    model: str
    regime: str
    truncation: str
    max_len: int
    pooling: str
    seed: int
    family: str
    # test split of the training dataset
    n: int
    accuracy: float
    macro_f1: float
    # how it trained: loss curve, chosen settings (C, lr, epoch), timings; see poolbench.train / heads
    train: dict
    trainable_params: int
    # where and how fast
    wall_s: float
    cpu_s: float
    torch_threads: int
    device: str
    precision: str = "fp32"
    spec: dict = field(default_factory=dict)  # every setting the job used (poolbench.config.run_spec)
    versions: dict = field(default_factory=dict)
    git_commit: str = "unknown"
    schema_version: int = SCHEMA_VERSION

    def write(self, path: str | Path) -> None:
        write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: str | Path) -> "RunMetrics":
        raw = json.loads(Path(path).read_text())
        version = raw.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise MetricsError(f"{path}: metrics schema version {version} is not the one this poolbench reads "
                               f"({SCHEMA_VERSION}); rerun the job or update poolbench")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known} | {"schema_version": version})
        except TypeError as err:
            raise MetricsError(f"{path}: not a poolbench metrics file ({err})") from None

    def key(self) -> tuple:
        return tuple(getattr(self, k) for k in RUN_KEYS)
