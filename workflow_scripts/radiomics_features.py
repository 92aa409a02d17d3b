"""pyradiomics features of one case's baseline CT inside its lesion mask."""
from pathlib import Path

from hepred.radiomics import radiomics_features
from hepred.io import write_csv
from hepred.workflow import run_script


def main(smk):
    features = radiomics_features(
        Path(smk.input.ct), Path(smk.input.lesion), smk.wildcards.case, smk.params.radiomics
    )
    write_csv(smk.output[0], features)


run_script(snakemake, main)  # noqa: F821
