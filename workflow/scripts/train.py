from poolbench.jobs import train

train(snakemake)  # noqa: F821 (the object Snakemake injects)
