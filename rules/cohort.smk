# Cohort-level tables: HE labels and the cross-validation splits (written once).


rule labels:
    input:
        sheet=SHEET,
        meta=expand(f"{RESULTS}/ingest/{{case}}/meta.json", case=CASES),
    output:
        f"{RESULTS}/labels.csv",
    params:
        rule=config["labels"],
    log:
        f"{RESULTS}/logs/labels.log",
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/labels.py"


rule folds:
    input:
        # ancient: the splits are made once; regenerating labels must not reshuffle them.
        labels=ancient(f"{RESULTS}/labels.csv"),
    output:
        f"{RESULTS}/folds/splits.json",
    params:
        folds=config["folds"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/folds.log",
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/folds.py"
