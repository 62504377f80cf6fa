"""Tests of the tail-sentiment probe generator (:mod:`poolbench.tailprobe`).

They need IMDB under ``$POOLBENCH_DATA_DIR`` and real fast tokenizers: without them the tests are
skipped locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from poolbench import tailprobe as tp
from poolbench.data import load_imdb

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
    """Each example's body as the run of its body review's sentences it must be (asserted here)."""
    runs = []
    for body, rid in zip(tp.bodies_of(df), df["body_review_id"]):
        sents = tp.review_sentences(review_texts[rid])[:-1]  # the last sentence is never used
        starts = [i for i in range(len(sents)) if body.startswith(sents[i])]
        run = next(
            (sents[i:j] for i in starts for j in range(i + 2, len(sents) + 1) if " ".join(sents[i:j]) == body),
            None,
        )
        assert run is not None, f"body of {rid} is not a run of >= 2 of its sentences (last excluded): {body[:120]!r}"
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------- pure helpers


def test_compose_positions():
    body = ["One two.", "Three four five.", "Six.", "Seven eight nine ten."]
    for position in tp.POSITIONS:
        text, s, e = tp.compose(body, "Verdict here.", position)
        assert text[s:e] == "Verdict here."
        assert tp._remove_span(text, s, e) == " ".join(body)
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


# ---------------------------------------------------------------------------- builds


def test_deterministic(imdb, one_tokenizer):
    cfg = {"seed": 3, "train_size": 48, "test_size": 48}
    a = tp.build(*imdb, cfg, one_tokenizer)
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
        "verdict_end", "verdict_review_id", "body_review_id",
    ] + [f"n_tokens_{name}" for name in one_tokenizer]  # fmt: skip
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


def test_balance(small_probe):
    for split, df in small_probe.items():
        assert len(df) == 240
        assert df["label"].mean() == 0.5
        cells = df.groupby(["condition", "position", "length_bin", "label"]).size()
        assert len(cells) == 24 and cells.nunique() == 1, cells
        # every verdict once per position, within one condition and length bin
        per_verdict = df.groupby("verdict_review_id").agg(
            positions=("position", lambda p: tuple(sorted(p))),
            conditions=("condition", "nunique"),
            bins=("length_bin", "nunique"),
        )
        assert (per_verdict["positions"] == tuple(sorted(tp.POSITIONS))).all()
        assert (per_verdict["conditions"] == 1).all() and (per_verdict["bins"] == 1).all()


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
        verdicts = {tp._key(v) for v in tp.verdicts_of(df)["verdict"]}
        body_sents = {tp._key(s) for run in _body_runs(df, review_texts) for s in run}
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
    assert set(checks) == {"labels_clean", "bodies_point_their_own_way", "truncation_bites"}
    for check in checks.values():
        assert isinstance(check["passed"], bool) and "measured" in check
    tp.assert_checks(checks)
    sheet = tp.datasheet(small_probe, checks, SMALL)
    assert "| test | contrast | end | long | 10 | 10 |" in sheet
    assert sheet.count("**") >= 2 * 10  # verdicts in bold in five examples per condition


def test_both_tokenizers_bins_and_truncation(imdb, probe_tokenizers):
    cfg = {"seed": 1, "train_size": 96, "test_size": 96}
    probe = tp.build(*imdb, cfg, probe_tokenizers)
    _assert_length_bins(probe, probe_tokenizers, tp.config(cfg))
    trunc = tp.check_truncation(probe, probe_tokenizers, cfg)
    assert trunc["passed"], trunc["measured"]
    assert set(trunc["measured"]) == {f"{s}/{n}" for s in tp.SPLITS for n in probe_tokenizers}
