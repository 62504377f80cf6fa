"""How a number of the study is written, in the digest (Markdown), the paper (LaTeX) and ``poolbench score``:
the one place for points, CIs, p-values, significance words and setting labels.

``tex=True`` writes a minus as ``$-$`` (the paper); Markdown keeps ``-``.
"""

from __future__ import annotations

import math

from ..stats import ALPHA

P_FLOOR = 1e-4  # p-values below it are printed as "<0.0001": the bootstrap's normal tail is not exact there


def points(x: float, sign: bool = False, tex: bool = False) -> str:
    """A proportion as percentage points, one decimal (with a sign for differences): ``71.6``, ``+7.0``."""
    text = f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"
    return text.replace("-", "$-$") if tex else text


def interval(low: float, high: float, sign: bool = False, tex: bool = False) -> str:
    """A 95% CI in points: ``[68.9, 74.3]``, or signed for a difference ``[+4.3, +9.5]``."""
    return f"[{points(low, sign, tex)}, {points(high, sign, tex)}]"


def with_ci(row, value: str = "diff", low: str = "ci_low", high: str = "ci_high", tex: bool = False) -> str:
    """``+7.0 [+4.3, +9.5]`` (a difference, signed) or ``71.6 [68.9, 74.3]`` (an accuracy), in points."""
    sign = value == "diff"
    return f"{points(row[value], sign, tex)} {interval(row[low], row[high], sign, tex)}"


def pvalue(p: float, tex: bool = False) -> str:
    """``0.03``, ``0.0041``; below :data:`P_FLOOR` the bound ``<0.0001`` (TeX: ``\ensuremath{<}0.0001``, right in
    a table cell and in ``$p=...$``); ``–`` (``--`` in TeX) when missing."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "--" if tex else "–"
    if p < P_FLOOR:
        return rf"\ensuremath{{<}}{P_FLOOR:g}" if tex else f"<{P_FLOOR:g}"  # TeX: text mode and math mode
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def p_is(p: float) -> str:
    """A p-value with its relation, for text such as ``f"p {p_is(p)}"``: ``= 0.03``, or ``< 0.0001`` below
    :data:`P_FLOOR` (never "p = <0.0001")."""
    text = pvalue(p)
    return f"< {text[1:]}" if text.startswith("<") else f"= {text}"


def degrees(df: float) -> str:
    """Degrees of freedom of a t-test, e.g. ``2.1`` or ``840``."""
    if df is None or math.isnan(df):
        return "–"
    return f"{df:.1f}" if df < 10 else f"{df:.0f}"


def adjusted_p(row) -> float:
    """The p a claim about a comparison rests on: Holm's in the confirmatory family, BH's in the exploratory one."""
    return row["bh_p"] if row.get("claim_family", "confirmatory") == "exploratory" else row["holm_p"]


def significant(row) -> bool:
    """Adjusted p (:func:`adjusted_p`) below :data:`poolbench.stats.ALPHA`."""
    p = adjusted_p(row)
    return bool(p < ALPHA) if p == p else False


def star(row, tex: bool = False) -> str:
    """``*``: confirmatory, Holm p < alpha; ``†``: exploratory, BH p < alpha; else nothing."""
    if not significant(row):
        return ""
    mark = "*" if row.get("claim_family", "confirmatory") != "exploratory" else ("\\dagger" if tex else "†")
    return f"$^{mark}$" if tex else mark


def verdict(row) -> str:
    """The words a sentence may use about one comparison, decided by its adjusted p, never typed by hand:
    "significant" / "not significant" (confirmatory, Holm), or with "exploratory" in front (BH)."""
    word = "significant" if significant(row) else "not significant"
    return f"exploratory, {word}" if row.get("claim_family", "confirmatory") == "exploratory" else word


def setting_label(row, dataset: bool = False, regime: bool = True, sep: str = " · ") -> str:
    """``minilm-l6 · frozen · head-128`` (``regime=False``: without it; ``dataset=True``: with it in front)."""
    parts = ([str(row["dataset"])] if dataset else []) + [str(row["model"])] + \
        ([str(row["regime"])] if regime else []) + [f"{row['truncation']}-{row['max_len']}"]
    return sep.join(parts)


def setting_labels(df, **kw):
    """:func:`setting_label` of every row of a table (a Series)."""
    return df.apply(lambda r: setting_label(r, **kw), axis=1) if len(df) else df.get("model", df.index.to_series())
