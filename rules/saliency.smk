# Where the network looks: Grad-CAM of each fold model on its test patients' most predictive
# slices, as PNG and as a NIfTI overlay on each patient's CT.


rule saliency:
    input:
        model=f"{RESULTS}/fold_{{fold}}/classifier/{SALIENCY_SCENARIO}/model.pt",
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        hu=all_preprocessed("hu.npy"),
        lesion=all_preprocessed("lesion.npy"),
        info=all_preprocessed("info.json"),
        ct=expand(f"{RESULTS}/ingest/{{case}}/ct.nii.gz", case=CASES),
    output:
        # Per test patient {case}_gradcam.png and _gradcam.nii.gz, and index.csv.
        directory(f"{RESULTS}/fold_{{fold}}/saliency/{SALIENCY_SCENARIO}"),
    log:
        f"{RESULTS}/logs/fold_{{fold}}/saliency.log",
    conda:
        "../envs/hepred.yaml"
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        slices=config["report"]["saliency_slices"],
        preprocess_dir=preprocess_folder,
    script:
        "../workflow_scripts/saliency.py"
