# Stage two: per fold and scenario, an EfficientNet-B0 on slice + lesion mask.


rule train_classifier:
    input:
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        hu=all_preprocessed("hu.npy"),
        lesion=all_preprocessed("lesion.npy"),
        info=all_preprocessed("info.json"),
        synthetic=synthetic_manifest_if_needed,
    output:
        # checkpoint_latest.pt lives beside these while training runs; the predictions come last.
        model=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/model.pt",
        trained_with=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/trained_with.json",
        slices=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_slices.csv",
        patients=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_patients.csv",
        validation=f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_validation.csv",
        curve=report(
            f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/curve.png",
            category="Classifier",
            subcategory="Training curves",
            caption="../report/training_curve.rst",
            labels={"fold": "{fold}", "scenario": "{scenario}"},
        ),
    log:
        f"{RESULTS}/logs/fold_{{fold}}/train_classifier_{{scenario}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fold_{{fold}}/train_classifier_{{scenario}}.tsv"
    wildcard_constraints:
        scenario=r"(null_)?t\d+",
    conda:
        "../envs/hepred.yaml"
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=config["resources"]["gpu"],
    # Only what changes the model. The speed settings (classifier.num_workers, device, threads)
    # are read from the config by the job and recorded in trained_with.json: changing them
    # reruns nothing. Nor does adding a scenario rerun the others.
    params:
        classifier=classifier_result_settings(config["classifier"]),
        preprocess=config["preprocess"],
        preprocess_dir=preprocess_folder,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_classifier.py"
