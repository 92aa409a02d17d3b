"""Class fidelity, train-on-synthetic and marker fidelity of fold k's synthetic versions."""
from pathlib import Path

from hepred.io import read_json
from hepred.labels import read_labels
from hepred.synth.fidelity import write_fidelity
from hepred.workflow import run_script


def main(smk):
    fold_index = int(smk.wildcards.fold)
    write_fidelity(
        preprocess_dir=Path(smk.params.preprocess_dir),
        manifest_path=Path(smk.input.manifest),
        fold_index=fold_index,
        fold=read_json(smk.input.splits)["folds"][fold_index],
        labels=read_labels(smk.input.labels),
        min_lesion_pixels=int(smk.params.min_lesion_pixels),
        radiomics_settings=smk.params.radiomics,
        method=smk.params.method,
        out_dir=Path(smk.output.scores).parent,
        seed=smk.params.seed + fold_index,
    )


run_script(snakemake, main)  # noqa: F821
