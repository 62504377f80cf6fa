# One job per run (dataset, model, regime, truncation, max_len, pooling, seed), and one evaluation
# job per run and further evaluation set (`transfer` in the config). Each reads its settings from its
# spec file (input `spec`, written by common.smk's date_specs). The committed outputs are update():
# Snakemake keeps them until the job replaces them (each is written atomically) and restores them if
# the job fails, so a failed rerun loses nothing.


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=update(R(paths.METRICS)),
        predictions=update(R(paths.PREDICTIONS)),
        weights=S(paths.WEIGHTS),
    log:
        S(f"logs/{paths.RUN}.log"),
    threads: train_threads
    resources:
        mem_mb=train_res("mem_mb", 6000),
        runtime=train_res("runtime", 60),
        gpu=train_res("gpu", 0),
    conda:
        ENV
    script:
        JOB_SCRIPT


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        predictions=update(R(paths.TRANSFER)),
    log:
        S(f"logs/{paths.RUN}.eval-{{evalset}}.log"),
    threads: train_threads
    resources:
        mem_mb=train_res("mem_mb", 6000),
        runtime=train_res("runtime", 60),
        gpu=train_res("gpu", 0),
    conda:
        ENV
    script:
        JOB_SCRIPT
