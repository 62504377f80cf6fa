"""Semantic checks of a study config and its expansion into runs.

The JSON schema (``workflow/config/schema.yaml``) checks structure; :func:`check` checks what a
schema cannot: that names refer to things that exist (registered poolings, configured models and
datasets), that a pooling applies to a model's family, and that sizes fit the models and data.
Every error names the offending config key. The Snakefile calls it before any job runs.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass

from . import arch
from .pooling import POOLINGS, applicable

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


def model_layers(spec: dict) -> int | None:
    src = spec["source"]
    return src.get("layers", 2) if src["type"] == "random" else spec.get("layers")


def model_max_positions(spec: dict) -> int | None:
    src = spec["source"]
    return arch.get(src["arch"]).random_positions if src["type"] == "random" else spec.get("max_positions")


def poolings_for(config: dict, grid: dict, model: str) -> list[str]:
    family = config["models"][model]["family"]
    return list(grid.get("poolings") or config["poolings"].get(family, []))


def check(config: dict) -> None:
    """Raise :class:`ConfigError` for the first semantic problem found."""
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
    for name in config.get("pooling_options", {}):
        if name not in POOLINGS:
            raise ConfigError(f"pooling_options.{name}", f"unknown pooling {name!r}; registered: {sorted(POOLINGS)}")
    layers_needed = config.get("pooling_options", {}).get("layers_concat", {}).get("layers", 1)
    cache_layers = config.get("cache_layers", 4)
    if layers_needed > cache_layers:
        raise ConfigError("pooling_options.layers_concat.layers",
                          f"{layers_needed} layers but cache_layers is {cache_layers}")
    for source, targets in config.get("transfer", {}).items():
        for t in [source, *targets]:
            if t not in datasets:
                raise ConfigError(f"transfer.{source}", f"dataset {t!r} is not configured under datasets")

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
            names = poolings_for(config, grid, m)
            if not names:
                raise ConfigError(f"poolings.{spec['family']}", f"no poolings listed for family {spec['family']!r}")
            if "poolings" in grid:
                for j, name in enumerate(names):
                    _check_pooling(name, spec["family"], f"{key}.poolings[{j}]", m)
    _check_init_from(config)


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


def cache_spec(config: dict, model: str) -> dict:
    """The feature cache of one model: enough final states for every cached regime that uses it."""
    from .topk import layers_to_cache, resolve_trainable_layers

    ks = {resolve_trainable_layers(config["regimes"][regime].get("trainable_layers", 0), model)
          for grid in config["study"] if model in grid["models"] for regime in grid["regimes"]
          if regime_kind(regime, config["regimes"][regime]) == "topk"}
    return {"layers": layers_to_cache(config.get("cache_layers", 4), sorted(ks)), "dtype": "float16",
            "max_batch_tokens": 8192}


def _check_pooling(name: str, family: str, key: str, model: str | None = None) -> None:
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


def run_spec(config: dict, run: Run) -> dict:
    """Everything one run depends on besides its input files, resolved from the config.

    A regime with ``init_from`` adds the spec of the frozen run it starts from (``init_from``), so a
    change to that run's settings reruns this one too; without it, no key is added.
    """
    from .pooling import POOLINGS

    spec = {
        "run": run.wildcards(),
        "family": config["models"][run.model]["family"],
        "model": config["models"][run.model],
        "kind": regime_kind(run.regime, config["regimes"][run.regime]),
        "regime": config["regimes"][run.regime],
        "cache": cache_spec(config, run.model),
        "pooling": {"name": run.pooling, "version": POOLINGS[run.pooling].version,
                    "options": config.get("pooling_options", {}).get(run.pooling, {})},
        "cache_layers": config.get("cache_layers", 4),
        "transfer": list(config.get("transfer", {}).get(run.dataset, [])),
        "train_version": TRAIN_VERSION,
    }
    counterpart = init_counterpart(config, run)
    if counterpart is not None:
        spec["init_from"] = run_spec(config, counterpart)
    return spec


def subset_spec(config: dict, dataset: str, split: str) -> dict:
    """What one IMDB subset depends on: its own size and seed (not the other split's)."""
    spec = config["datasets"][dataset]
    return {"size": spec[f"{split}_size"], "seed": spec["seed"] + (0 if split == "train" else 1)}


def committed_runs(config: dict, runs: list[Run], results_dir: str) -> tuple[set[Run], list[Run]]:
    """(runs whose committed results are current, runs whose recorded spec differs from the config).

    A run counts as current when its ``metrics.json`` exists and records today's spec, or records
    none (made before specs were recorded: there is nothing to compare).
    """
    from .paths import run_dir

    current, stale = set(), []
    for run in runs:
        path = run_dir(results_dir, **run.wildcards()) / "metrics.json"
        if path.is_file():
            recorded = json.loads(path.read_text()).get("spec")
            if recorded is None or canonical(recorded) == canonical(run_spec(config, run)):
                current.add(run)
            else:
                stale.append(run)
    return current, stale
