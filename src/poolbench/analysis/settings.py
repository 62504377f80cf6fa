"""The config's ``statistics`` section: which regime is the reference, each model's main fine-tuned regime,
the test a claim rests on, and the confirmatory family. Its defaults live here, once.

```yaml
statistics:
  reference_regime: frozen                          # default: frozen
  main_regimes: {minilm-l6: topk, smollm2-135m: lpft}
  claim_test: bootstrap                             # or both (default: bootstrap)
  confirmatory:                                     # default: none = one Holm family over every comparison
    - {kind: baseline, dataset: imdb, model: minilm-l6, regime: frozen, a: mean}
    - {kind: gap_change, dataset: imdb, model: minilm-l6, regime: topk vs frozen, pooling: mean}
```

- ``reference_regime``: the regime ``gap_change`` measures every other regime against, the "frozen"
  column of the paper's tables, and the regime whose paper macros carry no regime name.
- ``main_regimes`` (``{model: regime}``): for a setting trained in the reference regime and others, the
  one the paper's regime table, the accuracy figure and the natural-tail table set beside the reference
  (the ladder's other steps have their own table and figure). A model not named here that is trained in
  exactly one other regime gets that one; one trained in several must be named (an error says so).
- ``claim_test``: the p that Holm and Benjamini-Hochberg adjust (``claim_p``): ``bootstrap`` (the units ×
  seeds bootstrap) or ``both`` (the larger of the bootstrap p and the mixed-model p: a claim needs both
  tests; calibrated in the matched null simulation, see :mod:`poolbench.stats`).
- ``confirmatory``: selectors of the comparisons that answer the study's question. Each names a ``kind``
  and any of the other identifying columns of ``comparisons.csv``, with the values they hold there (a
  ``gap_change`` row's regime is ``"<regime> vs <reference>"``, a ``truncation`` row's truncation ``"tail
  vs head"``). Holm runs over the tests they select, every other comparison is exploratory and gets
  Benjamini-Hochberg; a selector that selects nothing is an error. Without it, every comparison is in
  one Holm family (confirmatory) and none is exploratory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..config import Run

KINDS = ("baseline", "best", "worst", "position", "truncation", "gap_change")
SELECTOR_KEYS = ("kind", "dataset", "model", "family", "regime", "truncation", "max_len", "pooling", "condition",
                 "length_bin", "position", "a", "b")
CLAIM_TESTS = ("bootstrap", "both")
KEYS = ("reference_regime", "main_regimes", "claim_test", "confirmatory")
# A run's keys in the summaries' order, the model's family beside its model (poolbench.config.Run holds them);
# a setting is a run less its pooling and seed; a block a setting less its regime.
RUN_KEYS = [*Run.keys()[:2], "family", *Run.keys()[2:]]
SETTING_KEYS = [k for k in RUN_KEYS if k not in ("pooling", "seed")]
BLOCK_KEYS = [k for k in SETTING_KEYS if k != "regime"]


class StatisticsError(ValueError):
    """The ``statistics`` section (or a study it is applied to) is inconsistent; the message names the key."""


@dataclass(frozen=True)
class Statistics:
    reference_regime: str = "frozen"
    main_regimes: dict = field(default_factory=dict)
    claim_test: str = "bootstrap"
    confirmatory: tuple = ()

    @classmethod
    def from_config(cls, section: dict | None) -> "Statistics":
        """From the config's ``statistics`` section (``None`` or absent keys: the defaults)."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(KEYS))
        if unknown:
            raise StatisticsError(f"statistics.{unknown[0]}: unknown key (known: {', '.join(KEYS)})")
        if section.get("claim_test", "bootstrap") not in CLAIM_TESTS:
            raise StatisticsError(f"statistics.claim_test: {section['claim_test']!r} is not one of {CLAIM_TESTS}")
        confirmatory = tuple(dict(s) for s in section.get("confirmatory") or ())
        for i, selector in enumerate(confirmatory):
            bad = sorted(set(selector) - set(SELECTOR_KEYS))
            if bad or selector.get("kind") not in KINDS:
                raise StatisticsError(f"statistics.confirmatory[{i}]: " + (
                    f"unknown key {bad[0]!r} (a selector names columns of comparisons.csv: {', '.join(SELECTOR_KEYS)})"
                    if bad else f"kind must be one of {', '.join(KINDS)}, not {selector.get('kind')!r}"))
        return cls(reference_regime=section.get("reference_regime", "frozen"),
                   main_regimes=dict(section.get("main_regimes") or {}),
                   claim_test=section.get("claim_test", "bootstrap"), confirmatory=confirmatory)

    def check(self, config: dict) -> None:
        """The names it uses exist in ``config`` (regimes, models), with a sentence naming the key."""
        regimes, models = config.get("regimes", {}), config.get("models", {})
        if self.reference_regime not in regimes:
            raise StatisticsError(f"statistics.reference_regime: unknown regime {self.reference_regime!r}")
        for model, regime in self.main_regimes.items():
            if model not in models:
                raise StatisticsError(f"statistics.main_regimes.{model}: unknown model")
            if regime not in regimes or regime == self.reference_regime:
                raise StatisticsError(f"statistics.main_regimes.{model}: {regime!r} is not a regime other than "
                                      f"the reference {self.reference_regime!r}")

    def finetuned_regimes(self, runs: pd.DataFrame) -> dict[tuple, str]:
        """The (dataset, model, family, truncation, max_len) settings of ``runs`` (one row per run, planned
        run, pooling or cell) trained in the reference regime and in its model's main regime (see the
        module doc), each with that main regime."""
        out = {}
        for setting, sub in runs.groupby(BLOCK_KEYS, sort=True):
            regimes = set(sub["regime"])
            others = sorted(regimes - {self.reference_regime})
            if self.reference_regime not in regimes or not others:
                continue
            model = setting[BLOCK_KEYS.index("model")]
            if model in self.main_regimes:
                if self.main_regimes[model] in regimes:
                    out[setting] = self.main_regimes[model]
            elif len(others) == 1:
                out[setting] = others[0]
            else:
                raise StatisticsError(f"statistics.main_regimes.{model}: missing; {' · '.join(map(str, setting))} "
                                      f"is trained in several regimes besides {self.reference_regime!r} "
                                      f"({', '.join(others)}): name the main one")
        return out

    def main_rows(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``table`` (one per setting and pooling, or cell) in the reference regime or in its
        setting's main regime (:meth:`finetuned_regimes`); a setting trained in one regime keeps its rows."""
        main = self.finetuned_regimes(table)
        keep = [r.regime == self.reference_regime
                or main.get(tuple(getattr(r, k) for k in BLOCK_KEYS), r.regime) == r.regime
                for r in table.itertuples()]
        return table[keep]

    def selects(self, selector: dict, table: pd.DataFrame) -> pd.Series:
        """Rows of a comparisons table that one confirmatory selector names (values compared as text)."""
        mask = pd.Series(True, index=table.index)
        for key, value in selector.items():
            column = table[key] if key in table else pd.Series("", index=table.index)
            mask &= column.astype(str) == str(value)
        return mask
