# Datasets: fixed stratified IMDB subsets and the generated tail-sentiment probe.


rule imdb_subset:
    output:
        S(paths.DATASET, dataset="imdb", split="{split}"),
    log:
        S("logs/data/imdb_{split}.log"),
    params:
        spec=spec_of_subset,  # this split's size and seed only
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


# The probe's datasheet and checks are committed (update(): kept while the job runs, restored if it
# fails); its data lives in resources. A fresh clone rebuilds the data only when a job that needs it runs.
rule tailprobe:
    input:
        unpack(probe_tokenizers),
        audit=ancient(PROBE_AUDIT),
    output:
        train=S(paths.DATASET, dataset="tailprobe", split="train"),
        test=S(paths.DATASET, dataset="tailprobe", split="test"),
        checks=update(R("data/tailprobe_checks.json")),
        datasheet=update(R("data/TAILPROBE.md")),
        baselines=update(R("data/tailprobe_baselines.csv")),
    log:
        S("logs/data/tailprobe.log"),
    params:
        spec=spec_of_probe,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        ENV
    script:
        JOB_SCRIPT


# An evaluation set only: IMDB test reviews whose last (or first) sentence decides against the body.
rule naturaltail:
    output:
        test=S(paths.DATASET, dataset="naturaltail", split="test"),
        checks=update(R("data/naturaltail_checks.json")),
        datasheet=update(R("data/NATURALTAIL.md")),
    log:
        S("logs/data/naturaltail.log"),
    params:
        spec=spec_of_natural,
    threads: threads("heavy")
    resources:
        mem_mb=8000,
        runtime=40,
    conda:
        ENV
    script:
        JOB_SCRIPT


# Every evaluation set with a loader in poolbench.evalsets (CAD, SST-2, the crowd set, ...): one rule
# for all of them. Adding such a set is its registry entry and a `transfer` line, nothing here.
rule evalset:
    output:
        test=S(paths.DATASET, dataset="{evalset}", split="test"),
    wildcard_constraints:
        evalset="|".join(loaded_sets()),
    log:
        S("logs/data/evalset_{evalset}.log"),
    params:
        spec=spec_of_loaded_set,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        JOB_SCRIPT


# Its datasheet (provenance and counts) and the IMDB bag-of-words baseline's predictions, committed.
rule evalset_report:
    input:
        unpack(report_inputs),
    output:
        datasheet=update(R("data/{evalset}.md")),
        baseline=update(R(paths.BASELINE)),
    wildcard_constraints:
        evalset="|".join(loaded_sets()),
    log:
        S("logs/data/evalset_report_{evalset}.log"),
    params:
        spec=spec_of_loaded_set,
    threads: 1
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        ENV
    script:
        JOB_SCRIPT
