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
    """Test accuracy per pooling (mean and 95% CI over seeds), one panel per dataset, one colour per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    runs = runs.assign(setting=runs["model"] + " · " + runs["regime"] + " · " + runs["truncation"]
                       + "-" + runs["max_len"].astype(str))
    order = sorted(runs["pooling"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=runs, x="pooling", y="accuracy", hue="setting", col="dataset", kind="point", order=order,
                    errorbar=("ci", 95), linestyle="none", capsize=0.15, dodge=0.45, height=3.4, aspect=1.5,
                    sharey=False, markers="o")
    for ax in g.axes.flat:
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ax.tick_params(axis="x", rotation=35)
    g.set_axis_labels("pooling", "test accuracy")
    _save(g, "Accuracy by pooling (mean and 95% CI over seeds; dashed = chance)", out, dpi=130)


def _save(grid, title: str, out: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    grid.figure.suptitle(title, y=1.04)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    grid.figure.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(grid.figure)


SETTING_KEYS = ["dataset", "model", "family", "regime", "truncation", "max_len"]
BASELINE = {"encoder": "cls", "decoder": "last"}  # the summaries the seed's two scripts use
PROBE_CELL = ["condition", "position", "length_bin"]


def load_predictions(runs: pd.DataFrame, results_dir: Path, file: str = "predictions.parquet") -> pd.DataFrame:
    """All per-example predictions of ``runs`` (rows of runs.csv), with the run keys attached."""
    from .paths import run_dir

    frames = []
    for row in runs.itertuples(index=False):
        path = run_dir(results_dir, row.dataset, row.model, row.regime, row.truncation, row.max_len,
                       row.pooling, row.seed) / file
        if path.is_file():
            df = pd.read_parquet(path)
            for key in RUN_KEYS:
                df[key] = getattr(row, key)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    import numpy as np

    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def pooling_stats(preds: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per setting and pooling: accuracy over seeds, and the paired difference to the baseline pooling.

    The per-example correctness is averaged over seeds; the difference to the family's baseline
    (``cls`` for encoders, ``last`` for decoders) is tested with a two-sided Wilcoxon signed-rank
    test over examples (scipy), with a 95% paired-bootstrap CI and Holm correction within a setting.
    """
    import numpy as np
    from scipy.stats import wilcoxon

    preds = preds.assign(correct=(preds["pred"] == preds["label"]).astype(float))
    rows = []
    for setting, sub in preds.groupby(SETTING_KEYS, sort=True):
        per_seed = sub.groupby(["pooling", "seed"])["correct"].mean()
        per_example = sub.groupby(["pooling", "id"])["correct"].mean().unstack("id")
        base_name = BASELINE[setting[2]]
        base = per_example.loc[base_name] if base_name in per_example.index else None
        block = []
        for pooling in per_example.index:
            acc = per_seed.loc[pooling]
            row = dict(zip(SETTING_KEYS, setting), pooling=pooling, baseline=base_name, seeds=len(acc),
                       n=int(per_example.shape[1]), accuracy=acc.mean(), accuracy_sd=acc.std(ddof=1) if len(acc) > 1 else np.nan)
            if base is not None and pooling != base_name:
                d = (per_example.loc[pooling] - base).to_numpy()
                rng = np.random.default_rng(seed)
                boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
                nonzero = d[d != 0]
                p = wilcoxon(nonzero).pvalue if len(nonzero) >= 10 else 1.0
                row.update(diff_vs_baseline=d.mean(), diff_ci_low=np.quantile(boots, 0.025),
                           diff_ci_high=np.quantile(boots, 0.975), p_value=float(p))
            block.append(row)
        tested = [r for r in block if "p_value" in r]
        for r, adj in zip(tested, holm([r["p_value"] for r in tested])):
            r["p_holm"] = adj
        rows.extend(block)
    return pd.DataFrame(rows)


def probe_cells(preds: pd.DataFrame) -> pd.DataFrame:
    """Tail-probe accuracy per setting × pooling × condition × position × length_bin (mean over seeds),
    and how often the prediction follows the body instead of the verdict."""
    preds = preds.assign(correct=(preds["pred"] == preds["label"]).astype(float),
                         follows_body=(preds["pred"] == preds["body_label"]).astype(float))
    keys = SETTING_KEYS + ["pooling"]
    per_seed = preds.groupby(keys + PROBE_CELL + ["seed"], sort=True)[["correct", "follows_body"]].mean()
    out = per_seed.groupby(keys + PROBE_CELL).agg(accuracy=("correct", "mean"), accuracy_sd=("correct", "std"),
                                                  follows_body=("follows_body", "mean"),
                                                  seeds=("correct", "size"))
    n = preds[preds["seed"] == preds["seed"].min()].groupby(keys + PROBE_CELL).size().rename("n")
    return out.join(n).reset_index()


def tailprobe_figure(cells: pd.DataFrame, out: Path) -> None:
    """Probe accuracy per pooling in each condition × position (long texts and short texts side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    cells = cells.assign(setting=cells["model"] + " · " + cells["regime"] + " · " + cells["truncation"] + "-"
                         + cells["max_len"].astype(str),
                         cell=cells["condition"] + " / " + cells["length_bin"])
    order = sorted(cells["pooling"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    g = sns.catplot(data=cells, x="pooling", y="accuracy", hue="position", hue_order=["start", "middle", "end"],
                    col="cell", col_order=["agree / short", "agree / long", "contrast / short", "contrast / long"],
                    row="setting", kind="bar", order=order, height=2.6, aspect=1.5, errorbar=None,
                    palette="viridis")
    g.set_titles("{row_name}\n{col_name}", size=9)
    for ax in g.axes.flat:
        ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=60)
    g.set_axis_labels("pooling", "probe accuracy")
    _save(g, "Tail-sentiment probe: accuracy by verdict position (mean over seeds; dashed = chance)", out, dpi=110)


def markdown_summary(stats: pd.DataFrame, cells: pd.DataFrame) -> str:
    """A Markdown digest of the study: accuracy per pooling and setting, and the probe's contrast cells."""
    def fmt(r):
        star = "*" if pd.notna(r.get("p_holm")) and r["p_holm"] < 0.05 else ""
        base = " (baseline)" if r["pooling"] == r["baseline"] else ""
        return f"{100 * r['accuracy']:.1f} ± {100 * (r['accuracy_sd'] if pd.notna(r['accuracy_sd']) else 0):.1f}{star}{base}"

    lines = ["# Results digest", "", "Generated by the `statistics` rule from `pooling_stats.csv` and `tailprobe_cells.csv`; "
             "do not edit. Accuracy in %, mean ± SD over seeds; * = differs from the family's baseline pooling "
             "(Wilcoxon signed-rank over examples, Holm-corrected p < 0.05).", ""]
    stats = stats.assign(setting=stats["dataset"] + " · " + stats["model"] + " · " + stats["regime"] + " · "
                         + stats["truncation"] + "-" + stats["max_len"].astype(str))
    table = stats.pivot_table(index="pooling", columns="setting", values="accuracy", aggfunc="first")
    settings = list(table.columns)
    lines += ["| pooling | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for pooling in table.index:
        row = []
        for s in settings:
            r = stats[(stats["setting"] == s) & (stats["pooling"] == pooling)]
            row.append(fmt(r.iloc[0]) if len(r) else "–")
        lines.append(f"| {pooling} | " + " | ".join(row) + " |")
    if not cells.empty:
        lines += ["", "## Tail probe: contrast examples (the body disagrees with the verdict)", "",
                  "Accuracy in % by verdict position; below 50 means the summary follows the body.", ""]
        sub = cells[cells["condition"] == "contrast"].copy()
        sub["setting"] = sub["model"] + " · " + sub["truncation"] + "-" + sub["max_len"].astype(str) + " · " + sub["length_bin"]
        pivot = sub.pivot_table(index="pooling", columns=["setting", "position"], values="accuracy")
        cols = [(s, p) for s in dict.fromkeys(sub["setting"]) for p in ("start", "middle", "end") if (s, p) in pivot.columns]
        lines += ["| pooling | " + " | ".join(f"{s} · {p}" for s, p in cols) + " |", "|---|" + "---:|" * len(cols)]
        for pooling in pivot.index:
            vals = [f"{100 * pivot.loc[pooling, c]:.0f}" if pd.notna(pivot.loc[pooling, c]) else "–" for c in cols]
            lines.append(f"| {pooling} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
