from poolbench.jobs import tailprobe

tailprobe(snakemake)  # noqa: F821 (the object Snakemake injects)
