"""Skull strip, window and resample one case; write its training cache and QC montage."""
from pathlib import Path

from hepred.preprocess import preprocess_case
from hepred.samplesheet import find_case, read_sample_sheet
from hepred.workflow import run_script


def main(smk):
    case = find_case(read_sample_sheet(smk.input.sheet), smk.wildcards.case, smk.input.sheet)
    preprocess_case(
        smk.wildcards.case,
        Path(smk.input.ct),
        Path(smk.input.lesion),
        Path(smk.output.info).parent,
        smk.params.preprocess,
        user_files={smk.input.ct: case.ct, smk.input.lesion: case.lesion},
    )


run_script(snakemake, main)  # noqa: F821
