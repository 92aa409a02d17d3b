"""results/report.html from the run's statistics, predictions and figures."""
import logging
from pathlib import Path

from hepred.report import build_report
from hepred.workflow import run_script


def main(smk):
    size = build_report(
        Path(smk.output[0]),
        smk.params.config,
        Path(smk.input.summary),
        Path(smk.input.markdown),
        Path(smk.input.metrics),
        Path(smk.input.roc),
        Path(smk.input.labels),
        Path(smk.input.trained_with),
        [Path(p) for p in smk.input.predictions],
        [Path(p) for p in smk.input.curves],
        [Path(p) for p in smk.input.synthesis],
        [Path(p) for p in smk.input.montages],
        [Path(p) for p in smk.input.saliency],
        fidelity={
            "scores": [Path(p) for p in smk.input.fidelity],
            "logits": [Path(p) for p in smk.input.fidelity_logits],
            "markers": [Path(p) for p in smk.input.marker_fidelity],
            "plots": [Path(p) for p in smk.input.marker_plots],
        },
    )
    logging.getLogger("hepred").info("wrote %s (%.1f MB)", smk.output[0], size / 1e6)


run_script(snakemake, main)  # noqa: F821
