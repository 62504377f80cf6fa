"""The study's figures (matplotlib), each from one summary table; every one works for any number of
datasets, settings and poolings, one of each included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .formatting import setting_labels
from .tables import LADDER_KEYS, POSITIONS

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_by_pooling(stats: pd.DataFrame, out: Path) -> None:
    """Accuracy per pooling with its 95% CI over test units and seeds (from :func:`pooling_stats`):
    one panel per dataset, one colour per setting, hollow marker = the family's baseline.
    Works for any number of datasets, settings and poolings, one of each included."""
    plt = _pyplot()
    stats = stats.assign(setting=setting_labels(stats))
    datasets = sorted(stats["dataset"].unique())
    settings = list(dict.fromkeys(stats["setting"]))
    colours = dict(zip(settings, plt.get_cmap("tab10").colors * (1 + len(settings) // 10)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(1.2 + 5.0 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sub = stats[stats["dataset"] == dataset]
        poolings = sorted(sub["pooling"].unique())
        present = [s for s in settings if (sub["setting"] == s).any()]
        width = 0.7 / len(present)
        for i, setting in enumerate(present):
            rows = sub[sub["setting"] == setting].set_index("pooling").reindex(poolings)
            x = np.arange(len(poolings)) + (i - (len(present) - 1) / 2) * width
            err = np.vstack([rows["accuracy"] - rows["accuracy_ci_low"], rows["accuracy_ci_high"] - rows["accuracy"]])
            ax.errorbar(x, rows["accuracy"], yerr=err, fmt="o", ms=4, capsize=2, lw=1, color=colours[setting],
                        label=setting)
            is_base = (rows.index == rows["baseline"]).to_numpy()
            ax.plot(x[is_base], rows["accuracy"][is_base], "o", ms=8, mfc="none", color=colours[setting])
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(poolings)), poolings, rotation=35, ha="right")
        ax.set_xlim(-0.6, len(poolings) - 0.4)
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy")
        ax.grid(axis="y", lw=0.4, alpha=0.6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.06 * ((len(labels) - 1) // 3)))
    _save(fig, "Accuracy by pooling: 95% CI over test units and seeds (paired bootstrap); "
               "hollow = baseline; dashed = chance", out, dpi=130)


def tailprobe_figure(cells: pd.DataFrame, out: Path) -> None:
    """Probe accuracy per pooling by verdict position with its 95% CI over verdicts and seeds (from
    :func:`probe_cells`): one row per setting, one column per condition × length."""
    plt = _pyplot()
    cells = cells.assign(setting=setting_labels(cells), cell=cells["condition"] + " / " + cells["length_bin"])
    settings = list(dict.fromkeys(cells["setting"]))
    order = ["agree / short", "agree / long", "contrast / short", "contrast / long"]
    columns = [c for c in order if (cells["cell"] == c).any()] + sorted(set(cells["cell"]) - set(order))
    positions = [p for p in POSITIONS if (cells["position"] == p).any()]
    colours = dict(zip(positions, plt.get_cmap("viridis")(np.linspace(0.1, 0.8, len(positions)))))
    fig, axes = plt.subplots(len(settings), len(columns), figsize=(3.6 * len(columns), 2.8 * len(settings)),
                             squeeze=False, sharey=True)
    width = 0.8 / len(positions)
    for r, setting in enumerate(settings):
        poolings = sorted(cells.loc[cells["setting"] == setting, "pooling"].unique())
        for c, cell in enumerate(columns):
            ax = axes[r, c]
            sub = cells[(cells["setting"] == setting) & (cells["cell"] == cell)]
            for i, position in enumerate(positions):
                rows = sub[sub["position"] == position].set_index("pooling").reindex(poolings)
                x = np.arange(len(poolings)) + (i - (len(positions) - 1) / 2) * width
                err = np.vstack([rows["accuracy"] - rows["accuracy_ci_low"],
                                 rows["accuracy_ci_high"] - rows["accuracy"]])
                ax.bar(x, rows["accuracy"], width, yerr=err, capsize=1.5, error_kw=dict(lw=0.7),
                       color=colours[position], label=position)
            ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
            ax.set_ylim(0, 1)
            ax.set_xticks(np.arange(len(poolings)), poolings, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{setting}\n{cell}", fontsize=8)
        axes[r, 0].set_ylabel("probe accuracy")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, title="verdict position", loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    _save(fig, "Tail-sentiment probe: accuracy by verdict position (95% CI over verdicts and seeds; dashed = chance)",
          out, dpi=110)


def ladder_figure(ladder: pd.DataFrame, out: Path) -> None:
    """Accuracy, and the difference to the baseline pooling, against the number of trained layers
    (95% CIs over test units and seeds): one row of two panels per ladder setting."""
    plt = _pyplot()
    settings = list(ladder.groupby(LADDER_KEYS, sort=True).groups)
    poolings = sorted(ladder["pooling"].unique())
    colours = dict(zip(poolings, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(len(settings), 2, figsize=(10, 3.6 * len(settings)), squeeze=False)
    for r, setting in enumerate(settings):
        sub = ladder[(ladder[LADDER_KEYS] == pd.Series(dict(zip(LADDER_KEYS, setting)))).all(axis=1)]
        ticks = sub.drop_duplicates("trained_layers").sort_values("trained_layers")
        for pooling, g in sub.groupby("pooling"):
            g = g.sort_values("trained_layers")
            x = g["trained_layers"].to_numpy()
            err = np.vstack([g["accuracy"] - g["accuracy_ci_low"], g["accuracy_ci_high"] - g["accuracy"]])
            axes[r, 0].errorbar(x, g["accuracy"], yerr=err, fmt="o-", ms=4, capsize=2, lw=1, color=colours[pooling],
                                label=pooling)
            if "gap" in g and g["gap"].notna().any():
                err = np.vstack([g["gap"] - g["gap_ci_low"], g["gap_ci_high"] - g["gap"]])
                axes[r, 1].errorbar(x, g["gap"], yerr=err, fmt="o-", ms=4, capsize=2, lw=1, color=colours[pooling],
                                    label=f"{pooling} − {g['baseline'].iloc[0]}")
        labels = [f"{k}\n({reg})" for k, reg in zip(ticks["trained_layers"], ticks["regime"])]
        for c, ylabel in enumerate(["test accuracy", "difference to the baseline pooling"]):
            ax = axes[r, c]
            ax.set_xticks(ticks["trained_layers"], labels, fontsize=8)
            ax.set_xlabel("transformer layers trained")
            ax.set_ylabel(ylabel)
            ax.grid(lw=0.4, alpha=0.6)
            ax.legend(fontsize=8, frameon=False)
            ax.set_title(" · ".join(str(v) for v in setting), fontsize=9)
        axes[r, 1].axhline(0, color="0.4", lw=0.8, ls="--")
    _save(fig, "Regime ladder: accuracy and the gap to the baseline pooling as more layers train "
               "(95% CI over test units and seeds)", out, dpi=120)


def _save(fig, title: str, out: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title, y=1.02)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
