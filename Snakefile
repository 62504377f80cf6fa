# poolbench: which summary of a transformer's hidden states should feed a sentiment classifier?
# Thin on purpose: configuration, validation, includes, and the target list. Logic lives in
# src/poolbench; rules in workflow/rules call it through workflow/scripts/job.py.
from snakemake.utils import min_version, validate

min_version("9.0")


# A config given with --configfile replaces the default one entirely (each is self-contained).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/workflow/config/default.yaml"


validate(config, "workflow/config/schema.yaml")


report: "workflow/report/workflow.rst"


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    evalset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_.-]+",
    regime="[A-Za-z0-9_]+",
    truncation="head|tail|head_tail",
    max_len=r"\d+",
    pooling="[A-Za-z0-9_]+",
    seed=r"\d+",
    split="train|test",


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        all_targets(),
    default_target: True
