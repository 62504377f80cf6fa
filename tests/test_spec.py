"""A run's spec holds the resolved settings its job reads, and only those (poolbench.config.run_spec)."""

from __future__ import annotations

import copy
import os
import re

import pytest

from poolbench import paths
from poolbench.config import (Run, canonical, evaluation_spec, expand, read_stamp, run_spec, stamp,
                              trained_layers)
from poolbench.heads import HeadConfig
from poolbench.train import TrainConfig

from conftest import DEFAULT_CONFIG, load_config


@pytest.fixture(scope="module")
def cfg():
    return load_config(DEFAULT_CONFIG)


def one(cfg, **keys) -> Run:
    return next(r for r in expand(cfg) if all(getattr(r, k) == v for k, v in keys.items()))


def test_every_run_key_list_is_the_runs_fields():
    assert set(re.findall(r"{(\w+)}", paths.RUN)) == set(Run.keys())
    run = Run("imdb", "m", "frozen", "head", 128, "cls", 2)
    assert Run.from_wildcards({k: str(v) for k, v in run.wildcards().items()}) == run


def test_a_fixed_pooling_frozen_run_reads_its_head_settings_only(cfg):
    spec = run_spec(cfg, one(cfg, regime="frozen", pooling="mean", model="minilm-l6"))
    head = spec["regime"]["head"]
    assert set(spec["regime"]) == {"head"}  # no lr, epochs or dropout: logistic regression reads none
    assert head["cv_folds"] == HeadConfig().cv_folds and head["c_grid"] == list(HeadConfig().c_grid)
    assert spec["trained_layers"] == 0 and spec["kind"] == "frozen"


def test_a_learned_pooling_frozen_run_reads_the_lr_grid_not_the_regimes_lr(cfg):
    spec = run_spec(cfg, one(cfg, regime="frozen", pooling="attention", model="minilm-l6"))
    assert "lr" not in spec["regime"] and spec["regime"]["head"]["lr_grid"] == list(HeadConfig().lr_grid)
    assert spec["regime"]["epochs"] == cfg["regimes"]["frozen"]["epochs"]


def test_defaults_written_in_code_are_resolved_into_fine_tuned_specs(cfg):
    edited = copy.deepcopy(cfg)
    del edited["regimes"]["topk"]["warmup_ratio"]  # now the code's default applies, and is in the spec
    spec = run_spec(edited, one(edited, regime="topk", pooling="cls"))
    assert spec["regime"]["warmup_ratio"] == TrainConfig().warmup_ratio
    assert spec["regime"]["trainable_layers"] == 2 and spec["trained_layers"] == 2  # {model: k} resolved


def test_transfer_is_in_no_runs_spec_but_in_its_evaluations(cfg):
    run = one(cfg, dataset="imdb", regime="topk", pooling="mean")
    edited = copy.deepcopy(cfg)
    edited["transfer"]["imdb"] = ["tailprobe"]
    assert canonical(run_spec(cfg, run)) == canonical(run_spec(edited, run))
    assert evaluation_spec(cfg, run, "tailprobe")["evalset"]["name"] == "tailprobe"


def test_the_kind_decides_never_the_name(cfg):
    edited = copy.deepcopy(cfg)
    edited["regimes"]["everything"] = {**cfg["regimes"]["full"]}
    edited["study"][4]["regimes"] = ["everything"]
    run = one(edited, regime="everything", pooling="cls")
    assert run_spec(edited, run)["kind"] == "finetune"
    assert trained_layers(edited, run) == cfg["models"]["minilm-l6"]["layers"]  # "all" resolved


def test_a_stamp_is_dated_by_whether_its_outputs_are_current(tmp_path):
    path = tmp_path / "specs" / "train.json"
    stamp(path, {"a": 1}, current=True)
    assert read_stamp(path) == {"a": 1} and os.stat(path).st_mtime == 0
    stamp(path, {"a": 1}, current=False)  # same content, outputs stale: dated now
    assert os.stat(path).st_mtime > 0
    before = os.stat(path).st_mtime_ns
    stamp(path, {"a": 1}, current=False)  # nothing to rewrite
    assert os.stat(path).st_mtime_ns == before
    stamp(path, {"a": 2}, current=True)
    assert read_stamp(path) == {"a": 2} and os.stat(path).st_mtime == 0
