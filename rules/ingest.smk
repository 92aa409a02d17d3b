# DICOM folder or NIfTI -> CT in HU on a regular grid, lesion mask on that grid, metadata.


rule ingest:
    input:
        sheet=SHEET,
        case_files=case_inputs,
    output:
        ct=f"{RESULTS}/ingest/{{case}}/ct.nii.gz",
        lesion=f"{RESULTS}/ingest/{{case}}/lesion.nii.gz",
        meta=f"{RESULTS}/ingest/{{case}}/meta.json",
    log:
        f"{RESULTS}/logs/ingest/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{case}}.tsv"
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        lesion_labels=config["ingest"]["lesion_labels"],
    script:
        "../workflow_scripts/ingest.py"
