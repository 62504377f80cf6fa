# One job per run: (dataset, model, regime, truncation, max_len, pooling, seed).


def train_inputs(wc):
    inputs = {"model": S(paths.MODEL, model=wc.model)}
    evals = [wc.dataset, *transfer_sets(wc.dataset)]
    splits = [(wc.dataset, "train")] + [(name, "test") for name in evals]
    for name, split in splits:
        inputs[f"data__{name}__{split}"] = S(paths.DATASET, dataset=name, split=split)
        if wc.regime == "frozen":
            inputs[f"feat__{name}__{split}"] = S(paths.FEATURES, dataset=name, model=wc.model,
                                                 truncation=wc.truncation, max_len=wc.max_len, split=split)
    return inputs


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=R(paths.RUN + "/metrics.json"),
        predictions=R(paths.RUN + "/predictions.parquet"),
    log:
        S("logs/" + paths.RUN + ".log"),
    params:
        transfer=lambda wc: transfer_sets(wc.dataset),
    threads: lambda wc: threads("heavy") if wc.regime == "finetune" else threads("light")
    resources:
        # config["resources"]["train_<regime>"] overrides config["resources"]["train"]
        mem_mb=lambda wc: res(f"train_{wc.regime}", "mem_mb", res("train", "mem_mb", 6000)),
        runtime=lambda wc: res(f"train_{wc.regime}", "runtime", res("train", "runtime", 60)),
        gpu=lambda wc: res(f"train_{wc.regime}", "gpu", res("train", "gpu", 0)),
    script:
        str(SCRIPTS / "train.py")
