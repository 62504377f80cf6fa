"""`poolbench score` as a tool (issue 21): results.json, the honest verdict, compare, the invariance
self-check, model cards and the command-line conventions. Tiny random models and tiny sets, offline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertForSequenceClassification, LlamaForSequenceClassification, PreTrainedTokenizerFast

from poolbench import hub
from poolbench.cli import main
from poolbench.hub import evaldata
from poolbench.models import sha256sum

from conftest import WORDS
from test_hub import MAX_LEN, config_of, make_run, natural_table, probe_table, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(tmp_path):
    """An export-data folder from a tiny pipeline whose results_dir also holds the reference summaries."""
    res, out = tmp_path / "res", tmp_path / "out"
    tables = {("tailprobe", "train"): probe_table("train", seed=3), ("tailprobe", "test"): probe_table("test"),
              ("naturaltail", "test"): natural_table()}
    for (name, split), df in tables.items():
        path = res / f"data/{name}/{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    for sheet in hub.DATASHEETS.values():
        (out / sheet).parent.mkdir(parents=True, exist_ok=True)
        (out / sheet).write_text("# datasheet\n")
    cells = [dict(condition=c, position=p, length_bin=b, n=84, accuracy=acc)
             for c in ("agree", "contrast") for p in ("start", "middle", "end") for b in ("short", "long")
             for acc in [0.9 if c == "agree" else (0.7 if p == "start" else 0.6)]]
    (out / "summary").mkdir(parents=True)
    pd.DataFrame([dict(baseline="tfidf_probe_train", **c) for c in cells]).to_csv(
        out / evaldata.REFERENCE_SOURCES["baselines"], index=False)
    study = [dict(dataset="imdb", model="minilm-l6", family="encoder", regime=r, truncation="head", max_len=128,
                  pooling=p, **{**c, "accuracy": c["accuracy"] - (0.1 if p == "cls" else 0)})
             for r in ("frozen", "topk") for p in ("cls", "mean") for c in cells]
    pd.DataFrame(study).to_csv(out / evaldata.REFERENCE_SOURCES["study_probe"], index=False)
    natural = [dict(dataset="imdb", model="minilm-l6", family="encoder", regime="topk", truncation="head",
                    max_len=128, pooling=p, set=s, variant="original", accuracy=0.8 if s == "head" else 0.55)
               for p in ("cls", "mean") for s in ("tail", "head")]
    pd.DataFrame(natural).to_csv(out / evaldata.REFERENCE_SOURCES["study_natural"], index=False)
    (out / evaldata.REFERENCE_SOURCES["natural_checks"]).write_text(json.dumps(
        {"bow_accuracy": {"tail/original": 0.325, "head/original": 0.375, "tail/removed": 0.0}}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"resources_dir": str(res), "results_dir": str(out)}))
    folder = tmp_path / "tailprobe-hf"
    assert main(["export-data", "--out", str(folder), "--config", str(config)]) == 0
    return folder, tables


def bert(tmp_path, name="bert", bias=None):
    torch.manual_seed(0)
    model = BertForSequenceClassification(config_of("bert", num_labels=2, initializer_range=0.2)).eval()
    if bias is not None:
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor(bias))
    return save_model(model, tmp_path / name, "bert")


def score(model, data, out, *extra) -> int:
    return main(["score", "--model", str(model), "--data", str(data), "--out", str(out), "--max-len", str(MAX_LEN),
                 "--batch-size", "7", *extra])


def words(text: str) -> int:
    return len(text.replace(".", " .").split())


# ---- results.json and VERDICT.md ----------------------------------------------------------------------


def test_results_json_records_provenance_and_metrics(data, tmp_path):
    folder, tables = data
    out = tmp_path / "scores"
    assert score(bert(tmp_path), folder, out) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "poolbench-score" and doc["schema_version"] == 1
    assert doc["model"]["config_sha256"] == sha256sum(tmp_path / "bert" / "config.json")
    assert doc["model"]["labels"] == {"0": "LABEL_0", "1": "LABEL_1"} and doc["model"]["positive_labels"] == [1]
    assert doc["settings"]["max_len"] == MAX_LEN and doc["settings"]["truncation"] == "head"
    assert doc["settings"]["device"] == "cpu" and doc["packages"]["torch"] == torch.__version__
    assert {(s["name"], s["version"]) for s in doc["eval_sets"]} == {("tailprobe", "v3"), ("naturaltail", "v1")}
    for s in doc["eval_sets"]:
        assert s["sha256"] == sha256sum(folder / s["path"]) and s["rows"] == len(tables[s["name"], "test"])
    probe = next(r for r in doc["results"] if r["set"] == "tailprobe")
    acc = probe["metrics"]["accuracy"]
    preds = pd.read_parquet(out / "predictions-tailprobe.parquet")
    assert acc["value"] == pytest.approx((preds["pred"] == preds["label"]).mean()) and acc["n"] == 48
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and probe["units"] == 8


def test_verdict_counts_the_verdicts_the_window_keeps(data, tmp_path):
    """With 32 tokens and head truncation, an end verdict is cut exactly where the text before it fills the window."""
    folder, tables = data
    out = tmp_path / "scores"
    assert score(bert(tmp_path), folder, out) == 0
    test = tables["tailprobe", "test"]
    budget = MAX_LEN - 2  # [CLS] ... [SEP]
    expected = np.array([words(t[:e]) <= budget for t, e in zip(test["text"], test["verdict_end"])])
    preds = pd.read_parquet(out / "predictions-tailprobe.parquet")
    np.testing.assert_array_equal(preds["verdict_kept"].to_numpy(dtype=bool), expected)
    assert 0 < expected.sum() < len(expected)  # some cut (long texts, end), some kept
    doc = json.loads((out / "results.json").read_text())
    probe = next(r for r in doc["results"] if r["set"] == "tailprobe")
    assert probe["verdict_kept"]["kept"] == expected.sum()
    whole = pd.Series(expected).groupby(test["verdict_review_id"].to_numpy()).all()
    assert probe["visible"]["units"] == whole.sum()
    verdict = (out / "VERDICT.md").read_text()
    assert f"Verdicts inside the model's window: **{expected.sum()} of 48** texts" in verdict
    assert "On visible verdicts only" in verdict
    assert probe["visible"]["metrics"]["end_minus_start_contrast_all"]["units"] == whole.sum()


def test_verdict_places_the_model_among_references_and_explains_conditions(data, tmp_path):
    folder, _ = data
    out = tmp_path / "scores"
    assert score(bert(tmp_path), folder, out) == 0
    verdict = (out / "VERDICT.md").read_text()
    assert "| chance (coin flip) | 50.0 |" in verdict
    # tfidf: agree 90, contrast start 70, middle and end 60 -> accuracy (6·90 + 2·70 + 4·60)/12, end − start −10
    assert "| tfidf_probe_train | 76.7 | 70.0 | 60.0 | -10.0 |" in verdict
    assert "study: minilm-l6 · topk · head-128 · cls (HF pooling) | 66.7 | 60.0 | 50.0 | -10.0 |" in verdict
    assert "study: minilm-l6 · topk · head-128 · mean (best pooling on the probe) | 76.7 |" in verdict
    assert "frozen" not in verdict.split("Reference rows")[1].split("##")[0]  # fine-tuned settings only
    assert "| study: minilm-l6 · topk · head-128 · mean (best pooling on the probe) | 55.0 | 80.0 |" in verdict  # natural
    assert "| imdb_bow | 32.5 | 37.5 |" in verdict
    for term in ("agree / contrast", "original / removed / moved", "visible"):
        assert f"**{term}" in verdict


def test_constant_predictions_are_warned_about(data, tmp_path, capsys):
    folder, _ = data
    out = tmp_path / "scores"
    assert score(bert(tmp_path, bias=[5.0, -5.0]), folder, out) == 0
    doc = json.loads((out / "results.json").read_text())
    assert any("every text is predicted negative; the predictions are constant" in w for w in doc["warnings"])
    assert any("cannot be told from chance" in w for w in doc["warnings"])
    assert "⚠" in (out / "VERDICT.md").read_text()
    assert "warning: tailprobe: every text is predicted negative" in capsys.readouterr().err


def test_a_changed_set_file_is_refused(data, tmp_path, capsys):
    folder, _ = data
    path = folder / "data/tailprobe/test.parquet"
    pd.read_parquet(path).iloc[::-1].to_parquet(path, index=False)
    model = bert(tmp_path)
    capsys.readouterr()
    code = score(model, folder, tmp_path / "scores")
    err = capsys.readouterr().err
    assert code == 2 and "does not match the sha256 in" in err and err.count("\n") == 1


# ---- compare ------------------------------------------------------------------------------------------


def test_compare_two_models_in_one_table_with_paired_tests(data, tmp_path):
    folder, _ = data
    a, b = tmp_path / "a", tmp_path / "b"
    assert score(bert(tmp_path, "m1"), folder, a) == 0
    assert score(bert(tmp_path, "m2", bias=[5.0, -5.0]), folder, b) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    assert set(table["model"]) == {"m1 (a)", "m2 (b)"} and set(table["set"]) == {"tailprobe", "naturaltail"}
    tests = pd.read_csv(out / "compare_tests.csv")
    assert list(tests["set"]) == ["tailprobe", "naturaltail"]
    for _, t in tests.iterrows():
        acc = table[(table["set"] == t["set"]) & (table["metric"] == "accuracy")].set_index("model")["value"]
        assert t["diff"] == pytest.approx(acc["m2 (b)"] - acc["m1 (a)"])
        assert t["ci_low"] <= t["diff"] <= t["ci_high"]
    assert "Paired tests (same items)" in (out / "COMPARE.md").read_text()
    assert (out / "compare.png").stat().st_size > 1000


# ---- the invariance self-check -------------------------------------------------------------------------


def decoder_tokenizer(eos_at_end: bool):
    """Word-level tokenizer with eos [SEP]; ``eos_at_end`` appends it to every text (as some chat tokenizers do)."""
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if eos_at_end:
        tok.post_processor = processors.TemplateProcessing(single="$A [SEP]", special_tokens=[("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]")


def llama(tmp_path, eos_at_end: bool):
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config_of("llama", num_labels=2, eos_token_id=3, initializer_range=0.3))
    folder = tmp_path / f"llama-{eos_at_end}"
    model.eval().save_pretrained(folder)
    decoder_tokenizer(eos_at_end).save_pretrained(folder)
    return folder


def invariance(out) -> pd.DataFrame:
    return pd.read_csv(out / "invariance.csv").set_index(["set", "condition"])


def test_invariance_shows_flips_for_a_padding_sensitive_decoder(data, tmp_path):
    """Every text ends with eos, so under pad = eos the head takes the real eos for padding."""
    folder, _ = data
    out = tmp_path / "scores"
    assert score(llama(tmp_path, eos_at_end=True), folder, out, "--check-invariance", "40") == 0
    inv = invariance(out)
    assert inv.loc[("tailprobe", "pad = eos"), "flips"] > 0 and inv.loc[("tailprobe", "pad = eos"), "max_abs_dp"] > 0.01
    assert inv.loc[("tailprobe", "left padding"), "flips"] == 0  # the head finds the last real token either way
    doc = json.loads((out / "results.json").read_text())
    assert any("flip under pad = eos" in w for w in doc["warnings"])
    assert "## Invariance self-check" in (out / "VERDICT.md").read_text()


def test_invariance_shows_flips_for_cls_pooling_under_left_padding(data, tmp_path):
    """A BERT classifier whose tokenizer pads on the left: its head reads position 0, a pad token."""
    folder, _ = data
    model = bert(tmp_path)
    PreTrainedTokenizerFast.from_pretrained(model, padding_side="left").save_pretrained(model)
    out = tmp_path / "scores"
    assert score(model, folder, out, "--check-invariance") == 0
    inv = invariance(out)
    assert inv.loc[("tailprobe", "left padding"), "flips"] > 0
    assert inv.loc[("tailprobe", "right padding"), "flips"] == 0


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_invariance_is_clean_for_correct_models(arch, data, tmp_path):
    """A study export (BERT pooler) and a decoder whose texts do not end with eos: no flips, |ΔP| ~ 1e-6."""
    folder, tables = data
    if arch == "bert":
        run_folder, _ = make_run(tmp_path, "bert", "topk", "pooler", tables["tailprobe", "test"], bias=[0.1, 0.1])
        model = tmp_path / "exported"
        assert main(["export", "--run", str(run_folder), "--out", str(model)]) == 0
    else:
        model = llama(tmp_path, eos_at_end=False)
    out = tmp_path / "scores"
    assert score(model, folder, out, "--check-invariance") == 0
    inv = invariance(out)
    ran = inv[inv["n"] > 0]
    assert set(ran.loc["tailprobe"].index) == ({"right padding", "left padding", "pad = eos"} if arch == "llama"
                                               else {"right padding"})
    assert ran["flips"].sum() == 0 and ran["max_abs_dp"].max() < 1e-4
    if arch == "bert":
        assert "not applicable" in inv.loc[("tailprobe", "left padding"), "note"]
        assert "not applicable" in (out / "VERDICT.md").read_text()


# ---- model cards ------------------------------------------------------------------------------------


def test_export_writes_a_model_card_with_metadata_and_results(tmp_path):
    run_folder, _ = make_run(tmp_path, "bert", "frozen", "pooler", probe_table(per_bin=1))
    out = tmp_path / "exported"
    assert main(["export", "--run", str(run_folder), "--out", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
    assert card.data.datasets == ["stanfordnlp/imdb"] and card.data.license == "other"  # a random backbone
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"accuracy", "f1"} and results["accuracy"].dataset_split == "test"
    assert '"pooling": "pooler"' in card.text


def test_dataset_card_is_a_huggingface_hub_card(data):
    from huggingface_hub import DatasetCard

    folder, _ = data
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "other" and card.data.task_categories == ["text-classification"]
    assert [c["config_name"] for c in card.data.configs] == ["tailprobe", "naturaltail"]
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert {(s["name"], s["split"]) for s in manifest["sets"]} == {("tailprobe", "train"), ("tailprobe", "test"),
                                                                   ("naturaltail", "test")}
    assert (folder / "references.csv").is_file()


# ---- command-line conventions ---------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("poolbench 0.")


def test_a_non_empty_out_needs_overwrite(data, tmp_path, capsys):
    folder, _ = data
    model, out = bert(tmp_path), tmp_path / "scores"
    assert score(model, folder, out) == 0
    stale = out / "stale.txt"
    stale.write_text("from another model")
    capsys.readouterr()
    assert score(model, folder, out) == 2
    assert "already holds an earlier poolbench score output; give a new folder, or --overwrite" in capsys.readouterr().err
    assert score(model, folder, out, "--overwrite") == 0
    assert not stale.exists() and (out / "results.json").is_file()  # replaced whole, nothing stale mixed in
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert score(model, folder, other, "--overwrite") == 2  # never replaces a folder of something else
    assert (other / "notes.txt").read_text() == "keep"


def test_ctrl_c_exits_130_and_leaves_nothing(data, tmp_path, capsys, monkeypatch):
    folder, _ = data
    model = bert(tmp_path)

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    # Interrupted while writing: predictions and tables are already in the temporary sibling.
    monkeypatch.setattr(hub.verdict, "verdict", interrupted)
    out = tmp_path / "scores"
    assert score(model, folder, out) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".scores.partial-*"))


def test_predict_takes_out_and_the_deprecated_output(tmp_path):
    from poolbench.cli import _parser

    for flag in ("--out", "--output"):
        args = _parser().parse_args(["predict", "--run", "r", "--input", "i", flag, "o.parquet"])
        assert str(args.output) == "o.parquet"
