from poolbench.jobs import features

features(snakemake)  # noqa: F821 (the object Snakemake injects)
