"""Sanity checks of a built probe: each ``{"passed", "measured", thresholds, details}``.

* ``labels_clean``: AFINN on the verdicts. AFINN is part of the v2 verdict filter, so this is now
  true by construction (kept for continuity); the independent label check is ``read_and_counted``.
* ``bodies_point_their_own_way``: an IMDB-trained bag-of-words on the bodies alone.
* ``truncation_bites``: where the verdict's first token falls under head truncation.
* ``no_counter_verdicts``: contrast bodies hold no sentence that passes the verdict filter in the
  body's direction (also reported: v1's filter, VADER alone, and sentences stronger than the verdict).
* ``same_film``: share of bodies from the verdict's film (informational).
* ``read_and_counted``: the committed human reading of a sample (:mod:`.audit`).
* ``baselines``: position-blind and part-only baselines (informational; :mod:`.baselines`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (
    POSITIONS,
    afinn,
    bodies_of,
    check_tokenizers,
    config,
    log,
    split_sentences,
    vader,
    verdicts_of,
    version_of,
)
from .filters import film_fold, imdb_models

AFINN_MIN_AGREEMENT = 0.90
BODY_MAX_CONTRAST_ACC = 0.25
BODY_MIN_AGREE_ACC = 0.75
TRUNCATION_MIN_FRACTION = 1.0
COUNTER_VERDICT_MAX = 0.02  # contrast bodies with a sentence passing the v2 filter the other way (re-segmented)


def check_labels_clean(probe: dict[str, pd.DataFrame]) -> dict:
    """AFINN against the verdict labels (part of the v2 filter: true by construction)."""
    out = {"threshold": AFINN_MIN_AGREEMENT, "note": "AFINN is part of the v2 verdict filter; see read_and_counted",
           "splits": {}}
    for split, df in probe.items():
        v = verdicts_of(df)
        scores = np.array([afinn().score(t) for t in v["verdict"]])
        labels = v["label"].to_numpy()
        scored = scores != 0  # AFINN abstains on a zero score
        agree = (scores > 0) == (labels == 1)
        per_label = {}
        for l in (0, 1):
            sel = scored & (labels == l)
            per_label[str(l)] = float(agree[sel].mean()) if sel.any() else None
        out["splits"][split] = {
            "n_verdicts": int(len(v)),
            "abstention_rate": float(1 - scored.mean()),
            "n_scored": int(scored.sum()),
            "agreement": float(agree[scored].mean()) if scored.any() else 0.0,
            "agreement_by_label": per_label,
        }
    out["passed"] = all(s["agreement"] >= AFINN_MIN_AGREEMENT for s in out["splits"].values())
    out["measured"] = {k: s["agreement"] for k, s in out["splits"].items()}
    return out


def check_bodies(probe: dict[str, pd.DataFrame], model) -> dict:
    """Bag-of-words accuracy w.r.t. the verdict label on the bodies alone, per split, condition and cell."""
    out = {
        "thresholds": {"contrast_max": BODY_MAX_CONTRAST_ACC, "agree_min": BODY_MIN_AGREE_ACC},
        "note": "the classifier was trained on IMDB train, the source of probe-train's bodies: the test split is the clean measurement",
        "splits": {},
    }
    for split, df in probe.items():
        correct = pd.Series(model.predict(bodies_of(df).tolist()) == df["label"].to_numpy(), index=df.index)
        cells = correct.groupby([df["condition"], df["position"], df["length_bin"]]).mean()
        out["splits"][split] = {
            "by_condition": {c: float(v) for c, v in correct.groupby(df["condition"]).mean().items()},
            "by_cell": {"/".join(k): float(v) for k, v in cells.items()},
        }
    out["passed"] = all(
        s["by_condition"].get("contrast", 1.0) <= BODY_MAX_CONTRAST_ACC and s["by_condition"].get("agree", 0.0) >= BODY_MIN_AGREE_ACC
        for s in out["splits"].values()
    )
    out["measured"] = {k: s["by_condition"] for k, s in out["splits"].items()}
    return out


def counter_verdicts(df: pd.DataFrame, models: dict, split: str, cfg: dict) -> dict:
    """Contrast bodies (re-segmented) holding a sentence that judges the other way (the body's direction).

    ``v2_filter``: VADER, AFINN and the bag-of-words all confidently in the body's direction (``cfg``
    thresholds; any length; the bag-of-words the generator used: ``models[fold of the body's film]``
    on probe-train, ``models["full"]`` on probe-test); ``v1_filter``: 6–40 words and VADER ≥ 0.5 in the body's
    direction (the first probe's verdict filter); ``vader_05``: VADER alone, any length;
    ``stronger_than_verdict``: a sentence whose VADER compound in the body's direction exceeds the
    verdict's in its own.
    """
    sub = df[df["condition"] == "contrast"]
    if not len(sub):
        return {"n": 0}
    bodies = bodies_of(sub)
    verdicts = [t[s:e] for t, s, e in zip(sub["text"], sub["verdict_start"], sub["verdict_end"])]
    flags = {"v2_filter": [], "v1_filter": [], "vader_05": [], "stronger_than_verdict": []}
    films = sub["body_film"] if "body_film" in sub else pd.Series("", index=sub.index)
    for body, verdict, body_label, film in zip(bodies, verdicts, sub["body_label"], films):
        sents = split_sentences(body)
        model = models[film_fold(film)] if split == "train" and film else models["full"]
        sign = 1 if body_label == 1 else -1
        v = np.array([vader().polarity_scores(s)["compound"] for s in sents]) * sign
        a = np.array([afinn().score(s) for s in sents]) * sign
        p = model.predict_proba(sents)[:, 1]
        p = p if body_label == 1 else 1 - p
        words = np.array([len(s.split()) for s in sents])
        v_verdict = abs(vader().polarity_scores(verdict)["compound"])
        flags["v2_filter"].append(bool(((v >= cfg["vader_threshold"]) & (a >= cfg["afinn_min"]) & (p >= cfg["classifier_min"])).any()))
        flags["v1_filter"].append(bool(((v >= 0.5) & (words >= 6) & (words <= 40)).any()))
        flags["vader_05"].append(bool((v >= 0.5).any()))
        flags["stronger_than_verdict"].append(bool((v > v_verdict).any()))
    return {"n": int(len(sub)), **{k: float(np.mean(x)) for k, x in flags.items()}}


def check_counter_verdicts(probe: dict[str, pd.DataFrame], models: dict, cfg: dict) -> dict:
    out = {"threshold": COUNTER_VERDICT_MAX,
           "note": "bodies are re-split from the text with the generator's splitter; a non-zero v2 rate would mean "
                   "a verdict-like sentence reached a body", "splits": {}}
    for split, df in probe.items():
        out["splits"][split] = counter_verdicts(df, models, split, cfg)
    out["passed"] = all(s.get("v2_filter", 0.0) <= COUNTER_VERDICT_MAX for s in out["splits"].values())
    out["measured"] = {k: {m: s.get(m) for m in ("v2_filter", "v1_filter")} for k, s in out["splits"].items()}
    return out


def check_same_film(probe: dict[str, pd.DataFrame]) -> dict:
    out = {"informational": True, "passed": True, "splits": {}}
    for split, df in probe.items():
        if "same_film" not in df:
            continue
        out["splits"][split] = {
            "overall": float(df["same_film"].mean()),
            "by_condition": {c: float(v) for c, v in df.groupby("condition")["same_film"].mean().items()},
            "by_cell": {"/".join(k): float(v) for k, v in df.groupby(["condition", "length_bin"])["same_film"].mean().items()},
        }
    out["measured"] = {k: s["overall"] for k, s in out["splits"].items()}
    return out


def first_verdict_token(tokenizer, texts: list[str], starts: list[int]) -> np.ndarray:
    """Index (special tokens counted) of the first token overlapping each verdict, from offset mappings."""
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
    out = []
    for offsets, start in zip(enc["offset_mapping"], starts):
        hits = [k for k, (a, b) in enumerate(offsets) if b > start and b > a]
        out.append(hits[0] if hits else -1)
    return np.asarray(out, dtype=np.int64)


def check_truncation(probe: dict[str, pd.DataFrame], tokenizers: dict, cfg: dict) -> dict:
    """Long examples: where the verdict's first token sits; passes if, with the verdict at the end, it
    lies beyond ``short_max_tokens`` (head truncation there removes it) for all of them."""
    cfg = config(cfg)
    limit, longer = cfg["short_max_tokens"], cfg["long_min_tokens"]
    out = {"threshold": {"token": limit, "min_fraction": TRUNCATION_MIN_FRACTION, "also_reported_token": longer}, "splits": {}}
    passed = True
    measured = {}
    for split, df in probe.items():
        out["splits"][split] = {}
        for name, tok in tokenizers.items():
            per_pos = {}
            for position in POSITIONS:
                sel = df[(df["length_bin"] == "long") & (df["position"] == position)]
                first = first_verdict_token(tok, sel["text"].tolist(), sel["verdict_start"].tolist())
                per_pos[position] = {
                    "n": int(len(first)),
                    f"frac_beyond_{limit}": float((first >= limit).mean()) if len(first) else None,
                    f"frac_beyond_{longer}": float((first >= longer).mean()) if len(first) else None,
                    "first_token_min": int(first.min()) if len(first) else None,
                    "first_token_median": float(np.median(first)) if len(first) else None,
                    "first_token_max": int(first.max()) if len(first) else None,
                }
            frac = per_pos["end"][f"frac_beyond_{limit}"]
            measured[f"{split}/{name}"] = frac
            passed &= frac is not None and frac >= TRUNCATION_MIN_FRACTION
            out["splits"][split][name] = per_pos
    out["passed"] = bool(passed)
    out["measured"] = measured
    return out


REPO = Path(__file__).resolve().parents[3]


def portable_file(check: dict) -> dict:
    """The audit check with its file named without this machine's folders: relative to the repository
    when it is inside it, else by name (its sha256 is recorded beside it), so the checks file is the
    same on every machine."""
    path = Path(check["file"]).resolve()
    return {**check, "file": path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name}


def run_checks(probe: dict[str, pd.DataFrame], train_reviews: pd.DataFrame, tokenizers: dict, cfg: dict) -> dict:
    """Every check (see the module docstring); never raises on a miss."""
    from .audit import check_audit
    from .baselines import baseline_predictions, summarise

    check_tokenizers(tokenizers)
    cfg = config(cfg)
    t0 = time.time()
    models = imdb_models(train_reviews)
    model = models["full"]
    if version_of(cfg) == 4:
        from .checks4 import run_checks_v4

        checks = run_checks_v4(probe, train_reviews, tokenizers, cfg, models)
    else:
        checks = {
            "labels_clean": check_labels_clean(probe),
            "bodies_point_their_own_way": check_bodies(probe, model),
            "truncation_bites": check_truncation(probe, tokenizers, cfg),
            "no_counter_verdicts": check_counter_verdicts(probe, models, cfg),
            "same_film": check_same_film(probe),
            "read_and_counted": check_audit(probe, cfg),
            "baselines": summarise(baseline_predictions(probe, train_reviews, imdb_model=model)),
        }
    checks["read_and_counted"] = portable_file(checks["read_and_counted"])  # no machine path in a committed file
    build = {s: df.attrs.get("build") for s, df in probe.items() if df.attrs.get("build")}
    if build:
        checks["build"] = {"informational": True, "passed": True, "measured": {
            s: b["verdicts_available"] for s, b in build.items()}, "splits": build}
    log(f"checks in {time.time() - t0:.1f} s")
    return checks


def assert_checks(checks: dict) -> None:
    """Raise ``ValueError`` naming every failed check and its measured values (informational entries skipped)."""
    failed = [
        f"{name} (measured {c.get('measured')})"
        for name, c in checks.items()
        if not c.get("informational") and not c.get("passed", False)
    ]
    if failed:
        raise ValueError("tail-probe sanity checks failed: " + "; ".join(failed))
