"""Fit fold k's volume, radiomics or markers model on its training patients; score its test patients."""
from pathlib import Path

from hepred.baselines import train_baseline
from hepred.io import read_json
from hepred.labels import read_labels
from hepred.workflow import run_script


def main(smk):
    fold_index = int(smk.wildcards.fold)
    train_baseline(
        model=smk.wildcards.scenario,
        fold_index=fold_index,
        fold=read_json(smk.input.splits)["folds"][fold_index],
        labels=read_labels(smk.input.labels),
        feature_files=[Path(p) for p in smk.input.features],
        marker_files=[Path(p) for p in smk.input.markers],
        settings=smk.params.settings,
        out_dir=Path(smk.output.patients).parent,
        seed=smk.params.seed + fold_index,
    )


run_script(snakemake, main)  # noqa: F821
