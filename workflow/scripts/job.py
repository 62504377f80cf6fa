# The script of every rule: hand the job to poolbench.jobs.<rule name>, in a warm worker process that has
# imported torch and poolbench once (poolbench.worker; POOLBENCH_WORKER=0 runs it here). Logic lives in src/poolbench.
from poolbench.worker import run_job

run_job(snakemake)  # noqa: F821 (the object Snakemake injects)
