# Cohort-level tables: HE labels and the cross-validation splits (written once).


rule labels:
    input:
        sheet=SHEET,
        meta=expand(f"{RESULTS}/ingest/{{case}}/meta.json", case=CASES),
    output:
        f"{RESULTS}/labels.csv",
    log:
        f"{RESULTS}/logs/labels.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        rule=config["labels"],
    script:
        "../workflow_scripts/labels.py"


rule folds:
    input:
        # ancient: the splits are made once; regenerating labels must not reshuffle them.
        labels=ancient(f"{RESULTS}/labels.csv"),
    output:
        f"{RESULTS}/folds/splits.json",
    log:
        f"{RESULTS}/logs/folds.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../workflow_scripts/folds.py"
