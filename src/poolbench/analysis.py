"""Aggregation of run outputs into tables and figures.

Statistics (see :mod:`poolbench.stats` for the definitions): per-example correctness is kept as
integer counts per test unit and seed; a unit is an IMDB review, or a tail-probe verdict (its three
positions move together). Every comparison the paper reports is one row of :func:`comparisons`:
paired difference, 95% bootstrap CI over units and seeds, bootstrap p, exact McNemar p per seed,
and Holm's p over the whole table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats as st

RUN_KEYS = ["dataset", "model", "family", "regime", "truncation", "max_len", "pooling", "seed"]
SETTING_KEYS = ["dataset", "model", "family", "regime", "truncation", "max_len"]
BASELINE = {"encoder": "cls", "decoder": "last"}  # the summaries the seed's two scripts use
PROBE_CELL = ["condition", "position", "length_bin"]
VERDICT = "verdict_review_id"  # a probe verdict appears at three positions: the probe's test unit
POSITIONS = ["start", "middle", "end"]
N_BOOT = 10_000  # draws for a CI
N_BOOT_TESTS = 50_000  # draws for a test: p >= 2/(n+1) = 4e-5, well below Holm's 0.05/(family size)
BOOT_SEED = 0  # fixed: the summaries are byte-identical on every rerun


# ---- reading --------------------------------------------------------------------------------


def collect_runs(metric_files: list[Path]) -> pd.DataFrame:
    """One row per run: its keys, test scores, transfer scores (schema 1), costs, how it trained."""
    from .metrics import RunMetrics

    rows = []
    for path in metric_files:
        m = RunMetrics.read(path)
        row = {k: getattr(m, k) for k in RUN_KEYS}
        row.update(accuracy=m.accuracy, macro_f1=m.macro_f1, n=m.n)
        for name, t in m.transfer.items():
            row[f"transfer_{name}_accuracy"] = t["accuracy"]
            row[f"transfer_{name}_macro_f1"] = t["macro_f1"]
        fit = m.train
        loss = fit["train_loss"] if "train_loss" in fit else fit["epoch_loss"][-1]  # heads record the final loss
        row.update(trainable_params=m.trainable_params, wall_s=round(m.wall_s, 2), cpu_s=round(m.cpu_s, 2),
                   train_tokens_per_s=round(fit["train_tokens_per_s"], 1) if "train_tokens_per_s" in fit else None,
                   final_train_loss=round(loss, 5), git_commit=m.git_commit)
        if m.schema_version >= 2:
            row.update(precision=m.precision, head=fit.get("method", "sgd"), trained_layers=trained_layers(m.spec))
        rows.append(row)
    return pd.DataFrame(rows).sort_values(RUN_KEYS, kind="stable").reset_index(drop=True)


def trained_layers(spec: dict) -> int | None:
    """How many of the backbone's transformer layers a run trained (0 frozen, the model's depth for
    ``all``), from its spec; ``None`` for a run that recorded no spec."""
    if not spec:
        return None
    regime = spec["regime"]
    if regime.get("kind", spec.get("kind")) == "frozen":
        return 0
    k = regime["trainable_layers"]
    if isinstance(k, dict):
        k = k[spec["run"]["model"]]
    return int(spec["model"]["layers"]) if k == "all" else int(k)


def read_predictions(paths: list[Path]) -> pd.DataFrame:
    """Per-example predictions of the given files, each with its run's keys from ``metrics.json`` beside it.

    A path is ``<run dir>/predictions.parquet`` or ``<run dir>/transfer-<name>.parquet``. A missing
    prediction or metrics file is an error, never a silent gap in the statistics.
    """
    frames = []
    for path in map(Path, paths):
        metrics = path.parent / "metrics.json"
        for needed in (path, metrics):
            if not needed.is_file():
                raise FileNotFoundError(f"predictions of a run are missing: {needed} does not exist")
        keys = json.loads(metrics.read_text())
        missing = [k for k in RUN_KEYS if k not in keys]
        if missing:
            raise KeyError(f"{metrics} lacks the run keys {missing}")
        df = pd.read_parquet(path)
        frames.append(df.assign(**{k: keys[k] for k in RUN_KEYS}))
    if not frames:
        return pd.DataFrame(columns=["id", "label", "pred", *RUN_KEYS])
    return pd.concat(frames, ignore_index=True)


# ---- counts per unit and seed ---------------------------------------------------------------


def _unit(df: pd.DataFrame) -> str:
    """The test unit of one dataset's predictions: the verdict on the probe, else the example."""
    return VERDICT if VERDICT in df and df[VERDICT].notna().all() else "id"


class Counts:
    """Correct rows per pooling × unit × seed (integers) in one setting or probe cell."""

    def __init__(self, df: pd.DataFrame, unit: str, label: str):
        codes, levels = zip(*(pd.factorize(df[col], sort=True) for col in ("pooling", unit, "seed")))
        shape = tuple(len(level) for level in levels)
        flat = np.ravel_multi_index(codes, shape)
        rows = np.bincount(flat, minlength=np.prod(shape)).reshape(shape)
        correct = (df["pred"] == df["label"]).to_numpy()
        self.correct = np.bincount(flat, weights=correct, minlength=np.prod(shape)).reshape(shape).astype(np.int64)
        if rows.min() == 0 or rows.max() != rows.min():
            raise ValueError(f"{label}: every pooling and seed must predict the same units, "
                             f"each with the same number of rows")
        self.rows_per_unit = int(rows.flat[0])
        poolings, self.units, seeds = levels
        self.index = {p: i for i, p in enumerate(poolings)}
        self.seeds = list(seeds)

    def poolings(self) -> list[str]:
        return list(self.index)

    def __getitem__(self, pooling: str) -> np.ndarray:
        """counts[unit, seed] of one pooling."""
        return self.correct[self.index[pooling]]

    def bootstrap(self, n_boot: int, seed: int) -> dict[str, np.ndarray]:
        """Resampled correct totals of every pooling, on the same draws (paired)."""
        resampler = st.Resampler(len(self.units), len(self.seeds), n_boot, seed)
        return dict(zip(self.poolings(), resampler.totals(self.correct).T))

    def total(self, pooling: str) -> int:
        return int(self[pooling].sum())

    @property
    def denom(self) -> int:
        """Rows per pooling, all seeds together: the denominator of an accuracy."""
        return len(self.units) * len(self.seeds) * self.rows_per_unit


def _label(setting) -> str:
    return " · ".join(str(v) for v in setting)


def _settings(preds: pd.DataFrame):
    """(setting keys, its predictions, its Counts) for each setting."""
    for setting, sub in preds.groupby(SETTING_KEYS, sort=True):
        yield dict(zip(SETTING_KEYS, setting)), sub, Counts(sub, _unit(sub), _label(setting))


# ---- tables ---------------------------------------------------------------------------------


def pooling_stats(preds: pd.DataFrame, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Per setting and pooling: accuracy (pooled over seeds) with its 95% CI over units and seeds,
    and the SD of the per-seed accuracies. Comparisons between poolings are in :func:`comparisons`."""
    rows = []
    for keys, _, counts in _settings(preds):
        boot = counts.bootstrap(n_boot, seed)
        for pooling in counts.poolings():
            c = counts[pooling]
            per_seed = c.sum(axis=0) / (len(counts.units) * counts.rows_per_unit)
            acc = st.summarise_accuracy(counts.total(pooling), boot[pooling], counts.denom)
            rows.append(dict(keys, pooling=pooling, baseline=BASELINE[keys["family"]], seeds=len(counts.seeds),
                             units=len(counts.units), n=c.shape[0] * counts.rows_per_unit,
                             accuracy=acc["accuracy"], accuracy_ci_low=acc["ci_low"], accuracy_ci_high=acc["ci_high"],
                             accuracy_sd=per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan))
    return pd.DataFrame(rows)


def _ranked(counts: Counts) -> list[str]:
    """Poolings from most to least accurate (ties by name)."""
    totals = {p: int(counts[p].sum()) for p in counts.poolings()}
    return sorted(totals, key=lambda p: (-totals[p], p))


class _Side:
    """One side of a comparison: a pooling's counts in a setting or cell, and its resampled totals;
    with ``minus``, the gap pooling − minus (counts and totals, on the same draws)."""

    def __init__(self, counts: Counts, boot: dict, pooling: str, minus: str | None = None):
        self.counts, self.values, self.boot = counts, counts[pooling], boot[pooling]
        if minus is not None:
            self.values, self.boot = self.values - counts[minus], self.boot - boot[minus]


def _compare(kind: str, keys: dict, a: str, b: str, x: _Side, y: _Side, **cell) -> dict:
    """Row of the comparisons table: x (named a) − y (named b) on the same units and seeds."""
    c = x.counts
    test = st.summarise_difference(int(x.values.sum()), int(y.values.sum()), x.boot, y.boot, c.denom)
    row = dict(kind=kind, **keys, **cell, a=a, b=b, units=len(c.units), seeds=len(c.seeds), **test)
    for s, (_, _, p) in zip(c.seeds, st.sign_test(x.values, y.values)):
        row[f"mcnemar_p_seed{s}"] = p
    return row


def comparisons(preds: pd.DataFrame, n_boot: int = N_BOOT_TESTS, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Every comparison the paper reports, one row each, with Holm's p over the whole table (``holm_p``).

    kinds (a − b, accuracy in [0, 1]):
      - ``baseline``: each pooling − the family's baseline pooling, per setting;
      - ``best``: the most accurate pooling − the runner-up; ``worst``: the least accurate − the next one
        up (what a "best"/"worst" claim needs);
      - ``position`` (probe): verdict at the end − at the start, per pooling, on contrast texts of each
        length (units: verdicts of that cell);
      - ``truncation`` (probe): tail − head truncation with the verdict at the end, per pooling, on
        contrast texts of each length, for settings that differ only in truncation;
      - ``gap_change``: does fine-tuning close a pooling's gap to the baseline? For settings that differ
        only in regime, each pooling p other than the family's baseline b: (p − b in regime R) −
        (p − b in the regime named ``frozen``), for every other regime R (``a`` = R, ``b`` = frozen,
        ``regime`` = "R vs frozen", ``pooling`` = p). Paired like the others: one bootstrap draw resamples
        the test units and seeds of both regimes together. Only regimes run on the same units with the
        same seeds as frozen are compared (a regime run with fewer seeds has no paired test). Its
        per-seed McNemar column is the sign test of each unit's gap in R against its gap frozen.
    A test that two claims share (e.g. the runner-up is the baseline) counts once in the Holm family.
    """
    rows = []
    probe_cells = {}  # setting -> {(length, position): Counts}
    boots = {}  # setting -> (Counts, resampled totals): the gap_change rows pair two settings' draws
    for keys, sub, counts in _settings(preds):
        boot = counts.bootstrap(n_boot, seed)
        boots[tuple(keys.values())] = counts, boot
        side = {p: _Side(counts, boot, p) for p in counts.poolings()}
        base = BASELINE[keys["family"]]
        for pooling in counts.poolings():
            if pooling != base and base in side:
                rows.append(_compare("baseline", keys, pooling, base, side[pooling], side[base]))
        ranked = _ranked(counts)
        if len(ranked) > 1:
            rows.append(_compare("best", keys, ranked[0], ranked[1], side[ranked[0]], side[ranked[1]]))
            rows.append(_compare("worst", keys, ranked[-1], ranked[-2], side[ranked[-1]], side[ranked[-2]]))
        if _unit(sub) == VERDICT:
            contrast = sub[sub["condition"] == "contrast"]
            probe_cells[tuple(keys.values())] = {
                cell: Counts(df, VERDICT, f"{_label(keys.values())} · {cell}")
                for cell, df in contrast.groupby(["length_bin", "position"], sort=True)}
    rows += _position_rows(probe_cells, n_boot, seed) + _truncation_rows(probe_cells, n_boot, seed)
    rows += _gap_change_rows(boots)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return _with_holm(table)


def _position_rows(probe_cells: dict, n_boot: int, seed: int) -> list[dict]:
    rows = []
    for setting, cells in probe_cells.items():
        keys = dict(zip(SETTING_KEYS, setting))
        for length in sorted({length for length, _ in cells}):
            end, start = cells.get((length, "end")), cells.get((length, "start"))
            if end is None or start is None:
                continue
            _same_units(end, start, f"{_label(setting)} · {length}")  # so both bootstraps make the same draws
            boot_end, boot_start = end.bootstrap(n_boot, seed), start.bootstrap(n_boot, seed)
            for pooling in end.poolings():
                rows.append(_compare("position", keys, "end", "start", _Side(end, boot_end, pooling),
                                     _Side(start, boot_start, pooling),
                                     pooling=pooling, condition="contrast", length_bin=length))
    return rows


def _truncation_rows(probe_cells: dict, n_boot: int, seed: int) -> list[dict]:
    rows = []
    trunc = SETTING_KEYS.index("truncation")
    for setting, cells in probe_cells.items():
        if setting[trunc] != "tail":
            continue
        head_setting = setting[:trunc] + ("head",) + setting[trunc + 1:]
        if head_setting not in probe_cells:
            continue
        keys = dict(zip(SETTING_KEYS, setting), truncation="tail vs head")
        for (length, position), tail in cells.items():
            head = probe_cells[head_setting].get((length, position))
            if position != "end" or head is None:
                continue
            _same_units(tail, head, f"{_label(setting)} · {length}")  # so both bootstraps make the same draws
            boot_tail, boot_head = tail.bootstrap(n_boot, seed), head.bootstrap(n_boot, seed)
            for pooling in sorted(set(tail.poolings()) & set(head.poolings())):
                rows.append(_compare("truncation", keys, "tail", "head", _Side(tail, boot_tail, pooling),
                                     _Side(head, boot_head, pooling),
                                     pooling=pooling, condition="contrast", length_bin=length, position=position))
    return rows


FROZEN = "frozen"  # the regime that gap_change measures every other regime against


def _gap_change_rows(boots: dict) -> list[dict]:
    """(p − b in regime R) − (p − b frozen) per setting, fine-tuned regime R and pooling p (see
    :func:`comparisons`). ``boots``: setting -> (Counts, resampled totals of the same n_boot and seed),
    so two settings with the same units and seeds hold the same draws."""
    rows = []
    reg = SETTING_KEYS.index("regime")
    for setting, (counts, boot) in boots.items():
        frozen_setting = setting[:reg] + (FROZEN,) + setting[reg + 1:]
        if setting[reg] == FROZEN or frozen_setting not in boots:
            continue
        frozen, frozen_boot = boots[frozen_setting]
        if counts.seeds != frozen.seeds:
            continue  # no paired test across different seeds
        _same_units(counts, frozen, _label(setting) + " vs frozen")
        if counts.rows_per_unit != frozen.rows_per_unit:
            raise ValueError(f"{_label(setting)} vs frozen: units hold different numbers of rows")
        base = BASELINE[setting[SETTING_KEYS.index("family")]]
        if base not in counts.index or base not in frozen.index:
            continue
        keys = dict(zip(SETTING_KEYS, setting), regime=f"{setting[reg]} vs {FROZEN}")
        for pooling in sorted(set(counts.poolings()) & set(frozen.poolings()) - {base}):
            rows.append(_compare("gap_change", keys, setting[reg], FROZEN, _Side(counts, boot, pooling, base),
                                 _Side(frozen, frozen_boot, pooling, base), pooling=pooling))
    return rows


def _same_units(x: Counts, y: Counts, label: str) -> None:
    """Cells of the same shape and seed get the same bootstrap draws; paired only if their units match."""
    if not (list(x.units) == list(y.units) and x.seeds == y.seeds):
        raise ValueError(f"{label}: the compared cells do not hold the same verdicts and seeds")


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """Holm over the distinct tests: a row's test is its setting, cell and unordered pair (a, b)."""
    cell_cols = [c for c in ("pooling", "condition", "length_bin", "position") if c in table]
    test_key = table[SETTING_KEYS + cell_cols].fillna("").astype(str).agg(" · ".join, axis=1) + " · " + [
        " vs ".join(sorted(pair)) for pair in zip(table["a"], table["b"])]
    distinct = table.assign(test=test_key).drop_duplicates("test")
    adjusted = dict(zip(distinct["test"], st.holm(distinct["p"])))
    front = ["kind", *SETTING_KEYS, *cell_cols, "a", "b", "units", "seeds", "diff", "ci_low", "ci_high", "p", "holm_p"]
    table = table.assign(holm_p=test_key.map(adjusted))
    return table[front + [c for c in table.columns if c not in front]]


def probe_cells(preds: pd.DataFrame, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Tail-probe accuracy per setting × pooling × condition × position × length_bin (pooled over seeds)
    with its 95% CI over verdicts and seeds, and how often the prediction follows the body."""
    rows = []
    for keys, sub in preds.groupby(SETTING_KEYS + PROBE_CELL, sort=True):
        keys = dict(zip(SETTING_KEYS + PROBE_CELL, keys))
        counts = Counts(sub, _unit(sub), _label(keys.values()))
        boot = counts.bootstrap(n_boot, seed)
        follows = sub.assign(f=(sub["pred"] == sub["body_label"])).groupby("pooling")["f"].mean()
        for pooling in counts.poolings():
            acc = st.summarise_accuracy(counts.total(pooling), boot[pooling], counts.denom)
            rows.append(dict(keys, pooling=pooling, seeds=len(counts.seeds), n=len(counts.units) * counts.rows_per_unit,
                             accuracy=acc["accuracy"], accuracy_ci_low=acc["ci_low"], accuracy_ci_high=acc["ci_high"],
                             follows_body=follows[pooling]))
    front = SETTING_KEYS + ["pooling"] + PROBE_CELL
    table = pd.DataFrame(rows)
    return table[front + [c for c in table.columns if c not in front]].sort_values(front, kind="stable").reset_index(
        drop=True) if len(table) else table


NATURAL_CELL = ["set", "variant"]


def natural_cells(preds: pd.DataFrame, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Natural-tail accuracy per setting × pooling × set (tail/head) × variant (original/removed/moved),
    pooled over seeds, with its 95% CI over reviews and seeds."""
    rows = []
    for keys, sub in preds.groupby(SETTING_KEYS + NATURAL_CELL, sort=True):
        keys = dict(zip(SETTING_KEYS + NATURAL_CELL, keys))
        counts = Counts(sub, "review_id", _label(keys.values()))
        boot = counts.bootstrap(n_boot, seed)
        for pooling in counts.poolings():
            acc = st.summarise_accuracy(counts.total(pooling), boot[pooling], counts.denom)
            rows.append(dict(keys, pooling=pooling, seeds=len(counts.seeds), n=len(counts.units) * counts.rows_per_unit,
                             accuracy=acc["accuracy"], accuracy_ci_low=acc["ci_low"], accuracy_ci_high=acc["ci_high"]))
    front = SETTING_KEYS + ["pooling"] + NATURAL_CELL
    table = pd.DataFrame(rows)
    return table[front + [c for c in table.columns if c not in front]].sort_values(front, kind="stable").reset_index(
        drop=True) if len(table) else table


# ---- figures --------------------------------------------------------------------------------


def _setting_names(df: pd.DataFrame) -> pd.Series:
    return df["model"] + " · " + df["regime"] + " · " + df["truncation"] + "-" + df["max_len"].astype(str)


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
    stats = stats.assign(setting=_setting_names(stats))
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
    cells = cells.assign(setting=_setting_names(cells), cell=cells["condition"] + " / " + cells["length_bin"])
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


LADDER_KEYS = ["dataset", "model", "family", "truncation", "max_len"]
LADDER_MIN_REGIMES = 3  # a setting trained in at least this many regimes makes a ladder


def ladder_settings(runs: pd.DataFrame) -> list[tuple]:
    """The (dataset, model, family, truncation, max_len) settings of ``runs`` (one row per run, or per
    planned run) trained in at least :data:`LADDER_MIN_REGIMES` regimes."""
    counts = runs.groupby(LADDER_KEYS)["regime"].nunique()
    return [k for k, n in counts.items() if n >= LADDER_MIN_REGIMES]


def finetuned_regimes(runs: pd.DataFrame) -> dict[tuple, str]:
    """The (dataset, model, family, truncation, max_len) settings of ``runs`` (one row per run, planned
    run, or pooling) trained frozen and in another regime, each with the regime to set beside frozen:
    the one run with the most poolings (ties: the first by name), i.e. the main grid's, not a ladder
    step that trains a few poolings only."""
    out = {}
    for setting, sub in runs.groupby(LADDER_KEYS, sort=True):
        others = sub[sub["regime"] != FROZEN].groupby("regime")["pooling"].nunique()
        if (sub["regime"] == FROZEN).any() and len(others):
            out[setting] = min(others.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return out


def main_regimes(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``stats`` (one per setting and pooling) in the frozen regime or in each setting's
    main fine-tuned regime (:func:`finetuned_regimes`): the accuracy figure leaves the ladder's extra
    steps to the ladder figure. A setting trained in one regime keeps its rows."""
    main = finetuned_regimes(stats)
    keep = [r.regime == FROZEN or main.get(tuple(getattr(r, k) for k in LADDER_KEYS), r.regime) == r.regime
            for r in stats.itertuples()]
    return stats[keep]


def regime_ladder(runs: pd.DataFrame, stats: pd.DataFrame, comps: pd.DataFrame) -> pd.DataFrame:
    """Does the pooling gap close as more of the network trains? For each ladder setting
    (:func:`ladder_settings`) and each pooling run in every one of its regimes: the regime, the
    number of trained layers, accuracy with its 95% CI (:func:`pooling_stats`), and the difference
    to the family's baseline pooling with its CI and Holm p (the ``baseline`` rows of
    :func:`comparisons`). Empty when no setting has a ladder."""
    if "trained_layers" not in runs:
        return pd.DataFrame()
    rows = []
    for setting in ladder_settings(runs):
        keys = dict(zip(LADDER_KEYS, setting))
        sel = runs[(runs[LADDER_KEYS] == pd.Series(keys)).all(axis=1)]
        layers = sel.groupby("regime")["trained_layers"].first()
        poolings = set.intersection(*(set(g["pooling"]) for _, g in sel.groupby("regime")))
        for regime, k in layers.items():
            for pooling in sorted(poolings):
                where = dict(keys, regime=regime, pooling=pooling)
                acc = stats[(stats[list(where)] == pd.Series(where)).all(axis=1)]
                row = dict(where, trained_layers=int(k), seeds=int(acc["seeds"].iloc[0]),
                           accuracy=acc["accuracy"].iloc[0], accuracy_ci_low=acc["accuracy_ci_low"].iloc[0],
                           accuracy_ci_high=acc["accuracy_ci_high"].iloc[0], baseline=BASELINE[keys["family"]])
                gap = comps[(comps["kind"] == "baseline") & (comps[list(keys)] == pd.Series(keys)).all(axis=1)
                            & (comps["regime"] == regime) & (comps["a"] == pooling)] if len(comps) else comps
                if len(gap):
                    g = gap.iloc[0]
                    row.update(gap=g["diff"], gap_ci_low=g["ci_low"], gap_ci_high=g["ci_high"], gap_holm_p=g["holm_p"])
                rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values([*LADDER_KEYS, "trained_layers", "pooling"], kind="stable").reset_index(drop=True) if len(out) else out


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


# ---- digest ---------------------------------------------------------------------------------


def points(x: float, sign: bool = False) -> str:
    """A proportion as percentage points, one decimal (with a sign for differences)."""
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def pvalue(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def with_ci(row, value: str = "diff", low: str = "ci_low", high: str = "ci_high") -> str:
    """``+7.0 [+4.3, +9.5]`` (a difference, signed) or ``71.6 [68.9, 74.3]`` (an accuracy), in points."""
    sign = value == "diff"
    return f"{points(row[value], sign)} [{points(row[low], sign)}, {points(row[high], sign)}]"


def _what(row) -> str:
    if row["kind"] in ("position", "truncation"):
        return f"{row['pooling']}, {row['condition']} {row['length_bin']}: {row['a']} − {row['b']}"
    if row["kind"] == "gap_change":
        gap = f"({row['pooling']} − {BASELINE[row['family']]})"
        return f"{gap} {row['a']} − {gap} {row['b']}"
    return f"{row['a']} − {row['b']}"


def describe(row) -> str:
    """One comparison in words: what minus what, difference [95% CI] in points, p and Holm p."""
    return f"{_what(row)} = {with_ci(row)} points, p = {pvalue(row['p'])}, Holm p = {pvalue(row['holm_p'])}"


def _mcnemar(row) -> str:
    seeds = sorted(c for c in row.index if c.startswith("mcnemar_p_seed") and pd.notna(row[c]))
    return " / ".join(pvalue(row[c]) for c in seeds)


DIGEST_SECTIONS = {"baseline": "Each pooling against the family's baseline",
                   "best": "Best: the most accurate pooling against the runner-up",
                   "worst": "Worst: the least accurate pooling against the next one up",
                   "position": "Tail probe, contrast texts: verdict at the end − at the start",
                   "truncation": "Tail probe, contrast texts, verdict at the end: tail − head truncation",
                   "gap_change": "Gap change: each pooling's difference to the baseline, fine-tuned − frozen"}


def markdown_summary(stats: pd.DataFrame, comps: pd.DataFrame, cells: pd.DataFrame) -> str:
    """A Markdown digest: accuracy with CIs, and every comparison of :func:`comparisons` with its
    difference, 95% CI, p, Holm p and McNemar p per seed."""
    lines = ["# Results digest", "",
             "Generated by the `statistics` rule from `pooling_stats.csv`, `comparisons.csv` and "
             "`tailprobe_cells.csv`; do not edit. Accuracy in %, pooled over seeds, with a 95% CI from a bootstrap "
             "that resamples test units (IMDB reviews; probe verdicts, whose three positions move together) and "
             "seeds. A comparison a − b is the paired difference in points with its 95% CI, the bootstrap p, and "
             f"Holm's p over all {len(comps)} comparisons below; McNemar: exact p per seed. * = Holm p < 0.05.", ""]
    stats = stats.assign(setting=stats["dataset"] + " · " + _setting_names(stats))
    settings = list(dict.fromkeys(stats["setting"]))
    lines += ["## Accuracy by pooling", "", "| pooling | " + " | ".join(settings) + " |",
              "|---|" + "---:|" * len(settings)]
    for pooling in sorted(stats["pooling"].unique()):
        row = []
        for s in settings:
            r = stats[(stats["setting"] == s) & (stats["pooling"] == pooling)]
            base = " (baseline)" if len(r) and pooling == r["baseline"].iloc[0] else ""
            acc = with_ci(r.iloc[0], "accuracy", "accuracy_ci_low", "accuracy_ci_high") if len(r) else "–"
            row.append(acc + base)
        lines.append(f"| {pooling} | " + " | ".join(row) + " |")
    if len(comps):
        comps = comps.assign(setting=comps["dataset"] + " · " + _setting_names(comps))
        for kind, title in DIGEST_SECTIONS.items():
            lines += _comparison_section(comps[comps["kind"] == kind], title)
        claims = _superlatives(comps)
        if claims:
            lines += ["", "## What the superlatives rest on", ""] + [f"- {c}" for c in claims]
    if not cells.empty:
        lines += _contrast_cells(cells)
    return "\n".join(lines) + "\n"


def _comparison_section(sub: pd.DataFrame, title: str) -> list[str]:
    if sub.empty:
        return []
    lines = ["", f"## {title}", "", "| setting | comparison | difference [95% CI] | p | Holm p | McNemar p per seed |",
             "|---|---|---:|---:|---:|---|"]
    for _, r in sub.iterrows():
        star = "*" if r["holm_p"] < 0.05 else ""
        lines.append(f"| {r['setting']} | {_what(r)} | {with_ci(r)}{star} | {pvalue(r['p'])} | {pvalue(r['holm_p'])} "
                     f"| {_mcnemar(r)} |")
    return lines


def _superlatives(comps: pd.DataFrame) -> list[str]:
    """A sentence per best/worst claim, saying whether its own test backs it."""
    out = []
    for _, r in comps[comps["kind"].isin(["best", "worst"])].iterrows():
        word = "most" if r["kind"] == "best" else "least"
        verdict = (f"{r['a']} is the {word} accurate pooling" if r["holm_p"] < 0.05 else
                   f"{r['a']} is not distinguishable from {r['b']}: no single {word} accurate pooling")
        out.append(f"{r['setting']}: {verdict} ({describe(r)}).")
    return out


def _contrast_cells(cells: pd.DataFrame) -> list[str]:
    lines = ["", "## Tail probe: contrast examples (the body disagrees with the verdict)", "",
             "Accuracy in % [95% CI over verdicts and seeds] by verdict position; below 50 means the summary "
             "follows the body.", ""]
    sub = cells[cells["condition"] == "contrast"].copy()
    sub["setting"] = (sub["model"] + " · " + sub["truncation"] + "-" + sub["max_len"].astype(str) + " · "
                      + sub["length_bin"])
    cols = [(s, p) for s in dict.fromkeys(sub["setting"]) for p in POSITIONS]
    lines += ["| pooling | " + " | ".join(f"{s} · {p}" for s, p in cols) + " |", "|---|" + "---:|" * len(cols)]
    for pooling in sorted(sub["pooling"].unique()):
        vals = []
        for s, p in cols:
            r = sub[(sub["setting"] == s) & (sub["position"] == p) & (sub["pooling"] == pooling)]
            vals.append("–" if r.empty else f"{100 * r['accuracy'].iloc[0]:.0f} "
                        f"[{100 * r['accuracy_ci_low'].iloc[0]:.0f}, {100 * r['accuracy_ci_high'].iloc[0]:.0f}]")
        lines.append(f"| {pooling} | " + " | ".join(vals) + " |")
    return lines
