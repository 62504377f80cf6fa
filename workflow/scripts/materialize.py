from poolbench.jobs import materialize

materialize(snakemake)  # noqa: F821 (the object Snakemake injects)
