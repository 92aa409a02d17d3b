"""HE labels for every case, from lesion volumes or the sheet."""
from pathlib import Path

from hepred.io import read_json, write_csv
from hepred.labels import compute_labels
from hepred.samplesheet import read_sample_sheet
from hepred.workflow import run_script


def main(smk):
    cases = read_sample_sheet(smk.input.sheet)
    volumes = {Path(meta).parent.name: read_json(meta) for meta in smk.input.meta}
    cases = [case for case in cases if case.case_id in volumes]
    write_csv(smk.output[0], compute_labels(cases, volumes, smk.params.rule, sheet=smk.input.sheet))


run_script(snakemake, main)  # noqa: F821
