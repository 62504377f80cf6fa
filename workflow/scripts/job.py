# The script of every rule: hand the job to poolbench.jobs.<rule name>. Logic lives in src/poolbench.
from poolbench import jobs

jobs.run(snakemake)  # noqa: F821 (the object Snakemake injects)
