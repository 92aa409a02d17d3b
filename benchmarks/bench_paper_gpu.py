"""The paper preset end to end on one GPU: wall time per stage on the demo cohort.

Runs the workflow (`snakemake --configfile configs/paper.yaml`, device cuda) on the bundled
demo cohort into a fresh results folder, for fold 0's four scenarios (ingest, preprocess,
radiomics and the fold's generator, synthesis and classifiers) or, with --all-folds, for the
whole run; then reads every job's Snakemake benchmark file and prints the seconds per stage
(the sum over that stage's jobs) and the run's own wall time. A stage that did not finish
within --limit-s is reported with the jobs it completed.

    python benchmarks/bench_paper_gpu.py [--all-folds] [--limit-s 540] [--json FILE]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import REPO, Figure

SCENARIOS = ("t1", "t2", "t3", "t5")


def targets(results: Path, all_folds: bool) -> list[str]:
    if all_folds:
        return []  # rule all
    return [str(results / "fold_0" / "classifier" / scenario / "predictions_patients.csv") for scenario in SCENARIOS]


def stage_seconds(results: Path) -> dict[str, tuple[float, int]]:
    """Seconds and job count per rule, from the jobs' benchmark files (results/benchmarks/**.tsv)."""
    import pandas as pd

    stages: dict[str, tuple[float, int]] = {}
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = path.parent.name if path.parent.name in ("ingest", "preprocess", "radiomics") else path.stem
        rule = rule.split("_t")[0] if rule.startswith("train_classifier_") else rule
        seconds = float(pd.read_csv(path, sep="\t")["s"].sum())
        total, count = stages.get(rule, (0.0, 0))
        stages[rule] = (total + seconds, count + 1)
    return stages


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--all-folds", action="store_true", help="the whole run, not fold 0 only")
    parser.add_argument("--limit-s", type=float, default=540.0, help="stop the workflow after this many seconds")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_paper_gpu: no CUDA device; skipped")
        harness.finish([], args.json, "paper preset on one GPU (skipped: no CUDA)")
        return
    with tempfile.TemporaryDirectory(prefix="bench_paper_gpu_") as tmp:
        results = Path(tmp) / "results"
        # Targets first: --config and --quiet take every word after them.
        command = [
            sys.executable, "-m", "snakemake", *targets(results, args.all_folds), "--cores", str(args.cores),
            "--configfile", "configs/paper.yaml", "--quiet", "rules",
            "--config", f"results={results}", "device=cuda",
        ]
        started = time.perf_counter()
        try:
            finished = subprocess.run(command, cwd=REPO, timeout=args.limit_s).returncode == 0
        except subprocess.TimeoutExpired:
            finished = False
        wall = time.perf_counter() - started
        figures = [
            Figure(f"paper_gpu_{rule}_s", seconds, "", "s", f"{count} job(s), sum of their wall times")
            for rule, (seconds, count) in stage_seconds(results).items()
        ]
    scope = "all folds" if args.all_folds else "fold 0's t1 t2 t3 t5"
    figures.append(Figure("paper_gpu_wall_s", wall, "", "s",
                          f"{scope}, {'finished' if finished else f'stopped at --limit-s {args.limit_s:g}'}; "
                          f"{torch.cuda.get_device_name()}, {args.cores} cores"))
    harness.finish(figures, args.json, f"paper preset on one GPU ({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
