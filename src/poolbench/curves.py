"""Training curves per regime and model, drawn from the runs' ``metrics.json`` records.

A fine-tuned run trained with early stopping (a regime with ``dev_fraction``, see
:func:`poolbench.heads.fit_finetuned`) records, for the learning rate it chose, its training-loss
curve (``train.loss_curve``: the mean loss over each ``every`` optimiser steps), its dev evaluations
(``train.evaluations``: step, dev loss, dev accuracy) and the step it restored (``train.chosen.step``).
:func:`curves_table` reads them into one long table; :func:`plot_curves` draws one row of panels per
(model, regime): training loss, dev loss and dev accuracy against the optimiser step, one colour per
pooling, one line per seed, the restored step marked. Runs without these records (frozen runs, and
fine-tuned runs trained without a dev split) are left out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import atomic_write
from .metrics import RunMetrics

CURVE_COLUMNS = ("model", "regime", "pooling", "seed", "dataset", "series", "step", "value", "chosen_step")
SERIES = ("train_loss", "dev_loss", "dev_accuracy")


def curves_table(records: list[RunMetrics]) -> pd.DataFrame:
    """One row per (run, series, step): series train_loss, dev_loss or dev_accuracy."""
    rows = []
    for m in records:
        train = m.train or {}
        if "evaluations" not in train or "loss_curve" not in train:
            continue
        key = {"model": m.model, "regime": m.regime, "pooling": m.pooling, "seed": m.seed, "dataset": m.dataset,
               "chosen_step": train.get("best_step")}
        curve = train["loss_curve"]
        rows += [{**key, "series": "train_loss", "step": s, "value": v} for s, v in zip(curve["step"], curve["loss"])]
        for e in train["evaluations"]:
            rows.append({**key, "series": "dev_loss", "step": e["step"], "value": e["val_loss"]})
            rows.append({**key, "series": "dev_accuracy", "step": e["step"], "value": e["val_accuracy"]})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def read_records(paths) -> list[RunMetrics]:
    return [RunMetrics.read(p) for p in paths]


def plot_curves(records: list[RunMetrics], out: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """Draw the training curves of ``records`` (optionally of one ``dataset``) into the PNG ``out``.

    Returns the table drawn. Refuses, in one sentence, a set of records without any curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = curves_table(records)
    if dataset is not None:
        table = table[table["dataset"] == dataset]
    if table.empty:
        raise ValueError("no run among these records has training curves (train.evaluations); only fine-tuned "
                         "runs of a regime with dev_fraction record them")
    panels = list(table.groupby(["model", "regime"], sort=True).groups)
    poolings = sorted(table["pooling"].unique())
    colours = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(poolings)}
    fig, axes = plt.subplots(len(panels), len(SERIES), figsize=(4.2 * len(SERIES), 3.0 * len(panels)),
                             squeeze=False, sharex="row")
    labels = {"train_loss": "training loss", "dev_loss": "dev loss", "dev_accuracy": "dev accuracy"}
    for i, (model, regime) in enumerate(panels):
        part = table[(table["model"] == model) & (table["regime"] == regime)]
        for j, series in enumerate(SERIES):
            ax = axes[i, j]
            for (pooling, seed), run in part[part["series"] == series].groupby(["pooling", "seed"], sort=True):
                run = run.sort_values("step")
                ax.plot(run["step"], run["value"], color=colours[pooling], lw=1, alpha=0.8,
                        label=pooling if seed == part[part["pooling"] == pooling]["seed"].min() else None)
                chosen = run[run["step"] == run["chosen_step"]]
                if series != "train_loss" and not chosen.empty:
                    ax.plot(chosen["step"], chosen["value"], "o", color=colours[pooling], ms=4)
            if series.endswith("loss"):
                ax.axhline(0.6931, color="grey", lw=0.8, ls="--")  # ln 2: a coin flip's loss
            ax.set_title(f"{model} / {regime}: {labels[series]}", fontsize=9)
            ax.set_xlabel("optimiser step")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Training curves (dots: the step restored by early stopping; dashed: ln 2)", fontsize=10)
    fig.tight_layout()
    atomic_write(Path(out), lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return table
