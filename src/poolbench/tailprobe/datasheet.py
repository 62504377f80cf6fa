"""The probe's datasheet (after Gebru et al., *Datasheets for Datasets*), in Markdown."""

from __future__ import annotations

import hashlib
import io

import pandas as pd

from ..polarity import tool_versions as polarity_tool_versions
from ..text import highlight
from .audit import MIN_AGREEMENT, N_CONTRAST, N_VERDICTS
from .baselines import BASELINES
from .common import CONDITIONS, LENGTH_BINS, POSITIONS, VERSION, conditions_of, config, version_of
from .filters import REJECT

TOOLS = ("pysbd", "vaderSentiment", "afinn", "scikit-learn", "numpy", "pandas", "pyarrow", "tokenizers", "transformers")


def tool_versions() -> dict[str, str]:
    return polarity_tool_versions(TOOLS)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """The bytes :func:`poolbench.io.write_parquet` writes for ``df``."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def file_hashes(probe: dict[str, pd.DataFrame]) -> dict[str, dict]:
    """Per split: rows, SHA-256 of the Parquet file as written by ``poolbench.io.write_parquet``, and
    SHA-256 of the content (CSV of the rows; independent of the Parquet writer's version)."""
    out = {}
    for split, df in probe.items():
        content = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
        out[split] = {"rows": int(len(df)), "parquet_sha256": hashlib.sha256(parquet_bytes(df)).hexdigest(),
                      "content_sha256": hashlib.sha256(content).hexdigest()}
    return out


def _display(row, context: int = 240) -> str:
    """The example with the verdict in bold, long sides cut to ``context`` characters."""
    return highlight(row["text"], row["verdict_start"], row["verdict_end"], context)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _counts_table(probe: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| split | condition | position | length_bin | label 0 | label 1 |", "|---|---|---|---|---:|---:|"]
    for split, df in probe.items():
        counts = df.groupby(["condition", "position", "length_bin", "label"]).size()
        for c in CONDITIONS:
            for p in POSITIONS:
                for b in LENGTH_BINS:
                    n0, n1 = (int(counts.get((c, p, b, l), 0)) for l in (0, 1))
                    lines.append(f"| {split} | {c} | {p} | {b} | {n0} | {n1} |")
    return lines


def _length_summary(probe: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| split | length_bin | tokenizer | min | median | max |", "|---|---|---|---:|---:|---:|"]
    for split, df in probe.items():
        for col in [c for c in df if c.startswith("n_tokens_")]:
            for b in LENGTH_BINS:
                n = df.loc[df["length_bin"] == b, col]
                if len(n):
                    lines.append(f"| {split} | {b} | {col[len('n_tokens_'):]} | {n.min()} | {n.median():.0f} | {n.max()} |")
    return lines


def _funnel(checks: dict) -> list[str]:
    build = checks.get("build", {}).get("splits", {})
    if not build:
        return ["(build statistics not available: the probe was read back from files.)"]
    keys = sorted({k for b in build.values() for f in b["verdict_funnel"].values() for k in f},
                  key=lambda k: (not k.startswith("reviews"), k.startswith("pass") or k == "verdicts", k))
    lines = ["| step | " + " | ".join(f"{s} neg | {s} pos" for s in build) + " |",
             "|---|" + "---:|" * (2 * len(build))]
    for k in keys:
        cells = [str(b["verdict_funnel"][l].get(k, 0)) for b in build.values() for l in ("0", "1")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    for split, b in build.items():
        lines.append(f"- {split}: {b['verdicts_used']} verdicts used; {b.get('body_reviews_segmented', 0)} body reviews "
                     f"segmented; of their {b.get('sentences', 0)} sentences (last sentences excluded) "
                     f"{b.get('verdict_like_sentences', 0)} were verdict-like and {b.get('evaluative_sentences', 0)} more "
                     "evaluative, and could not enter a body.")
    return lines


def _checks_lines(checks: dict) -> list[str]:
    lines = []
    ok = lambda c: "passed" if c.get("passed") else "FAILED"  # noqa: E731
    rc = checks.get("read_and_counted")
    if rc:
        lines += [f"**Read and counted** (a person read a fixed random sample of {N_VERDICTS} probe-test verdicts and "
                  f"{N_CONTRAST} contrast texts, blind to the probe's labels, and recorded the label a reader would "
                  f"give; target ≥ {MIN_AGREEMENT:.0%} each, enforced for the verdicts; file "
                  f"`{rc['file'].split('/src/')[-1]}`, sha256 `{(rc.get('sha256_file') or '')[:16]}`): status "
                  f"**{rc.get('status')}**, {ok(rc)}.", ""]
        if rc.get("status") == "current":
            lines += ["| sample | read | reader agrees with the probe | agreement | read as no judgement | target met |",
                      "|---|---:|---:|---:|---:|---|"]
            for kind, s in rc["by_kind"].items():
                lines.append(f"| {kind} | {s['n']} | {s['agree']} | {_pct(s['agreement'])} | {s['not_a_judgement']} | "
                             f"{'yes' if s.get('target_met') else '**no**'} |")
            if rc.get("note"):
                lines += ["", f"> {rc['note'][0].upper() + rc['note'][1:]}."]
        else:
            lines.append(f"> **Audit not counted for this probe:** {rc.get('measured')}")
        lines.append("")
    bc = checks.get("bodies_point_their_own_way")
    if bc:
        th = bc["thresholds"]
        lines += [f"**Bodies point their own way** (IMDB-trained bag-of-words on the body alone; accuracy w.r.t. the "
                  f"verdict label ≤ {th['contrast_max']} on contrast, ≥ {th['agree_min']} on agree): {ok(bc)}. "
                  f"{bc['note'][0].upper() + bc['note'][1:]}.", "",
                  "| split | contrast | agree | weakest contrast cell | weakest agree cell |", "|---|---:|---:|---|---|"]
        for split, s in bc["splits"].items():
            cells = s["by_cell"]
            worst_c = max(((v, k) for k, v in cells.items() if k.startswith("contrast")), default=(float("nan"), "–"))
            worst_a = min(((v, k) for k, v in cells.items() if k.startswith("agree")), default=(float("nan"), "–"))
            lines.append(f"| {split} | {s['by_condition'].get('contrast', float('nan')):.3f} | "
                         f"{s['by_condition'].get('agree', float('nan')):.3f} | {worst_c[1]} {worst_c[0]:.3f} | "
                         f"{worst_a[1]} {worst_a[0]:.3f} |")
        lines.append("")
    cv = checks.get("no_counter_verdicts")
    if cv:
        lines += [f"**No counter-verdicts** (contrast bodies, re-segmented, holding a sentence that passes the verdict "
                  f"filter in the body's direction; ≤ {cv['threshold']:.0%}): {ok(cv)}. {cv['note'][0].upper() + cv['note'][1:]}.",
                  "", "| split | contrast texts | v2 filter | v1 filter (VADER ≥ 0.5, 6–40 words) | VADER ≥ 0.5 alone | "
                  "a sentence stronger (VADER) than the verdict |", "|---|---:|---:|---:|---:|---:|"]
        for split, s in cv["splits"].items():
            lines.append(f"| {split} | {s['n']} | {_pct(s.get('v2_filter'))} | {_pct(s.get('v1_filter'))} | "
                         f"{_pct(s.get('vader_05'))} | {_pct(s.get('stronger_than_verdict'))} |")
        lines.append("")
    sf = checks.get("same_film")
    if sf and sf.get("splits"):
        lines += ["**Same film** (share of examples whose body is another review of the verdict's film):", "",
                  "| split | all | contrast | agree | " + " | ".join(f"{c} {b}" for c in CONDITIONS for b in LENGTH_BINS) + " |",
                  "|---|---:|---:|---:|" + "---:|" * 4]
        for split, s in sf["splits"].items():
            lines.append(f"| {split} | {_pct(s['overall'])} | {_pct(s['by_condition'].get('contrast'))} | "
                         f"{_pct(s['by_condition'].get('agree'))} | "
                         + " | ".join(_pct(s["by_cell"].get(f"{c}/{b}")) for c in CONDITIONS for b in LENGTH_BINS) + " |")
        lines.append("")
    tc = checks.get("truncation_bites")
    if tc:
        k = tc["threshold"]["token"]
        lines += [f"**Truncation bites** (long examples, verdict at the end: first verdict token at index ≥ {k} under head "
                  f"truncation, for all of them and every tokenizer): {ok(tc)}.", "",
                  f"| split | tokenizer | position | n | first verdict token min / median / max | beyond {k} | "
                  f"beyond {tc['threshold']['also_reported_token']} |", "|---|---|---|---:|---|---:|---:|"]
        for split, per_tok in tc["splits"].items():
            for name, per_pos in per_tok.items():
                for position, s in per_pos.items():
                    fracs = [v for key, v in s.items() if key.startswith("frac_beyond_")]
                    if s["n"]:
                        lines.append(f"| {split} | {name} | {position} | {s['n']} | {s['first_token_min']} / "
                                     f"{s['first_token_median']:.0f} / {s['first_token_max']} | {fracs[0]:.3f} | {fracs[1]:.3f} |")
        lines.append("")
    lc = checks.get("labels_clean")
    if lc:
        lines += [f"**AFINN agreement** (part of the verdict filter since v2, so not an independent check): {ok(lc)}; "
                  + ", ".join(f"{s} {v['agreement']:.3f} (abstains {v['abstention_rate']:.3f})" for s, v in lc["splits"].items())
                  + ".", ""]
    return lines


def _baselines_lines(checks: dict) -> list[str]:
    bl = checks.get("baselines")
    if not bl:
        return ["(not computed)"]
    cells = pd.DataFrame(bl["cells"])
    lines = ["Accuracy (%) on probe-test w.r.t. the verdict label. `tfidf_probe_train`: position-blind TF-IDF + "
             "logistic regression trained on probe-train; `imdb_bow*`: TF-IDF + logistic regression trained on IMDB "
             "train reviews, applied to the whole text, the verdict alone or the body alone. `imdb_bow_verdict_only` is 100% "
             "by construction on probe-test (the same model helped select the verdicts); it is listed as a ceiling.", "",
             "| baseline | all | contrast | agree | " + " | ".join(f"contrast {p} {b}" for b in LENGTH_BINS for p in POSITIONS) + " |",
             "|---|---:|---:|---:|" + "---:|" * 6]
    for name in BASELINES:
        if name not in bl["measured"]:
            continue
        sub = cells[(cells["baseline"] == name) & (cells["condition"] == "contrast")].set_index(["position", "length_bin"])
        by = bl["by_condition"][name]
        lines.append(f"| {name} | {100 * bl['measured'][name]:.1f} | {100 * by.get('contrast', float('nan')):.1f} | "
                     f"{100 * by.get('agree', float('nan')):.1f} | "
                     + " | ".join(f"{100 * sub['accuracy'].get((p, b), float('nan')):.1f}" for b in LENGTH_BINS for p in POSITIONS) + " |")
    return lines


def shared_sections(probe: dict[str, pd.DataFrame], cfg: dict) -> list[str]:
    """Sections every version's datasheet has: examples, uses, licence, maintenance, versions and hashes."""
    hashes = file_hashes(probe)
    audit = "audit.csv" if version_of(cfg) == 3 else "audit_v4.csv"
    lines = [
        "## Examples (probe-test; verdict in bold, long texts cut)",
        "",
    ]
    df = probe.get("test", next(iter(probe.values())))
    for condition in conditions_of(cfg):
        lines += [f"### {condition}", ""]
        picks = df[df["condition"] == condition].groupby(["position", "length_bin"], sort=True).head(1).head(5)
        for _, row in picks.iterrows():
            lines.append(f"- `{row['id']}` label {row['label']}, body {row['body_label']}, {row['position']}, "
                         f"{row['length_bin']}{', same film' if row.get('same_film') else ''}: {_display(row)}")
        lines.append("")
    lines += [
        "## Uses",
        "",
        "- **Intended.** Comparing poolings, truncation and fine-tuning regimes by accuracy per cell, paired across "
        "positions; as a transfer test set for classifiers trained on IMDB.",
        "- **Should not be used** as a general sentiment benchmark or to rank sentiment models; to train production "
        "classifiers; to draw conclusions about subtle, ironic or mixed sentiment (verdicts are explicit by "
        "construction); to study reviewers or films; with tokenizers other than those above without re-checking the "
        "length bins; or with the labels read as human annotations (they are a filtered sentence's polarity; the audit "
        "measures their agreement with a reader on a sample).",
        "",
        "## Distribution and licence",
        "",
        "- The probe is generated, not distributed: the pipeline rebuilds it from IMDB. The IMDB review texts belong to "
        "their authors / IMDB; the aclImdb release carries no explicit licence and is used for research under its "
        "citation request (Maas et al., 2011). Tools: pysbd (MIT), vaderSentiment (MIT), afinn (Apache-2.0 code; "
        "AFINN lexicon ODbL), scikit-learn (BSD-3-Clause).",
        "",
        "## Maintenance",
        "",
        f"- Rebuilt by the pipeline whenever the generator or config changes. The human reading (`{audit}` beside the "
        "generator) records the config it was drawn from; a changed probe under that config makes the check fail "
        "(*stale*) until the sample is read again.",
        "",
        "## Versions and hashes",
        "",
        "| tool | version |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in tool_versions().items()],
        "",
        "| split | rows | parquet sha256 (as written by `poolbench.io.write_parquet`) | content sha256 (CSV) |",
        "|---|---:|---|---|",
        *[f"| {s} | {h['rows']} | `{h['parquet_sha256']}` | `{h['content_sha256']}` |" for s, h in hashes.items()],
        "",
    ]
    return lines


def datasheet(probe: dict[str, pd.DataFrame], checks: dict, cfg: dict) -> str:
    """Markdown datasheet: motivation, composition, collection, preprocessing, uses, distribution,
    maintenance; tool versions, file hashes, the checks' numbers, the baselines and known limits."""
    cfg = config(cfg)
    if version_of(cfg) == 4:
        from .datasheet4 import datasheet_v4

        return datasheet_v4(probe, checks, cfg, shared_sections)
    sizes = ", ".join(f"{s} {len(df):,}" for s, df in probe.items())
    distinct = ", ".join(f"{s} {df['verdict_review_id'].nunique():,}" for s, df in probe.items())
    tok_cols = [c[len("n_tokens_"):] for c in next(iter(probe.values())) if c.startswith("n_tokens_")]
    lines = [
        f"# Tail-sentiment probe (v{VERSION}): datasheet",
        "",
        f"Examples: {sizes}. Distinct verdicts: {distinct} (each used at the three positions). "
        f"Config: `{ {k: cfg[k] for k in sorted(cfg)} }`. Tokenizers defining the length bins: {', '.join(tok_cols)}.",
        "",
        "## Motivation",
        "",
        "- **Purpose.** To measure *where* a pooled transformer representation reads: whether a sentiment classifier "
        "built on it catches a decisive verdict placed at the start, in the middle or at the end of a review whose other "
        "sentences agree with the verdict or lean the other way, for short texts and for texts longer than a truncation "
        "budget. It is a diagnostic for the poolbench study of pooling strategies, not a sentiment benchmark.",
        "- **Creators.** The poolbench maintainers; generated by `poolbench.tailprobe` inside the pipeline (rule "
        "`tailprobe`). No separate funding.",
        "",
        "## Composition",
        "",
        "- **Instances.** Synthetic texts: a *body* (sentences, in their order, of one IMDB review) with a *verdict* (the "
        "final sentence of another IMDB review) inserted. `label` = the verdict's polarity (0 negative, 1 positive); "
        "`body_label` = the polarity of the body's review; `condition` = agree / contrast; `position` = start / middle / "
        "end; `length_bin` = short / long.",
        f"- **Sizes and balance.** 12 cells (condition × position × length_bin), equal size and label-balanced in each "
        f"split; every verdict appears once at each position, with three different bodies of the same condition and "
        f"length bin (a paired position control). `short`: ≤ {cfg['short_max_tokens']} tokens under every tokenizer; "
        f"`long`: > {cfg['long_min_tokens']} and ≤ {cfg['max_tokens']} (special tokens included); body ≥ "
        f"{cfg['body_min_tokens']} tokens and ≥ 2 sentences.",
        "- **Fields.** `id`, `text`, `label`, `body_label`, `condition`, `position`, `length_bin`, `verdict_start`, "
        "`verdict_end` (character span: `text[verdict_start:verdict_end]` is the verdict), `verdict_review_id` (also the "
        "verdict's id: each verdict comes from one review), `body_review_id` (`<split>-<neg|pos>-<IMDB id>`), "
        "`verdict_film`, `body_film` (IMDB title ids from the review urls), `same_film`, `n_tokens_<tokenizer>`.",
        "- **Splits.** probe-train from IMDB train only, probe-test from IMDB test only (IMDB's splits cover disjoint "
        "films); test reviews whose text is in IMDB train are dropped; no verdict or body sentence of probe-test equals "
        "(case/whitespace-insensitively) a verdict or body sentence of probe-train.",
        "- **Noise.** The label is a verdict sentence's polarity; how often a reader agrees is measured below (*Read and "
        "counted*). Reviews are user-written and may contain offensive language; violence/death vocabulary is kept out "
        "of verdicts but not out of bodies. No personal information beyond what IMDB users published under pseudonyms.",
        "",
        "### Counts per cell",
        "",
        *_counts_table(probe),
        "",
        "### Lengths (tokens, special tokens included)",
        "",
        *_length_summary(probe),
        "",
        "## Collection and construction",
        "",
        "- **Source.** IMDB Large Movie Review Dataset v1.0 (Maas et al., ACL 2011), the `aclImdb` train and test "
        "reviews with their ratings and urls; only reviews rated 1–2 (negative) or 9–10 (positive) are used.",
        "- **Sentences.** pysbd (English, rule-based) on the review with `<br />` blanked; sentences are "
        "whitespace-normalised and re-joined with single spaces.",
        f"- **Verdict filter, content.** The review's last sentence, {cfg['verdict_min_words']}–{cfg['verdict_max_words']} "
        "words, that points at the whole work or the viewer's judgement of it (a word such as movie, film, show, it, "
        "this, watch, recommend, or a rating like 8/10) and matches none of the rejection patterns: "
        + ", ".join(f"`{k}`" for k in REJECT) + " (regular expressions in `poolbench/tailprobe/filters.py`). Verdicts are "
        "deduplicated.",
        f"- **Verdict filter, polarity.** VADER compound ≥ {cfg['vader_threshold']}, AFINN score ≥ {cfg['afinn_min']} and "
        f"P(label) ≥ {cfg['classifier_min']} from an IMDB-trained bag-of-words (TF-IDF + logistic regression on IMDB train "
        "reviews, applied to the sentence), all in the review's direction. Probe-train sentences are scored by a model "
        "trained on the IMDB train films of the other fold (two folds by title id), probe-test sentences by the model "
        "trained on all of IMDB train.",
        "- **Bodies.** A review of the body's polarity (rated 1–2 / 9–10, never a verdict's source, each used once); "
        + ("reviews of the verdict's film are tried first (contrast verdicts are chosen among those whose film has "
           "reviews of the other polarity), then any review. " if cfg["same_film"] else "any review. ")
        + "Never that review's last sentence, nor any sentence that passes the polarity filter in either direction (the "
        "verdict is the single decisive judgement), nor an *evaluative* sentence (judgement vocabulary such as "
        "recommend, worst, boring, waste, a rating; or about the work or an aspect of it (film, acting, plot, ending, "
        "...) with |VADER| ≥ 0.4 or the bag-of-words ≥ 85% sure either way), nor a sentence of the other split. Since v3 "
        "the judgement vocabulary includes plain praise and blame (good, bad, great, best, love, enjoy, fun, ...) and "
        "verdicts naming a person or another title (a capitalised word inside the sentence, `proper_name`) are "
        "rejected: the v2 reading found readers took such verdicts to judge something else. From a random usable "
        "sentence the body grows over "
        "the usable sentences, in order, to a random length within the bin (the body leans through description; "
        "the lean is measured below by a bag-of-words on the body alone).",
        "- **Insertion.** At the start, at the end, or (middle) at the sentence boundary that best balances the characters.",
        "- **Determinism.** Everything follows from `seed`; the same inputs and config give byte-identical files.",
        "",
        "### Verdict filter funnel (reviews → verdicts)",
        "",
        *_funnel(checks),
        "",
        "## Sanity checks",
        "",
        *_checks_lines(checks),
        "## Baselines (probe-test)",
        "",
        *_baselines_lines(checks),
        "",
        *shared_sections(probe, cfg),
        *_limitations(cfg),
    ]
    return "\n".join(lines) + "\n"


def _limitations(cfg: dict) -> list[str]:
    return [
        "## Known limitations",
        "",
        "- Examples are splices: the verdict is another review's sentence. Bodies come from the verdict's film where "
        "the data allow (see *Same film*); otherwise names in the verdict may be absent from the body. A model may "
        "still detect the seam or a change of voice.",
        "- Verdicts are short, lexically explicit final sentences chosen by three lexical/bag-of-words scorers: the "
        "probe measures *where* a model reads, not how well it reads subtle sentiment, and it favours verdicts those "
        "scorers recognise.",
        "- Bodies lose their verdict-like and evaluative sentences, so they skip sentences of their review and read as "
        "description (mostly plot) with a lean; they are far less polar than whole reviews, and a position-blind "
        "bag-of-words that spots the one explicit judgement does well (see *Baselines*).",
        "- Negative verdicts are scarce; each verdict appears three times (once per position), so a split has a third "
        "as many distinct verdicts as examples. Choosing contrast verdicts among films with reviews of both polarities "
        "favours divisive films.",
        "- The body check's classifier was trained on IMDB train, which includes probe-train's body reviews: its "
        "probe-train numbers are optimistic; probe-test's are the clean measurement.",
        f"- Length bins are defined by the given tokenizers; another tokenizer may put a text outside its bin. Texts "
        f"between {cfg['short_max_tokens']} and {cfg['long_min_tokens']} tokens are deliberately absent.",
        "- The audit is one reader's judgement on a random sample of probe-test; probe-train is not read.",
        "- Contrast texts are conflicts by design (a body that reads one way, one verdict the other): most readers "
        "call them mixed (see *Read and counted*), so a contrast cell's accuracy is the rate at which a classifier "
        "follows the verdict against its body, not agreement with a reader's label.",
    ]
