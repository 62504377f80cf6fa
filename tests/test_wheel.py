"""The built wheel, installed into a fresh virtualenv outside the checkout, scores a model from any directory.

The wheel is built from a copy of the project's packaging files (nothing is written into the
checkout), offline (``--no-build-isolation``: the environment's setuptools). The new virtualenv sees
this environment's installed libraries (torch, transformers, ...) through a ``.pth`` file, so nothing
is downloaded; poolbench itself comes only from the wheel (checked: the module's file is inside the
new virtualenv, and no PYTHONPATH is passed on).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO
from test_score import bert, data  # noqa: F401 (data: a fixture)


def run(cmd, cwd, env) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the virtualenv's bin folder, an environment for it) with poolbench installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         root / "dist", src], root, env)
    wheel = next((root / "dist").glob("poolbench-*.whl"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], root, env)
    py = venv / "bin" / "python"
    purelib = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "poolbench-test-env.pth").write_text("\n".join(ours) + "\n")  # torch & co., after the venv's own
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], root, env)
    return venv / "bin", {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def test_the_wheel_ships_the_package_and_the_metric(installed, tmp_path):
    """poolbench and the evaluate metric load from the wheel's copy (one interpreter: imports are slow)."""
    bin_, env = installed
    code = ("import evaluate, poolbench, poolbench.hub as h\n"
            "print(poolbench.__file__)\n"
            "print(h.METRIC)\n"
            "m = evaluate.load(h.METRIC, keep_in_memory=True)\n"
            "vids = [f'v{i}' for i in range(4) for _ in range(6)]\n"
            "cond = ['contrast', 'contrast', 'contrast', 'agree', 'agree', 'agree'] * 4\n"
            "pos = ['start', 'middle', 'end'] * 8\n"
            "out = m.compute(predictions=[0.9] * 24, references=[1, 0] * 12, body_label=[0] * 24, condition=cond, "
            "position=pos, length_bin=['short'] * 24, verdict_review_id=vids, n_boot=200)\n"
            "print(out['accuracy'])\n")
    env = {**env, "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}
    module, metric, accuracy = run([bin_ / "python", "-c", code], tmp_path, env).stdout.strip().splitlines()[-3:]
    assert str(bin_.parent) in module and str(bin_.parent) in metric  # the wheel's copy, not the checkout
    assert float(accuracy) == 0.5  # every text called positive; half the labels are
    assert run([bin_ / "poolbench", "--version"], tmp_path, env).stdout.startswith("poolbench ")


def test_the_installed_command_scores_a_model_from_another_directory(installed, data, tmp_path):  # noqa: F811
    bin_, env = installed
    folder, tables = data
    model = bert(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run([bin_ / "poolbench", "score", "--model", model, "--data", folder, "--out", "scores", "--max-len", "32",
         "--check-invariance", "8"], elsewhere, env)
    doc = json.loads((elsewhere / "scores" / "results.json").read_text())
    assert doc["model"]["path"] == str(model.resolve())
    assert doc["packages"]["torch"] and doc["poolbench_version"]
    assert [r["set"] for r in doc["results"]] == ["tailprobe", "naturaltail"]
    assert doc["results"][0]["n"] == len(tables["tailprobe", "test"])
    assert "Tail probe" in (elsewhere / "scores" / "VERDICT.md").read_text()
