# Out-of-fold predictions -> metrics with confidence intervals, paired tests, plots.


rule statistics:
    input:
        expand(
            f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_patients.csv",
            fold=FOLDS,
            scenario=SCENARIOS,
        ),
    output:
        summary=report(
            f"{RESULTS}/statistics/summary.csv",
            # Not "Statistics": Snakemake's report already has a link target of that name.
            category="Scenario comparison",
            caption="../report/summary.rst",
        ),
        markdown=f"{RESULTS}/statistics/summary.md",
        metrics=f"{RESULTS}/statistics/metrics.json",
        sensitivity=f"{RESULTS}/statistics/rule_sensitivity.csv",
        roc=report(
            f"{RESULTS}/statistics/roc.png",
            category="Scenario comparison",
            caption="../report/roc.rst",
        ),
    log:
        f"{RESULTS}/logs/statistics.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        statistics=config["statistics"],
        seed=config["seed"],
        reference="t1",
    script:
        "../workflow_scripts/statistics.py"
