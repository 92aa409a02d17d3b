"""The real workflow on the local SLURM test cluster: it gives the results of a local run,
and a training job survives a requeue (preemption) and a killed Snakemake by resuming from
its checkpoint, ending with the weights of an uninterrupted run."""

from __future__ import annotations

import copy
import re
import shutil
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hepred.samplesheet import demo_case_ids
from hepred.training import Checkpoint
from tests.workflow.conftest import REPO, run_snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = yaml.safe_load((REPO / "tests/workflow/config_tiny.yaml").read_text())
# Fold 0 x t1 trained for six epochs without early stopping, on larger images in smaller
# batches (1-2 s an epoch on 2 cores instead of 0.5 s), so that a test interrupts it
# safely between its first checkpoint and its end.
MAX_EPOCHS = 6
RESUMABLE = copy.deepcopy(TINY)
RESUMABLE["classifier"].update(max_epochs=MAX_EPOCHS, patience=MAX_EPOCHS, image_size=96, batch_size=2)

RESULTS = TINY["results"]
TRAINING_DIR = f"{RESULTS}/fold_0/classifier/t1"
TRAINING_TARGET = f"{TRAINING_DIR}/predictions_patients.csv"
TRAINING_LOG = f"{RESULTS}/logs/fold_0/train_classifier_t1.log"
# The stages every training job needs, cheap enough to run locally once for all the tests.
CHEAP_TARGETS = [f"{RESULTS}/folds/splits.json"] + [
    f"{RESULTS}/preprocess/{case}/info.json" for case in demo_case_ids(TINY["demo"]["n"])
]
WORKFLOW_RULES = {
    "simulate_demo", "ingest", "preprocess", "labels", "folds", "skull_strip_dice",
    "train_generator", "synthesize", "synthesis_fidelity", "train_classifier", "radiomics_features", "marker_features",
    "train_baseline", "fusion", "statistics", "saliency", "html_report",
}  # fmt: skip
GPU_RULES = {"train_generator", "synthesize", "train_classifier"}


def slurm_args(workdir: Path, config: dict) -> list[str]:
    """Arguments for a SLURM run of this repository's workflow in `workdir` with `config`:
    the Snakefile's own config.yaml stays empty, the test's config comes with --configfile."""
    (workdir / "config.yaml").write_text("{}\n")
    config_path = workdir / "test_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # --configfile takes several files: not last, or it would swallow the targets.
    return [
        "--configfile", str(config_path),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
    ]  # fmt: skip


def copy_workdir(source: Path, target: Path) -> Path:
    """A copy of a finished run, Snakemake's records and file times included, so that the
    copy's next run redoes nothing of it."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return target


def sbatch_calls(snakemake_output: str) -> dict[str, list[str]]:
    """The plugin's logged sbatch command lines (it logs them with --verbose) by rule; the
    --comment names the rule and the wildcards."""
    calls = defaultdict(list)
    for line in snakemake_output.splitlines():
        if line.startswith("sbatch call: "):
            comment = re.search(r"--comment '?rule_(\S+?)'? ", line).group(1)
            calls[comment.split("_wildcards_")[0]].append(line.removeprefix("sbatch call: ").split(" --wrap=")[0])
    return dict(calls)


def assert_same_tables(expected_dir: Path, actual_dir: Path, relative_paths: list[str]) -> None:
    assert relative_paths
    for relative in relative_paths:
        expected = pd.read_csv(expected_dir / relative)
        actual = pd.read_csv(actual_dir / relative)
        # On the CPU a fixed seed gives bit-identical numbers, whatever ran the job.
        pd.testing.assert_frame_equal(actual, expected, check_exact=True, obj=relative)


@dataclass
class LocalRun:
    """A local reference run going on in a background thread."""

    workdir: Path
    future: Future

    def results(self) -> Path:
        self.future.result()  # re-raises run_snakemake's failure
        return self.workdir / RESULTS


@pytest.fixture(scope="module")
def background():
    """Local reference runs go on in threads while SLURM works: the test cluster's one fake
    GPU runs one training job at a time, which leaves one of two CPUs idle."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def cheap_stages(tmp_path_factory) -> Path:
    """A local run up to the splits and the preprocessed cases."""
    workdir = tmp_path_factory.mktemp("cheap_stages")
    run_snakemake(workdir, TINY, *CHEAP_TARGETS)
    return workdir


@pytest.fixture(scope="module")
def resumable_reference(cheap_stages, background, tmp_path_factory) -> LocalRun:
    """Fold 0 x t1 trained locally without interruption, with the RESUMABLE config."""
    workdir = copy_workdir(cheap_stages, tmp_path_factory.mktemp("reference") / "run")
    return LocalRun(workdir, background.submit(run_snakemake, workdir, RESUMABLE, TRAINING_TARGET))


def checkpointed_epoch(workdir: Path) -> int:
    """The epoch of fold 0 x t1's checkpoint_latest.pt (0 while there is none)."""
    state = Checkpoint(workdir / TRAINING_DIR / "checkpoint_latest.pt").load()
    return state["epoch"] if state else 0


def logged_epochs(workdir: Path) -> list[int]:
    """Epochs the training job logged, each after saving its checkpoint. A job that starts
    again starts its log afresh."""
    log = workdir / TRAINING_LOG
    text = log.read_text() if log.exists() else ""
    return [int(n) for n in re.findall(rf"epoch (\d+)/{MAX_EPOCHS}:", text)]


def resumed_from(workdir: Path) -> list[int]:
    return [int(n) for n in re.findall(r"resuming from epoch (\d+)", (workdir / TRAINING_LOG).read_text())]


def wait_for_training_epoch(cluster, snakemake, output: Path, workdir: Path, timeout: float = 300) -> str:
    """Wait until fold 0 x t1's SLURM job runs and has checkpointed an epoch; its job id."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        assert snakemake.poll() is None, f"snakemake ended early:\n{output.read_text()[-5000:]}"
        if job is None:
            submitted = re.search(
                r"submitted with SLURM jobid (\d+) \(log: \S*/rule_train_classifier/0_t1/", output.read_text()
            )
            job = submitted and submitted.group(1)
        elif (
            cluster.job_state(job) == "RUNNING"
            and (workdir / TRAINING_DIR / "checkpoint_latest.pt").exists()
            and logged_epochs(workdir)
        ):
            return job
        time.sleep(0.25)
    pytest.fail(f"no checkpointed epoch of fold 0 x t1 on SLURM after {timeout}s:\n{output.read_text()[-5000:]}")


def wait_for_log_line(snakemake, output: Path, pattern: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, output.read_text()):
        assert snakemake.poll() is None, f"snakemake ended early:\n{output.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} after {timeout}s:\n{output.read_text()[-5000:]}"
        time.sleep(0.25)


def end(process) -> None:
    """Leave no snakemake behind when a test fails halfway."""
    if process.poll() is None:
        process.kill()
        process.wait()


def test_slurm_run_gives_the_results_of_a_local_run(slurm_cluster, cheap_stages, background, tmp_path):
    local_dir = copy_workdir(cheap_stages, tmp_path / "local")
    local = LocalRun(local_dir, background.submit(run_snakemake, local_dir, TINY))
    on_slurm = tmp_path / "slurm"
    on_slurm.mkdir()

    # A guard against a hung run, not a speed limit: the 97 jobs each start a Snakemake of
    # their own (about 15 s on 2 cores for jobs of 1-2 s), which took 909-1182 s here and over
    # 1500 s on a CI machine.
    result = slurm_cluster.snakemake(on_slurm, *slurm_args(on_slurm, TINY), timeout=3000)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    expected = local.results()
    tables = ["statistics/summary.csv"] + sorted(
        str(p.relative_to(expected)) for p in expected.glob("fold_*/classifier/*/predictions_*.csv")
    )
    # Per fold: 4 image scenarios and the null control (slices, patients, validation tables),
    # volume, radiomics, markers and fusion (patients).
    assert len(tables) == 1 + TINY["folds"]["k"] * (5 * 3 + 4)
    assert_same_tables(expected, on_slurm / RESULTS, tables)
    # Every rule ran as a SLURM job; the profile gave a GPU to the network rules only.
    calls = sbatch_calls(output)
    assert set(calls) == WORKFLOW_RULES
    for rule, rule_calls in calls.items():
        for call in rule_calls:
            assert ("--gpus=1" in call) == (rule in GPU_RULES), call
            assert "--requeue" in call


def test_a_requeued_training_job_resumes_from_its_checkpoint(
    slurm_cluster, cheap_stages, resumable_reference, tmp_path
):
    workdir = copy_workdir(cheap_stages, tmp_path / "run")
    output = tmp_path / "snakemake.out"
    snakemake = slurm_cluster.start_snakemake(workdir, output, *slurm_args(workdir, RESUMABLE), TRAINING_TARGET)
    try:
        job = wait_for_training_epoch(slurm_cluster, snakemake, output, workdir)
        slurm_cluster.requeue(job)  # what preemption does to a job submitted with --requeue
        # Pending again means its processes have ended; it starts again 10 s later.
        checkpointed = checkpointed_epoch(workdir)
        assert snakemake.wait(timeout=600) == 0, output.read_text()[-8000:]
    finally:
        end(snakemake)

    # The job ran again under the same SLURM job id, from the checkpoint to the last epoch.
    assert 1 <= checkpointed < MAX_EPOCHS
    assert resumed_from(workdir) == [checkpointed]
    assert logged_epochs(workdir) == list(range(checkpointed + 1, MAX_EPOCHS + 1))
    tables = [f"fold_0/classifier/t1/predictions_{level}.csv" for level in ("slices", "patients")]
    assert_same_tables(resumable_reference.results(), workdir / RESULTS, tables)


def test_a_rerun_after_snakemake_was_killed_redoes_only_the_interrupted_job(
    slurm_cluster, cheap_stages, resumable_reference, tmp_path
):
    workdir = copy_workdir(cheap_stages, tmp_path / "run")
    # Two jobs that finish before the training is interrupted: the splits, which training
    # needs, and the skull-stripping QC beside it.
    finished = [workdir / RESULTS / "folds/splits.json", workdir / RESULTS / "qc/skull_strip_dice.csv"]
    finished[0].unlink()
    targets = [str(finished[1].relative_to(workdir)), TRAINING_TARGET]
    args = slurm_args(workdir, RESUMABLE)
    output = tmp_path / "snakemake.out"
    snakemake = slurm_cluster.start_snakemake(workdir, output, *args, *targets)
    try:
        job = wait_for_training_epoch(slurm_cluster, snakemake, output, workdir)
        wait_for_log_line(snakemake, output, r"Finished jobid: \d+ \(Rule: skull_strip_dice\)")
        snakemake.kill()  # SIGKILL: no chance to cancel its jobs or clean up
        snakemake.wait()
    finally:
        end(snakemake)
    finished_mtimes = [path.stat().st_mtime_ns for path in finished]
    slurm_cluster.run("scancel", job)  # as the README says: cancel the dead run's jobs
    slurm_cluster.wait_until_finished(job, timeout=60)
    interrupted_at = checkpointed_epoch(workdir)

    unlocked = slurm_cluster.snakemake(workdir, *args, "--unlock", timeout=120)
    assert unlocked.returncode == 0, unlocked.stderr[-5000:]
    rerun = slurm_cluster.snakemake(workdir, *args, *targets, timeout=600)

    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-8000:]
    resubmitted = sbatch_calls(rerun.stdout + rerun.stderr)
    assert {rule: len(calls) for rule, calls in resubmitted.items()} == {"train_classifier": 1}
    assert [path.stat().st_mtime_ns for path in finished] == finished_mtimes
    assert 1 <= interrupted_at < MAX_EPOCHS
    assert resumed_from(workdir) == [interrupted_at]
    assert logged_epochs(workdir) == list(range(interrupted_at + 1, MAX_EPOCHS + 1))
    tables = [f"fold_0/classifier/t1/predictions_{level}.csv" for level in ("slices", "patients")]
    assert_same_tables(resumable_reference.results(), workdir / RESULTS, tables)
