"""The study's tables: runs read from their files, accuracy per pooling and cell, and every comparison.

Statistics (see :mod:`poolbench.stats` for the definitions): per-example correctness is kept as
integer counts per test unit and seed; a unit is an IMDB review, or a tail-probe verdict (its three
positions move together). Every comparison the paper reports is one row of :func:`comparisons`:
paired difference, 95% bootstrap CI over units and seeds, bootstrap p, the mixed-model (seed-level)
test, exact McNemar p per seed, and the adjusted p of its family (Holm for the confirmatory family,
Benjamini-Hochberg for the exploratory rest; :mod:`poolbench.analysis.settings`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import stats as st
from .settings import BLOCK_KEYS, RUN_KEYS, SETTING_KEYS, Statistics, StatisticsError
BASELINE = {"encoder": "cls", "decoder": "last"}  # the summaries the seed's two scripts use
PROBE_CELL = ["condition", "position", "length_bin"]
VERDICT = "verdict_review_id"  # a probe verdict appears at three positions: the probe's test unit
POSITIONS = ["start", "middle", "end"]
N_BOOT = 10_000  # draws for a CI
N_BOOT_TESTS = 50_000  # draws for a test's CI and percentile p (the far tail is smooth: stats.bootstrap_p)
BOOT_SEED = 0  # fixed: the summaries are byte-identical on every rerun


# ---- reading --------------------------------------------------------------------------------


def collect_runs(metric_files: list[Path]) -> pd.DataFrame:
    """One row per run: its keys, test scores, costs, how it trained."""
    from ..metrics import RunMetrics

    rows = []
    for path in metric_files:
        m = RunMetrics.read(path)
        row = {k: getattr(m, k) for k in RUN_KEYS}
        row.update(accuracy=m.accuracy, macro_f1=m.macro_f1, n=m.n)
        fit = m.train
        loss = fit["train_loss"] if "train_loss" in fit else fit["epoch_loss"][-1]  # heads record the final loss
        row.update(trainable_params=m.trainable_params, wall_s=round(m.wall_s, 2), cpu_s=round(m.cpu_s, 2),
                   train_tokens_per_s=round(fit["train_tokens_per_s"], 1) if "train_tokens_per_s" in fit else None,
                   final_train_loss=round(loss, 5), git_commit=m.git_commit, precision=m.precision,
                   head=fit.get("method", "sgd"), trained_layers=trained_layers(m.spec))
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
    the SD of the per-seed accuracies, and the flip rate (the share of units whose count of correct rows
    differs between seeds; NaN with one seed). Comparisons between poolings are in :func:`comparisons`."""
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
                             accuracy_sd=per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
                             flip_rate=float((c.min(axis=1) != c.max(axis=1)).mean()) if c.shape[1] > 1 else np.nan))
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
    row = dict(kind=kind, **keys, **cell, a=a, b=b, units=len(c.units), seeds=len(c.seeds), **test,
               **st.mixed_model_test(x.values, y.values, c.rows_per_unit))
    for s, (_, _, p) in zip(c.seeds, st.sign_test(x.values, y.values)):
        row[f"mcnemar_p_seed{s}"] = p
    return row


def comparisons(preds: pd.DataFrame, n_boot: int = N_BOOT_TESTS, seed: int = BOOT_SEED,
                settings: Statistics | None = None) -> pd.DataFrame:
    """Every comparison the paper reports, one row each, with the adjusted p of its family.

    Columns: the paired difference ``diff`` with its 95% bootstrap CI and bootstrap ``p``; the mixed-model
    test (``mixed_t``, ``mixed_df``, ``mixed_p``; :func:`poolbench.stats.mixed_model_test`); ``claim_p``,
    the p a claim rests on (``settings.claim_test``: ``p``, or the larger of ``p`` and ``mixed_p``);
    ``claim_family`` (confirmatory or exploratory, ``settings.confirmatory``; every row is confirmatory when it
    declares none); ``holm_p`` (Holm over the confirmatory tests; NaN for exploratory rows) and ``bh_p``
    (Benjamini-Hochberg over the exploratory tests; NaN for confirmatory rows); the McNemar p per seed.

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
        (p − b in the reference regime, ``settings.reference_regime``, default ``frozen``), for every
        other regime R (``a`` = R, ``b`` = frozen, ``regime`` = "R vs frozen", ``pooling`` = p). Paired
        like the others: one bootstrap draw resamples
        the test units and seeds of both regimes together. Only regimes run on the same units with the
        same seeds as frozen are compared (a regime run with fewer seeds has no paired test). Its
        per-seed McNemar column is the sign test of each unit's gap in R against its gap frozen.
    A test that two claims share (e.g. the runner-up is the baseline) counts once in its family.
    """
    settings = settings or Statistics()
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
    rows += _gap_change_rows(boots, settings.reference_regime)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return _with_families(table, settings)


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


def _gap_change_rows(boots: dict, reference: str) -> list[dict]:
    """(p − b in regime R) − (p − b in the reference regime) per setting, fine-tuned regime R and pooling p
    (see :func:`comparisons`). ``boots``: setting -> (Counts, resampled totals of the same n_boot and seed),
    so two settings with the same units and seeds hold the same draws."""
    rows = []
    reg = SETTING_KEYS.index("regime")
    for setting, (counts, boot) in boots.items():
        frozen_setting = setting[:reg] + (reference,) + setting[reg + 1:]
        if setting[reg] == reference or frozen_setting not in boots:
            continue
        frozen, frozen_boot = boots[frozen_setting]
        if counts.seeds != frozen.seeds:
            continue  # no paired test across different seeds
        _same_units(counts, frozen, f"{_label(setting)} vs {reference}")
        if counts.rows_per_unit != frozen.rows_per_unit:
            raise ValueError(f"{_label(setting)} vs {reference}: units hold different numbers of rows")
        base = BASELINE[setting[SETTING_KEYS.index("family")]]
        if base not in counts.index or base not in frozen.index:
            continue
        keys = dict(zip(SETTING_KEYS, setting), regime=f"{setting[reg]} vs {reference}")
        for pooling in sorted(set(counts.poolings()) & set(frozen.poolings()) - {base}):
            rows.append(_compare("gap_change", keys, setting[reg], reference, _Side(counts, boot, pooling, base),
                                 _Side(frozen, frozen_boot, pooling, base), pooling=pooling))
    return rows


def _same_units(x: Counts, y: Counts, label: str) -> None:
    """Cells of the same shape and seed get the same bootstrap draws; paired only if their units match."""
    if not (list(x.units) == list(y.units) and x.seeds == y.seeds):
        raise ValueError(f"{label}: the compared cells do not hold the same verdicts and seeds")


def _with_families(table: pd.DataFrame, settings: Statistics) -> pd.DataFrame:
    """``claim_p``, ``claim_family``, ``holm_p`` and ``bh_p`` over the distinct tests: a row's test is its setting,
    cell and unordered pair (a, b); a test is confirmatory when a selector names any of its rows."""
    cell_cols = [c for c in ("pooling", "condition", "length_bin", "position") if c in table]
    test_key = table[SETTING_KEYS + cell_cols].fillna("").astype(str).agg(" · ".join, axis=1) + " · " + [
        " vs ".join(sorted(pair)) for pair in zip(table["a"], table["b"])]
    if settings.claim_test == "both":  # a claim needs both tests; one seed has no seed-level test: p = 1
        claim = np.fmax(table["p"], table["mixed_p"].fillna(1.0))
    else:
        claim = table["p"]
    table = table.assign(claim_p=claim)
    if settings.confirmatory:
        chosen = pd.Series(False, index=table.index)
        for i, selector in enumerate(settings.confirmatory):
            hit = settings.selects(selector, table)
            if not hit.any():
                raise StatisticsError(f"statistics.confirmatory[{i}]: {selector} selects no comparison of the study")
            chosen |= hit
        confirmatory_tests = set(test_key[chosen])
        family = test_key.map(lambda t: "confirmatory" if t in confirmatory_tests else "exploratory")
    else:
        family = pd.Series("confirmatory", index=table.index)
    table = table.assign(claim_family=family)
    distinct = table.assign(test=test_key).drop_duplicates("test")
    adjusted = {}
    for name, method, column in (("confirmatory", st.holm, "holm_p"), ("exploratory", st.benjamini_hochberg, "bh_p")):
        sub = distinct[distinct["claim_family"] == name]
        adjusted[column] = dict(zip(sub["test"], method(sub["claim_p"]))) if len(sub) else {}
    table = table.assign(holm_p=test_key.map(adjusted["holm_p"]), bh_p=test_key.map(adjusted["bh_p"]))
    front = ["kind", *SETTING_KEYS, *cell_cols, "a", "b", "units", "seeds", "diff", "ci_low", "ci_high", "p",
             "holm_p", "mixed_t", "mixed_df", "mixed_p", "claim_p", "claim_family", "bh_p"]
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


# ---- the regime ladder ----------------------------------------------------------------------


LADDER_KEYS = BLOCK_KEYS  # a setting, less its regime
LADDER_MIN_REGIMES = 3  # a setting trained in at least this many regimes makes a ladder


def ladder_settings(runs: pd.DataFrame) -> list[tuple]:
    """The (dataset, model, family, truncation, max_len) settings of ``runs`` (one row per run, or per
    planned run) trained in at least :data:`LADDER_MIN_REGIMES` regimes."""
    counts = runs.groupby(LADDER_KEYS)["regime"].nunique()
    return [k for k, n in counts.items() if n >= LADDER_MIN_REGIMES]


def regime_ladder(runs: pd.DataFrame, stats: pd.DataFrame, comps: pd.DataFrame) -> pd.DataFrame:
    """Does the pooling gap close as more of the network trains? For each ladder setting
    (:func:`ladder_settings`) and each pooling run in every one of its regimes: the regime, the
    number of trained layers, accuracy with its 95% CI (:func:`pooling_stats`), and the difference
    to the family's baseline pooling with its CI, family and adjusted p (the ``baseline`` rows of
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
                    row.update(gap=g["diff"], gap_ci_low=g["ci_low"], gap_ci_high=g["ci_high"], gap_holm_p=g["holm_p"],
                               gap_claim_family=g["claim_family"], gap_bh_p=g["bh_p"])
                rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values([*LADDER_KEYS, "trained_layers", "pooling"], kind="stable").reset_index(drop=True) if len(out) else out
