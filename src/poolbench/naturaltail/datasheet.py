"""The natural tail set's datasheet, hashes and atomic writing."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd

from poolbench.polarity import tool_versions
from poolbench.text import highlight

from .common import SETS, VARIANTS, config


def parquet_bytes(table: pd.DataFrame) -> bytes:
    """The table as Parquet (what :func:`write` puts on disk, byte for byte)."""
    buf = io.BytesIO()
    table.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    return buf.getvalue()


def content_sha256(table: pd.DataFrame) -> str:
    """sha256 of the rows as JSON lines (key columns only): independent of the Parquet writer's version."""
    cols = ["id", "text", "label", "set", "variant", "review_id", "verdict_start", "verdict_end"]
    h = hashlib.sha256()
    for rec in table[cols].to_dict(orient="records"):
        h.update((json.dumps({k: (int(v) if isinstance(v, np.integer) else v) for k, v in rec.items()},
                             ensure_ascii=False, sort_keys=True) + "\n").encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    return tool_versions(("pysbd", "vaderSentiment", "afinn", "scikit-learn", "numpy", "pandas", "pyarrow"))


def _display(row, context: int = 300) -> str:
    return highlight(row["text"], row["verdict_start"], row["verdict_end"], context)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def datasheet(table: pd.DataFrame, checks_out: dict, cfg: dict | None = None) -> str:
    """Markdown datasheet: selection rule, thresholds, measured sizes, checks, versions, hashes, limits."""
    cfg = config(cfg)
    orig = table[table["variant"] == "original"]
    n = {s: int((orig["set"] == s).sum()) for s in SETS}
    lines = [
        "# Natural tail set: datasheet",
        "",
        f"An **evaluation set only**: {n['tail']} IMDB test reviews whose last sentence is a clear verdict that "
        f"agrees with the rating while the rest reads the other way (`set=tail`), and {n['head']} mirror reviews "
        f"whose first sentence does (`set=head`); each in three variants, {len(table):,} items in all. No splice: "
        "every text is one real review (whitespace normalised) or that review with one sentence removed or moved.",
        "",
        "## Selection rule",
        "",
        "1. IMDB **test** reviews (rating 1–4 → `label` 0, 7–10 → `label` 1). Dropped: reviews whose text "
        "(case/whitespace-insensitively) is also in IMDB train, and repeats of an earlier test review.",
        "2. Sentences by pysbd (`poolbench.text.sentence_spans`); texts with `<br />` blanked and whitespace collapsed "
        "to one space. The *verdict* is the last sentence (`tail`) or the first (`head`); the *body* is the rest of the "
        "review.",
        f"3. **Clear verdict**: {cfg['verdict_min_words']}–{cfg['verdict_max_words']} words; VADER compound "
        f"≥ {cfg['vader_threshold']} in the rating's direction"
        + ("; AFINN score non-zero with the rating's sign." if cfg["afinn_agree"] else "."),
        f"4. **Body reads the other way**: ≥ {cfg['body_min_sentences']} sentences and ≥ {cfg['body_min_words']} words; "
        f"a TF-IDF (1–{cfg['classifier_ngrams']}-grams, sublinear tf, min_df 2) + L2 logistic regression "
        f"(C = {cfg['classifier_C']}, liblinear, seed {cfg['seed']}) trained on the 25,000 IMDB **train** reviews "
        f"gives the rating's direction a probability ≤ {cfg['body_max_p']} on the body alone; **and** the mean VADER "
        f"compound of the body's sentences, signed to the rating's direction, is ≤ {cfg['body_vader_max']}.",
        "5. Variants per selected (review, set): `original` (the review; verdict at its end), `removed` (the body alone; "
        "`verdict_start = verdict_end = -1`), `moved` (the verdict moved to the other end, one-space joins). `label` is "
        "the rating's direction in every variant: on `removed` the text reads the other way, so a model that follows "
        "the text is *expected* to miss it. A review can be in both sets (then its items differ by `set`).",
        "",
        f"Config: `{json.dumps({k: cfg[k] for k in sorted(cfg)}, sort_keys=True)}`.",
        "",
        "## Measured size",
        "",
        "| set | variant | items | label 0 | label 1 |",
        "|---|---|---:|---:|---:|",
    ]
    for key, s in checks_out["sizes"].items():
        set_, variant = key.split("/")
        lines.append(f"| {set_} | {variant} | {s['items']} | {s['label_0']} | {s['label_1']} |")
    r = checks_out["reviews"]
    lines += [
        "",
        f"Distinct reviews: {r['distinct']} ({r['in_both_sets']} in both sets)"
        + (f"; distinct films: {r['distinct_films']}." if r.get("distinct_films") else "."),
        "",
        "## Sanity checks (measured)",
        "",
        f"Integrity (spans, whitespace, variants, ids): {'all passed' if checks_out['integrity_passed'] else 'FAILED'} "
        f"({', '.join(k for k, v in checks_out['integrity'].items() if v)}).",
        "",
    ]
    if "classifier_imdb_test_accuracy" in checks_out:
        lines += [f"The selecting classifier's accuracy on all 25,000 IMDB test reviews: "
                  f"{checks_out['classifier_imdb_test_accuracy']:.4f}.", ""]
    lines += [
        "Bag-of-words accuracy (the selecting classifier) per set × variant. **By construction**, not a finding: "
        "`removed` is 0 (that is the selection rule) and `moved` is close to `original` (only the bigrams across the "
        "verdict's join differ).",
        "",
        "| set | original | removed | moved |",
        "|---|---:|---:|---:|",
    ]
    for s in SETS:
        acc = checks_out["bow_accuracy"]
        if f"{s}/original" in acc:
            lines.append(f"| {s} | " + " | ".join(_pct(acc.get(f"{s}/{v}")) for v in VARIANTS) + " |")
    lines += [
        "",
        "Per set (original items). The body's P(label) and VADER are the selection's own scores; the classifier on "
        "the verdict alone and AFINN (sum) on the body are readings the selection did not use.",
        "",
        "| set | reviews | verdict VADER (signed) min / median | classifier agrees on verdict alone | body P(label) median "
        "| body VADER (signed) median | body AFINN reads other way | verdict opens with a connective | words median "
        "| verdict after word 100 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, p in checks_out["per_set"].items():
        vm, vmed = p["vader_verdict_min_median"]
        lines.append(
            f"| {s} | {p['n']} | {vm:.3f} / {vmed:.3f} | {_pct(p['classifier_agrees_on_verdict_alone'])} | "
            f"{p['p_label_body_median']:.3f} | {p['body_vader_signed_median']:+.3f} | "
            f"{_pct(p['body_afinn_other_way'])} | {_pct(p['verdict_starts_with_connective'])} | "
            f"{p['words_median']:.0f} | {_pct(p['verdict_word_start_over_100'])} |"
        )
    lines += ["", "## Examples (original variant; verdict in bold, long texts cut)", ""]
    for s in SETS:
        sub = orig[orig["set"] == s]
        for label in (0, 1):
            for _, row in sub[sub["label"] == label].head(2).iterrows():
                lines.append(f"- `{row['id']}` ({s}, rating {row['rating']}, body P(label) {row['p_label_body']:.2f}): "
                             f"{_display(row)}")
    lines += [
        "",
        "## Versions and hashes",
        "",
        "Tools: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
        f"- sha256 of the Parquet table (as `naturaltail.write` writes it): `{hashlib.sha256(parquet_bytes(table)).hexdigest()}`",
        f"- sha256 of its content (JSON lines of id, text, label, set, variant, review_id, verdict span; "
        f"independent of the Parquet writer): `{content_sha256(table)}`",
        "",
        "## Known limits",
        "",
        "- *Reads the other way* means: to an IMDB-trained bag of words and to VADER, not to a person. Read by hand, "
        "many bodies are mixed, neutral (plot summary, trivia) or in fact agree with the rating in words both tools "
        "misread (\"ugly, bleak ... a masterpiece\"); only a minority are a clear turn-around that the verdict "
        "decides. Labels are the ratings, so they are right; what varies is how much the verdict carries.",
        "- Some verdicts do not judge the film (a plot line with a polar word, a wish, an aside): VADER and AFINN "
        "pass them alike. First sentences are more often plot openings (\"Five years after the US Civil War, ...\") "
        "than last sentences are asides, so `head` has more of them; `p_label_verdict` (the classifier on the verdict "
        "alone) flags some but also rejects clear verdicts, so it is stored, not used.",
        "- Selected against a bag-of-words model: any model close to it (an IMDB-trained linear classifier on "
        "word counts) is below chance on `original` by construction. Absolute accuracies here say nothing about IMDB; "
        "compare models and positions with each other.",
        "- `tail` and `head` hold different reviews: a tail-vs-head difference mixes position with content. "
        "The clean position contrast is `original` vs `moved` within a set (same words, same review); "
        "`removed` shows what the body alone gives.",
        "- Verdicts are lexically explicit (VADER/AFINN); subtle, ironic or rating-only verdicts (\"3/10\") are absent. "
        "pysbd can merge or cut sentences, so a verdict is occasionally two sentences or a fragment.",
        "- Moved verdicts can carry traces of their old position (\"But…\", \"Overall…\", anaphora); see the "
        "connective column above.",
        "- Whitespace is normalised (`<br />` and paragraph breaks become one space), so `original` is not byte-identical "
        "to the IMDB file.",
        "- Small: with n reviews the binomial SE of an accuracy is about √(0.25/n): "
        + ", ".join(f"{s} ±{100 * (0.25 / max(n[s], 1)) ** 0.5:.1f} points" for s in SETS)
        + "; the three variants of a review are not independent (cluster on `review_id`).",
        "",
        "## Do not use it for",
        "",
        "- Training, tuning, early stopping or model selection: it is IMDB test, selected with test labels.",
        "- Estimating accuracy on IMDB or on reviews in general (it is the adversarial tail of one classifier).",
        "- Claims about human reading without a human-labelled sample, or about sentiment beyond English film reviews.",
        "- Comparing against bag-of-words models trained on IMDB (it was selected to defeat one).",
    ]
    return "\n".join(lines) + "\n"


def write(table: pd.DataFrame, checks_out: dict, cfg: dict | None, parquet_path, checks_path, datasheet_path) -> None:
    """Write the table, the checks (JSON) and the datasheet atomically (:mod:`poolbench.io`)."""
    from poolbench.io import atomic_write, write_text

    data = parquet_bytes(table)
    atomic_write(parquet_path, lambda p: p.write_bytes(data))
    write_text(checks_path, json.dumps(checks_out, indent=2, sort_keys=True) + "\n")
    write_text(datasheet_path, datasheet(table, checks_out, cfg))
