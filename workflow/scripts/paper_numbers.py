from poolbench.jobs import paper_numbers

paper_numbers(snakemake)  # noqa: F821 (the object Snakemake injects)
