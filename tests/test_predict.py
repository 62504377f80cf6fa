"""`poolbench predict`: a trained run scores new texts exactly as the pipeline scored its test set."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from poolbench.cli import main
from poolbench.paths import WEIGHTS, run_dir

RUN = dict(dataset="imdb", model="random-bert", regime="frozen", truncation="head", max_len=64, seed=0)


def folder(smoke, pooling="mean", **kw):
    workdir, cfg = smoke
    return run_dir(workdir / cfg["results_dir"], **{**RUN, **kw, "pooling": pooling})


def resources(smoke):
    workdir, cfg = smoke
    return workdir / cfg.get("resources_dir", "resources")


def test_predict_reproduces_the_runs_test_predictions(smoke, tmp_path):
    workdir, _ = smoke
    test = pd.read_parquet(resources(smoke) / "data" / "imdb" / "test.parquet")
    texts = tmp_path / "texts.parquet"
    test[["id", "text"]].to_parquet(texts)
    out = tmp_path / "scores.parquet"
    for pooling in ("mean", "attention", "pooler"):
        assert main(["predict", "--run", str(folder(smoke, pooling)), "--input", str(texts), "--output", str(out),
                     "--resources", str(resources(smoke))]) == 0
        got = pd.read_parquet(out)
        want = pd.read_parquet(folder(smoke, pooling) / "predictions.parquet").set_index("id").loc[got["id"]]
        assert list(got.columns) == ["id", "p_positive", "pred"]
        assert got["p_positive"].to_numpy() == pytest.approx(want["p_positive"].to_numpy(), abs=1e-5)


def test_the_command_line_entry_point(smoke, tmp_path):
    texts = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["A wonderful film.", "Dull and far too long."]}).to_parquet(texts)
    out = tmp_path / "o.parquet"
    proc = subprocess.run([sys.executable, "-m", "poolbench.cli", "predict", "--run", str(folder(smoke)), "--input",
                           str(texts), "--output", str(out), "--resources", str(resources(smoke))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_parquet(out)) == 2


@pytest.mark.parametrize("case, expected", [
    ("no_text_column", "has no 'text' column"),
    ("empty", "holds no rows"),
    ("not_parquet", "cannot be read as parquet"),
    ("no_weights", "has no trained weights"),
    ("other_model", "holds weights of a model 'random-llama' run"),
    ("not_a_run", "is not a run folder"),
])
def test_bad_input_gets_one_clear_sentence_and_no_output(smoke, tmp_path, capsys, case, expected):
    texts = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["Fine."]}).to_parquet(texts)
    run, res = folder(smoke), resources(smoke)
    if case == "no_text_column":
        pd.DataFrame({"review": ["Fine."]}).to_parquet(texts)
    elif case == "empty":
        pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(texts)
    elif case == "not_parquet":
        texts.write_text("text\nFine.\n")
    elif case == "no_weights":
        res = tmp_path / "empty-resources"
        shutil.copytree(resources(smoke) / "models", res / "models")
    elif case == "other_model":
        res = tmp_path / "res"
        shutil.copytree(resources(smoke) / "models", res / "models")
        mine = res / WEIGHTS.format(**RUN, pooling="mean")
        mine.parent.mkdir(parents=True)
        other = resources(smoke) / WEIGHTS.format(**{**RUN, "model": "random-llama"}, pooling="mean")
        shutil.copy(other, mine)
    elif case == "not_a_run":
        run = tmp_path
    out = tmp_path / "o.parquet"
    code = main(["predict", "--run", str(run), "--input", str(texts), "--output", str(out), "--resources", str(res)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not out.exists()


# ---- options, the shared feature cache, labels, interruptions -----------------------------------


@pytest.fixture
def own_resources(smoke, tmp_path):
    """A copy of the smoke run's models and weights: a resources folder with no prediction cache yet."""
    res = tmp_path / "resources"
    for part in ("models", "weights"):
        shutil.copytree(resources(smoke) / part, res / part)
    return res


def texts_file(smoke, tmp_path, labels=True):
    test = pd.read_parquet(resources(smoke) / "data" / "imdb" / "test.parquet")
    path = tmp_path / "test.parquet"
    test[["id", "text", "label"] if labels else ["id", "text"]].to_parquet(path)
    return path


def run_predict(smoke, res, texts, out, pooling="mean", *options):
    return main(["predict", "--run", str(folder(smoke, pooling)), "--input", str(texts), "--output", str(out),
                 "--resources", str(res), *options])


def test_two_runs_of_one_backbone_share_one_cache(smoke, own_resources, tmp_path, monkeypatch, capsys):
    import poolbench.features

    calls = []
    real = poolbench.features.extract
    monkeypatch.setattr(poolbench.features, "extract", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    texts = texts_file(smoke, tmp_path)
    for pooling in ("mean", "attention", "mean"):
        assert run_predict(smoke, own_resources, texts, tmp_path / f"{pooling}.parquet", pooling) == 0
    assert len(calls) == 1  # the backbone ran once for both runs
    caches = list((own_resources / "predict-cache" / "random-bert" / "head-64").iterdir())
    assert len(caches) == 1 and (caches[0] / "info.json").is_file()
    err = capsys.readouterr().err
    assert err.count("built the feature cache") == 1 and err.count("reused the feature cache") == 2
    for pooling in ("mean", "attention"):  # and the cache gives the runs' own predictions back
        got = pd.read_parquet(tmp_path / f"{pooling}.parquet")
        want = pd.read_parquet(folder(smoke, pooling) / "predictions.parquet").set_index("id").loc[got["id"]]
        assert got["p_positive"].to_numpy() == pytest.approx(want["p_positive"].to_numpy(), abs=1e-5)
    # another window is another cache
    assert run_predict(smoke, own_resources, texts, tmp_path / "tail.parquet", "mean", "--truncation", "tail",
                       "--max-len", "32") == 0
    assert len(calls) == 2 and (own_resources / "predict-cache" / "random-bert" / "tail-32").is_dir()


def test_labels_give_the_runs_accuracy_and_macro_f1(smoke, own_resources, tmp_path, capsys):
    import json

    assert run_predict(smoke, own_resources, texts_file(smoke, tmp_path), tmp_path / "o.parquet") == 0
    metrics = json.loads((folder(smoke) / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} on {metrics['n']} labelled" in out
    (tmp_path / "u").mkdir()
    unlabelled = texts_file(smoke, tmp_path / "u", labels=False)
    assert run_predict(smoke, own_resources, unlabelled, tmp_path / "u.parquet") == 0
    assert "accuracy" not in capsys.readouterr().out


def test_batch_size_and_threads_keep_the_predictions(smoke, own_resources, tmp_path):
    texts = texts_file(smoke, tmp_path)
    assert run_predict(smoke, own_resources, texts, tmp_path / "a.parquet", "attention", "--batch-size", "3",
                       "--threads", "1") == 0
    got = pd.read_parquet(tmp_path / "a.parquet")
    want = pd.read_parquet(folder(smoke, "attention") / "predictions.parquet").set_index("id").loc[got["id"]]
    assert got["p_positive"].to_numpy() == pytest.approx(want["p_positive"].to_numpy(), abs=1e-4)
    assert (got["pred"].to_numpy() == want["pred"].to_numpy()).all()


@pytest.mark.parametrize("options, expected", [
    (["--max-len", "100000"], "--max-len 100000 is outside random-bert's limits"),
    (["--max-len", "1"], "--max-len 1 is outside random-bert's limits"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_bad_options_get_one_clear_sentence(smoke, own_resources, tmp_path, capsys, options, expected):
    out = tmp_path / "o.parquet"
    assert run_predict(smoke, own_resources, texts_file(smoke, tmp_path), out, "mean", *options) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and not out.exists()


def test_bad_labels_are_refused(smoke, own_resources, tmp_path, capsys):
    texts = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["Fine.", "Awful."], "label": [1, 7]}).to_parquet(texts)
    assert run_predict(smoke, own_resources, texts, tmp_path / "o.parquet") == 2
    assert "the label column must hold 0 or 1; 1 row(s) do not" in capsys.readouterr().err


DRIVER = """
import os, signal, sys, tempfile
import poolbench.features
from poolbench.cli import main

# the signal arrives in the middle of the backbone's forward, while the cache is being written
real, batches = poolbench.features.backbone_hidden_states, []

def forward(*args, **kw):
    batches.append(1)
    if len(batches) == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(*args, **kw)

poolbench.features.backbone_hidden_states = forward
tempfile.tempdir = sys.argv[2]
code = main(["predict", *sys.argv[3:]])
assert len(batches) >= 2, batches
assert signal.getsignal(signal.SIGTERM) is not None  # main() put the previous handler back
sys.exit(code)
"""


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_an_interrupted_predict_leaves_nothing(smoke, own_resources, tmp_path, signame, code):
    """As a user's `poolbench predict` gets it: its own process, Python's default signal handling."""
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "o.parquet"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    args = ["--run", str(folder(smoke, "mean")), "--input", str(texts_file(smoke, tmp_path)), "--output", str(out),
            "--resources", str(own_resources), "--batch-size", "2"]
    proc = subprocess.run([sys.executable, str(driver), signame, str(scratch), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    # the temporary folder is gone (torch keeps its own compile cache folder in the temporary directory)
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")] == []
    assert not [p for p in own_resources.rglob("*") if ".partial-" in p.name or ".tmp-" in p.name]
    assert not (own_resources / "predict-cache").exists()  # nor the empty folders above the cache


def test_the_resources_folder_of_a_run_follows_its_configs_results_dir():
    """paper.yaml nests its results (results/paper) but not its resources: a run there finds resources/."""
    from poolbench.cli import _resources

    from conftest import REPO

    for results in ("results", "results/paper"):
        run = REPO / results / "runs" / "imdb" / "m" / "frozen" / "head-128" / "cls" / "seed0"
        assert _resources(run, None) == REPO / "resources"
    assert _resources(REPO / "results" / "runs" / "a" / "b" / "c" / "d" / "e" / "f", REPO / "elsewhere") == \
        REPO / "elsewhere"
