"""Metrics, confidence intervals and paired tests of every scenario against t1."""
from pathlib import Path

from hepred.stats import run_statistics
from hepred.workflow import run_script


def main(smk):
    cfg = dict(smk.params.statistics, seed=smk.params.seed)
    run_statistics([Path(p) for p in smk.input], cfg, Path(smk.output.summary).parent, reference=smk.params.reference)


run_script(snakemake, main)  # noqa: F821
