"""Grad-CAM maps of fold k's model for its test patients (PNG, NIfTI on each CT grid)."""
from pathlib import Path

from hepred.classifier.data import original_sources
from hepred.classifier.model import load_classifier
from hepred.io import read_json
from hepred.labels import read_labels
from hepred.saliency import explain_cases
from hepred.training import select_device
from hepred.workflow import run_script


def main(smk):
    test_cases = read_json(smk.input.splits)["folds"][int(smk.wildcards.fold)]["test"]
    # A speed setting from the config, so that changing it reruns nothing. The job asks for no
    # GPU (Grad-CAM of a few slices is cheap): it takes one only where it sees one.
    device = select_device("cpu" if smk.config["device"] == "cpu" else "auto")
    model = load_classifier(Path(smk.input.model), device)
    cts = {Path(path).parent.name: Path(path) for path in smk.input.ct}
    explain_cases(
        [model],
        original_sources(test_cases, read_labels(smk.input.labels), Path(smk.params.preprocess_dir)),
        model[1]["preprocess"]["windows"],
        {case: cts[case] for case in test_cases},
        Path(smk.output[0]),
        smk.params.slices,
        device,
    )


run_script(snakemake, main)  # noqa: F821
