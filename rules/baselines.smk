# Reference models beside the image scenarios, on the same folds: lesion volume, radiomics,
# the clinical NCCT markers, and their fusion with an image scenario (the null
# control is a train_classifier job).


rule radiomics_features:
    input:
        ct=f"{RESULTS}/ingest/{{case}}/ct.nii.gz",
        lesion=f"{RESULTS}/ingest/{{case}}/lesion.nii.gz",
        # Read to name the user's own files in errors; ancient: editing the sheet's other
        # rows must not redo this case (its own files are ingest's inputs).
        sheet=ancient(SHEET),
    output:
        f"{RESULTS}/radiomics/{{case}}/features.csv",
    log:
        f"{RESULTS}/logs/radiomics/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/radiomics/{{case}}.tsv"
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        # Texture settings only: the model settings (inner_folds) must not redo every case.
        radiomics={
            k: v
            for k, v in config["baselines"]["radiomics"].items()
            if k != "inner_folds"
        },
    script:
        "../workflow_scripts/radiomics_features.py"


rule marker_features:
    input:
        ct=f"{RESULTS}/ingest/{{case}}/ct.nii.gz",
        lesion=f"{RESULTS}/ingest/{{case}}/lesion.nii.gz",
        sheet=ancient(SHEET),
    output:
        f"{RESULTS}/markers/{{case}}/features.csv",
    log:
        f"{RESULTS}/logs/markers/{{case}}.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        # The markers this hepred measures: a release that measures others reruns every case
        # (the package is not an input, so its changes alone would not).
        features=list(MARKER_FEATURES),
    script:
        "../workflow_scripts/marker_features.py"


rule train_baseline:
    input:
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        features=expand(f"{RESULTS}/radiomics/{{case}}/features.csv", case=CASES),
        markers=expand(f"{RESULTS}/markers/{{case}}/features.csv", case=CASES),
    output:
        model=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/model.pkl",
        patients=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_patients.csv",
    log:
        f"{RESULTS}/logs/fold_{{fold}}/train_baseline_{{scenario}}.log",
    wildcard_constraints:
        # Every baseline the schema knows, not the configured ones: with none configured an
        # empty pattern would let this rule claim every scenario.
        scenario="volume|radiomics|markers",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=config["baselines"]["radiomics"],
        seed=config["seed"],
    script:
        "../workflow_scripts/train_baseline.py"


rule fusion:
    input:
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        features=expand(f"{RESULTS}/radiomics/{{case}}/features.csv", case=CASES),
        markers=expand(f"{RESULTS}/markers/{{case}}/features.csv", case=CASES),
        # In the configured order: the first model's logit scale is the fusion's.
        baseline_models=[
            f"{RESULTS}/fold_{{fold}}/classifier/{model}/model.pkl"
            for model in config["baselines"]["fusion_models"]
        ],
        image_test=f"{RESULTS}/fold_{{fold}}/classifier/{FUSION_IMAGE}/predictions_patients.csv",
        image_validation=f"{RESULTS}/fold_{{fold}}/classifier/{FUSION_IMAGE}/predictions_validation.csv",
    output:
        scale=f"{RESULTS}/fold_{{fold}}/classifier/fusion/fusion.json",
        patients=f"{RESULTS}/fold_{{fold}}/classifier/fusion/predictions_patients.csv",
    log:
        f"{RESULTS}/logs/fold_{{fold}}/fusion.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/fusion.py"
