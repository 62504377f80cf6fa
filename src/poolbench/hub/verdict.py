"""``VERDICT.md``: what ``poolbench score`` found, in words a reader can check, from results.json alone."""

from __future__ import annotations

import pandas as pd

from ..analysis import POSITIONS, p_is, points

CONDITIONS = [
    ("agree / contrast (probe)", "in an *agree* text the body reads the same way as the verdict, so a model can "
     "be right without reading the verdict; in a *contrast* text the body reads the other way, so only a model "
     "that follows the verdict against its body is right."),
    ("start / middle / end (probe)", "where the verdict sentence sits in the text; the label is the verdict's."),
    ("short / long (probe)", "short texts have at most 128 tokens, long ones more than 256 (under the study's "
     "tokenizers), so a 128-token head window cuts the end of every long text."),
    ("tail / head (natural)", "real IMDB reviews whose last (*tail*) or first (*head*) sentence is the clear "
     "verdict while the rest reads the other way; the label is the review's rating."),
    ("original / removed / moved (natural)", "the review as written; with its verdict deleted (the body alone, "
     "which reads against the label: a model that reads the text *should* miss it); with the verdict moved to "
     "the other end."),
    ("visible", "the examples whose verdict lies wholly inside the model's window (`--max-len`, `--truncation`); "
     "an effect measured on the others measures the truncation, not the model."),
]


def _ci(m: dict, sign: bool = False) -> str:
    if not m:
        return "–"
    if m.get("ci_low") is None:
        return points(m["value"], sign)
    return f"{points(m['value'], sign)} [{points(m['ci_low'], sign)}, {points(m['ci_high'], sign)}]"


def _said(m: dict) -> str:
    if m["ci_high"] < 0:
        return "less often than the first"
    if m["ci_low"] > 0:
        return "more often than the first"
    return "about as often as the first (the CI holds 0)"


def _cell_table(cells: list[dict], row_keys: list[str], col_key: str, cols: list[str]) -> list[str]:
    df = pd.DataFrame(cells)
    index = df.set_index([*row_keys, col_key])
    rows = list(dict.fromkeys(zip(*(df[k] for k in row_keys))))
    out = [f"| {' | '.join(row_keys)} | " + " | ".join(cols) + " |", "|" + "---|" * len(row_keys) + "---:|" * len(cols)]
    for r in rows:
        vals = []
        for c in cols:
            key = (*r, c)
            if key in index.index:
                x = index.loc[key]
                vals.append(_ci({"value": x["accuracy"], "ci_low": x["accuracy_ci_low"],
                                 "ci_high": x["accuracy_ci_high"]}))
            else:
                vals.append("–")
        out.append(f"| {' | '.join(map(str, r))} | " + " | ".join(vals) + " |")
    return out


def _kept(rep: dict, keys: list[str]) -> str:
    k = rep["verdict_kept"]
    parts = ", ".join(f"{' '.join(str(c[x]) for x in keys)} {c['kept']}/{c['of']}" for c in k["by_cell"])
    return (f"- Verdicts inside the model's window: **{k['kept']} of {k['of']}** texts ({parts}); "
            f"{rep['visible']['units']} of {rep['units']} {UNITS.get(rep['unit'], rep['unit'])} keep it wherever "
            f"it stands.")


def _probe(rep: dict) -> list[str]:
    m, vis = rep["metrics"], rep["visible"]["metrics"]
    lines = ["## Tail probe", "", _kept(rep, ["position", "length_bin"]),
             f"- Accuracy: {_ci(m['accuracy'])} (n = {m['accuracy']['n']})"
             + (f"; on visible verdicts {_ci(vis['accuracy'])} (n = {vis['accuracy']['n']})." if vis else ".")]
    gap = m.get("end_minus_start_contrast_all")
    if gap:
        lines.append(f"- Contrast texts, verdict at the end − at the start: {_ci(gap, True)} (p {p_is(gap['p'])}; "
                     f"bootstrap over {gap['units']} verdicts): the last sentence is caught {_said(gap)}.")
        for length in ("short", "long"):
            g = m.get(f"end_minus_start_contrast_{length}")
            if g:
                lines.append(f"  - {length} texts: {_ci(g, True)} (p {p_is(g['p'])})")
        vgap = vis.get("end_minus_start_contrast_all")
        if vgap:
            lines.append(f"- **On visible verdicts only** (the window keeps the verdict at every position): "
                         f"{_ci(vgap, True)} (p {p_is(vgap['p'])}; {vgap['units']} verdicts): the last sentence "
                         f"is caught {_said(vgap)}.")
        else:
            lines.append("- On visible verdicts only: none; the window hides the verdict at some position of every "
                         "verdict, so the gap above measures the truncation as much as the model.")
        if vgap and vgap["units"] < gap["units"]:
            lines.append(f"  - The full gap includes {gap['units'] - vgap['units']} verdicts the window cuts at "
                         f"some position: there it measures the truncation.")
    if "follows_body" in m:
        lines.append(f"- Follows the body instead of the verdict on {points(m['follows_body']['value'])}% of "
                     f"contrast texts.")
    lines += ["", *_cell_table(rep["cells"], ["condition", "length_bin"], "position", POSITIONS), ""]
    return lines


def _natural(rep: dict) -> list[str]:
    m, vis = rep["metrics"], rep["visible"]["metrics"]
    lines = ["## Natural tail set", "", _kept(rep, ["set", "variant"]),
             f"- Accuracy over all items: {_ci(m['accuracy'])} (n = {m['accuracy']['n']})."]
    if "tail_original" in m and "head_original" in m:
        lines.append(f"- Real reviews decided by their last sentence: {_ci(m['tail_original'])}; by their first: "
                     f"{_ci(m['head_original'])}.")
    if vis:
        lines.append(f"- **On visible verdicts only**: last sentence {_ci(vis.get('tail_original', {}))} (n = "
                     f"{vis.get('tail_original', {}).get('n', 0)}); first {_ci(vis.get('head_original', {}))} (n = "
                     f"{vis.get('head_original', {}).get('n', 0)}).")
    else:
        lines.append("- On visible verdicts only: none; the window cuts every review's verdict somewhere.")
    lines += ["", *_cell_table(rep["cells"], ["set"], "variant", ["original", "removed", "moved"]), ""]
    return lines


UNITS = {"verdict_review_id": "verdicts", "review_id": "reviews"}
SECTIONS = {"tailprobe": _probe, "naturaltail": _natural}
REF_METRICS = {"tailprobe": [("accuracy", "accuracy"), ("contrast_start", "contrast, start"),
                             ("contrast_end", "contrast, end"), ("end_minus_start", "end − start")],
               "naturaltail": [("tail_original", "tail, original"), ("head_original", "head, original")]}
THIS = {"tailprobe": {"accuracy": "accuracy", "end_minus_start": "end_minus_start_contrast_all"},
        "naturaltail": {"tail_original": "tail_original", "head_original": "head_original"}}


def _references(rep: dict, refs: pd.DataFrame) -> list[str]:
    """This model beside chance, the baselines and the study's models (point values from committed summaries)."""
    name = rep["set"]
    cols = REF_METRICS[name]
    mine = []
    for key, _ in cols:
        if key in THIS[name] and THIS[name][key] in rep["metrics"]:
            mine.append(points(rep["metrics"][THIS[name][key]]["value"], key == "end_minus_start"))
        elif key.startswith("contrast_"):
            here = [c for c in rep["cells"] if c["condition"] == "contrast" and c["position"] == key.split("_")[1]]
            mine.append(points(sum(c["accuracy"] * c["n"] for c in here) / sum(c["n"] for c in here)) if here else "–")
        else:
            mine.append("–")
    lines = [f"Reference rows ({name}; point values, from the study's committed summaries):", "",
             "| | " + " | ".join(label for _, label in cols) + " |", "|---|" + "---:|" * len(cols),
             "| **this model** | " + " | ".join(mine) + " |",
             "| chance (coin flip) | " + " | ".join("±0.0" if k == "end_minus_start" else "50.0" for k, _ in cols) + " |"]
    sub = refs[refs["set"] == name] if len(refs) else refs
    for ref, rows in (sub.groupby("reference", sort=False) if len(sub) else []):
        vals = dict(zip(rows["metric"], rows["value"]))
        lines.append(f"| {ref} | " + " | ".join(points(vals[k], k == "end_minus_start") if k in vals else "–"
                                               for k, _ in cols) + " |")
    if not len(sub):
        lines.append("| (no baselines or study rows: score with a folder from `poolbench export-data` run in the "
                     "repository) | " + " | ".join("" for _ in cols) + " |")
    return lines + [""]


def verdict(doc: dict, refs: pd.DataFrame) -> str:
    """The Markdown verdict of a results.json document, with reference rows."""
    model, s = doc["model"], doc["settings"]
    lines = [f"# Does {model['name']} catch the last sentence?", "",
             f"`{model['class']}`, positive label(s) {model['positive_labels']}, {s['truncation']} truncation at "
             f"{s['max_len']} tokens, {s['dtype']} on {s['device']}. Accuracy in %, differences in points, "
             f"[95% CI, bootstrap over the set's units]. Machine-readable: `results.json`.", ""]
    if doc["warnings"]:
        lines += ["## Warnings", "", *[f"- ⚠ {w}." for w in doc["warnings"]], ""]
    for rep in doc["results"]:
        lines += SECTIONS[rep["set"]](rep)
        if rep["set"] in REF_METRICS:
            lines += _references(rep, refs)
    if doc.get("invariance"):
        lines += ["## Invariance self-check", "",
                  "A sample re-scored in batches where the answer must not change, against each text scored alone "
                  "(no padding); position ids count real tokens:", "",
                  "| set | condition | n | flips | max \\|ΔP\\| |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['set']} | {r['condition']} | {r['n']} | {r['flips']} | {r['max_abs_dp']:.2g} |"
                  if r["max_abs_dp"] is not None else f"| {r['set']} | {r['condition']} | – | – | {r['note']} |"
                  for r in doc["invariance"]]
        lines.append("")
    lines += ["## What the conditions mean", "", *[f"- **{k}**: {v}" for k, v in CONDITIONS], ""]
    return "\n".join(lines)
