"""`poolbench export-data`, `score`, `export` and the `evaluate` metric in metrics/tailprobe (issue 11).

Everything is offline and tiny: probe-like tables with the real columns, a word-level tokenizer and
random BERT / Llama / GPT-2 models (transformers configs, no downloads). Runs are built with the
pipeline's own code (``poolbench.run.build``, ``save_weights``) and random trained weights, with a
float32 feature cache so that the run's path and the exported model compute the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification,
                          BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaForSequenceClassification, LlamaModel)

from poolbench import hub, naturaltail
from poolbench.cli import main
from poolbench.config import Run, run_spec
from poolbench.features import extract
from poolbench.metrics import RunMetrics
from poolbench.models import load_backbone, load_tokenizer
from poolbench.paths import DATASET, MODEL, WEIGHTS, run_dir
from poolbench.run import build, save_weights
from poolbench.train import predict
from poolbench.tailprobe import COLUMNS

from conftest import REPO, WORDS
from conftest import word_tokenizer as tokenizer

H, MAX_LEN = 32, 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access, as in the brief: the env variables, and the constants the libraries read at import."""
    import datasets.config
    import evaluate.config
    import huggingface_hub.constants

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---- tiny data ----------------------------------------------------------------------------------


def sentence(rng, lo=3, hi=8) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi)))) + "."


def probe_table(split: str = "test", per_bin: int = 4, seed: int = 0) -> pd.DataFrame:
    """Probe-like rows with the real columns: ``per_bin`` verdicts per length bin, each at the three
    positions of both conditions (six rows per verdict, as the probe has)."""
    rng = np.random.default_rng(seed)
    rows = []
    for length in ("short", "long"):
        for v in range(per_bin):
            label = v % 2
            verdict = sentence(rng)
            vid = f"{split}-{'pos' if label else 'neg'}-{length}{v}"
            for condition in ("contrast", "agree"):
                for position in ("start", "middle", "end"):
                    body = [sentence(rng) for _ in range(2 if length == "short" else 8)]
                    at = {"start": 0, "middle": len(body) // 2, "end": len(body)}[position]
                    before = " ".join(body[:at])
                    text = " ".join([*body[:at], verdict, *body[at:]])
                    start = len(before) + (1 if before else 0)
                    rows.append({"text": text, "label": label,
                                 "body_label": label if condition == "agree" else 1 - label,
                                 "condition": condition, "position": position, "length_bin": length,
                                 "verdict_start": start, "verdict_end": start + len(verdict),
                                 "verdict_review_id": vid, "body_review_id": f"{split}-b{len(rows)}",
                                 "verdict_film": f"tt{v}", "body_film": f"tt{len(rows)}", "same_film": False,
                                 "n_tokens_tiny": len(text.split()) + 2})
    df = pd.DataFrame(rows)
    df.insert(0, "id", [f"tp-{split}-{i:06d}" for i in range(len(df))])
    return df[COLUMNS + ["n_tokens_tiny"]]


def natural_table(per_set: int = 4, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for set_ in ("tail", "head"):
        for r in range(per_set):
            label, verdict = r % 2, sentence(rng)
            body = " ".join(sentence(rng) for _ in range(4))
            original = f"{body} {verdict}" if set_ == "tail" else f"{verdict} {body}"
            moved = f"{verdict} {body}" if set_ == "tail" else f"{body} {verdict}"
            for variant, text in (("original", original), ("removed", body), ("moved", moved)):
                start = text.find(verdict) if variant != "removed" else -1
                rows.append({"id": f"nt-{set_}-{variant}-{r}", "text": text, "label": label, "set": set_,
                             "variant": variant, "review_id": f"test-{r}-{set_}", "imdb_id": r,
                             "rating": 9 if label else 2,
                             "url": f"http://www.imdb.com/title/tt{r}/usercomments", "verdict_start": start,
                             "verdict_end": start + len(verdict) if start >= 0 else -1, "verdict": verdict,
                             "n_sentences": 5, "n_words": len(text.split()), "verdict_words": len(verdict.split()),
                             "vader_verdict": 0.6, "afinn_verdict": 3.0, "p_label_verdict": 0.8,
                             "p_label_body": 0.3, "p_label_review": 0.4, "vader_body": -0.2})
    return pd.DataFrame(rows)[naturaltail.COLUMNS]


@pytest.fixture
def pipeline(tmp_path):
    """A pipeline config whose resources_dir / results_dir hold tiny sets and datasheets."""
    res, out = tmp_path / "res", tmp_path / "out"
    tables = {("tailprobe", "train"): probe_table("train", seed=3), ("tailprobe", "test"): probe_table("test"),
              ("naturaltail", "test"): natural_table()}
    for (name, split), df in tables.items():
        path = res / DATASET.format(dataset=name, split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    (out / "data").mkdir(parents=True)
    for name, sheet in hub.DATASHEETS.items():
        (out / sheet).write_text(f"# {name}: datasheet\n\nMeasured on tiny data.\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"resources_dir": str(res), "results_dir": str(out)}))
    return config, tables


@pytest.fixture
def exported(pipeline, tmp_path):
    config, tables = pipeline
    folder = tmp_path / "tailprobe-hf"
    assert main(["export-data", "--out", str(folder), "--config", str(config)]) == 0
    return folder, tables


# ---- tiny models --------------------------------------------------------------------------------




def config_of(arch: str, **kw):
    common = dict(vocab_size=70, pad_token_id=0, **kw)
    if arch == "bert":
        return BertConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=64, **common)
    if arch == "llama":
        return LlamaConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=64, max_position_embeddings=64, **common)
    return GPT2Config(n_embd=H, n_layer=2, n_head=4, n_positions=64, bos_token_id=3, eos_token_id=3, **common)


def save_model(model, folder, arch: str):
    torch.manual_seed(0)
    model.save_pretrained(folder)
    tokenizer(arch == "bert").save_pretrained(folder)
    return folder


# ---- 1. export-data -----------------------------------------------------------------------------


def test_export_data_loads_offline_with_datasets(exported, offline, tmp_path):
    import datasets

    folder, tables = exported
    probe = datasets.load_dataset(str(folder), "tailprobe", cache_dir=str(tmp_path / "cache"))
    assert set(probe) == {"train", "test"}
    for split in ("train", "test"):
        assert probe[split].num_rows == len(tables["tailprobe", split])
        assert probe[split].column_names == list(tables["tailprobe", split].columns)
    assert probe["test"]["verdict_review_id"] == tables["tailprobe", "test"]["verdict_review_id"].tolist()
    natural = datasets.load_dataset(str(folder), "naturaltail", cache_dir=str(tmp_path / "cache"))
    assert set(natural) == {"test"} and natural["test"].column_names == naturaltail.COLUMNS
    assert natural["test"].num_rows == len(tables["naturaltail", "test"])

    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "other"
    assert [c["config_name"] for c in header["configs"]] == ["tailprobe", "naturaltail"]
    splits = header["dataset_info"][0]["splits"]
    assert [(s["name"], s["num_examples"]) for s in splits] == [("train", 48), ("test", 48)]
    assert probe["test"].info.splits["test"].num_examples == 48  # the card's dataset_info was read
    assert "# tailprobe: datasheet" in card and "# naturaltail: datasheet" in card


def test_export_data_without_the_pipelines_files_says_run_snakemake(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"resources_dir": str(tmp_path / "nothing"), "results_dir": str(tmp_path)}))
    assert main(["export-data", "--out", str(tmp_path / "x"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "tailprobe/train.parquet does not exist; run snakemake first" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


# ---- 2. the evaluate metric ---------------------------------------------------------------------


def known_predictions(table: pd.DataFrame) -> np.ndarray:
    """P(positive) whose correctness is fixed per (verdict, condition, position):

    contrast, long: start right for verdicts 0-2 of 4, end right for verdict 0 only -> gap -0.5;
    contrast, short: start right for verdicts 0-1, end right for verdicts 2-3 -> gap 0;
    middle and every agree row right.
    """
    right = []
    for row in table.itertuples():
        v = int(row.verdict_review_id[-1])
        if row.condition == "agree" or row.position == "middle":
            ok = True
        elif row.length_bin == "long":
            ok = v <= 2 if row.position == "start" else v == 0
        else:
            ok = v <= 1 if row.position == "start" else v >= 2
        right.append(ok)
    right = np.array(right)
    pred = np.where(right, table["label"], 1 - table["label"])
    return np.where(pred == 1, 0.8, 0.3)  # probabilities, not labels


def test_the_metric_loads_offline_and_gives_known_answers(offline):
    import evaluate

    table = probe_table()
    metric = evaluate.load(str(REPO / "metrics" / "tailprobe"), keep_in_memory=True)
    out = metric.compute(predictions=known_predictions(table), references=table["label"],
                         body_label=table["body_label"], condition=table["condition"], position=table["position"],
                         length_bin=table["length_bin"], verdict_review_id=table["verdict_review_id"])
    cells = {(c["condition"], c["position"], c["length_bin"]): c for c in out["cells"]}
    assert len(cells) == 12 and all(c["n"] == 4 for c in cells.values())
    assert cells["contrast", "start", "long"]["accuracy"] == 0.75
    assert cells["contrast", "end", "long"]["accuracy"] == 0.25
    assert cells["contrast", "start", "short"]["accuracy"] == cells["contrast", "end", "short"]["accuracy"] == 0.5
    assert all(c["accuracy"] == 1.0 for k, c in cells.items() if k[0] == "agree" or k[1] == "middle")
    assert cells["contrast", "end", "long"]["follows_body"] == 0.75
    assert out["follows_body"] == pytest.approx(1 - 16 / 24)  # contrast: 4+4 wrong of 8 at each end, none mid
    assert out["accuracy"] == pytest.approx(1 - 8 / 48)
    gaps = {g["length_bin"]: g for g in [out["gap"], *out["gap_by_length"]]}
    assert gaps["long"]["diff"] == -0.5 and gaps["short"]["diff"] == 0.0 and gaps["all"]["diff"] == -0.25
    for g in gaps.values():
        assert g["ci_low"] <= g["diff"] <= g["ci_high"] and g["a"] == "end" and g["b"] == "start"
    assert gaps["long"]["units"] == 4 and gaps["all"]["units"] == 8


# ---- 3. score -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_score_any_classifier(arch, exported, tmp_path):
    folder, tables = exported
    torch.manual_seed(0)
    cls = BertForSequenceClassification if arch == "bert" else LlamaForSequenceClassification
    model_dir = save_model(cls(config_of(arch, num_labels=2)).eval(), tmp_path / arch, arch)
    out = tmp_path / "scores"
    assert main(["score", "--model", str(model_dir), "--data", str(folder), "--out", str(out), "--max-len",
                 str(MAX_LEN), "--batch-size", "5"]) == 0
    cells = pd.read_csv(out / "tailprobe_cells.csv")
    assert len(cells) == 12 and cells["n"].sum() == len(tables["tailprobe", "test"])
    assert len(pd.read_csv(out / "naturaltail_cells.csv")) == 6
    assert (out / "tailprobe_by_position.png").stat().st_size > 1000
    verdict = (out / "VERDICT.md").read_text()
    assert "verdict at the end − at the start" in verdict and "Natural tail set" in verdict
    # Batched with dynamic padding = one text at a time, unpadded (decoders read the last real token).
    preds = pd.read_parquet(out / "predictions-tailprobe.parquet")
    clf = hub.HFClassifier(model_dir, max_len=MAX_LEN)
    texts = tables["tailprobe", "test"]["text"]
    one_by_one = [clf.p_positive([t], batch_size=1)[0] for t in texts[:12]]
    np.testing.assert_allclose(preds["p_positive"][:12], one_by_one, atol=1e-5)


@pytest.mark.parametrize("case, expected", [
    ("not_a_model", "is not a Hugging Face model folder (no config.json)"),
    ("base_model", "holds a BertModel, not a *ForSequenceClassification model"),
    ("three_labels", "has 3 labels (0=LABEL_0, 1=LABEL_1, 2=LABEL_2); say which are positive with --positive-label"),
    ("no_max_len", "sets no model_max_length, so it cannot truncate; give --max-len"),
    ("bad_positive", "--positive-label takes label ids such as 1 or 3,4"),
    ("pickled", "holds no *.safetensors weights (poolbench loads no pickled .bin files)"),
])
def test_score_bad_input_gets_one_sentence(case, expected, exported, tmp_path, capsys):
    folder, _ = exported
    model_dir = tmp_path / "m"
    args = ["--max-len", str(MAX_LEN)]
    if case == "not_a_model":
        model_dir.mkdir()
    elif case == "base_model":
        save_model(BertModel(config_of("bert")), model_dir, "bert")
    elif case == "three_labels":
        save_model(BertForSequenceClassification(config_of("bert", num_labels=3)), model_dir, "bert")
    elif case == "pickled":
        save_model(BertForSequenceClassification(config_of("bert", num_labels=2)), model_dir, "bert")
        for f in model_dir.glob("*.safetensors"):  # as if saved with safe_serialization=False
            f.rename(f.with_suffix(".bin"))
    else:
        save_model(BertForSequenceClassification(config_of("bert", num_labels=2)), model_dir, "bert")
        args = [] if case == "no_max_len" else ["--positive-label", "pos"]
    out = tmp_path / "scores"
    capsys.readouterr()  # the setup's progress bars
    code = main(["score", "--model", str(model_dir), "--data", str(folder), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()


# ---- 4. export ----------------------------------------------------------------------------------

FAMILY = {"bert": "encoder", "llama": "decoder", "gpt2": "decoder"}
BASES = {"bert": BertModel, "llama": LlamaModel, "gpt2": GPT2Model}


def make_run(root, arch: str, regime: str, pooling: str, texts: pd.DataFrame, bias=None) -> tuple:
    """A run folder + its weights, built by the pipeline's code with random trained weights
    (every saved tensor perturbed, so that a wrong mapping shows)."""
    name = f"tiny-{arch}"
    resources, results = root / "resources", root / "results"
    model_dir = resources / MODEL.format(model=name)
    torch.manual_seed(0)
    save_model(BASES[arch](config_of(arch, initializer_range=0.2)), model_dir, arch)  # states that vary by text
    regimes = {"frozen": {"epochs": 1}, "topk": {"epochs": 1, "trainable_layers": 1},
               "finetune": {"epochs": 1, "trainable_layers": 1}}
    config = {"models": {name: {"family": FAMILY[arch], "source": {"type": "random", "arch": arch}}},
              "regimes": regimes, "cache_layers": 2, "datasets": {"imdb": {"train_size": 8, "test_size": 8, "seed": 0}},
              "study": [{"datasets": ["imdb"], "models": [name], "regimes": [regime], "truncations": ["head"],
                         "max_len": [MAX_LEN], "seeds": [0]}]}
    run = Run("imdb", name, regime, "head", MAX_LEN, pooling, 0)
    spec = run_spec(config, run)
    if "cache" in spec:  # regimes that read cached states
        spec["cache"]["dtype"] = "float32"  # the exported model computes in float32; so does this run
    frame = texts[["id", "text", "label"]]
    key, features = ("imdb", "test"), {}
    if regime != "finetune":
        features[key] = root / "cache"
        extract(frame, load_backbone(model_dir), load_tokenizer(model_dir), features[key], truncation="head",
                max_len=MAX_LEN, layers=spec["cache"]["layers"], dtype="float32")
    model, data = build(spec, model_dir, {key: frame}, features)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not pname.startswith("backbone.") or p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
        w = model.head.linear.weight
        w.copy_(3 * torch.randn(w.shape, generator=gen) / w.shape[1] ** 0.5)
        if bias is not None:
            model.head.linear.bias.copy_(torch.tensor(bias))
        else:  # centre the logits on these texts, so that P(positive) spreads around 0.5
            p = np.clip(predict(model, data[key]), 1e-9, 1 - 1e-9)
            median = float(np.median(np.log(p) - np.log1p(-p)))
            model.head.linear.bias.add_(torch.tensor([median / 2, -median / 2]))
    save_weights(model, resources / WEIGHTS.format(**run.wildcards()), spec)
    folder = run_dir(results, **run.wildcards())
    RunMetrics(**run.wildcards(), family=FAMILY[arch], n=0, accuracy=0.0, macro_f1=0.0, train={}, trainable_params=0,
               wall_s=0.0, cpu_s=0.0, torch_threads=1, device="cpu", spec=spec).write(folder / "metrics.json")
    return folder, model_dir


def poolbench_predict(folder, texts: pd.DataFrame, tmp_path) -> np.ndarray:
    inp, out = tmp_path / "texts.parquet", tmp_path / "scores.parquet"
    texts[["id", "text"]].to_parquet(inp, index=False)
    assert main(["predict", "--run", str(folder), "--input", str(inp), "--output", str(out)]) == 0
    return pd.read_parquet(out)["p_positive"].to_numpy()


def plain_hf(model_dir, texts) -> np.ndarray:
    """How a Hugging Face user scores with the exported folder: its tokenizer's own truncation and padding."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tok(list(texts), truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits, -1)[:, 1].numpy()


# (arch, regime, pooling, head bias): GPT-2 carries a real bias in ln_f; Llama exports with equal biases.
EXPORTS = [("bert", "frozen", "pooler", None), ("bert", "topk", "pooler", None), ("bert", "finetune", "pooler", None),
           ("gpt2", "frozen", "last", [0.4, -0.3]), ("llama", "topk", "last", [0.25, 0.25])]


@pytest.mark.parametrize("arch, regime, pooling, bias", EXPORTS, ids=[f"{a}-{r}" for a, r, *_ in EXPORTS])
def test_exported_model_gives_the_runs_probabilities(arch, regime, pooling, bias, tmp_path):
    texts = probe_table(per_bin=2)
    folder, _ = make_run(tmp_path, arch, regime, pooling, texts, bias)
    out = tmp_path / "exported"
    assert main(["export", "--run", str(folder), "--out", str(out)]) == 0
    ours = poolbench_predict(folder, texts, tmp_path)
    print(f"P(positive): {ours.min():.3f} to {ours.max():.3f}, SD {ours.std():.3f}")
    assert ours.std() > 0.05  # spread out: a wrong mapping cannot hide in a constant
    theirs = hub.HFClassifier(out).p_positive(texts["text"])
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    np.testing.assert_allclose(plain_hf(out, texts["text"]), ours, atol=1e-5)


@pytest.mark.parametrize("arch, pooling", [("bert", "pooler"), ("llama", "last")])
def test_score_on_the_export_gives_the_cells_of_poolbench_predictions(arch, pooling, exported, tmp_path):
    folder_hf, tables = exported
    test = tables["tailprobe", "test"]
    run_folder, _ = make_run(tmp_path, arch, "topk", pooling, test, bias=[0.1, 0.1])
    model = tmp_path / "exported"
    assert main(["export", "--run", str(run_folder), "--out", str(model)]) == 0
    out = tmp_path / "scores"
    assert main(["score", "--model", str(model), "--data", str(folder_hf), "--out", str(out),
                 "--sets", "tailprobe"]) == 0
    ours = test.assign(p_positive=poolbench_predict(run_folder, test, tmp_path))
    want = hub.probe_report(ours, model.name, "head", MAX_LEN)["cells"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "tailprobe_cells.csv"), want, check_dtype=False)


@pytest.mark.parametrize("arch, pooling, bias, expected", [
    ("bert", "mean", None, "a 'mean' run has no *ForSequenceClassification equivalent; only 'pooler' (BERT) and "
                           "'last' (Llama, GPT-2) runs export"),
    ("llama", "last", [0.5, -0.5], "cannot hold: its score layer and final norm have no bias"),
])
def test_export_refuses_what_hf_cannot_compute(arch, pooling, bias, expected, tmp_path, capsys):
    folder, _ = make_run(tmp_path, arch, "frozen", pooling, probe_table(per_bin=1), bias)
    out = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", "--run", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()
