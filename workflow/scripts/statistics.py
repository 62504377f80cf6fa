from poolbench.jobs import statistics

statistics(snakemake)  # noqa: F821 (the object Snakemake injects)
