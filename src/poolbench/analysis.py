"""Aggregation of run outputs into tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RUN_KEYS = ["dataset", "model", "family", "regime", "truncation", "max_len", "pooling", "seed"]


def collect_runs(metric_files: list[Path]) -> pd.DataFrame:
    """One row per run: its keys, test scores, transfer scores and costs."""
    rows = []
    for path in metric_files:
        m = json.loads(Path(path).read_text())
        row = {k: m[k] for k in RUN_KEYS}
        row.update(accuracy=m["accuracy"], macro_f1=m["macro_f1"], n=m["n"])
        for name, t in m.get("transfer", {}).items():
            row[f"transfer_{name}_accuracy"] = t["accuracy"]
            row[f"transfer_{name}_macro_f1"] = t["macro_f1"]
        row.update(trainable_params=m["trainable_params"], wall_s=round(m["wall_s"], 2), cpu_s=round(m["cpu_s"], 2),
                   train_tokens_per_s=round(m["train"]["train_tokens_per_s"], 1),
                   final_train_loss=round(m["train"]["epoch_loss"][-1], 5), git_commit=m["git_commit"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values(RUN_KEYS, kind="stable").reset_index(drop=True)


def accuracy_by_pooling(runs: pd.DataFrame, out: Path) -> None:
    """Test accuracy per pooling (mean ± 95% CI over seeds, seeds as dots), one panel per dataset × model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = runs.assign(setting=runs["model"] + " · " + runs["regime"] + " · " + runs["truncation"]
                       + "-" + runs["max_len"].astype(str))
    order = sorted(runs["pooling"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=runs, x="pooling", y="accuracy", col="dataset", row="setting", kind="point",
                    order=order, errorbar=("ci", 95), linestyle="none", capsize=0.2, height=2.6, aspect=2.2,
                    sharey=False, margin_titles=True)
    for (setting, dataset), ax in g.axes_dict.items():
        sub = runs[(runs["setting"] == setting) & (runs["dataset"] == dataset)]
        sns.stripplot(data=sub, x="pooling", y="accuracy", order=order, ax=ax, color="0.5", size=3, alpha=0.6)
        ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
        ax.tick_params(axis="x", rotation=35)
    g.set_axis_labels("pooling", "test accuracy")
    g.figure.suptitle("Accuracy by pooling (mean and 95% CI over seeds; dots are seeds)", y=1.01)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    g.figure.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(g.figure)
