"""Semantic checks of a study config and its expansion into runs.

The JSON schema (``workflow/config/schema.yaml``) checks structure; :func:`check` checks what a
schema cannot: that names refer to things that exist (registered poolings, configured models and
datasets), that a pooling applies to a model's family, and that sizes fit the models and data.
Every error names the offending config key. The Snakefile calls it before any job runs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path


# Rows per split of the full datasets (subsets must fit; half of a subset comes from each label).
SPLIT_SIZES = {"imdb": {"train": 25000, "test": 25000}}
# Model names become path parts and the {model} wildcard (see workflow/rules/common.smk).
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class ConfigError(ValueError):
    """The config is invalid; the message starts with the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config error at {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Run:
    dataset: str
    model: str
    regime: str
    truncation: str
    max_len: int
    pooling: str
    seed: int

    def wildcards(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The names of a run's keys, in order: the one definition every run-key list derives from."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_wildcards(cls, wc) -> "Run":
        """The run that a job's wildcards (any mapping of the keys; values as strings or typed) name."""
        return cls(**{f.name: int(wc[f.name]) if f.type in (int, "int") else str(wc[f.name]) for f in fields(cls)})


def model_layers(spec: dict) -> int | None:
    src = spec["source"]
    return src.get("layers", 2) if src["type"] == "random" else spec.get("layers")


def model_max_positions(spec: dict) -> int | None:
    from . import arch

    src = spec["source"]
    return arch.get(src["arch"]).random_positions if src["type"] == "random" else spec.get("max_positions")


def poolings_for(config: dict, grid: dict, model: str) -> list[str]:
    family = config["models"][model]["family"]
    return list(grid.get("poolings") or config["poolings"].get(family, []))


def check(config: dict) -> None:
    """Raise :class:`ConfigError` for the first semantic problem found."""
    from . import arch

    models, datasets = config["models"], config.get("datasets", {})
    for name, spec in models.items():
        if not MODEL_NAME.fullmatch(name):
            raise ConfigError(f"models.{name}", "a model name may only hold letters, digits, '_', '.' and '-'")
        src = spec["source"]
        for field in ("layers", "max_positions"):  # so that max_len and trainable_layers are checked here
            if src["type"] != "random" and field not in spec:
                raise ConfigError(f"models.{name}.{field}", f"missing; a {src['type']} model must declare it "
                                                            f"(it is verified against the model when materialised)")
        if src["type"] == "random" and src["arch"] not in arch.ARCHS:
            raise ConfigError(f"models.{name}.source.arch", f"unknown architecture {src['arch']!r}; "
                                                            f"known: {sorted(arch.ARCHS)}")
        if src["type"] == "random" and arch.get(src["arch"]).family != spec["family"]:
            raise ConfigError(f"models.{name}.family", f"{spec['family']!r}, but a random {src['arch']!r} backbone "
                                                       f"belongs to the {arch.get(src['arch']).family} family")
        if src["type"] == "random" and src["tokenizer"] not in models:
            raise ConfigError(f"models.{name}.source.tokenizer", f"unknown model {src['tokenizer']!r}")
        if src["type"] == "random" and models[src["tokenizer"]]["source"]["type"] == "random":
            raise ConfigError(f"models.{name}.source.tokenizer", "must name a model with a real tokenizer")
    for family, names in config["poolings"].items():
        for i, name in enumerate(names):
            _check_pooling(name, family, f"poolings.{family}[{i}]")
    for name, spec in datasets.items():
        for split in ("train", "test"):
            limit = SPLIT_SIZES.get(name, {}).get(split)
            if limit is not None and f"{split}_size" in spec and spec[f"{split}_size"] > limit:
                raise ConfigError(f"datasets.{name}.{split}_size",
                                  f"{spec[f'{split}_size']} is larger than the {split} split ({limit} rows)")
        for j, tok in enumerate(spec.get("tokenizers", [])):
            if tok not in models:
                raise ConfigError(f"datasets.{name}.tokenizers[{j}]", f"unknown model {tok!r}")
    from .pooling import POOLINGS

    for name in config.get("pooling_options", {}):
        if name not in POOLINGS:
            raise ConfigError(f"pooling_options.{name}", f"unknown pooling {name!r}; registered: {sorted(POOLINGS)}")
    layers_needed = config.get("pooling_options", {}).get("layers_concat", {}).get("layers", 1)
    cache_layers = config.get("cache_layers", 4)
    if layers_needed > cache_layers:
        raise ConfigError("pooling_options.layers_concat.layers",
                          f"{layers_needed} layers but cache_layers is {cache_layers}")
    from . import evalsets

    for source, targets in config.get("transfer", {}).items():
        for t in [source, *targets]:
            if t not in datasets:
                raise ConfigError(f"transfer.{source}", f"dataset {t!r} is not configured under datasets")
        for t in targets:
            if t not in evalsets.REGISTRY:
                raise ConfigError(f"transfer.{source}", f"{t!r} is no evaluation set; registered: "
                                                        f"{', '.join(evalsets.names())}")
    for j, name in enumerate(datasets.get("imdb", {}).get("exclude", [])):
        if name not in evalsets.REGISTRY or evalsets.get(name).imdb_overlap is None:
            raise ConfigError(f"datasets.imdb.exclude[{j}]", f"{name!r} is no evaluation set that takes its texts "
                                                             f"from IMDB")

    for g, grid in enumerate(config["study"]):
        key = f"study[{g}]"
        for field in ("seeds", "max_len"):  # YAML's 1.0 passes the schema's "integer" but is no seed
            for j, v in enumerate(grid[field]):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ConfigError(f"{key}.{field}[{j}]", f"{v!r} is not a non-negative integer")
        for i, d in enumerate(grid["datasets"]):
            if d not in datasets:
                raise ConfigError(f"{key}.datasets[{i}]", f"dataset {d!r} is not configured under datasets")
            if "train_size" not in datasets[d]:
                raise ConfigError(f"{key}.datasets[{i}]", f"{d!r} is an evaluation set (no train split); "
                                                          f"list it under transfer instead")
        for i, m in enumerate(grid["models"]):
            if m not in models:
                raise ConfigError(f"{key}.models[{i}]", f"unknown model {m!r}; configured: {sorted(models)}")
            spec = models[m]
            layers, limit = model_layers(spec), model_max_positions(spec)
            for j, n in enumerate(grid["max_len"]):
                if limit is not None and n > limit:
                    raise ConfigError(f"{key}.max_len[{j}]", f"{n} is above {m}'s limit of {limit} tokens")
            if layers is not None and cache_layers > layers:
                raise ConfigError("cache_layers", f"{cache_layers} layers but {m} has {layers}")
            for j, regime in enumerate(grid["regimes"]):
                if regime not in config["regimes"]:
                    raise ConfigError(f"{key}.regimes[{j}]", f"regime {regime!r} has no settings under regimes; "
                                                              f"defined: {sorted(config['regimes'])}")
                kind = regime_kind(regime, config["regimes"][regime])
                tl = config["regimes"][regime].get("trainable_layers", 0)
                if isinstance(tl, dict):
                    if m not in tl:
                        raise ConfigError(f"regimes.{regime}.trainable_layers", f"names no layer count for model {m!r}")
                    tl = tl[m]
                if layers is not None and tl != "all" and tl > layers:
                    raise ConfigError(f"regimes.{regime}.trainable_layers", f"{tl} is above {m}'s {layers} layers")
                if kind == "topk" and (tl == "all" or tl < 1):
                    raise ConfigError(f"regimes.{regime}.trainable_layers", f"a topk regime trains 1 or more "
                                                                           f"layers, not {tl!r}")
                _check_training(config["regimes"][regime], regime, kind, m)
            names = poolings_for(config, grid, m)
            if not names:
                raise ConfigError(f"poolings.{spec['family']}", f"no poolings listed for family {spec['family']!r}")
            if "poolings" in grid:
                for j, name in enumerate(names):
                    _check_pooling(name, spec["family"], f"{key}.poolings[{j}]", m)
    _check_init_from(config)
    from .analysis.settings import Statistics, StatisticsError

    try:
        Statistics.from_config(config.get("statistics")).check(config)
    except StatisticsError as err:
        key, _, message = str(err).partition(": ")
        raise ConfigError(key, message) from None


def _check_training(settings: dict, regime: str, kind: str, model: str) -> None:
    """A regime's training settings as its jobs will read them (poolbench.train.TrainConfig), at start-up."""
    from dataclasses import fields as dataclass_fields

    from .train import TrainConfig

    if kind == "frozen" and "dev_fraction" in settings:
        raise ConfigError(f"regimes.{regime}.dev_fraction", "is for fine-tuned regimes (topk, finetune); a frozen "
                                                            "regime holds out head.val_fraction instead")
    grid = settings.get("lr_grid")
    if isinstance(grid, dict) and model not in grid:
        raise ConfigError(f"regimes.{regime}.lr_grid", f"names no learning rates for model {model!r}")
    known = {f.name for f in dataclass_fields(TrainConfig)}
    try:
        TrainConfig(**{k: v for k, v in settings.items() if k in known and k != "lr_grid"},
                    lr_grid=grid[model] if isinstance(grid, dict) else grid)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"regimes.{regime}", str(err)) from None


def _check_init_from(config: dict) -> None:
    """``init_from`` (LP-FT): a fine-tuned regime starts its pooling and head from a frozen regime's run.

    The named regime must exist and be of kind frozen, the regime naming it must fine-tune (topk or
    finetune), and every run of such a regime needs its frozen counterpart among the study's runs.
    """
    regimes = config["regimes"]
    with_init = {name: s["init_from"] for name, s in regimes.items() if "init_from" in s}
    if not with_init:
        return
    for name, source in with_init.items():
        key = f"regimes.{name}.init_from"
        if regime_kind(name, regimes[name]) not in ("topk", "finetune"):
            raise ConfigError(key, f"only a fine-tuned regime (kind topk or finetune) starts from a frozen run; "
                                   f"{name!r} is of kind {regime_kind(name, regimes[name])!r}")
        if source not in regimes:
            raise ConfigError(key, f"unknown regime {source!r}; defined: {sorted(regimes)}")
        if regime_kind(source, regimes[source]) != "frozen":
            raise ConfigError(key, f"regime {source!r} is of kind {regime_kind(source, regimes[source])!r}; "
                                   f"init_from names a regime of kind 'frozen' (the linear probe of LP-FT)")
    from .paths import RUN

    runs = expand(config)
    planned = set(runs)
    for run in runs:
        counterpart = init_counterpart(config, run)
        if counterpart is not None and counterpart not in planned:
            raise ConfigError(f"regimes.{run.regime}.init_from",
                              f"run {RUN.format(**run.wildcards())} starts from the frozen run "
                              f"{RUN.format(**counterpart.wildcards())}, which the study does not train; add regime "
                              f"{counterpart.regime!r} to a study grid with the same dataset, model, truncation, "
                              f"max_len, pooling and seed")


def check_data_dir(path: str | None, from_env: bool, needs: list[str]) -> None:
    """The data folder (resolved, absolute) must exist and hold ``needs`` (relative file paths), checked at
    start-up so that no job starts on a folder that is not there; the error names where it was set."""
    if path is None:
        return
    where = "the environment variable POOLBENCH_DATA_DIR" if from_env else "the config key data_dir"
    if not Path(path).is_dir():
        raise ConfigError("data_dir", f"{path} (from {where}) is not a folder; point {where} at the folder that "
                                      f"holds imdb/train.parquet and imdb/test.parquet (README, 'Data')")
    missing = [name for name in needs if not (Path(path) / name).is_file()]
    if missing:
        raise ConfigError("data_dir", f"{path} (from {where}) has no {', '.join(missing)} (README, 'Data')")


def init_counterpart(config: dict, run: Run) -> Run | None:
    """The frozen run whose pooling and head ``run`` starts from (its regime's ``init_from``), or None."""
    source = config["regimes"][run.regime].get("init_from")
    return None if source is None else Run(run.dataset, run.model, source, run.truncation, run.max_len, run.pooling,
                                           run.seed)


REGIME_KINDS = ("frozen", "topk", "finetune")


def regime_kind(name: str, settings: dict) -> str:
    """What trains in a regime: its ``kind`` setting, else its name (frozen, topk or finetune)."""
    kind = settings.get("kind", name)
    if kind not in REGIME_KINDS:
        raise ConfigError(f"regimes.{name}", f"set kind to one of {list(REGIME_KINDS)} (the name {name!r} is none)")
    return kind


def reads_cache(kind: str) -> bool:
    """Whether a regime of this kind trains from cached backbone states (one forward, shared)."""
    return kind in ("frozen", "topk")


# The feature cache's storage: what a run reading it depends on besides the states it reads.
CACHE_DTYPE = "float16"
MAX_BATCH_TOKENS = 8192


def cache_spec(config: dict, model: str) -> dict:
    """The feature cache of one model: enough final states for every cached regime that uses it."""
    from .topk import layers_to_cache

    ks = {trained_layers(config, Run("", model, regime, "", 0, "", 0)) for grid in config["study"]
          if model in grid["models"] for regime in grid["regimes"]
          if regime_kind(regime, config["regimes"][regime]) == "topk"}
    return {"layers": layers_to_cache(config.get("cache_layers", 4), sorted(ks)), "dtype": CACHE_DTYPE,
            "max_batch_tokens": MAX_BATCH_TOKENS}


def trained_layers(config: dict, run: Run) -> int:
    """How many transformer layers a run trains: 0 (frozen), k (topk), every layer for ``all``."""
    from .topk import resolve_trainable_layers

    regime = config["regimes"][run.regime]
    if regime_kind(run.regime, regime) == "frozen":
        return 0
    k = resolve_trainable_layers(regime.get("trainable_layers", 0), run.model)
    if k == "all":
        layers = model_layers(config["models"][run.model])
        if layers is None:
            raise ConfigError(f"models.{run.model}.layers", "needed to resolve trainable_layers: all")
        return int(layers)
    return int(k)


def _check_pooling(name: str, family: str, key: str, model: str | None = None) -> None:
    from .pooling import POOLINGS, applicable

    if name not in POOLINGS:
        raise ConfigError(key, f"unknown pooling {name!r}; registered: {sorted(POOLINGS)}")
    if not applicable(name, family):
        who = f"model {model!r} ({family})" if model else f"the {family} family"
        raise ConfigError(key, f"pooling {name!r} does not apply to {who}")


def expand(config: dict) -> list[Run]:
    """Every run of the study, in a stable order, without duplicates."""
    runs = []
    for grid in config["study"]:
        for d, m, r, t, n, s in itertools.product(grid["datasets"], grid["models"], grid["regimes"],
                                                   grid["truncations"], grid["max_len"], grid["seeds"]):
            for p in poolings_for(config, grid, m):
                runs.append(Run(d, m, r, t, n, p, s))
    return list(dict.fromkeys(runs))


# --------------------------------------------------------------------------------------------
# Canonical specs: every setting a job uses reaches it as one rule param (sorted-key JSON), so
# Snakemake's params trigger reruns exactly the jobs whose settings changed, and nothing else.
# --------------------------------------------------------------------------------------------

# Bump when a change to the training code (loop, heads, metrics) changes what every run computes.
# A change to one pooling's computation bumps that pooling's own ``version`` instead.
TRAIN_VERSION = 2  # 2: frozen heads fitted to their optimum (poolbench.heads)


def canonical(obj) -> str:
    """Canonical JSON (sorted keys, no whitespace): equal settings give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def regime_settings(config: dict, run: Run) -> dict:
    """The settings of a run's regime that its job reads, with the code's defaults filled in.

    The defaults live once, in :class:`poolbench.train.TrainConfig` and :class:`poolbench.heads.HeadConfig`;
    here they are resolved into the spec, so changing a default reruns what it changes. A frozen run reads
    the head settings of its path (logistic regression for a fixed pooling; for a learned one, early-stopped
    training over ``head.lr_grid``, which replaces the regime's ``lr``); a fine-tuned run reads every training
    setting, with ``trainable_layers`` resolved for its model.
    """
    from dataclasses import asdict, fields

    from .heads import LEARNED_HEAD_SETTINGS, LEARNED_TRAIN_SETTINGS, LOGISTIC_HEAD_SETTINGS, HeadConfig
    from .pooling import learned
    from .train import TrainConfig

    regime = config["regimes"][run.regime]
    defaults = TrainConfig()
    train = {f.name: regime.get(f.name, getattr(defaults, f.name)) for f in fields(TrainConfig) if f.name != "options"}
    if regime_kind(run.regime, regime) == "frozen":
        head = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(HeadConfig.from_dict(regime.get("head"))).items()}
        family = config["models"][run.model]["family"]
        options = config.get("pooling_options", {}).get(run.pooling, {})
        if learned(run.pooling, family, config.get("cache_layers", 4), options):
            return {**{k: train[k] for k in LEARNED_TRAIN_SETTINGS},
                    "head": {k: head[k] for k in LEARNED_HEAD_SETTINGS}}
        return {"head": {k: head[k] for k in LOGISTIC_HEAD_SETTINGS}}
    from .topk import resolve_trainable_layers

    train["trainable_layers"] = resolve_trainable_layers(regime.get("trainable_layers", 0), run.model)
    grid = train.get("lr_grid")
    if isinstance(grid, dict):  # {model: [lr, ...]}
        if run.model not in grid:
            raise ConfigError(f"regimes.{run.regime}.lr_grid", f"names no learning rates for model {run.model!r}")
        grid = grid[run.model]
    if grid is not None:
        train["lr_grid"] = sorted(float(lr) for lr in grid)
    if "init_from" in regime:
        train["init_from"] = regime["init_from"]
    return train


def run_cache_spec(config: dict, run: Run) -> dict:
    """The cached states a run reads (frozen: the last ``cache_layers``; topk: also the entry state of its
    trained layers) and how they are stored; other runs of the model may need more layers of the same cache."""
    from .topk import layers_to_cache

    ks = [trained_layers(config, run)] if regime_kind(run.regime, config["regimes"][run.regime]) == "topk" else []
    return {"layers": layers_to_cache(config.get("cache_layers", 4), ks), "dtype": CACHE_DTYPE,
            "max_batch_tokens": MAX_BATCH_TOKENS}


def run_spec(config: dict, run: Run) -> dict:
    """Everything one run reads besides its input files, resolved from the config and the code's defaults.

    Only what the run's job reads is here: the evaluation sets it is later scored on (``transfer``) are not
    (each evaluation has its own spec, :func:`evaluation_spec`). A regime with ``init_from`` adds the spec of
    the frozen run it starts from (``init_from``), so a change to that run's settings reruns this one too.
    """
    from .pooling import POOLINGS

    kind = regime_kind(run.regime, config["regimes"][run.regime])
    spec = {
        "run": run.wildcards(),
        "family": config["models"][run.model]["family"],
        "model": config["models"][run.model],
        "kind": kind,
        "regime": regime_settings(config, run),
        "trained_layers": trained_layers(config, run),
        "pooling": {"name": run.pooling, "version": POOLINGS[run.pooling].version,
                    "options": config.get("pooling_options", {}).get(run.pooling, {})},
        "cache_layers": config.get("cache_layers", 4),
        "data": {split: dataset_spec(config, run.dataset, split) for split in ("train", "test")},
        "train_version": TRAIN_VERSION,
    }
    if reads_cache(kind):
        spec["cache"] = run_cache_spec(config, run)
    counterpart = init_counterpart(config, run)
    if counterpart is not None:
        spec["init_from"] = run_spec(config, counterpart)
    return spec


def dataset_spec(config: dict, name: str, split: str) -> dict:
    """What one split of a dataset depends on: an IMDB subset's size and seed (and the sets it leaves out); an
    evaluation set's settings and version (:func:`poolbench.evalsets.spec`)."""
    if name == "imdb":
        return subset_spec(config, name, split)
    from . import evalsets

    settings = config.get("datasets", {}).get(name)
    return evalsets.spec(name, settings) if name in evalsets.REGISTRY else {"settings": settings or {}}


def evaluation_spec(config: dict, run: Run, evalset: str) -> dict:
    """What scoring a trained run on a further evaluation set reads: the run and the set's test split."""
    return {"run": run_spec(config, run), "evalset": {"name": evalset, **dataset_spec(config, evalset, "test")}}


def subset_spec(config: dict, dataset: str, split: str) -> dict:
    """What one IMDB subset depends on: its own size and seed (not the other split's) and, for the training
    split only and only when ``exclude`` is set, the specs of the evaluation sets whose reviews it leaves out."""
    from . import evalsets

    spec = config["datasets"][dataset]
    out = {"size": spec[f"{split}_size"], "seed": spec["seed"] + (0 if split == "train" else 1)}
    if split == "train" and spec.get("exclude"):
        out["exclude"] = {name: evalsets.spec(name, config["datasets"].get(name)) for name in spec["exclude"]}
    return out


# --------------------------------------------------------------------------------------------
# Reruns that are exact on a fresh clone too. Snakemake's params trigger compares a job's settings
# with its own records in .snakemake/, which a fresh clone lacks. So every job with committed outputs
# (train, evaluate) reads its spec from a small file, a rule input (a "stamp"), whose mtime says whether
# the committed outputs were made with it: the epoch when they were (nothing to do), now when not
# (Snakemake's mtime trigger reruns the job). The comparison is with the spec each output records.
# --------------------------------------------------------------------------------------------

SPEC_METADATA = b"poolbench.spec"  # key of a transfer parquet's schema metadata: the evaluation spec


def recorded_run_spec(metrics_path: str | Path) -> dict | None:
    """The spec a committed run recorded in its metrics.json, or None when there is no such file."""
    path = Path(metrics_path)
    return json.loads(path.read_text()).get("spec") if path.is_file() else None


def recorded_evaluation_spec(parquet_path: str | Path) -> dict | None:
    """The evaluation spec a transfer parquet recorded in its schema metadata, or None (none recorded)."""
    import pyarrow.parquet as pq

    path = Path(parquet_path)
    if not path.is_file():
        return None
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[SPEC_METADATA]) if SPEC_METADATA in meta else None


def stamp(path: str | Path, spec: dict, current: bool) -> bool:
    """Write ``spec`` to ``path`` (only when its content differs) and date it: the epoch when ``current``
    (the outputs it feeds were made with it), now otherwise. Returns ``current``."""
    path = Path(path)
    text = canonical(spec)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    if current:
        os.utime(path, (0, 0))
    elif path.stat().st_mtime == 0:
        os.utime(path)
    return current


def read_stamp(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
