"""Early stopping on a dev split, and the learning-rate search, for the fine-tuned regimes (issue 18).

Loop-level tests run on toy token states; run-level tests on a tiny random Llama through
``run_one`` (the topk regime, from a feature cache), as the pipeline runs them.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from poolbench.heads import fit_finetuned, lr_search, stratified_split
from poolbench.train import TrainConfig, TrainingError, build_classifier, dev_scores, predict, to_device, train

pytestmark = pytest.mark.usefixtures("one_thread")
H = 8


class Toy:
    """FeatureSet-like token states: dimension 0 is shifted by +-``signal`` with the label."""

    def __init__(self, n: int, seed: int, signal: float = 0.5, labels=None):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n) if labels is None else np.asarray(labels)
        self.lengths = rng.integers(2, 7, n)
        self.states = [rng.normal(size=(t, H)).astype(np.float32) for t in self.lengths]
        for s, y in zip(self.states, self.labels):
            s[:, 0] += signal if y else -signal

    def flipped(self) -> "Toy":
        out = copy.copy(self)
        out.labels = 1 - self.labels
        return out

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
        return {"hidden_states": [h], "attention_mask": mask, "sentence_ids": None,
                "labels": torch.from_numpy(self.labels[rows].astype(np.int64))}


def model(pooling: str = "attention", cfg: TrainConfig | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(pooling, "decoder", H, 1, cfg or TrainConfig(dropout=0.0), None, None)


# ---- the loop ----------------------------------------------------------------------------------


def test_early_stopping_restores_the_best_evaluation_and_records_every_one():
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-2, dropout=0.0, log_every=5)
    m, data, val = model(cfg=cfg), Toy(160, 0), Toy(60, 1)
    out = train(m, data, cfg, seed=0, val=val, eval_every=7)
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    evals = out["evaluations"]
    assert [e["step"] for e in evals] == [*range(7, steps, 7), steps]  # every 7 steps, and the last
    losses = [e["val_loss"] for e in evals]
    assert out["best_index"] == int(np.argmin(losses)) and out["best_val_loss"] == min(losses)
    assert out["best_step"] == evals[out["best_index"]]["step"]
    assert out["stop_reason"] == "max_epochs" and out["steps"] == steps
    # the model ends in the recorded best state: its dev loss is the best recorded one, exactly
    loss, acc = dev_scores(m, val)
    assert loss == out["best_val_loss"] and acc == out["best_val_accuracy"]
    if out["best_index"] != len(evals) - 1:  # (and not the last state's)
        assert loss != losses[-1]
    # the training-loss curve: one point per 5 steps, the mean of those steps' losses
    curve = out["loss_curve"]
    assert curve["every"] == 5 and curve["step"] == list(range(5, steps + 1, 5))
    assert len(curve["loss"]) == len(curve["step"]) and all(np.isfinite(curve["loss"]))


def test_early_stopping_stops_when_patience_runs_out():
    """Dev labels are the training labels flipped: every step that learns the task raises the dev
    loss, so the first evaluation is the best and training stops ``patience`` evaluations later."""
    cfg = TrainConfig(epochs=20, batch_size=16, lr=3e-2, dropout=0.0)
    data = Toy(160, 0, signal=1.0)
    m = model(cfg=cfg)
    out = train(m, data, cfg, seed=0, val=Toy(60, 1, signal=1.0).flipped(), patience=2, eval_every=5)
    assert out["stop_reason"] == "patience"
    assert out["best_index"] == 0 and len(out["evaluations"]) == 3
    assert out["steps"] == 15 < cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    assert out["best_step"] == 5 and out["stopped_epoch"] == 2  # 10 steps per epoch: stopped in the second
    # per epoch (eval_every absent): the same rule, counted in epochs
    m = model(cfg=cfg)
    out = train(m, data, cfg, seed=0, val=Toy(60, 1, signal=1.0).flipped(), patience=1)
    assert out["stop_reason"] == "patience" and [e["epoch"] for e in out["evaluations"]] == [1, 2]
    assert out["stopped_epoch"] == 2 and out["best_epoch"] == 1


def test_dev_split_is_disjoint_from_fit_rows_stratified_and_seeded():
    labels = np.array([0] * 70 + [1] * 30)
    fit, dev = stratified_split(labels, 0.1, seed=3)
    assert len(set(fit) & set(dev)) == 0 and sorted([*fit, *dev]) == list(range(100))
    assert len(dev) == 10 and labels[dev].sum() == 3  # 10% of each label
    assert np.array_equal(dev, stratified_split(labels, 0.1, seed=3)[1])
    assert not np.array_equal(dev, stratified_split(labels, 0.1, seed=4)[1])
    # what lr_search trains on and judges by is exactly that split
    data = Toy(100, 0, labels=labels)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-2, dropout=0.0)
    search = lr_search(model(cfg=cfg), data, cfg, val_fraction=0.1, lr_grid=(1e-2,), patience=None, seed=3)
    assert np.array_equal(search["val_rows"], dev) and np.array_equal(search["fit_rows"], fit)


def test_lr_grid_picks_the_lowest_dev_loss_and_ends_in_its_state():
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1.0, dropout=0.0, dev_fraction=0.25, patience=2,
                      lr_grid=(1e-1, 1e-4, 1e-2))
    assert cfg.lr_grid == (1e-4, 1e-2, 1e-1)  # sorted once, where it is read
    data = Toy(160, 0)
    m = model(cfg=cfg)
    fit = fit_finetuned(m, data, cfg, seed=0)
    runs = fit["search"]["runs"]
    assert [r["lr"] for r in runs] == [1e-4, 1e-2, 1e-1]
    best = min(runs, key=lambda r: r["best_val_loss"])
    assert fit["chosen"]["lr"] == best["lr"] != 1e-4  # 1e-4 barely moves in 3 epochs
    assert fit["chosen"]["dev_loss"] == best["best_val_loss"]
    assert fit["chosen"]["step"] == best["best_step"] and fit["chosen"]["stop_reason"] == best["stop_reason"]
    assert fit["evaluations"] == best["evaluations"]  # the chosen lr's curves at the top level
    from poolbench.heads import Rows

    dev = Rows(data, stratified_split(data.labels, 0.25, 0)[1])
    assert dev_scores(m, dev)[0] == fit["chosen"]["dev_loss"]
    assert fit["search"]["dev_examples"] == 40 and fit["search"]["fit_examples"] == 120
    json.dumps(fit)  # the record goes into metrics.json as it is


def test_a_diverging_lr_is_recorded_and_skipped():
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1.0, dropout=0.0, dev_fraction=0.25, lr_grid=(1e-2, 1e3))
    data = Toy(64, 0)
    data.states[5][:] = 1e30  # inf logits at any large lr
    original = train

    def diverge_at_big_lr(model_, data_, cfg_, *args, **kwargs):
        if cfg_.lr > 1:
            raise TrainingError("loss became nan")
        return original(model_, data_, cfg_, *args, **kwargs)

    import poolbench.heads as heads

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(heads, "train", diverge_at_big_lr)
        fit = fit_finetuned(model(cfg=cfg), Toy(64, 0), cfg, seed=0)
    assert fit["chosen"]["lr"] == 1e-2 and fit["search"]["runs"][1] == {"lr": 1e3, "error": "loss became nan"}


@pytest.mark.parametrize("settings,message", [
    ({"patience": 2}, r"\['patience'\] need dev_fraction"),
    ({"lr_grid": [1e-3]}, r"\['lr_grid'\] need dev_fraction"),
    ({"dev_fraction": 1.0}, "dev_fraction must lie strictly between 0 and 1, got 1.0"),
    ({"dev_fraction": 0.1, "patience": 0}, "patience must be a positive integer, got 0"),
])
def test_bad_early_stopping_settings_fail_in_one_sentence(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


# ---- absent keys: today's loop, exactly ----------------------------------------------------------


def reference_train(model, data, cfg, seed, val=None, patience=None):
    """The training loop as it was before early stopping for fine-tuned regimes (main at f2cd8f3),
    without its progress bar: the new loop must reproduce it bit for bit when the keys are absent."""
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    warmup = max(1, int(cfg.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    losses = []
    val_loss, best_epoch, best_state = [], 0, None
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(data))
        epoch_loss = []
        for i in range(0, len(order), cfg.batch_size):
            batch = to_device(data.batch(order[i: i + cfg.batch_size]), device)
            loss = F.cross_entropy(model(batch), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
        if val is not None:
            p = np.clip(predict(model, val), 1e-12, 1 - 1e-12)
            y = np.asarray(val.labels)
            val_loss.append(float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))))
            if best_state is None or val_loss[-1] < val_loss[best_epoch - 1]:
                best_epoch, best_state = epoch + 1, copy.deepcopy(model.state_dict())
            elif patience is not None and epoch + 1 - best_epoch >= patience:
                break
    if val is not None:
        model.load_state_dict(best_state)
    return {"epoch_loss": losses, "val_loss": val_loss, "best_epoch": best_epoch}


@pytest.mark.parametrize("with_val", [False, True], ids=["fine-tuned-regimes", "learned-frozen-heads"])
def test_without_the_new_keys_the_loop_is_todays(with_val):
    """No dev_fraction: the same losses and predictions as the loop before these keys existed, with and
    without the per-epoch validation that the frozen regime's learned heads use (patience 1)."""
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-2, dropout=0.1)
    data, test = Toy(96, 0), Toy(40, 2)
    val = Toy(40, 1).flipped() if with_val else None  # flipped: patience runs out, both loops stop early
    old, new = model(cfg=cfg, seed=5), model(cfg=cfg, seed=5)
    torch.manual_seed(7)
    ref = reference_train(old, data, cfg, 3, val=val, patience=1)
    torch.manual_seed(7)
    out = train(new, data, cfg, 3, val=val, patience=1)
    assert out["epoch_loss"] == ref["epoch_loss"]
    assert np.array_equal(predict(old, test), predict(new, test))
    if with_val:
        assert out["val_loss"] == ref["val_loss"] and out["best_epoch"] == ref["best_epoch"]
        assert out["stop_reason"] == "patience" and len(ref["epoch_loss"]) < cfg.epochs


def test_committed_study_specs_and_train_configs_are_unchanged():
    """The default config's fine-tuned regimes set none of the new keys: their specs are the committed
    runs' specs, and their TrainConfig trains exactly `epochs` epochs on all of train."""
    from poolbench.config import canonical, expand, run_spec
    from poolbench.paths import run_dir
    from poolbench.run import train_config

    from conftest import REPO, load_config

    cfg = load_config()
    checked = 0
    for run in expand(cfg):
        if run.regime == "frozen" or run.seed != 0 or run.pooling != "cls":
            continue
        spec = run_spec(cfg, run)
        tc = train_config(spec)
        assert (tc.dev_fraction, tc.patience, tc.eval_every, tc.lr_grid) == (None, None, None, None)
        recorded = json.loads((run_dir(REPO / "results", **run.wildcards()) / "metrics.json").read_text())["spec"]
        assert canonical(recorded) == canonical(spec)
        checked += 1
    assert checked >= 5  # topk, lpft, top1, top4, full


# ---- run_one: the record in metrics.json, and test never seen --------------------------------------

LAYERS, K = 2, 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama model folder, toy texts whose label a word reveals, feature caches; and a
    copy of the test split with every label flipped (its own cache)."""
    from poolbench.features import extract
    from poolbench.topk import layers_to_cache

    from conftest import word_tokenizer
    from test_topk import backbone, texts

    root = tmp_path_factory.mktemp("early")
    bb, tok = backbone("llama", LAYERS), word_tokenizer(False)
    bb.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    frames = {"train": texts(64, 0), "test": texts(24, 1)}
    frames["flipped"] = frames["test"].assign(label=1 - frames["test"]["label"])
    paths, caches = {}, {}
    for split, frame in frames.items():
        paths[split], caches[split] = root / f"{split}.parquet", root / f"cache-{split}"
        frame.to_parquet(paths[split], index=False)
        extract(frame, bb, tok, caches[split], truncation="head", max_len=32, layers=layers_to_cache(1, [K]))
    return root, paths, caches


def study(regime: dict) -> dict:
    return {"study": [{"datasets": ["toy"], "models": ["tiny"], "regimes": ["topk"], "truncations": ["head"],
                       "max_len": [32], "seeds": [0], "poolings": ["mean"]}],
            "models": {"tiny": {"family": "decoder", "source": {"type": "random", "arch": "llama", "tokenizer": "x",
                                                                "hidden": 32, "layers": LAYERS, "heads": 4}}},
            "regimes": {"topk": {"kind": "topk", "batch_size": 8, "dropout": 0.0, "trainable_layers": K, **regime}},
            "poolings": {"decoder": ["mean"]}, "cache_layers": 1,
            "datasets": {"toy": {"train_size": 8, "test_size": 8, "seed": 0}}}


def run(tiny, regime: dict, test: str = "test", tag: str = "a"):
    from poolbench.config import Run, run_spec
    from poolbench.run import run_one

    root, paths, caches = tiny
    spec = run_spec(study(regime), Run("toy", "tiny", "topk", "head", 32, "mean", 0))
    out = root / "runs" / tag
    metrics = run_one(spec=spec, model_dir=root / "model",
                      datasets={("toy", "train"): paths["train"], ("toy", "test"): paths[test]},
                      features={("toy", "train"): caches["train"], ("toy", "test"): caches[test]},
                      metrics_path=out / "metrics.json", predictions_path=out / "predictions.parquet",
                      weights_path=out / "model.safetensors")
    return metrics, json.loads((out / "metrics.json").read_text()), pd.read_parquet(out / "predictions.parquet")


EARLY = {"epochs": 4, "lr": 1e-3, "dev_fraction": 0.25, "patience": 2, "eval_every": 3, "lr_grid": [1e-3, 1e-2]}


def test_run_one_records_the_search_and_never_looks_at_test(tiny):
    _, record, pred = run(tiny, EARLY, tag="early")
    train = record["train"]
    assert train["method"] == "early_stopping"
    assert {"lr", "step", "epoch", "dev_loss", "dev_accuracy", "stop_reason"} <= set(train["chosen"])
    assert train["chosen"]["stop_reason"] in ("patience", "max_epochs")
    assert [r["lr"] for r in train["search"]["runs"]] == [1e-3, 1e-2]
    assert train["chosen"]["lr"] == min(train["search"]["runs"], key=lambda r: r["best_val_loss"])["lr"]
    assert train["search"]["dev_examples"] == 16 and train["search"]["fit_examples"] == 48
    assert train["evaluations"][0]["step"] == 3 and train["loss_curve"]["step"]
    assert record["spec"]["regime"]["dev_fraction"] == 0.25
    # the same run with every test label flipped: the same choice, the same weights, the same scores
    _, flipped, pred_flipped = run(tiny, EARLY, test="flipped", tag="flipped")
    assert flipped["train"]["chosen"] == train["chosen"]
    untimed = lambda runs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in runs]  # noqa: E731
    assert untimed(flipped["train"]["search"]["runs"]) == untimed(train["search"]["runs"])
    assert np.array_equal(pred_flipped["p_positive"].to_numpy(), pred["p_positive"].to_numpy())
    assert flipped["accuracy"] == pytest.approx(1 - record["accuracy"])


def test_run_one_without_the_keys_trains_as_today(tiny):
    """Absent keys: the spec holds their defaults (off), and run_one trains `epochs` epochs on all of train."""
    plain = {"epochs": 2, "lr": 1e-3}
    metrics, record, _ = run(tiny, plain, tag="plain")
    regime = record["spec"]["regime"]
    assert [regime[k] for k in ("dev_fraction", "patience", "eval_every", "lr_grid")] == [None] * 4
    train = record["train"]
    assert "evaluations" not in train and "search" not in train and "chosen" not in train
    assert len(train["epoch_loss"]) == 2 and train["steps"] == 2 * math.ceil(64 / 8)


def test_curves_are_drawn_from_the_records(tiny, tmp_path):
    from poolbench.curves import curves_table, plot_curves

    early, _, _ = run(tiny, EARLY, tag="curves")
    plain, _, _ = run(tiny, {"epochs": 1, "lr": 1e-3}, tag="curves-plain")
    table = curves_table([early, plain])
    assert set(table["series"]) == {"train_loss", "dev_loss", "dev_accuracy"}
    assert set(table["regime"]) == {"topk"} and len(table.drop_duplicates(["model", "pooling", "seed"])) == 1
    dev = table[table["series"] == "dev_loss"]
    assert list(dev["step"]) == [e["step"] for e in early.train["evaluations"]]
    assert (table["chosen_step"] == early.train["chosen"]["step"]).all()
    out = plot_curves([early, plain], tmp_path / "curves.png")
    assert out.equals(table) and (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no run among these records has training curves"):
        plot_curves([plain], tmp_path / "none.png")


def test_the_new_regime_keys_pass_the_schema_and_resolve_per_model():
    from snakemake.utils import validate

    from poolbench.config import Run, check, run_spec
    from poolbench.run import train_config

    from conftest import REPO, load_config

    cfg = load_config(REPO / "tests" / "configs" / "mini.yaml")
    cfg["regimes"]["finetune"].update(dev_fraction=0.1, patience=3, eval_every=20, log_every=5,
                                      lr_grid={"random-bert": [3e-5, 1e-5], "random-llama": [1e-4]})
    validate(cfg, str(REPO / "workflow" / "config" / "schema.yaml"))
    check(cfg)
    spec = run_spec(cfg, Run("imdb", "random-bert", "finetune", "tail", 64, "cls", 0))
    tc = train_config(spec)
    assert (tc.dev_fraction, tc.patience, tc.eval_every, tc.log_every, tc.lr_grid) == (0.1, 3, 20, 5, (1e-5, 3e-5))
    del cfg["regimes"]["finetune"]["lr_grid"]["random-bert"]
    with pytest.raises(ValueError, match="regimes.finetune.lr_grid: names no learning rates for model 'random-bert'"):
        train_config(run_spec(cfg, Run("imdb", "random-bert", "finetune", "tail", 64, "cls", 0)))
    cfg["regimes"]["finetune"]["lr_grid"]["random-bert"] = [1e-5]
    cfg["regimes"]["frozen"]["dev_fraction"] = 0.1  # refused at start-up (a frozen run's spec never holds it)
    with pytest.raises(ValueError, match="regimes.frozen.dev_fraction: is for fine-tuned regimes"):
        check(cfg)
    cfg["regimes"]["finetune"]["dev_fraction"] = 1.5
    with pytest.raises(Exception, match="dev_fraction"):
        validate(cfg, str(REPO / "workflow" / "config" / "schema.yaml"))
