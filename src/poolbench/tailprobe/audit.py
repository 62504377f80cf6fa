"""Read and counted: the human reading of a random sample of the probe, committed beside the code.

:func:`audit_sample` draws, with a fixed seed, ``N_VERDICTS`` distinct probe-test verdicts and
``N_CONTRAST`` probe-test contrast texts. A person reads each and records in ``audit.csv`` the
label a reader would give (``reader_label``: 0 negative, 1 positive, ``none`` when the verdict
does not judge the film or the text has no clear overall judgement) and a short note. The first
line of the file records the config the sample was drawn from.

:func:`check_audit` verifies that the file is the current sample (same ids, same text by
SHA-256) and counts agreement. When the probe was built from another config (e.g. a smoke run)
the audit does not apply and the check says so; when the config matches but the sample changed,
the audit is *stale* and the check fails: the generator changed and must be re-read. Only the
verdicts' agreement is enforced (:data:`ENFORCED`); the contrast texts' is reported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .common import config, verdict_texts, version_of

AUDIT_FILE = Path(__file__).with_name("audit.csv")
# v4: a fresh sample of its own file: verdicts alone, and whole neutral, agree and contrast texts.
# Readers write 0, 1, "mixed" (a text that reads both ways) or "none" (no judgement of the film).
AUDIT_FILE_V4 = Path(__file__).with_name("audit_v4.csv")
AUDIT_SEED_V4 = 20261208
SAMPLE_V4 = {"verdict": 100, "neutral": 60, "agree": 40, "contrast": 50}
ENFORCED_V4 = ("neutral", "agree")  # the texts whose label a reader must give; contrast is reported
AUDIT_SEED = 20261127  # v3: a fresh sample (v2's reading used 20261126)
N_VERDICTS = 100
N_CONTRAST = 50
MIN_AGREEMENT = 0.95
# The check fails the build when the verdicts' agreement is under the target. Contrast texts are
# counted and reported, target met or not, but do not fail it: a contrast text sets a body that reads
# one way against one verdict the other way by design, and readers call most of them mixed (v2: 9 of
# 50 read as labelled; v3, with plain praise and blame also kept out of bodies: see the datasheet).
# Contrast cells therefore measure whether a classifier follows the verdict against its body, not
# agreement with a reader.
ENFORCED = ("verdict",)
CONTRAST_NOTE = ("contrast texts are counted but not enforced: they pit a body against the verdict by design, "
                 "so contrast accuracy measures verdict-following, not agreement with a reader")
META_KEYS = ("seed", "train_size", "test_size")
COLUMNS = ["kind", "id", "sha256", "probe_label", "reader_label", "note"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def meta_line(cfg: dict) -> str:
    cfg = config(cfg)
    return "# tailprobe audit: version=%d %s" % (version_of(cfg), " ".join(f"{k}={cfg[k]}" for k in META_KEYS))


def audit_sample_v4(probe: dict[str, pd.DataFrame], seed: int = AUDIT_SEED_V4) -> pd.DataFrame:
    """v4's sample: :data:`SAMPLE_V4` distinct probe-test verdicts (alone) and whole texts per condition."""
    test = probe["test"]
    rng = np.random.default_rng(seed)
    v = pd.DataFrame({"id": test["verdict_review_id"], "text": verdict_texts(test), "probe_label": test["label"]})
    v = v.drop_duplicates("id").sort_values("id").reset_index(drop=True)
    # drawn in a random order, not sorted: verdict ids sort negatives first, so a sorted sample's order
    # would tell the reader the labels
    parts = [v.iloc[rng.choice(len(v), min(SAMPLE_V4["verdict"], len(v)), replace=False)].assign(kind="verdict")]
    for kind in ("neutral", "agree", "contrast"):
        c = test[test["condition"] == kind].sort_values("id").reset_index(drop=True)
        c = c.iloc[rng.choice(len(c), min(SAMPLE_V4[kind], len(c)), replace=False)]
        parts.append(pd.DataFrame({"id": c["id"], "text": c["text"], "probe_label": c["label"]}).assign(kind=kind))
    out = pd.concat(parts, ignore_index=True)
    out["sha256"] = [sha(t) for t in out["text"]]
    return out[["kind", "id", "sha256", "probe_label", "text"]]


def audit_sample(probe: dict[str, pd.DataFrame], seed: int = AUDIT_SEED, cfg: dict | None = None) -> pd.DataFrame:
    """The sample to read: kind, id, sha256, probe_label, text (verdict, or the whole contrast text).
    With a v4 ``cfg``, :func:`audit_sample_v4`."""
    if version_of(cfg) == 4:
        return audit_sample_v4(probe)
    test = probe["test"]
    rng = np.random.default_rng(seed)
    v = pd.DataFrame({"id": test["verdict_review_id"], "text": verdict_texts(test), "probe_label": test["label"]})
    v = v.drop_duplicates("id").sort_values("id").reset_index(drop=True)
    v = v.iloc[np.sort(rng.choice(len(v), min(N_VERDICTS, len(v)), replace=False))]
    c = test[test["condition"] == "contrast"].sort_values("id").reset_index(drop=True)
    c = c.iloc[np.sort(rng.choice(len(c), min(N_CONTRAST, len(c)), replace=False))]
    c = pd.DataFrame({"id": c["id"], "text": c["text"], "probe_label": c["label"]})
    out = pd.concat([v.assign(kind="verdict"), c.assign(kind="contrast")], ignore_index=True)
    out["sha256"] = [sha(t) for t in out["text"]]
    return out[["kind", "id", "sha256", "probe_label", "text"]]


def read_audit(path: Path) -> tuple[dict, pd.DataFrame]:
    """(meta, rows) of an audit file."""
    path = Path(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    meta = dict(kv.split("=", 1) for kv in first.split(":", 1)[1].split()) if first.startswith("#") else {}
    rows = pd.read_csv(path, skiprows=1 if first.startswith("#") else 0, dtype=str, keep_default_na=False)
    return meta, rows


def check_audit(probe: dict[str, pd.DataFrame], cfg: dict) -> dict:
    """Agreement of the reader's labels with the probe's, per kind; stale / not-applicable detection."""
    cfg = config(cfg)
    version = version_of(cfg)
    path = Path(cfg["audit"]) if cfg["audit"] else (AUDIT_FILE if version == 3 else AUDIT_FILE_V4)
    out = {"threshold": MIN_AGREEMENT, "file": str(path), "sha256_file": None}
    if not path.is_file():
        return {**out, "status": "missing", "passed": False, "measured": "no audit file"}
    out["sha256_file"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta, rows = read_audit(path)
    want = {"version": str(version), **{k: str(cfg[k]) for k in META_KEYS}}
    if {k: meta.get(k) for k in want} != want:
        return {**out, "status": "not_applicable", "informational": True, "passed": True,
                "measured": f"audit made for {meta}, probe built with {want}: not this probe"}
    sample = audit_sample(probe, cfg=cfg)
    mine = rows[["kind", "id", "sha256"]].reset_index(drop=True)
    theirs = sample[["kind", "id", "sha256"]].astype(str).reset_index(drop=True)
    if not mine.equals(theirs):
        merged = mine.merge(theirs, how="outer", indicator=True)
        changed = int((merged["_merge"] != "both").sum())
        return {**out, "status": "stale", "passed": False,
                "measured": f"{changed} audit rows no longer match the probe's sample (ids or text changed): re-read"}
    unread = rows["reader_label"].isin(["", "?"])
    if unread.any():
        return {**out, "status": "incomplete", "passed": False, "measured": f"{int(unread.sum())} rows unread"}
    agree = rows["reader_label"] == rows["probe_label"].astype(str)
    per_kind = {}
    for kind, sel in rows.groupby("kind").groups.items():
        a = agree.loc[sel]
        per_kind[kind] = {"n": int(len(a)), "agree": int(a.sum()), "agreement": float(a.mean()),
                          "not_a_judgement": int((rows.loc[sel, "reader_label"] == "none").sum())}
        if version == 4:
            per_kind[kind]["mixed"] = int((rows.loc[sel, "reader_label"] == "mixed").sum())
    for kind, v in per_kind.items():
        v["target_met"] = v["agreement"] >= MIN_AGREEMENT
    enforced = ENFORCED if version == 3 else ENFORCED_V4
    return {**out, "status": "current", "by_kind": per_kind, "enforced": list(enforced),
            "passed": all(per_kind[k]["target_met"] for k in enforced if k in per_kind),
            "note": CONTRAST_NOTE, "measured": {k: v["agreement"] for k, v in per_kind.items()}}


def write_blank(probe: dict[str, pd.DataFrame], cfg: dict, path: Path, reading: Path | None = None) -> pd.DataFrame:
    """Write an audit file with empty reader labels (and, if ``reading`` is given, a Markdown file to
    read, which does not show the probe's labels: the reader labels blind)."""
    from poolbench.io import write_text

    sample = audit_sample(probe, cfg=cfg)
    rows = sample.assign(reader_label="", note="")[COLUMNS]
    write_text(path, meta_line(cfg) + "\n" + rows.to_csv(index=False))
    if reading is not None:
        write_reading(sample, reading)
    return rows


def write_reading(sample: pd.DataFrame, reading: Path) -> None:
    """The Markdown file a reader labels from: item n is row n of the audit file. Blind: neither the
    probe's labels nor the ids (verdict ids name the review's polarity) are shown."""
    from poolbench.io import write_text

    lines = []
    for n, r in enumerate(sample.itertuples(), 1):
        lines += [f"## item {n:03d} ({r.kind})", "", r.text, ""]
    write_text(reading, "\n".join(lines))


def merge_reading(path: Path, readings: dict[int, tuple[str, str]]) -> pd.DataFrame:
    """Fill an audit file's reader_label and note from ``{item number: (label, note)}`` (item n = row n)."""
    from poolbench.io import write_text

    path = Path(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    _, rows = read_audit(path)
    missing = sorted(set(range(1, len(rows) + 1)) - set(readings))
    if missing:
        raise ValueError(f"tail probe audit: no reading for items {missing[:10]} of {path}")
    bad = sorted({lab for lab, _ in readings.values()} - {"0", "1", "mixed", "none"})
    if bad:
        raise ValueError(f"tail probe audit: reader labels must be 0, 1, mixed or none, got {bad}")
    rows["reader_label"] = [readings[n][0] for n in range(1, len(rows) + 1)]
    rows["note"] = [readings[n][1] for n in range(1, len(rows) + 1)]
    write_text(path, first + "\n" + rows[COLUMNS].to_csv(index=False))
    return rows
