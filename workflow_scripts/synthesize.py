"""Write N synthetic versions of each of fold k's training cases, with manifest and QC."""
from pathlib import Path

from hepred.io import read_json
from hepred.labels import read_labels
from hepred.synth import synthesize
from hepred.workflow import run_script


def main(smk):
    fold = read_json(smk.input.splits)["folds"][int(smk.wildcards.fold)]
    results = Path(smk.input.splits).parent.parent
    synthesize(
        preprocess_dir=results / "preprocess",
        train_cases=fold["train"],
        labels=read_labels(smk.input.labels),
        model_path=Path(smk.input.model),
        cfg=smk.params.synthesis,
        out_dir=Path(smk.output.manifest).parent,
        seed=smk.params.seed + int(smk.wildcards.fold),
        device=smk.params.device,
        fold=fold,
    )


run_script(snakemake, main)  # noqa: F821
