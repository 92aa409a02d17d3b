"""Ingest one case: CT to NIfTI in HU, lesion mask onto its grid, technical metadata."""
from pathlib import Path

from hepred.ingest import ingest_case
from hepred.samplesheet import find_case, read_sample_sheet
from hepred.workflow import run_script


def main(smk):
    case = find_case(read_sample_sheet(smk.input.sheet), smk.wildcards.case, smk.input.sheet)
    ingest_case(
        case.case_id,
        case.ct,
        case.lesion,
        case.followup_lesion,
        case.series_uid,
        Path(smk.output.meta).parent,
        smk.params.lesion_labels,
    )


run_script(snakemake, main)  # noqa: F821
