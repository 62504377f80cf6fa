from poolbench.jobs import aggregate

aggregate(snakemake)  # noqa: F821 (the object Snakemake injects)
