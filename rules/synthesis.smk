# Stage one: per fold, a generative model trained on the fold's training patients only,
# then N synthetic versions of every training case written to disk.


rule train_generator:
    input:
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        hu=all_preprocessed("hu.npy"),
        lesion=all_preprocessed("lesion.npy"),
        info=all_preprocessed("info.json"),
    output:
        # checkpoint_latest.pt lives beside it, undeclared, so a rerun resumes from it.
        model=f"{RESULTS}/fold_{{fold}}/generator/model.pt",
        trained_on=f"{RESULTS}/fold_{{fold}}/generator/trained_on.json",
        loss=report(
            f"{RESULTS}/fold_{{fold}}/generator/loss.csv",
            category="Synthesis",
            subcategory="Generator training",
            labels={"fold": "{fold}", "table": "loss"},
        ),
    log:
        f"{RESULTS}/logs/fold_{{fold}}/train_generator.log",
    benchmark:
        f"{RESULTS}/benchmarks/fold_{{fold}}/train_generator.tsv"
    # First: the generator and its synthesis are on the path to every t3/t5 job of the fold.
    priority: 10
    conda:
        "../envs/hepred.yaml"
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=config["resources"]["gpu"],
    # Only what the trained generator depends on (not versions or sampling settings); the
    # device and threads are read from the config by the job and recorded beside the model.
    params:
        synthesis=generator_model_settings(config["synthesis"]),
        preprocess_dir=preprocess_folder,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_generator.py"


rule synthesize:
    input:
        model=f"{RESULTS}/fold_{{fold}}/generator/model.pt",
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        hu=all_preprocessed("hu.npy"),
        lesion=all_preprocessed("lesion.npy"),
        info=all_preprocessed("info.json"),
    output:
        manifest=f"{RESULTS}/fold_{{fold}}/synthetic/manifest.csv",
        montage=report(
            f"{RESULTS}/fold_{{fold}}/synthetic/qc/montage.png",
            category="Synthesis",
            subcategory="Real versus synthetic",
            caption="../report/synthesis_montage.rst",
            labels={"fold": "{fold}"},
        ),
    log:
        f"{RESULTS}/logs/fold_{{fold}}/synthesize.log",
    benchmark:
        f"{RESULTS}/benchmarks/fold_{{fold}}/synthesize.tsv"
    # First: the generator and its synthesis are on the path to every t3/t5 job of the fold.
    priority: 10
    conda:
        "../envs/hepred.yaml"
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=config["resources"]["gpu"],
    # The speed settings (synthesis.sample_batch_size, device, threads) are read from the
    # config by the job: changing them reruns nothing.
    params:
        synthesis=synthesis_result_settings(config["synthesis"]),
        preprocess_dir=preprocess_folder,
        seed=config["seed"],
    script:
        "../workflow_scripts/synthesize.py"


rule synthesis_fidelity:
    input:
        manifest=f"{RESULTS}/fold_{{fold}}/synthetic/manifest.csv",
        splits=f"{RESULTS}/folds/splits.json",
        labels=f"{RESULTS}/labels.csv",
        hu=all_preprocessed("hu.npy"),
        lesion=all_preprocessed("lesion.npy"),
        info=all_preprocessed("info.json"),
    output:
        scores=f"{RESULTS}/fold_{{fold}}/synthetic/qc/fidelity.json",
        logits=f"{RESULTS}/fold_{{fold}}/synthetic/qc/fidelity_logits.csv",
        markers=f"{RESULTS}/fold_{{fold}}/synthetic/qc/markers.csv",
        summary=f"{RESULTS}/fold_{{fold}}/synthetic/qc/marker_fidelity.csv",
        plot=report(
            f"{RESULTS}/fold_{{fold}}/synthetic/qc/markers.png",
            category="Synthesis",
            subcategory="Marker fidelity",
            caption="../report/synthesis_markers.rst",
            labels={"fold": "{fold}"},
        ),
    log:
        f"{RESULTS}/logs/fold_{{fold}}/synthesis_fidelity.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        radiomics=config["baselines"]["radiomics"],
        min_lesion_pixels=config["synthesis"]["min_lesion_pixels"],
        method=config["synthesis"]["method"],
        preprocess_dir=preprocess_folder,
        seed=config["seed"],
    script:
        "../workflow_scripts/synthesis_fidelity.py"
