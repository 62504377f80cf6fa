# Datasets: fixed stratified IMDB subsets and the generated tail-sentiment probe.


rule imdb_subset:
    output:
        S(paths.DATASET, dataset="imdb", split="{split}"),
    log:
        S("logs/data/imdb_{split}.log"),
    params:
        spec=lambda wc: config["datasets"]["imdb"],  # a size or seed change rebuilds the subset
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        str(SCRIPTS / "imdb_subset.py")


def probe_tokenizers(wildcards=None):
    names = config["datasets"].get("tailprobe", {}).get("tokenizers", [])
    return {f"tok__{name}": S(paths.TOKENIZER, model=name) for name in names}


rule tailprobe:
    input:
        unpack(probe_tokenizers),
    output:
        train=S(paths.DATASET, dataset="tailprobe", split="train"),
        test=S(paths.DATASET, dataset="tailprobe", split="test"),
        checks=R("data/tailprobe_checks.json"),
        datasheet=R("data/TAILPROBE.md"),
    log:
        S("logs/data/tailprobe.log"),
    params:
        spec=lambda wc: config["datasets"]["tailprobe"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        str(SCRIPTS / "tailprobe.py")


def probe_targets():
    used = any("tailprobe" in grid["datasets"] for grid in config["study"])
    return [R("data/tailprobe_checks.json"), R("data/TAILPROBE.md"), R("figures/tailprobe_by_position.png")] if used else []
