"""Aggregation of run outputs into the study's tables, figures and digest.

- :mod:`~poolbench.analysis.tables`: reading runs and predictions, integer counts per unit and seed,
  accuracy per pooling and cell, every comparison with its family's adjusted p, the regime ladder;
- :mod:`~poolbench.analysis.figures`: the figures (matplotlib);
- :mod:`~poolbench.analysis.digest`: ``RESULTS.md``;
- :mod:`~poolbench.analysis.formatting`: how a number is written (digest, paper, ``poolbench score``);
- :mod:`~poolbench.analysis.settings`: the config's ``statistics`` section (reference and main regimes,
  the claim test, the confirmatory family).

The names below are the public API (``poolbench.hub``, ``poolbench.paper``, ``poolbench.jobs`` and the
workflow use them); the statistics themselves are :mod:`poolbench.stats`.
"""

from .digest import describe, markdown_summary
from .figures import accuracy_by_pooling, ladder_figure, tailprobe_figure
from .formatting import (P_FLOOR, adjusted_p, degrees, interval, p_is, points, pvalue, setting_label, setting_labels,
                         significant, star, verdict, with_ci)
from .settings import Statistics, StatisticsError
from .tables import (BASELINE, BOOT_SEED, LADDER_KEYS, LADDER_MIN_REGIMES, N_BOOT, N_BOOT_TESTS, NATURAL_CELL,
                     POSITIONS, PROBE_CELL, RUN_KEYS, SETTING_KEYS, VERDICT, Counts, collect_runs, comparisons,
                     ladder_settings, natural_cells, pooling_stats, probe_cells, read_predictions, regime_ladder,
                     trained_layers)


def finetuned_regimes(runs, settings: Statistics | None = None) -> dict[tuple, str]:
    """Each setting trained in the reference regime and its model's main regime, with that regime
    (:meth:`Statistics.finetuned_regimes`; ``settings`` default: the defaults)."""
    return (settings or Statistics()).finetuned_regimes(runs)


def main_regimes(table, settings: Statistics | None = None):
    """The rows of ``table`` in the reference regime or their setting's main regime (:meth:`Statistics.main_rows`)."""
    return (settings or Statistics()).main_rows(table)


__all__ = ["BASELINE", "BOOT_SEED", "LADDER_KEYS", "LADDER_MIN_REGIMES", "N_BOOT", "N_BOOT_TESTS", "NATURAL_CELL",
           "P_FLOOR", "POSITIONS", "PROBE_CELL", "RUN_KEYS", "SETTING_KEYS", "VERDICT", "Counts", "Statistics",
           "StatisticsError", "accuracy_by_pooling", "adjusted_p", "collect_runs", "comparisons", "degrees",
           "describe", "finetuned_regimes", "interval", "ladder_figure", "ladder_settings", "main_regimes",
           "markdown_summary", "natural_cells", "points", "pooling_stats", "probe_cells", "pvalue", "read_predictions",
           "regime_ladder", "setting_label", "setting_labels", "significant", "star", "tailprobe_figure",
           "trained_layers", "verdict", "with_ci"]
