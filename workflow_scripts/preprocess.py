"""Skull strip, window and resample one case; write its training cache and QC montage."""
from pathlib import Path

from hepred.preprocess import preprocess_case
from hepred.workflow import run_script


def main(smk):
    preprocess_case(
        smk.wildcards.case,
        Path(smk.input.ct),
        Path(smk.input.lesion),
        Path(smk.output.info).parent,
        smk.params.preprocess,
    )


run_script(snakemake, main)  # noqa: F821
