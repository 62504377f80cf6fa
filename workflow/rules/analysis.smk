# Aggregation: one table row per run, statistics, figures, the paper's numbers and the paper.
# Every input is named by the rule; nothing re-derives a path from the config. The statistics, figures
# and paper_numbers jobs get the config's `statistics` section as params.spec (poolbench.analysis.settings).


rule aggregate:
    input:
        metrics=metrics_files(),
    output:
        runs=report(R("summary/runs.csv"), caption="../report/runs.rst", category="Tables"),
    log:
        S("logs/analysis/aggregate.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule figures:
    input:
        runs=R("summary/runs.csv"),
        stats=R("summary/pooling_stats.csv"),
    output:
        accuracy=report(R("figures/accuracy_by_pooling.png"), caption="../report/accuracy.rst", category="Figures"),
    log:
        S("logs/analysis/figures.log"),
    params:
        spec=canonical(config.get("statistics") or {}),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


# Training curves (train loss, dev loss and accuracy against the step) of the runs that early-stop on a
# dev split: a config with a `dev_fraction` in some fine-tuned regime gets this figure.
rule training_curves:
    input:
        metrics=curve_metrics_files(),
    output:
        figure=report(R("figures/training_curves.png"), caption="../report/training_curves.rst", category="Figures"),
    log:
        S("logs/analysis/training_curves.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule statistics:
    input:
        runs=R("summary/runs.csv"),
        predictions=prediction_files(),
        transfer=transfer_files("tailprobe"),
        natural=transfer_files("naturaltail"),
    output:
        pooling=report(R("summary/pooling_stats.csv"), caption="../report/pooling_stats.rst", category="Tables"),
        comparisons=report(R("summary/comparisons.csv"), caption="../report/comparisons.rst", category="Tables"),
        probe=report(R("summary/tailprobe_cells.csv"), caption="../report/tailprobe_cells.rst", category="Tables"),
        transfer=report(R("summary/transfer_tailprobe_cells.csv"), caption="../report/transfer_cells.rst",
                        category="Tables"),
        natural=report(R("summary/naturaltail_cells.csv"), caption="../report/naturaltail_cells.rst",
                       category="Tables") if uses_natural() else [],
        digest=R("summary/RESULTS.md"),
        figure=report(R("figures/tailprobe_by_position.png"), caption="../report/tailprobe.rst", category="Figures")
        if uses_probe() else [],
        ladder=report(R("summary/regime_ladder.csv"), caption="../report/ladder.rst", category="Tables")
        if uses_ladder() else [],
        ladder_figure=report(R("figures/regime_ladder.png"), caption="../report/ladder.rst", category="Figures")
        if uses_ladder() else [],
    log:
        S("logs/analysis/statistics.log"),
    params:
        spec=canonical(config.get("statistics") or {}),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule paper_numbers:
    input:
        runs=R("summary/runs.csv"),
        stats=R("summary/pooling_stats.csv"),
        comparisons=R("summary/comparisons.csv"),
        probe=R("summary/tailprobe_cells.csv"),
        transfer=R("summary/transfer_tailprobe_cells.csv"),
        checks=R("data/tailprobe_checks.json") if uses_probe() else [],
        natural=R("summary/naturaltail_cells.csv") if uses_natural() else [],
        ladder=R("summary/regime_ladder.csv") if uses_ladder() else [],
        attention=R("summary/verdict_attention.csv") if attention_runs() else [],
    output:
        numbers=P("numbers.tex"),
        imdb=P("tab_imdb.tex"),
        probe=P("tab_probe.tex"),
        probe_pooling=P("tab_probe_pooling.tex"),
        superlatives=P("tab_superlatives.tex"),
        regimes=P("tab_regimes.tex") if compares_regimes() else [],
        natural=P("tab_natural.tex") if uses_natural() else [],
    log:
        S("logs/analysis/paper_numbers.log"),
    params:
        spec=canonical(config.get("statistics") or {}),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


# Where [CLS] looks: its attention mass on the probe verdict per layer, and the attention pooling's
# weight on it, pretrained (frozen) against fine-tuned.
rule verdict_attention:
    input:
        unpack(attention_inputs),
    output:
        table=report(R("summary/verdict_attention.csv"), caption="../report/verdict_attention.rst", category="Tables"),
        figure=report(R("figures/verdict_attention.png"), caption="../report/verdict_attention.rst",
                      category="Figures"),
    log:
        S("logs/analysis/verdict_attention.log"),
    params:
        spec=spec_of_attention,
    threads: threads("heavy")
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        JOB_SCRIPT


# Not part of `all` (it needs LaTeX): `snakemake --cores 1 paper`.
rule paper:
    input:
        tex="paper/main.tex",
        generated=paper_files(),
        figures=[*figure_files(), *attention_figure()],
    output:
        "paper/main.pdf",
    log:
        S("logs/analysis/paper.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


# One cells table per loaded evaluation set: every run scored on it, and its bag-of-words baseline
# beside them (regime `baseline`), by the set's own cells function (poolbench.evalsets).
rule evalset_cells:
    input:
        predictions=lambda wc: transfer_files(wc.evalset),
        baseline=R(paths.BASELINE),
    output:
        cells=R("summary/{evalset}_cells.csv"),
    wildcard_constraints:
        evalset="|".join(loaded_sets()),
    log:
        S("logs/analysis/cells_{evalset}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        ENV
    script:
        JOB_SCRIPT
