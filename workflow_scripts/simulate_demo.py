"""Generate the simulated demo cohort (DICOM series, lesion masks, ground truth)."""
from pathlib import Path

from hepred.simulate import simulate_cohort
from hepred.workflow import run_script


def main(smk):
    demo = smk.params.demo
    simulate_cohort(
        Path(smk.output.sheet).parent,
        n=demo["n"],
        seed=demo["seed"],
        matrix=demo["matrix"],
        pixel_mm=demo["pixel_mm"],
        slice_mm=demo["slice_mm"],
        n_slices=demo["n_slices"],
        tilt_fraction=demo["tilt_fraction"],
        workers=smk.threads,
    )


run_script(snakemake, main)  # noqa: F821 (injected by Snakemake)
