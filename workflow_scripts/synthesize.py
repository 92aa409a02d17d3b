"""Write N synthetic versions of each of fold k's training cases, with manifest and QC."""
from pathlib import Path

from hepred.io import read_json
from hepred.labels import read_labels
from hepred.synth import synthesize
from hepred.workflow import run_script


def main(smk):
    fold = read_json(smk.input.splits)["folds"][int(smk.wildcards.fold)]
    synthesize(
        preprocess_dir=Path(smk.params.preprocess_dir),
        train_cases=fold["train"],
        labels=read_labels(smk.input.labels),
        model_path=Path(smk.input.model),
        # Speed settings from the config, so that changing them reruns nothing.
        cfg={**smk.params.synthesis, "sample_batch_size": smk.config["synthesis"]["sample_batch_size"]},
        out_dir=Path(smk.output.manifest).parent,
        seed=smk.params.seed + int(smk.wildcards.fold),
        device=smk.config["device"],
        fold=fold,
    )


run_script(snakemake, main)  # noqa: F821
