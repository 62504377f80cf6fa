"""``results.json`` (what ``poolbench score`` found, with its provenance) and ``poolbench compare``.

Schema ``poolbench-score`` version 1 (in the spirit of lm-evaluation-harness and MTEB results)::

    {"schema": "poolbench-score", "schema_version": 1, "created": ISO date (UTC),
     "poolbench_version": ..., "packages": {python, torch, transformers, ...},
     "model": {path, name, class, model_type, config_sha256, labels, positive_labels},
     "settings": {max_len, truncation, batch_size, padding_side, device, dtype, n_boot, check_invariance},
     "eval_sets": [{name, split, version, rows, sha256, path (in an export-data folder),
                    source (the file scored)}],
     "results": [{set, split, n, unit, units, metrics: {name: {value, ci_low, ci_high, n, ...}},
                  visible: {units, metrics}, verdict_kept: {kept, of, by_cell}, cells: [...], warnings: [...]}],
     "invariance": [{set, condition, n, flips, max_abs_dp, mean_abs_dp, note}] or null (null values: not run),
     "warnings": [...]}

``results`` is a list with one entry per evaluation set, so a new set adds an entry and changes
nothing else. :func:`compare` reads several output folders into one table and one figure, with a
paired bootstrap test (over the set's units) of each model against the first wherever both were
scored on the same items (same set sha256 and item ids).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .common import HubError

RESULTS = "results.json"
SCHEMA, SCHEMA_VERSION = "poolbench-score", 1
PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "evaluate", "huggingface_hub", "numpy", "pandas",
            "scipy", "pyarrow")


def package_versions() -> dict:
    from ..run import versions

    return versions(PACKAGES)


def document(model: dict, settings: dict, eval_sets: list[dict], reports: list[dict],
             invariance: pd.DataFrame | None) -> dict:
    from .. import __version__

    inv = None if invariance is None else _plain(invariance[["set", "condition", "n", "flips", "max_abs_dp",
                                                      "mean_abs_dp", "note"]].to_dict("records"))
    warnings = [w for r in reports for w in r["warnings"]]
    if inv:
        warnings += [f"{r['set']}: {r['flips']} of {r['n']} predictions flip under {r['condition']} "
                     f"(max |ΔP| {r['max_abs_dp']:.3g}); the model depends on how it is fed" for r in inv if r["flips"]]
    return _plain({"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "poolbench_version": __version__, "packages": package_versions(), "model": model, "settings": settings,
            "eval_sets": eval_sets, "results": reports, "invariance": inv, "warnings": warnings})


def _plain(x):
    """JSON-able: numpy scalars as Python numbers, pandas NA as null."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is pd.NA or (isinstance(x, float) and np.isnan(x)):
        return None
    return x


def write(path: Path, doc: dict) -> None:
    Path(path).write_text(json.dumps(_plain(doc), indent=2) + "\n")


def read(folder: Path) -> dict:
    """The results.json of a ``poolbench score`` output folder, schema checked."""
    path = Path(folder) / RESULTS
    if not path.is_file():
        raise HubError(f"{folder} holds no {RESULTS}; is it a folder written by poolbench score?")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HubError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if doc.get("schema") != SCHEMA or doc.get("schema_version") != SCHEMA_VERSION:
        raise HubError(f"{path} has schema {doc.get('schema')!r} version {doc.get('schema_version')!r}; this "
                       f"poolbench reads {SCHEMA!r} version {SCHEMA_VERSION}")
    return doc


# ---- compare ----------------------------------------------------------------------------------------


def _label(doc: dict, folder: Path) -> str:
    return f"{doc['model']['name']} ({Path(folder).name})"


def compare(folders: list[Path], out: Path, n_boot: int | None = None, overwrite: bool = False) -> pd.DataFrame:
    """One table (``compare.csv``, ``COMPARE.md``) and one figure (``compare.png``) of several score outputs."""
    from .. import analysis
    from .. import stats as st
    from ..io import atomic_dir
    from .common import check_out

    if len(folders) < 2:
        raise HubError("poolbench compare needs at least two score output folders")
    check_out(out, "COMPARE.md", "an earlier poolbench compare output", overwrite)
    docs = [read(f) for f in folders]
    labels = [_label(d, f) for d, f in zip(docs, folders)]
    if len(set(labels)) < len(labels):
        raise HubError("two of the folders hold the same model in folders of the same name; give distinct folders")
    rows = []
    for i, (doc, folder, label) in enumerate(zip(docs, folders, labels)):
        hashes = {(s["name"], s["split"]): s["sha256"] for s in doc["eval_sets"]}
        for rep in doc["results"]:
            for metric, m in rep["metrics"].items():
                vis = rep["visible"]["metrics"].get(metric, {})
                rows.append({"model": label, "set": rep["set"], "metric": metric, "value": m["value"],
                             "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), "n": rep["n"],
                             "visible_value": vis.get("value"), "sha256": hashes.get((rep["set"], rep["split"])),
                             "order": i})
    table = pd.DataFrame(rows)
    # Paired tests: accuracy of each model − the first's, on each set both scored on the same items.
    tests = []
    first = docs[0]
    for rep in first["results"]:
        name, unit = rep["set"], rep["unit"]
        base = _predictions(folders[0], name)
        for doc, folder, label in zip(docs[1:], folders[1:], labels[1:]):
            other = next((r for r in doc["results"] if r["set"] == name), None)
            same_hash = table.query("set == @name")[["model", "sha256"]].drop_duplicates()
            hashes = dict(zip(same_hash["model"], same_hash["sha256"]))
            if other is None or hashes.get(label) != hashes.get(labels[0]):
                continue
            them = _predictions(folder, name)
            if not base["id"].equals(them["id"]):
                continue
            a = (them["pred"] == them["label"]).astype(np.int64).groupby(them[unit].to_numpy()).sum()
            b = (base["pred"] == base["label"]).astype(np.int64).groupby(base[unit].to_numpy()).sum()
            rows_per_unit = int(len(base) // len(b))
            resampler = st.Resampler(len(b), 1, n_boot or analysis.N_BOOT_TESTS, analysis.BOOT_SEED)
            d = st.paired_bootstrap(a.loc[b.index].to_numpy()[:, None], b.to_numpy()[:, None], rows_per_unit,
                                    resampler)
            tests.append({"set": name, "a": label, "b": labels[0], "units": len(b), **d})
    tests = pd.DataFrame(tests, columns=["set", "a", "b", "units", "diff", "ci_low", "ci_high", "p"])
    if len(tests):
        tests["holm_p"] = st.holm(tests["p"])

    def write(tmp: Path) -> None:
        table.drop(columns="order").to_csv(tmp / "compare.csv", index=False)
        tests.to_csv(tmp / "compare_tests.csv", index=False)
        (tmp / "COMPARE.md").write_text(markdown(table, tests, labels))
        figure(table, labels, tmp / "compare.png")

    atomic_dir(out, write)
    return table


def _predictions(folder: Path, name: str) -> pd.DataFrame:
    path = Path(folder) / f"predictions-{name}.parquet"
    if not path.is_file():
        raise HubError(f"{path} does not exist; the folder is not a complete poolbench score output")
    return pd.read_parquet(path)


def _fmt(m) -> str:
    from ..analysis import points

    if m["ci_low"] is None or pd.isna(m["ci_low"]):
        return points(m["value"], "minus" in m["metric"])
    sign = "minus" in m["metric"]
    return f"{points(m['value'], sign)} [{points(m['ci_low'], sign)}, {points(m['ci_high'], sign)}]"


def markdown(table: pd.DataFrame, tests: pd.DataFrame, labels: list[str]) -> str:
    from ..analysis import p_is, points

    lines = ["# poolbench compare", "", "Accuracy in %, differences in points, [95% CI over the set's units]; "
             "`visible` = on the examples whose verdict the model's window kept.", ""]
    for name, sub in table.groupby("set", sort=False):
        metrics = list(dict.fromkeys(sub["metric"]))
        lines += [f"## {name}", "", "| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for metric in metrics:
            cells = []
            for label in labels:
                row = sub[(sub["metric"] == metric) & (sub["model"] == label)]
                if row.empty:
                    cells.append("–")
                    continue
                r = row.iloc[0]
                vis = "" if pd.isna(r["visible_value"]) else f" (visible {points(r['visible_value'], 'minus' in metric)})"
                cells.append(_fmt(r) + vis)
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        here = tests[tests["set"] == name]
        if len(here):
            lines += ["", "Paired tests (same items), accuracy difference:", ""]
            lines += [f"- {t['a']} − {t['b']}: {points(t['diff'], True)} [{points(t['ci_low'], True)}, "
                      f"{points(t['ci_high'], True)}] (p {p_is(t['p'])}, Holm p {p_is(t['holm_p'])}, "
                      f"{t['units']} units)" for _, t in here.iterrows()]
        lines.append("")
    return "\n".join(lines)


def figure(table: pd.DataFrame, labels: list[str], out: Path) -> None:
    """Accuracy per set and model with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = table[table["metric"] == "accuracy"]
    sets = list(dict.fromkeys(acc["set"]))
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(sets) * max(1, len(labels) / 2), 3.6))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        rows = acc[acc["model"] == label].set_index("set").reindex(sets)
        x = np.arange(len(sets)) + (i - (len(labels) - 1) / 2) * width
        err = np.vstack([rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]])
        ax.bar(x, rows["value"], width, yerr=err, capsize=2, label=label)
    ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set_title("poolbench compare (dashed = chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
