"""Train fold k's EfficientNet-B0 for one scenario; write out-of-fold predictions."""
from pathlib import Path

from hepred.classifier.settings import SPEED_KEYS
from hepred.classifier.train import train_classifier
from hepred.io import read_json
from hepred.labels import read_labels
from hepred.workflow import run_script


def main(smk):
    fold_index = int(smk.wildcards.fold)
    fold = read_json(smk.input.splits)["folds"][fold_index]
    train_classifier(
        fold_index=fold_index,
        fold=fold,
        scenario=smk.wildcards.scenario,
        labels=read_labels(smk.input.labels),
        preprocess_dir=Path(smk.params.preprocess_dir),
        synthetic_manifest=Path(smk.input.synthetic) if smk.input.synthetic else None,
        # Speed settings from the config, so that changing them reruns nothing.
        cfg={**smk.params.classifier, **{key: smk.config["classifier"][key] for key in SPEED_KEYS}},
        preprocess_cfg=smk.params.preprocess,
        out_dir=Path(smk.output.patients).parent,
        seed=smk.params.seed + fold_index,
        device=smk.config["device"],
    )


run_script(snakemake, main)  # noqa: F821
