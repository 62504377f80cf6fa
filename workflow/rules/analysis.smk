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
