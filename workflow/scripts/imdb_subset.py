from poolbench.jobs import imdb_subset

imdb_subset(snakemake)  # noqa: F821 (the object Snakemake injects)
