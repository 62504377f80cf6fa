# One backbone forward per (dataset, model, truncation, max_len, split), shared by all poolings and seeds.


rule features:
    input:
        model=S(paths.MODEL),
        data=S(paths.DATASET),
    output:
        directory(S(paths.FEATURES)),
    log:
        S("logs/features/{dataset}/{model}/{truncation}-{max_len}/{split}.log"),
    params:
        spec=spec_of_features,
    threads: threads("heavy")
    resources:
        mem_mb=res("features", "mem_mb", 8000),
        runtime=res("features", "runtime", 120),
        gpu=res("features", "gpu", 0),
    conda:
        ENV
    script:
        JOB_SCRIPT
