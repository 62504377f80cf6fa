"""The statistics of one classifier on each evaluation set, computed by the study's own code.

Each set has a handler in :data:`HANDLERS` whose ``report(preds, ...)`` returns one entry of
results.json's ``results`` list: ``set``, ``split``, ``n`` (rows), ``unit`` and ``units`` (what the
bootstrap resamples), ``metrics`` (each ``{value, ci_low, ci_high, n}``, CIs 95%), the same on the
examples whose verdict the model's window kept (``visible``), ``verdict_kept`` counts, ``cells``
(records for the verdict's tables) and ``warnings``; plus ``tables`` ({csv name: DataFrame}, written
beside it and popped by :func:`poolbench.hub.scoring.score`). A new evaluation set plugs in by adding a
handler with the same ``report``.

:func:`probe_report` / :func:`natural_report` are the probe's and the natural tail set's statistics
(:func:`poolbench.analysis.probe_cells`, ``comparisons`` and ``natural_cells``); the ``evaluate``
metric uses the first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import analysis
from .. import stats as st
from .common import HubError

GAP_COLUMNS = ["length_bin", "a", "b", "units", "diff", "ci_low", "ci_high", "p", "holm_p"]
CHANCE = 0.5
NEAR_CONSTANT = 0.95  # share of one predicted class above which predictions are called nearly constant


def run_keys(name: str, dataset: str, truncation: str = "-", max_len: int = 0) -> dict:
    """The run keys :mod:`poolbench.analysis` groups by, for one classifier: one setting, one pooling, one
    seed. ``family`` only selects a baseline pooling to compare with, which is absent here."""
    return dict(dataset=dataset, model=name, family="encoder", regime="hf", truncation=truncation, max_len=max_len,
                pooling=name, seed=0)


def _as_study(table: pd.DataFrame, name: str, dataset: str, truncation: str = "-", max_len: int = 0) -> pd.DataFrame:
    """One classifier's predictions (``pred``, else ``p_positive`` >= 0.5) as a study's predictions."""
    pred = table["pred"] if "pred" in table else (table["p_positive"] >= 0.5).astype(np.int64)
    return table.assign(pred=pred.to_numpy(), **run_keys(name, dataset, truncation, max_len))


def _study_call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ValueError as err:  # Counts: every unit must have the same number of rows
        raise HubError(f"the predictions do not cover the set evenly ({err}); score whole splits") from None


def unit_accuracy(preds: pd.DataFrame, unit: str, n_boot: int | None = None, seed: int = analysis.BOOT_SEED) -> dict:
    """Accuracy with its 95% bootstrap CI over ``unit`` (:func:`poolbench.stats.accuracy_ci`)."""
    correct = (preds["pred"] == preds["label"]).astype(np.int64)
    per_unit = correct.groupby(preds[unit].to_numpy()).agg(["sum", "size"])
    if per_unit["size"].nunique() != 1:
        raise HubError(f"the predictions do not cover the set evenly (units {unit} differ in rows); score whole splits")
    resampler = st.Resampler(len(per_unit), 1, n_boot or analysis.N_BOOT, seed)
    acc = st.accuracy_ci(per_unit["sum"].to_numpy()[:, None], int(per_unit["size"].iloc[0]), resampler)
    return {"value": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"], "n": len(preds)}


def _metric(row, value="diff", low="ci_low", high="ci_high", n=None, **extra) -> dict:
    return {"value": float(row[value]), "ci_low": float(row[low]), "ci_high": float(row[high]),
            **({"n": int(n)} if n is not None else {}), **extra}


def warnings_for(name: str, preds: pd.DataFrame, accuracy: dict) -> list[str]:
    """Constant or nearly constant predictions, and accuracy whose CI holds chance."""
    out = []
    share = float(preds["pred"].mean())
    if share in (0.0, 1.0):
        out.append(f"{name}: every text is predicted {'positive' if share else 'negative'}; the predictions are "
                   f"constant, so every position and tail effect is 0 by construction and says nothing")
    elif max(share, 1 - share) >= NEAR_CONSTANT:
        out.append(f"{name}: {100 * max(share, 1 - share):.1f}% of texts are predicted "
                   f"{'positive' if share > 0.5 else 'negative'}; the predictions are nearly constant")
    if accuracy["ci_low"] <= CHANCE <= accuracy["ci_high"]:
        out.append(f"{name}: accuracy {100 * accuracy['value']:.1f}% [{100 * accuracy['ci_low']:.1f}, "
                   f"{100 * accuracy['ci_high']:.1f}] cannot be told from chance (50%)")
    return out


# ---- the tail probe -------------------------------------------------------------------------------


def probe_report(table: pd.DataFrame, name: str = "model", truncation: str = "-", max_len: int = 0,
                 n_boot: int | None = None, seed: int = analysis.BOOT_SEED) -> dict:
    """The tail probe's statistics for one classifier.

    ``table``: one row per probe item with ``label``, ``body_label``, ``condition``, ``position``,
    ``length_bin``, ``verdict_review_id`` and ``pred`` (0/1) or ``p_positive``. Returns
    ``accuracy``; ``follows_body`` (contrast items predicted as the body's label); ``cells``
    (:func:`poolbench.analysis.probe_cells`: accuracy per condition × position × length_bin with its
    95% CI over verdicts); ``gaps`` (the study's ``position`` comparisons: end − start on contrast
    items per length_bin and over both (``all``), with the verdict-clustered bootstrap CI and p).
    ``n_boot``: draws (default: the study's, 10,000 for a CI and 50,000 for a test).
    """
    missing = {"label", "body_label", *analysis.PROBE_CELL, analysis.VERDICT} - set(table.columns)
    if missing or not {"pred", "p_positive"} & set(table.columns):
        raise HubError(f"probe predictions need the columns {sorted(missing) or ['pred or p_positive']}")
    preds = _as_study(table, name, "tailprobe", truncation, max_len)
    cells = _study_call(analysis.probe_cells, preds, n_boot or analysis.N_BOOT, seed)
    # One call for the three end − start tests (short, long, all): the pooled copy is its own length bin.
    both = pd.concat([preds, preds.assign(length_bin="all")], ignore_index=True)
    comps = _study_call(analysis.comparisons, both, n_boot or analysis.N_BOOT_TESTS, seed)
    gaps = comps[comps["kind"] == "position"] if len(comps) else pd.DataFrame(columns=GAP_COLUMNS + ["kind"])
    gaps = gaps.assign(order=gaps["length_bin"].map({"all": 0, "short": 1, "long": 2})).sort_values("order")
    contrast = preds[preds["condition"] == "contrast"]
    keep = ["condition", "position", "length_bin", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
            "follows_body"]
    return {"accuracy": float((preds["pred"] == preds["label"]).mean()),
            "follows_body": float((contrast["pred"] == contrast["body_label"]).mean()) if len(contrast) else None,
            "cells": cells[keep].reset_index(drop=True),
            "gaps": gaps[GAP_COLUMNS].reset_index(drop=True)}


class ProbeSet:
    name, unit = "tailprobe", analysis.VERDICT

    def report(self, preds: pd.DataFrame, name: str, truncation: str, max_len: int, n_boot: int | None) -> dict:
        rep = probe_report(preds, name, truncation, max_len, n_boot)
        accuracy = unit_accuracy(preds, self.unit, n_boot)
        metrics = {"accuracy": accuracy, **self._gaps(rep["gaps"])}
        if rep["follows_body"] is not None:
            metrics["follows_body"] = {"value": rep["follows_body"],
                                       "n": int((preds["condition"] == "contrast").sum())}
        # Visible verdicts: the verdicts the window keeps at every position (a verdict is the paired unit).
        whole = preds.groupby(self.unit)["verdict_kept"].transform("all").astype(bool)
        visible = {}
        if whole.any():
            vis = probe_report(preds[whole], name, truncation, max_len, n_boot)
            visible = {"accuracy": unit_accuracy(preds[whole], self.unit, n_boot), **self._gaps(vis["gaps"])}
        kept = (preds.groupby(["position", "length_bin"])["verdict_kept"].agg(["sum", "size"]).reset_index()
                .rename(columns={"sum": "kept", "size": "of"}))
        return {"set": self.name, "split": "test", "n": len(preds), "unit": self.unit,
                "units": int(preds[self.unit].nunique()), "metrics": metrics,
                "visible": {"units": int(preds.loc[whole, self.unit].nunique()), "metrics": visible},
                "verdict_kept": {"kept": int(preds["verdict_kept"].sum()), "of": len(preds),
                                 "by_cell": kept.astype({"kept": int, "of": int}).to_dict("records")},
                "cells": rep["cells"].to_dict("records"), "warnings": warnings_for(self.name, preds, accuracy),
                "tables": {"tailprobe_cells.csv": rep["cells"], "tailprobe_gaps.csv": rep["gaps"]}}

    @staticmethod
    def _gaps(gaps: pd.DataFrame) -> dict:
        return {f"end_minus_start_contrast_{g['length_bin']}": _metric(g, p=float(g["p"]), units=int(g["units"]))
                for _, g in gaps.iterrows()}


# ---- the natural tail set ---------------------------------------------------------------------------


def natural_report(table: pd.DataFrame, name: str = "model", n_boot: int | None = None,
                   seed: int = analysis.BOOT_SEED) -> pd.DataFrame:
    """Natural tail set accuracy per set (tail/head) × variant with its 95% CI over reviews
    (:func:`poolbench.analysis.natural_cells`)."""
    preds = _as_study(table, name, "naturaltail")
    cells = _study_call(analysis.natural_cells, preds, n_boot or analysis.N_BOOT, seed)
    return cells[["set", "variant", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high"]]


class NaturalSet:
    name, unit = "naturaltail", "review_id"

    def report(self, preds: pd.DataFrame, name: str, truncation: str, max_len: int, n_boot: int | None) -> dict:
        cells = natural_report(preds, name, n_boot)
        accuracy = unit_accuracy(preds, self.unit, n_boot)
        metrics = {"accuracy": accuracy, **self._originals(cells)}
        # Visible verdicts: reviews whose verdict the window keeps where it stands and where it is moved to.
        kept = preds["verdict_kept"].fillna(True).astype(bool)
        whole = kept.groupby(preds[self.unit]).transform("all")
        visible = self._originals(natural_report(preds[whole], name, n_boot)) if whole.any() else {}
        shown = preds[preds["variant"] != "removed"]
        by_cell = (shown.groupby(["set", "variant"])["verdict_kept"].agg(["sum", "size"]).reset_index()
                   .rename(columns={"sum": "kept", "size": "of"}))
        return {"set": self.name, "split": "test", "n": len(preds), "unit": self.unit,
                "units": int(preds[self.unit].nunique()), "metrics": metrics,
                "visible": {"units": int(preds.loc[whole, self.unit].nunique()), "metrics": visible},
                "verdict_kept": {"kept": int(shown["verdict_kept"].sum()), "of": len(shown),
                                 "by_cell": by_cell.astype({"kept": int, "of": int}).to_dict("records")},
                "cells": cells.to_dict("records"), "warnings": warnings_for(self.name, preds, accuracy),
                "tables": {"naturaltail_cells.csv": cells}}

    @staticmethod
    def _originals(cells: pd.DataFrame) -> dict:
        return {f"{r['set']}_original": _metric(r, "accuracy", "accuracy_ci_low", "accuracy_ci_high", r["n"])
                for _, r in cells[cells["variant"] == "original"].iterrows()}


HANDLERS = {h.name: h for h in (ProbeSet(), NaturalSet())}
