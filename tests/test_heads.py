"""Heads trained to their optimum: logistic regression for fixed poolings, early stopping for learned ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertPooler

from poolbench import heads
from poolbench.heads import HeadBelowReference, HeadConfig, fit_head, fit_logistic_head, is_fixed
from poolbench.pooling import POOLINGS, PoolingContext, build_pooling
from poolbench.train import TrainConfig, TrainingError, build_classifier, predict, train

H = 8


class ToyFeatures:
    """FeatureSet-like token states: dimension 0 of every token is shifted by +-``signal`` with the label.

    ``flip`` labels are flipped after the states are drawn (label noise the states cannot explain).
    """

    def __init__(self, n: int, seed: int, signal: float = 0.4, flip: float = 0.0):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n)
        self.lengths = rng.integers(2, 7, n)
        self.states = [rng.normal(size=(t, H)).astype(np.float32) for t in self.lengths]
        for s, y in zip(self.states, self.labels):
            s[:, 0] += signal if y else -signal
            s[:, 1] = 3.0 * s[:, 1] + 5.0  # a badly scaled, off-centre dimension: standardisation matters
        flipped = rng.random(n) < flip
        self.labels = np.where(flipped, 1 - self.labels, self.labels)

    def __len__(self):
        return len(self.labels)

    def batch(self, rows):
        rows = np.asarray(rows)
        T = max(self.lengths[r] for r in rows)
        h = torch.zeros(len(rows), T, H)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            h[i, : self.lengths[r]] = torch.from_numpy(self.states[r])
            mask[i, : self.lengths[r]] = 1
        sent = torch.where(mask.bool(), torch.zeros_like(mask), torch.full_like(mask, -1))
        return {"hidden_states": [h], "attention_mask": mask, "sentence_ids": sent,
                "labels": torch.from_numpy(self.labels[rows].astype(np.int64))}


def classifier(pooling: str, family: str = "decoder", dropout: float = 0.1):
    torch.manual_seed(0)
    return build_classifier(pooling, family, H, 1, TrainConfig(dropout=dropout), None, None)


QUICK = HeadConfig(c_grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0), cv_folds=3)


def test_fixed_poolings_are_derived_from_their_parameters():
    ctx = PoolingContext(hidden_size=H, num_layers=4, family="encoder", freeze_pretrained=True, options={},
                         pooler=BertPooler(BertConfig(hidden_size=H, num_attention_heads=2, intermediate_size=32)))
    fixed = {name for name in POOLINGS if is_fixed(build_pooling(name, ctx))}
    assert {"cls", "pooler", "mean", "max", "weighted_mean", "last", "layers_concat"} <= fixed
    assert not {"attention", "hierarchical"} & fixed
    ctx.freeze_pretrained = False  # the finetune regime: the pretrained pooler trains
    assert not is_fixed(build_pooling("pooler", ctx))


def test_load_logistic_gives_the_logistic_probability_through_a_softmax():
    rng = np.random.default_rng(0)
    w, b, mean, scale = rng.normal(size=5), 0.3, rng.normal(size=5), rng.uniform(0.5, 2, 5)
    linear = torch.nn.Linear(5, 2)
    heads.load_logistic(linear, w, b, mean, scale)
    x = rng.normal(size=(20, 5))
    expected = 1 / (1 + np.exp(-(((x - mean) / scale) @ w + b)))
    got = torch.softmax(linear(torch.tensor(x, dtype=torch.float32)), -1)[:, 1].detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_loaded_head_reproduces_sklearn_probabilities_through_predict():
    train_set, test_set = ToyFeatures(300, 0), ToyFeatures(200, 1)
    model = classifier("mean")
    out = fit_logistic_head(model, train_set, test_set, QUICK, seed=0)
    assert out["method"] == "logistic_cv" and out["chosen"]["C"] in QUICK.c_grid and out["chosen"]["converged"]
    # An independent scikit-learn fit on the same pooled features with the chosen C.
    pool = lambda d: heads.pool_features(model.pooling, d).astype(np.float64)  # noqa: E731
    scaler = StandardScaler().fit(pool(train_set))
    lr = LogisticRegression(C=out["chosen"]["C"], max_iter=10_000, tol=1e-8).fit(
        scaler.transform(pool(train_set)), train_set.labels)
    expected = lr.predict_proba(scaler.transform(pool(test_set)))[:, 1]
    np.testing.assert_allclose(predict(model, test_set), expected, atol=1e-4)
    assert out["head_vs_sklearn_max_abs_diff"] < 1e-5
    ref = out["reference"]
    assert ref["gap_points"] <= 0.5 and abs(ref["test_accuracy"] - ref["head_test_accuracy"]) < 0.01
    assert out["train_loss"] < np.log(2)
    json.dumps(out)  # goes into metrics.json as it is


def test_pool_features_is_in_row_order():
    data = ToyFeatures(50, 3)
    feats = heads.pool_features(build_pooling("mean", PoolingContext(H, 1, "decoder")), data, batch_size=7)
    expected = np.stack([s.mean(axis=0) for s in data.states])
    np.testing.assert_allclose(feats, expected, atol=1e-5)


def test_c_is_chosen_on_train_only():
    train_set = ToyFeatures(300, 0)
    cfg = HeadConfig(c_grid=QUICK.c_grid, cv_folds=3, reference_tolerance=100.0)
    test_a = ToyFeatures(200, 1)
    test_b = ToyFeatures(200, 1)
    test_b.labels = np.random.default_rng(9).permutation(test_b.labels)  # test labels scrambled
    test_b.states = [s[:, ::-1].copy() * 5 for s in test_b.states]  # and test features changed
    a = fit_logistic_head(classifier("mean"), train_set, test_a, cfg, seed=0)
    b = fit_logistic_head(classifier("mean"), train_set, test_b, cfg, seed=0)
    assert a["chosen"] == b["chosen"] and a["cv"] == b["cv"] and a["train_loss"] == b["train_loss"]
    assert a["reference"]["test_accuracy"] != b["reference"]["test_accuracy"]


def test_reference_check_fails_a_head_below_logistic_regression_cv(monkeypatch):
    real = heads.load_logistic
    monkeypatch.setattr(heads, "load_logistic", lambda linear, w, b, mean, scale: real(linear, -w, -b, mean, scale))
    with pytest.raises(HeadBelowReference, match="points below LogisticRegressionCV") as err:
        fit_logistic_head(classifier("mean"), ToyFeatures(300, 0, signal=1.0), ToyFeatures(200, 1, signal=1.0),
                          QUICK, seed=0)
    assert isinstance(err.value, TrainingError)


def test_early_stopping_returns_the_best_epochs_state():
    # Clean, separable training data; validation labels 30% flipped: the validation loss falls while
    # the margin grows towards log(0.7/0.3), then rises as the head grows overconfident.
    fit_set, val_set = ToyFeatures(128, 0, signal=3.0), ToyFeatures(200, 1, signal=3.0, flip=0.3)
    model = classifier("mean", dropout=0.0)
    cfg = TrainConfig(epochs=12, batch_size=32, lr=0.01, weight_decay=0.0, dropout=0.0, warmup_ratio=0.0)
    out = train(model, fit_set, cfg, seed=0, val=val_set)
    curve = out["val_loss"]
    assert out["stopped_epoch"] == len(curve) == 12
    assert out["best_epoch"] == int(np.argmin(curve)) + 1
    assert 1 < out["best_epoch"] < 12 and curve[-1] > min(curve) + 0.03  # it really rose after the best epoch
    p = predict(model, val_set)
    assert heads.cross_entropy(val_set.labels, p) == pytest.approx(min(curve), abs=1e-6)  # best state restored

    model = classifier("mean", dropout=0.0)
    out = train(model, fit_set, cfg, seed=0, val=val_set, patience=2)
    assert out["val_loss"] == curve[: out["stopped_epoch"]] and out["stopped_epoch"] == out["best_epoch"] + 2


def test_learned_pooling_keeps_the_best_lr_and_epoch():
    data = ToyFeatures(240, 0, signal=0.8)
    model = classifier("attention")
    head_cfg = HeadConfig(lr_grid=(1e-3, 1e-2), val_fraction=0.2, patience=2)
    out = fit_head(model, data, ToyFeatures(50, 1), TrainConfig(epochs=4), head_cfg, seed=0)
    assert out["method"] == "sgd_early_stopping" and out["reference"] is None
    runs = out["cv"]["runs"]
    assert [r["lr"] for r in runs] == [1e-3, 1e-2] and out["cv"]["val_examples"] == 48
    best = min(runs, key=lambda r: r["best_val_loss"])
    assert out["chosen"]["lr"] == best["lr"] and out["chosen"]["epoch"] == best["best_epoch"]
    _, val_rows = heads.stratified_split(data.labels, 0.2, 0)
    val = heads.Rows(data, val_rows)
    assert heads.cross_entropy(val.labels, predict(model, val)) == pytest.approx(out["chosen"]["val_loss"], abs=1e-6)
    assert np.isfinite(out["train_loss"])
    json.dumps(out)


def test_head_config_from_a_config_dict():
    cfg = HeadConfig.from_dict({"c_grid": [1, 0.1], "lr_grid": [1e-2, 1e-3], "val_fraction": 0.2})
    assert cfg.c_grid == (0.1, 1.0) and cfg.lr_grid == (1e-3, 1e-2) and cfg.cv_folds == 5
    assert HeadConfig.from_dict(None) == HeadConfig()
    with pytest.raises(ValueError, match="unknown head setting"):
        HeadConfig.from_dict({"folds": 3})


def test_fit_head_dispatches_fixed_poolings_to_logistic_regression():
    out = fit_head(classifier("last"), ToyFeatures(150, 0), ToyFeatures(100, 1), TrainConfig(), QUICK, seed=1)
    assert out["method"] == "logistic_cv" and out["cv"]["seed"] == 1
