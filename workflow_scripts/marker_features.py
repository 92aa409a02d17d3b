"""The clinical NCCT markers of one case's baseline CT inside its lesion mask."""
from pathlib import Path

from hepred.io import write_csv
from hepred.markers import marker_features
from hepred.samplesheet import find_case, read_sample_sheet
from hepred.workflow import run_script


def main(smk):
    case = find_case(read_sample_sheet(smk.input.sheet), smk.wildcards.case, smk.input.sheet)
    features = marker_features(
        Path(smk.input.ct),
        Path(smk.input.lesion),
        smk.wildcards.case,
        user_files={smk.input.ct: case.ct, smk.input.lesion: case.lesion},
    )
    write_csv(smk.output[0], features)


run_script(snakemake, main)  # noqa: F821
