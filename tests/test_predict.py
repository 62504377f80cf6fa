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
