# Skull stripping, windowing, in-plane resampling; a per-case on-disk cache for training.


rule preprocess:
    input:
        ct=f"{RESULTS}/ingest/{{case}}/ct.nii.gz",
        lesion=f"{RESULTS}/ingest/{{case}}/lesion.nii.gz",
        # Read to name the user's own files in errors; ancient: editing the sheet's other
        # rows must not redo this case (its own files are ingest's inputs).
        sheet=ancient(SHEET),
    output:
        hu=f"{RESULTS}/preprocess/{{case}}/hu.npy",
        lesion=f"{RESULTS}/preprocess/{{case}}/lesion.npy",
        info=f"{RESULTS}/preprocess/{{case}}/info.json",
        brain_mask=f"{RESULTS}/preprocess/{{case}}/brain_mask.nii.gz",
        montage=report(
            f"{RESULTS}/preprocess/{{case}}/montage.png",
            category="Quality control",
            subcategory="Skull stripping",
            caption="../report/preprocess_montage.rst",
            labels={"case": "{case}"},
        ),
    log:
        f"{RESULTS}/logs/preprocess/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{case}}.tsv"
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        # Not the windows: they are applied as the classifier reads slices, and a change of
        # window must not redo every case.
        preprocess={k: v for k, v in config["preprocess"].items() if k != "windows"},
    script:
        "../workflow_scripts/preprocess.py"
