"""Seconds of `snakemake -n` (dry run) for a 2000-case sample sheet, 5 folds, 4 scenarios.

The sheet points at tiny NIfTI files (the dry run only checks that they exist), written once
into benchmarks/out/dryrun_{n}/ with its config.yaml. Each timed run starts without a
.snakemake/ folder, like the first dry run a user makes before anything has run. With
--profile the fastest run is repeated under cProfile and the top functions are printed.

Two variants are timed beside it: `--quiet rules` (the job list is not printed), and a copy
of the workflow in which train_generator and train_classifier depend on one cohort file
written by an aggregating rule instead of on every case's hu.npy and info.json (the DAG then
has 4000 + 25 edges into the training rules instead of 25 x 4000): a proposed change.

    python benchmarks/bench_dryrun.py [--quick] [--json FILE] [--profile]
"""
from __future__ import annotations

import cProfile
import io
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from harness import CACHE, REPO, Clock, Figure

N_CASES = 2000
QUICK_CASES = 200


def ensure_workdir(n: int) -> Path:
    """benchmarks/out/dryrun_{n}/ with samples.csv, config.yaml and 2 tiny NIfTI files per case."""
    workdir = CACHE / f"dryrun_{n}"
    config = workdir / "config.yaml"
    if config.is_file():
        return workdir
    import numpy as np
    import SimpleITK as sitk

    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    tiny = images / "tiny.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4), np.int16)), str(tiny))
    content = tiny.read_bytes()
    rows = ["case_id,ct,lesion,label"]
    for index in range(n):
        case = f"case{index:05d}"
        for kind in ("ct", "lesion"):
            (images / f"{case}_{kind}.nii.gz").write_bytes(content)
        rows.append(f"{case},images/{case}_ct.nii.gz,images/{case}_lesion.nii.gz,{index % 3 == 0:d}")
    (workdir / "samples.csv").write_text("\n".join(rows) + "\n")
    config.write_text(
        "samples: samples.csv\nresults: results\nfolds:\n  k: 5\nclassifier:\n  scenarios: [t1, t2, t3, t5]\n"
    )
    return workdir


# The training rules' inputs, and what the aggregated variant puts in their place.
PER_CASE_INPUTS = '        hu=all_preprocessed("hu.npy"),\n        info=all_preprocessed("info.json"),\n'
COHORT_INPUT = '        cohort=f"{RESULTS}/preprocess/cohort.json",\n'
COHORT_RULE = """

rule preprocess_cohort:
    input:
        hu=all_preprocessed("hu.npy"),
        info=all_preprocessed("info.json"),
    output:
        f"{RESULTS}/preprocess/cohort.json",
    localrule: True
    script:
        "../workflow_scripts/preprocess_cohort.py"
"""
COHORT_SCRIPT = '''"""Index of the preprocessed cohort: the one input the training rules wait for."""
import json
from pathlib import Path

from hepred import io
from hepred.workflow import run_script


def main(smk):
    infos = {Path(path).parent.name: json.loads(Path(path).read_text()) for path in smk.input.info}
    io.write_json(smk.output[0], {case: {"n_slices": len(info["lesion_pixels"])} for case, info in sorted(infos.items())})


run_script(snakemake, main)  # noqa: F821
'''


def aggregated_workflow(tmp: Path) -> Path:
    """A copy of the workflow whose training rules read one cohort file; returns its Snakefile."""
    copy = tmp / "workflow"
    copy.mkdir()
    for name in ("hepred", "report", "envs", "profiles", "config.yaml"):
        (copy / name).symlink_to(REPO / name)
    shutil.copy(REPO / "Snakefile", copy / "Snakefile")
    for name in ("rules", "workflow_scripts"):
        shutil.copytree(REPO / name, copy / name)
    (copy / "workflow_scripts" / "preprocess_cohort.py").write_text(COHORT_SCRIPT)
    for name in ("synthesis.smk", "classifier.smk"):
        path = copy / "rules" / name
        text = path.read_text()
        if PER_CASE_INPUTS not in text:
            raise RuntimeError(f"rules/{name} no longer lists the per-case inputs this variant replaces")
        path.write_text(text.replace(PER_CASE_INPUTS, COHORT_INPUT))
    with open(copy / "rules" / "preprocess.smk", "a") as handle:
        handle.write(COHORT_RULE)
    return copy / "Snakefile"


def snakemake_args(workdir: Path, snakefile: Path = REPO / "Snakefile") -> list[str]:
    return [
        "-n",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        "--cores", "1",
    ]


def snakemake_executable() -> str:
    beside = Path(sys.executable).with_name("snakemake")
    return str(beside) if beside.exists() else (shutil.which("snakemake") or "snakemake")


def dry_run(workdir: Path, snakefile: Path = REPO / "Snakefile", extra: tuple[str, ...] = ()) -> tuple[Clock, str]:
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    command = [snakemake_executable(), *snakemake_args(workdir, snakefile), *extra]
    with Clock() as clock:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"snakemake -n failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return clock, done.stdout + done.stderr


def job_count(output: str) -> int:
    """The 'total' row of snakemake's job-stats table."""
    match = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return int(match.group(1)) if match else -1


def profile(workdir: Path, top: int = 30) -> str:
    """cProfile of one dry run inside this process (snakemake's Python API via its CLI entry)."""
    from snakemake.cli import main as snakemake_main

    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        snakemake_main(snakemake_args(workdir) + ["--quiet", "all"])
    except SystemExit:
        pass
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def measure(quick: bool, with_profile: bool = False) -> list[Figure]:
    n = QUICK_CASES if quick else N_CASES
    workdir = ensure_workdir(n)
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench_dryrun_") as tmp:
        aggregated = aggregated_workflow(Path(tmp))
        runs: dict[str, list[tuple[Clock, str]]] = {"plain": [], "quiet": [], "aggregated": []}
        for _ in range(repeats):  # interleaved, so that load on the machine hits all alike
            runs["plain"].append(dry_run(workdir))
            runs["quiet"].append(dry_run(workdir, extra=("--quiet", "rules")))
            runs["aggregated"].append(dry_run(workdir, aggregated))
        shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    best = {name: min(clocks, key=lambda run: run[0].wall) for name, clocks in runs.items()}
    jobs = job_count(best["plain"][1])
    if with_profile:
        print(profile(workdir))
    note = f"{n} cases x 5 folds x 4 scenarios, {jobs} jobs; fastest of {repeats} cold dry runs"
    return [
        Figure(f"dryrun_s_{n}_cases", best["plain"][0].wall, "<= 20", "s", note),
        Figure(f"dryrun_cpu_s_{n}_cases", best["plain"][0].cpu, "", "s"),
        Figure(f"dryrun_jobs_{n}_cases", jobs, "", "jobs"),
        Figure(f"dryrun_s_{n}_cases_quiet_rules", best["quiet"][0].wall, "<= 20", "s", "--quiet rules: no job list"),
        Figure(f"dryrun_s_{n}_cases_cohort_rule", best["aggregated"][0].wall, "<= 20", "s",
               f"proposal: training rules depend on one preprocess/cohort.json "
               f"({job_count(best['aggregated'][1])} jobs)"),
    ]


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one dry run")
    args = parser.parse_args()
    harness.finish(measure(args.quick, args.profile), args.json, "Snakemake dry run")


if __name__ == "__main__":
    main()
