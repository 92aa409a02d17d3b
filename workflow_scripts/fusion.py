"""Fold k's fusion of the configured patient-level models with the configured image scenario."""
from pathlib import Path

from hepred.baselines import train_fusion
from hepred.io import read_json
from hepred.labels import read_labels
from hepred.workflow import run_script


def main(smk):
    fold_index = int(smk.wildcards.fold)
    train_fusion(
        fold_index=fold_index,
        fold=read_json(smk.input.splits)["folds"][fold_index],
        labels=read_labels(smk.input.labels),
        feature_files=[Path(p) for p in smk.input.features],
        baseline_models=[Path(p) for p in smk.input.baseline_models],
        image_test=Path(smk.input.image_test),
        image_validation=Path(smk.input.image_validation),
        out_dir=Path(smk.output[0]).parent,
        marker_files=[Path(p) for p in smk.input.markers],
    )


run_script(snakemake, main)  # noqa: F821
