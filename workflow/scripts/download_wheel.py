from poolbench.jobs import download_wheel

download_wheel(snakemake)  # noqa: F821 (the object Snakemake injects)
