from poolbench.jobs import figures

figures(snakemake)  # noqa: F821 (the object Snakemake injects)
