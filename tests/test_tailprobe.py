"""Tests of the tail-sentiment probe (:mod:`poolbench.tailprobe`: generation, checks, baselines, audit, datasheet).

They need IMDB under ``$POOLBENCH_DATA_DIR`` and real fast tokenizers: without them the tests are
skipped locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from poolbench import tailprobe as tp
from poolbench.data import load_imdb
from poolbench.tailprobe.filters import JUDGEMENT

SMALL = {"seed": 0, "train_size": 240, "test_size": 240}


@pytest.fixture(scope="module")
def imdb(data_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_imdb("train"), load_imdb("test")


@pytest.fixture(scope="module")
def probe_tokenizers(bundled) -> dict:
    """Name -> fast tokenizer of both bundled models, materialised as the pipeline does."""
    from poolbench.models import load_tokenizer

    return {name: load_tokenizer(bundled(name, tokenizer_only=True)) for name in ("minilm-l6", "smollm2-135m")}


@pytest.fixture(scope="module")
def one_tokenizer(probe_tokenizers) -> dict:
    """Just the first tokenizer, to keep most tests fast."""
    name = next(iter(probe_tokenizers))
    return {name: probe_tokenizers[name]}


@pytest.fixture(scope="module")
def small_probe(imdb, one_tokenizer) -> dict[str, pd.DataFrame]:
    return tp.build(*imdb, SMALL, one_tokenizer)


@pytest.fixture(scope="module")
def review_texts(imdb) -> dict[str, str]:
    """review_id -> IMDB text, both splits."""
    out = {}
    for split, df in zip(tp.SPLITS, imdb):
        out.update({tp.review_id(split, l, i): t for l, i, t in zip(df["label"], df["id"], df["text"])})
    return out


def _body_runs(df: pd.DataFrame, review_texts: dict[str, str]) -> list[list[str]]:
    """Each example's body as the in-order selection of its body review's sentences it must be."""
    runs = []
    for body, rid in zip(tp.bodies_of(df), df["body_review_id"]):
        sents = tp.split_sentences(review_texts[rid])[:-1]  # the last sentence is never used
        run, rest = [], body
        for sent in sents:  # greedy in-order match; sentences may be skipped (verdict-like ones)
            if rest == sent or rest.startswith(sent + " "):
                run.append(sent)
                rest = rest[len(sent) + 1 :]
                if not rest:
                    break
        assert not rest and len(run) >= 2, f"body of {rid} is not >= 2 of its sentences in order (last excluded): {body[:120]!r}"
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------- pure helpers


def test_compose_positions():
    body = ["One two.", "Three four five.", "Six.", "Seven eight nine ten."]
    for position in tp.POSITIONS:
        text, s, e = tp.compose(body, "Verdict here.", position)
        assert text[s:e] == "Verdict here."
        assert tp.remove_span(text, s, e) == " ".join(body)
    assert tp.compose(body, "V.", "start")[1] == 0
    text, s, e = tp.compose(body, "V.", "end")
    assert e == len(text)
    text, s, e = tp.compose(body, "V.", "middle")
    assert text == "One two. Three four five. V. Six. Seven eight nine ten."


def test_config_rejects_unknown_keys_and_bad_bins():
    with pytest.raises(ValueError, match="train_szie"):
        tp.config({"train_szie": 10})
    with pytest.raises(ValueError, match="short_max_tokens"):
        tp.config({"short_max_tokens": 300})
    assert tp.config(None) == tp.DEFAULTS
    assert tp.config({"tokenizers": ["a", "b"], "seed": 2}) == {**tp.DEFAULTS, "seed": 2}  # the pipeline's spec


def test_assert_checks_names_every_failure():
    checks = {
        "labels_clean": {"passed": False, "measured": {"test": 0.81}},
        "bodies_point_their_own_way": {"passed": True, "measured": {}},
        "truncation_bites": {"passed": False, "measured": {"test/minilm": 0.97}},
    }
    with pytest.raises(ValueError) as err:
        tp.assert_checks(checks)
    assert "labels_clean" in str(err.value) and "0.81" in str(err.value)
    assert "truncation_bites" in str(err.value) and "0.97" in str(err.value)
    assert "bodies_point_their_own_way" not in str(err.value)
    tp.assert_checks({"x": {"passed": True}})
    tp.assert_checks({"x": {"passed": True}, "info": {"informational": True, "passed": False}})


@pytest.mark.parametrize(
    "sentence, reason",
    [
        ("This is one of the best films I have ever seen, a true masterpiece.", None),
        ("Avoid this movie at all costs, it is a total waste of time.", None),
        ("Rated R for strong violence and some sexuality, but a great film.", "advisory"),
        ("P.S. My favourite movie songs are great and wonderful ones.", "list_or_postscript"),
        ("Top 5 movies of the year for me, all brilliant and wonderful.", "list_or_postscript"),
        ("Not as good as the original, but the sequel is still great fun.", "other_work"),
        ("Much better than The Godfather and just as wonderful to watch.", "proper_name_comparison"),
        ("I loved this film for Laura Fraser alone, a wonderful watch.", "proper_name"),
        ("I'm sure you will love this wonderful movie, I did.", None),
        ("A wonderful movie with the best ending I have seen.", "part_person_or_guilty_pleasure"),
        ("A wonderful watch for lovers of bad movies, this one.", "part_person_or_guilty_pleasure"),
        ("Thanks for reading my review, and enjoy this great film.", "about_the_review"),
        ("A great movie about murder and death, beautifully done.", "violence_or_death"),
        ('The "best" movie ever made, what a wonderful joke.', "quotation"),
        ("Why would anyone enjoy watching this wonderful film?", "question"),
        ("Great.", "length"),
        ("Wonderful, wonderful, wonderful and truly lovely and great.", "no_target"),
    ],
)
def test_content_rules(sentence, reason):
    assert tp.content_reason(sentence, tp.config(None)) == reason


# ---------------------------------------------------------------------------- builds


def test_deterministic(small_probe, imdb, one_tokenizer):
    cfg = SMALL  # the module's build is the first of the two (a build costs about a minute in CI)
    a = small_probe
    b = tp.build(*imdb, cfg, one_tokenizer)
    for split in tp.SPLITS:
        assert a[split].equals(b[split])
        bytes_a, bytes_b = io.BytesIO(), io.BytesIO()
        a[split].to_parquet(bytes_a)
        b[split].to_parquet(bytes_b)
        assert bytes_a.getvalue() == bytes_b.getvalue()
    c = tp.build(*imdb, {**cfg, "seed": 4}, one_tokenizer)
    assert not c["test"]["text"].equals(a["test"]["text"])


def test_columns_and_sources(small_probe, one_tokenizer):
    expected = [
        "id", "text", "label", "body_label", "condition", "position", "length_bin", "verdict_start",
        "verdict_end", "verdict_review_id", "body_review_id", "verdict_film", "body_film", "same_film",
    ] + [f"n_tokens_{name}" for name in one_tokenizer]  # fmt: skip
    assert expected[: len(tp.COLUMNS)] == tp.COLUMNS
    for split, df in small_probe.items():
        assert list(df.columns) == expected
        assert df["id"].is_unique and df["id"].str.match(rf"tp-{split}-\d{{6}}$").all()
        assert df["verdict_review_id"].str.startswith(f"{split}-").all()
        assert df["body_review_id"].str.startswith(f"{split}-").all()
        assert df["body_review_id"].is_unique  # different bodies everywhere
        assert not set(df["body_review_id"]) & set(df["verdict_review_id"])
        assert (df["condition"].eq("agree") == df["label"].eq(df["body_label"])).all()
        # body polarity = its review's label
        assert (df["body_review_id"].str.split("-").str[1].map({"neg": 0, "pos": 1}) == df["body_label"]).all()
        assert (df["same_film"] == (df["verdict_film"] == df["body_film"])).all()
        assert df["verdict_film"].str.match(r"tt\d+$").all()
        assert df["same_film"].mean() > 0.5  # most bodies come from the verdict's film


def test_balance(small_probe):
    for split, df in small_probe.items():
        assert len(df) == 240
        assert df["label"].mean() == 0.5
        cells = df.groupby(["condition", "position", "length_bin", "label"]).size()
        assert len(cells) == 24 and cells.nunique() == 1, cells
        # every verdict once per condition x position, within one length bin
        per_verdict = df.groupby("verdict_review_id").agg(
            uses=("id", "size"),
            cells=("condition", lambda c: len(set(zip(c, df.loc[c.index, "position"])))),
            bins=("length_bin", "nunique"),
        )
        assert (per_verdict["uses"] == 6).all() and (per_verdict["cells"] == 6).all()
        assert (per_verdict["bins"] == 1).all()


def test_verdict_spans_and_positions(small_probe, review_texts, imdb):
    rating = {}
    for split, df in zip(tp.SPLITS, imdb):
        rating.update({tp.review_id(split, l, i): r for l, i, r in zip(df["label"], df["id"], df["rating"])})
    for df in small_probe.values():
        for row in df.itertuples():
            verdict = row.text[row.verdict_start : row.verdict_end]
            # the verdict is its source review's last sentence, from a 1-2 / 9-10 review of its label
            assert verdict == tp.review_sentences(review_texts[row.verdict_review_id])[-1]
            assert rating[row.verdict_review_id] in tp.RATINGS[row.label]
            assert 6 <= len(verdict.split()) <= 40
            assert tp.content_reason(verdict, tp.config(SMALL)) is None
            if row.position == "start":
                assert row.verdict_start == 0 and row.text[row.verdict_end] == " "
            elif row.position == "end":
                assert row.verdict_end == len(row.text) and row.text[row.verdict_start - 1] == " "
            else:
                assert row.text[row.verdict_start - 1] == " " and row.text[row.verdict_end] == " "
                assert 0 < row.verdict_start and row.verdict_end < len(row.text)


def test_bodies_are_runs_and_splits_share_no_sentence(small_probe, review_texts):
    keys = {}
    for split, df in small_probe.items():
        verdicts = {tp.key(v) for v in tp.verdicts_of(df)["verdict"]}
        runs = _body_runs(df, review_texts)
        body_sents = {tp.key(s) for run in runs for s in run}
        judging = [s for run in runs for s in run if JUDGEMENT.search(s)]
        assert not judging, f"{split}: body sentences with judgement vocabulary, e.g. {judging[:3]}"
        keys[split] = verdicts | body_sents
        assert not verdicts & body_sents, f"{split}: a verdict is also a body sentence"
    shared = keys["train"] & keys["test"]
    assert not shared, f"train and test share {len(shared)} sentences, e.g. {sorted(shared)[:3]}"


def test_length_bins(small_probe, one_tokenizer):
    _assert_length_bins(small_probe, one_tokenizer, tp.config(SMALL))


def _assert_length_bins(probe, tokenizers, cfg):
    for df in probe.values():
        for name, tok in tokenizers.items():
            n = pd.Series([len(x) for x in tok(df["text"].tolist())["input_ids"]], index=df.index)
            assert (n == df[f"n_tokens_{name}"]).all()
            short = df["length_bin"] == "short"
            assert (n[short] <= cfg["short_max_tokens"]).all()
            assert (n[~short] > cfg["long_min_tokens"]).all() and (n[~short] <= cfg["max_tokens"]).all()


def test_checks_pass_on_small_build(small_probe, imdb, one_tokenizer):
    checks = tp.run_checks(small_probe, imdb[0], one_tokenizer, SMALL)
    assert {"labels_clean", "bodies_point_their_own_way", "truncation_bites", "no_counter_verdicts", "same_film",
            "read_and_counted", "baselines"} <= set(checks)
    for check in checks.values():
        assert isinstance(check["passed"], bool) and "measured" in check
    # a 240-example build has 120 contrast bodies per split: too few for the body check's thresholds
    # (set for the full build); here the bodies must still lean their own way, far apart by condition
    bodies = checks.pop("bodies_point_their_own_way")
    for split in tp.SPLITS:
        by = bodies["splits"][split]["by_condition"]
        assert by["contrast"] < 0.4 < 0.7 < by["agree"], (split, by)
    tp.assert_checks(checks)
    # the committed audit was read for the default config, not this one: it must say so, not pass silently
    assert checks["read_and_counted"]["status"] == "not_applicable"
    # bodies hold no verdict-like sentence the other way (the generator removed them)
    for split in tp.SPLITS:
        assert checks["no_counter_verdicts"]["splits"][split]["v2_filter"] <= 0.02
    sheet = tp.datasheet(small_probe, checks, SMALL)
    assert "| test | contrast | end | long | 10 | 10 |" in sheet
    assert sheet.count("**") >= 2 * 10  # verdicts in bold in five examples per condition
    for section in ("## Motivation", "## Composition", "## Uses", "## Distribution and licence", "## Maintenance",
                    "## Versions and hashes", "## Known limitations", "## Baselines", "Audit not counted"):
        assert section in sheet, section
    for split, h in tp.file_hashes(small_probe).items():
        assert h["parquet_sha256"] in sheet


def test_file_hash_is_the_written_file(small_probe, tmp_path):
    import hashlib

    from poolbench.io import write_parquet

    hashes = tp.file_hashes(small_probe)
    for split, df in small_probe.items():
        path = write_parquet(tmp_path / f"{split}.parquet", df)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashes[split]["parquet_sha256"]


def test_baselines_table(small_probe, imdb):
    table = tp.baselines(small_probe, imdb[0])
    assert set(table["baseline"]) == set(tp.BASELINES)
    assert len(table) == len(tp.BASELINES) * 12 and (table["n"] == 20).all()
    assert table["accuracy"].between(0, 1).all()
    verdict_only = table[table["baseline"] == "imdb_bow_verdict_only"]["accuracy"].mean()
    assert verdict_only > 0.9  # the verdicts were selected to be read confidently by this model


def test_audit_detects_stale_and_counts(small_probe, tmp_path):
    from poolbench.tailprobe import audit

    path = tmp_path / "audit.csv"
    rows = audit.write_blank(small_probe, SMALL, path)
    # 50 of the 120 contrast texts; all 40 distinct verdicts (fewer than 100 in a small build)
    assert rows["kind"].value_counts().to_dict() == {"contrast": 50, "verdict": 40}
    cfg = {**SMALL, "audit": str(path)}
    assert audit.check_audit(small_probe, cfg)["status"] == "incomplete"
    text = path.read_text().splitlines()
    filled = [text[0], text[1]] + [line.replace(",,", ",1,", 1) if i % 2 else line.replace(",,", ",0,", 1)
                                   for i, line in enumerate(text[2:])]
    # reader agrees exactly where the probe label is what was written
    path.write_text("\n".join(filled) + "\n")
    meta, read = audit.read_audit(path)
    assert meta["seed"] == "0" and len(read) == len(rows)
    res = audit.check_audit(small_probe, cfg)
    assert res["status"] == "current" and set(res["by_kind"]) == {"verdict", "contrast"}
    agree = (read["reader_label"] == read["probe_label"]).groupby(read["kind"]).mean()
    assert res["measured"] == pytest.approx(agree.to_dict())
    # change one audited text: stale, the check fails
    changed = {s: df.copy() for s, df in small_probe.items()}
    first = changed["test"].index[changed["test"]["condition"] == "contrast"][0]
    changed["test"].loc[:, "text"] = changed["test"]["text"].where(changed["test"].index != first, "changed")
    res = audit.check_audit(changed, cfg)
    assert res["status"] == "stale" and not res["passed"]
    # another config: not applicable (informational), never counted
    res = audit.check_audit(small_probe, {**cfg, "seed": 5})
    assert res["status"] == "not_applicable" and res["informational"]


def test_committed_audit_is_complete():
    from poolbench.tailprobe import audit

    meta, rows = audit.read_audit(audit.AUDIT_FILE)
    assert meta["version"] == str(tp.VERSION)
    assert {k: int(meta[k]) for k in audit.META_KEYS} == {k: tp.DEFAULTS[k] for k in audit.META_KEYS}
    assert rows["kind"].value_counts().to_dict() == {"verdict": audit.N_VERDICTS, "contrast": audit.N_CONTRAST}
    assert rows["reader_label"].isin(["0", "1", "none"]).all()
    assert (rows["note"].str.len() > 0).all()


def test_both_tokenizers_bins_and_truncation(imdb, probe_tokenizers):
    cfg = {"seed": 1, "train_size": 96, "test_size": 96}
    probe = tp.build(*imdb, cfg, probe_tokenizers)
    _assert_length_bins(probe, probe_tokenizers, tp.config(cfg))
    trunc = tp.check_truncation(probe, probe_tokenizers, cfg)
    assert trunc["passed"], trunc["measured"]
    assert set(trunc["measured"]) == {f"{s}/{n}" for s in tp.SPLITS for n in probe_tokenizers}
