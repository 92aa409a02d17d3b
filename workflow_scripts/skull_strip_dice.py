"""Demo cohort only: Dice of the skull-strip brain masks against the simulator's truth."""
from pathlib import Path

from hepred.preprocess import skull_strip_scores
from hepred.workflow import run_script


def main(smk):
    skull_strip_scores(Path(smk.input.truth).parent, [Path(m) for m in smk.input.masks], Path(smk.output[0]))


run_script(snakemake, main)  # noqa: F821
