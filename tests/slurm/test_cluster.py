"""The SLURM profile and the test cluster, without the hepred workflow: GPU requests reach
sbatch, and a requeued job resumes from its checkpoint."""

from __future__ import annotations

import re
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.slurm

# Two rules: `prepare` is a CPU rule; `train_classifier` has the name of a GPU rule of the
# workflow, so profiles/slurm gives it its GPU. Each job records the GPUs SLURM gave it.
TWO_RULE_SNAKEFILE = """
rule all:
    input:
        "model.txt",


rule prepare:
    output:
        "data.txt",
    shell:
        "echo gpus=${{SLURM_GPUS_ON_NODE:-none}} > {output}"


rule train_classifier:
    input:
        "data.txt",
    output:
        "model.txt",
    shell:
        "echo gpus=${{SLURM_GPUS_ON_NODE:-none}} > {output}"
"""


def sbatch_calls(snakemake_output: str) -> dict[str, str]:
    """The plugin's logged sbatch command line per rule (it logs them with --verbose)."""
    calls = {}
    for line in snakemake_output.splitlines():
        if line.startswith("sbatch call: "):
            rule = re.search(r"--comment '?rule_(\w+?)'? ", line).group(1)
            calls[rule] = line.removeprefix("sbatch call: ").split(" --wrap=")[0]
    return calls


def test_profile_asks_a_gpu_only_for_gpu_rules(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_RULE_SNAKEFILE)

    result = slurm_cluster.snakemake(tmp_path, timeout=300)

    assert result.returncode == 0, result.stderr[-5000:]
    calls = sbatch_calls(result.stdout + result.stderr)
    assert set(calls) == {"prepare", "train_classifier"}
    assert "--gpus=1" in calls["train_classifier"]
    assert "--gpus" not in calls["prepare"] and "--gres" not in calls["prepare"]
    for call in calls.values():
        assert "--requeue" in call  # slurm-requeue: true in the profile
        assert " -p debug" in call  # the cluster's default partition, as none is set
    # SLURM itself allocated the GPU to the GPU job only.
    assert (tmp_path / "model.txt").read_text().strip() == "gpus=1"
    assert (tmp_path / "data.txt").read_text().strip() == "gpus=none"


# Counts epochs of one second each, saving the epoch after each one atomically and
# starting from the saved one, as the training jobs do with checkpoint_latest.pt.
CHECKPOINTED_JOB = textwrap.dedent(
    """
    import json, os, sys, time
    checkpoint, epochs = sys.argv[1], int(sys.argv[2])
    epoch = json.load(open(checkpoint))["epoch"] if os.path.exists(checkpoint) else 0
    print(f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}: from epoch {epoch}", flush=True)
    while epoch < epochs:
        time.sleep(1)
        epoch += 1
        with open(checkpoint + ".tmp", "w") as f:
            json.dump({"epoch": epoch}, f)
        os.replace(checkpoint + ".tmp", checkpoint)
    print(f"finished at epoch {epoch}", flush=True)
    """
)


def saved_epoch(path) -> int:
    return int(re.search(r'"epoch": (\d+)', path.read_text()).group(1)) if path.exists() else 0


def test_requeued_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    script, checkpoint, log = tmp_path / "job.py", tmp_path / "checkpoint.json", tmp_path / "job.log"
    script.write_text(CHECKPOINTED_JOB)
    epochs = 8
    job = slurm_cluster.sbatch(
        "--requeue",
        "--open-mode=append",
        f"--output={log}",
        f"--chdir={tmp_path}",
        "--wrap",
        f"{sys.executable} {script} {checkpoint} {epochs}",
    )
    slurm_cluster.wait_for_state(job, {"RUNNING"}, timeout=60)
    deadline = time.monotonic() + 60
    while saved_epoch(checkpoint) < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.25)

    slurm_cluster.requeue(job)  # what preemption does to a job submitted with --requeue
    interrupted_at = saved_epoch(checkpoint)
    final = slurm_cluster.wait_until_finished(job, timeout=120)

    lines = log.read_text().splitlines()
    assert final == "COMPLETED", lines
    starts = [line for line in lines if line.startswith("restart ")]
    assert starts[0] == "restart 0: from epoch 0"
    assert len(starts) == 2
    resumed_from = int(starts[1].rsplit(" ", 1)[1])
    assert starts[1].startswith("restart 1:")
    assert 0 < resumed_from == interrupted_at < epochs
    assert lines[-1] == f"finished at epoch {epochs}"
