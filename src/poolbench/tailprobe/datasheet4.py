"""The datasheet of probe v4 (``version: 4``): what differs from v3, the v4 checks and the blind audit."""

from __future__ import annotations

import pandas as pd

from .audit import AUDIT_SEED_V4, ENFORCED_V4, MIN_AGREEMENT, SAMPLE_V4
from .baselines import BASELINES
from .common import CONDITIONS_V4, LENGTH_BINS, POSITIONS, config


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _counts(probe) -> list[str]:
    lines = ["| split | source | condition | length_bin | label 0 | label 1 | per position |", "|---|---|---|---|---:|---:|---|"]
    for split, df in probe.items():
        counts = df.groupby(["verdict_source", "condition", "length_bin", "label"]).size()
        for s in sorted(df["verdict_source"].unique(), reverse=True):
            for c in CONDITIONS_V4:
                for b in LENGTH_BINS:
                    n0, n1 = (int(counts.get((s, c, b, l), 0)) for l in (0, 1))
                    lines.append(f"| {split} | {s} | {c} | {b} | {n0} | {n1} | {(n0 + n1) // len(POSITIONS)} each |")
    return lines


def _lengths(probe) -> list[str]:
    lines = ["| split | length_bin | tokenizer | min | median | max |", "|---|---|---|---:|---:|---:|"]
    for split, df in probe.items():
        for col in [c for c in df if c.startswith("n_tokens_")]:
            for b in LENGTH_BINS:
                n = df.loc[df["length_bin"] == b, col]
                if len(n):
                    lines.append(f"| {split} | {b} | {col[len('n_tokens_'):]} | {n.min()} | {n.median():.0f} | {n.max()} |")
    return lines


def _funnels(checks) -> list[str]:
    build = checks.get("build", {}).get("splits", {})
    if not build:
        return ["(build statistics not available: the probe was read back from files.)"]
    lines = ["| split | source | reviews neg / pos | pass content | pass polarity | verdicts neg / pos |", "|---|---|---|---|---|---|"]
    for split, b in build.items():
        for source, f in b["verdict_funnel_by_source"].items():
            lines.append(f"| {split} | {source} | {f['0'].get('reviews', 0)} / {f['1'].get('reviews', 0)} | "
                         f"{f['0'].get('pass_content', 0)} / {f['1'].get('pass_content', 0)} | "
                         f"{f['0'].get('pass_polarity', 0)} / {f['1'].get('pass_polarity', 0)} | "
                         f"{f['0'].get('verdicts', 0)} / {f['1'].get('verdicts', 0)} |")
    lines.append("")
    for split, b in build.items():
        lines.append(f"- {split}: {b['verdicts_used']} verdicts used; {b.get('body_reviews_segmented', 0)} body reviews "
                     f"segmented; {b.get('neutral_bodies_rejected_whole', 0)} single-review and "
                     f"{b.get('neutral_joined_rejected', 0)} joined neutral bodies failed the whole-body rule.")
    return lines


def _audit(checks) -> list[str]:
    rc = checks.get("read_and_counted", {})
    sample = ", ".join(f"{n} {k}" for k, n in SAMPLE_V4.items())
    lines = [f"**Read and counted, blind** (seed {AUDIT_SEED_V4}: {sample} probe-test items; verdicts shown alone, "
             "the others as whole texts; the reader saw neither labels nor ids and wrote 0, 1, mixed or none before "
             f"the code compared; target ≥ {MIN_AGREEMENT:.0%} read as labelled, enforced for "
             f"{' and '.join(ENFORCED_V4)}; file `{rc.get('file', '').split('/src/')[-1]}`, sha256 "
             f"`{(rc.get('sha256_file') or '')[:16]}`): status **{rc.get('status')}**, "
             f"{'passed' if rc.get('passed') else 'FAILED'}.", ""]
    if rc.get("status") == "current":
        lines += ["| sample | read | as labelled | agreement | mixed | no judgement | target met |", "|---|---:|---:|---:|---:|---:|---|"]
        for kind, s in rc["by_kind"].items():
            lines.append(f"| {kind} | {s['n']} | {s['agree']} | {_pct(s['agreement'])} | {s.get('mixed', 0)} | "
                         f"{s['not_a_judgement']} | {'yes' if s['target_met'] else '**no**'} |")
        lines += ["", "> Contrast texts are reported as *follows the verdict against the body*: a reader who reads one as "
                  "labelled followed the verdict; mixed readings are expected there by design."]
    else:
        lines.append(f"> **Audit not counted for this probe:** {rc.get('measured')}")
    return lines + [""]


def _v4_checks(checks) -> list[str]:
    ok = lambda c: "passed" if c.get("passed") else "FAILED"  # noqa: E731
    lines = []
    sb = checks.get("same_body")
    if sb:
        lines += [f"**Same body at every position** (each group's three texts share verdict, cell and body sentences; "
                  f"only the verdict's position differs): {ok(sb)}; "
                  + ", ".join(f"{s}: {v['groups']} groups, {v['groups_not_sharing']} not sharing" for s, v in sb["splits"].items())
                  + ".", ""]
    vv = checks.get("verdict_visible")
    if vv:
        w = vv["windows"]
        lines += [f"**Verdict visible** (every text fits its window, re-tokenized: short ≤ {w['short']}, long ≤ {w['long']} "
                  f"tokens, special tokens included): {ok(vv)}.", "", "| split | tokenizer/bin | n | max tokens | fit |",
                  "|---|---|---:|---:|---:|"]
        for split, per in vv["splits"].items():
            for k, s in per.items():
                lines.append(f"| {split} | {k} | {s['n']} | {s['max_tokens']} | {_pct(s['fit'])} |")
        lines.append("")
    nb = checks.get("neutral_bodies")
    if nb:
        th = nb["thresholds"]
        lines += [f"**Neutral bodies** (re-split: mean sentence VADER within ±{th['mean_sentence_vader']}, the IMDB "
                  f"bag-of-words' P(positive) in {th['p_positive']}): {ok(nb)}.", "",
                  "| split | bodies | meet the rule | median abs mean-sentence VADER | median abs whole-body VADER | "
                  "AFINN 0 on the whole body | P(positive) min / median / max | bag-of-words on body matches the verdict | "
                  "joined from several reviews |", "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        for split, s in nb["splits"].items():
            p = s["p_positive_min_median_max"]
            lines.append(f"| {split} | {s['n_bodies']} | {_pct(s['meet_rule'])} | {s['mean_sentence_vader_median_abs']:.3f} | "
                         f"{s['whole_body_vader_median_abs']:.3f} | {_pct(s['whole_body_afinn_zero'])} | "
                         f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} | {_pct(s['bow_body_matches_verdict_label'])} | "
                         f"{_pct(s['joined_reviews_share'])} |")
        lines.append("")
    sf = checks.get("same_film_by_position")
    if sf:
        lines += ["**Same film, by position** (share of texts whose body comes from the verdict's film; equal across "
                  "positions because the three texts share one body):", "",
                  "| split | condition/bin | start | middle | end |", "|---|---|---:|---:|---:|"]
        for split, cells in sf["splits"].items():
            for c in CONDITIONS_V4:
                for b in LENGTH_BINS:
                    vals = [cells.get(f"{c}/{b}/{p}") for p in POSITIONS]
                    lines.append(f"| {split} | {c}/{b} | " + " | ".join(_pct(v) for v in vals) + " |")
        lines.append("")
    bc = checks.get("bodies_point_their_own_way")
    if bc:
        th = bc["thresholds"]
        lines += [f"**Bodies point their own way** (v3's check, reported, not enforced in v4; bag-of-words on the body "
                  f"alone, accuracy w.r.t. the verdict label; v3's thresholds contrast ≤ {th['contrast_max']}, agree ≥ "
                  f"{th['agree_min']}: {'met' if bc.get('passed_v3_thresholds') else '**not met**'}); "
                  + "; ".join(f"{s}: " + ", ".join(f"{c} {v:.3f}" for c, v in x["by_condition"].items())
                              for s, x in bc["splits"].items()) + ".", ""]
    cv = checks.get("no_counter_verdicts")
    if cv:
        lines += [f"**No counter-verdicts** (contrast bodies; v3's check): {ok(cv)}; "
                  + ", ".join(f"{s} {_pct(v.get('v2_filter'))}" for s, v in cv["splits"].items()) + ".", ""]
    tc = checks.get("truncation_bites")
    if tc:
        k = tc["threshold"]["token"]
        fr = ", ".join(f"{key} {_pct(v)}" for key, v in tc["measured"].items())
        lines += [f"**Where head truncation at {k} would cut** (informational: long texts, verdict at the end, first "
                  f"verdict token at index ≥ {k}): {fr}. Scored at {tc['threshold'].get('token')} tokens, long texts "
                  "would test truncation, not position; v4 expects them scored at the long window.", ""]
    return lines


def _baselines(checks) -> list[str]:
    bl = checks.get("baselines")
    if not bl:
        return ["(not computed)"]
    cells = pd.DataFrame(bl["cells"])
    lines = ["Accuracy (%) on probe-test w.r.t. the verdict label (see v3's datasheet for the baselines).", "",
             "| baseline | all | " + " | ".join(CONDITIONS_V4) + " | "
             + " | ".join(f"{c} {p}" for c in ("contrast", "neutral") for p in POSITIONS) + " |",
             "|---|---:|" + "---:|" * (len(CONDITIONS_V4) + 6)]
    for name in BASELINES:
        if name not in bl["measured"]:
            continue
        sub = cells[cells["baseline"] == name].groupby(["condition", "position"])["accuracy"].mean()
        by = bl["by_condition"][name]
        lines.append(f"| {name} | {100 * bl['measured'][name]:.1f} | "
                     + " | ".join(f"{100 * by.get(c, float('nan')):.1f}" for c in CONDITIONS_V4) + " | "
                     + " | ".join(f"{100 * sub.get((c, p), float('nan')):.1f}" for c in ("contrast", "neutral") for p in POSITIONS) + " |")
    src = bl.get("by_source", {})
    if src:
        lines += ["", "By verdict source (probe-test): accuracy per condition.", "",
                  "| baseline | source | " + " | ".join(CONDITIONS_V4) + " |", "|---|---|" + "---:|" * len(CONDITIONS_V4)]
        sources = sorted({k.split("/")[1] for k in src}, reverse=True)
        for name in BASELINES:
            for s in sources:
                lines.append(f"| {name} | {s} | " + " | ".join(_pct(src.get(f"{name}/{s}/{c}")) for c in CONDITIONS_V4) + " |")
    return lines


def datasheet_v4(probe: dict[str, pd.DataFrame], checks: dict, cfg: dict, common_sections) -> str:
    """Markdown datasheet of a v4 probe; ``common_sections(probe, cfg)`` gives v3's shared sections
    (examples, uses, licence, versions and hashes)."""
    cfg = config(cfg)
    sizes = ", ".join(f"{s} {len(df):,}" for s, df in probe.items())
    distinct = ", ".join(f"{s} {df['verdict_review_id'].nunique():,}" for s, df in probe.items())
    groups = ", ".join(f"{s} {df['group_id'].nunique():,}" for s, df in probe.items())
    tok_cols = [c[len("n_tokens_"):] for c in next(iter(probe.values())) if c.startswith("n_tokens_")]
    lines = [
        "# Tail-sentiment probe (v4): datasheet",
        "",
        f"Examples: {sizes}. Distinct verdicts: {distinct}; bodies (groups of three texts): {groups}. "
        f"Config: `{ {k: cfg[k] for k in sorted(cfg)} }`. Tokenizers defining the length bins and windows: "
        f"{', '.join(tok_cols)}.",
        "",
        "## What v4 changes (only the position changes)",
        "",
        "- **One body, three positions.** Every verdict appears in each condition with *one* body; the three texts of "
        "such a group (`group_id`) put the verdict at the start, in the middle and at the end of the same body sentences. "
        "Position is the only difference, so same-film shares, body lean and body length are equal across positions.",
        "- **Conditions.** `agree` (the body's review has the verdict's polarity), `contrast` (the other polarity) and "
        "`neutral` (`body_label` = -1): a body of descriptive sentences only (third person, no exclamation, question or "
        "capitals, no AFINN word, no judging adjective, nothing about the film, its making or its audience, |VADER| ≤ "
        f"{cfg['neutral_sentence_vader']}, the bag-of-words' P(positive) within {1 - cfg['neutral_sentence_p']:.1f}–"
        f"{cfg['neutral_sentence_p']}) whose mean sentence VADER lies within ±{cfg['neutral_body_vader']} and whose "
        f"P(positive) lies in {cfg['neutral_body_p']}. The verdict is then the text's only sentiment. Neutral bodies "
        "join the descriptive sentences of one or more reviews (the verdict's film first; `body_review_id` lists them).",
        f"- **Windows.** Short texts fit {cfg['short_max_tokens']} tokens and long texts {cfg['max_tokens']} under every "
        "tokenizer (special tokens included), so a run that scores short texts at 128 and long texts at 512 sees every "
        "verdict: position is tested apart from truncation.",
        f"- **Verdict sources.** probe-train's verdicts are the reviews' last sentences (as in v3); probe-test's come in "
        f"equal numbers from {', '.join(cfg['test_sources'])} sentences of rated 1–2 / 9–10 reviews (`verdict_source`), "
        "so a head that learned probe-train's closing-sentence style shows it on `first`.",
        "- Bodies never use their review's first or last sentence. Everything else (the verdict filter, v3's body "
        "sentence rules, the length bins, split hygiene) is v3's; see the v3 datasheet for those rules.",
        "",
        "### Counts (per cell, each verdict in all three positions)",
        "",
        *_counts(probe),
        "",
        "### Lengths (tokens, special tokens included)",
        "",
        *_lengths(probe),
        "",
        "### Verdict funnel by source",
        "",
        *_funnels(checks),
        "",
        "## Sanity checks",
        "",
        *_audit(checks),
        *_v4_checks(checks),
        "## Baselines (probe-test)",
        "",
        *_baselines(checks),
        "",
        *common_sections(probe, cfg),
        "## Known limitations (v4)",
        "",
        "- Neutral bodies are plot description with the judgements removed, spliced from one or more reviews; "
        "joined ones read as a patchwork. A model may spot the single evaluative sentence by its vocabulary alone (see the "
        "position-blind baselines).",
        "- Contrast texts remain conflicts by design; their accuracy is the rate of following the verdict against the body.",
        "- `first` verdicts are opening sentences that pass the same filter; they differ in style from closing ones, "
        "which is the point, but also in what they judge (openings more often announce than conclude).",
        "- The audit is one reader's blind judgement on a sample of probe-test; probe-train is not read.",
    ]
    return "\n".join(lines) + "\n"
