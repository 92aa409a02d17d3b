# hepred: hematoma expansion prediction with per-fold synthetic CT.
# Rules live in rules/*.smk, logic in the hepred package; see README.md.
from snakemake.utils import min_version

# Tested with Snakemake 9 (its report, SLURM executor plugin and rerun triggers).
min_version("9.0")


configfile: "config.yaml"


# The landing page of `snakemake --report`.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/preprocess.smk"
include: "rules/cohort.smk"
include: "rules/synthesis.smk"
include: "rules/classifier.smk"
include: "rules/baselines.smk"
include: "rules/saliency.smk"
include: "rules/report.smk"
include: "rules/statistics.smk"


onstart:
    if workflow.local_exec:
        limit_training_to_local_gpus()


onsuccess:
    report_failed_cases(run_failed=False)


onerror:
    report_failed_cases(run_failed=True, snakemake_log=log)


rule all:
    default_target: True
    input:
        final_targets(),
