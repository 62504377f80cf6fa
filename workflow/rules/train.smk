# One job per run (dataset, model, regime, truncation, max_len, pooling, seed), and one evaluation
# job per run and further evaluation set (`transfer` in the config).


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=R(paths.METRICS),
        predictions=R(paths.PREDICTIONS),
        weights=S(paths.WEIGHTS),
    log:
        S(f"logs/{paths.RUN}.log"),
    params:
        spec=spec_of_run,
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
        predictions=R(paths.TRANSFER),
    log:
        S(f"logs/{paths.RUN}.eval-{{evalset}}.log"),
    params:
        spec=spec_of_run,
    threads: train_threads
    resources:
        mem_mb=train_res("mem_mb", 6000),
        runtime=train_res("runtime", 60),
        gpu=train_res("gpu", 0),
    conda:
        ENV
    script:
        JOB_SCRIPT
