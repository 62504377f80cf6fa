# Aggregation: one table row per run, statistics and figures.


rule aggregate:
    input:
        metrics=[out for run in RUNS for out in run_outputs(run)],
    output:
        runs=R("summary/runs.csv"),
    log:
        S("logs/analysis/aggregate.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        str(SCRIPTS / "aggregate.py")


rule figures:
    input:
        runs=R("summary/runs.csv"),
    output:
        accuracy=R("figures/accuracy_by_pooling.png"),
    log:
        S("logs/analysis/figures.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        str(SCRIPTS / "figures.py")


def uses_probe():
    return any("tailprobe" in grid["datasets"] for grid in config["study"])


rule statistics:
    input:
        runs=R("summary/runs.csv"),
        predictions=[R(paths.RUN + "/predictions.parquet", **run.wildcards()) for run in RUNS],
    output:
        pooling=R("summary/pooling_stats.csv"),
        probe=R("summary/tailprobe_cells.csv"),
        transfer=R("summary/transfer_tailprobe_cells.csv"),
        digest=R("summary/RESULTS.md"),
        figure=R("figures/tailprobe_by_position.png") if uses_probe() else [],
    log:
        S("logs/analysis/statistics.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        str(SCRIPTS / "statistics.py")


rule paper_numbers:
    input:
        runs=R("summary/runs.csv"),
        stats=R("summary/pooling_stats.csv"),
        probe=R("summary/tailprobe_cells.csv"),
        transfer=R("summary/transfer_tailprobe_cells.csv"),
        checks=R("data/tailprobe_checks.json") if uses_probe() else [],
    output:
        numbers=f"{config.get('paper_dir', 'paper/generated')}/numbers.tex",
        imdb=f"{config.get('paper_dir', 'paper/generated')}/tab_imdb.tex",
    log:
        S("logs/analysis/paper_numbers.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        str(SCRIPTS / "paper_numbers.py")
