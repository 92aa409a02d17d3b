"""Train fold k's generative model on that fold's training patients only."""
from pathlib import Path

from hepred.io import read_json
from hepred.labels import read_labels
from hepred.synth import train_generator
from hepred.workflow import run_script


def main(smk):
    fold = read_json(smk.input.splits)["folds"][int(smk.wildcards.fold)]
    model = Path(smk.output.model)
    train_generator(
        preprocess_dir=Path(smk.params.preprocess_dir),
        train_cases=fold["train"],
        labels=read_labels(smk.input.labels),
        cfg=smk.params.synthesis,
        model_path=model,
        checkpoint_path=model.with_name("checkpoint_latest.pt"),
        loss_csv=Path(smk.output.loss),
        seed=smk.params.seed + int(smk.wildcards.fold),
        # A speed setting from the config, so that changing it reruns nothing.
        device=smk.config["device"],
    )


run_script(snakemake, main)  # noqa: F821
