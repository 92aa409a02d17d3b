"""Fixtures for tests against a real, local single-node SLURM cluster.

The `slurm_cluster` fixture starts the cluster once per session with cluster.sh (which
installs slurm-wlm and munge with apt-get when they are missing) and stops it at the end.
Without root the tests are skipped; any other failure to start is an error, so that CI
never passes by skipping them silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLUSTER_SH = HERE / "cluster.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
STATE_DIR = Path(os.environ.get("HEPRED_SLURM_DIR", "/tmp/hepred-slurm"))

# Options the test cluster needs on top of profiles/slurm: it has no accounting database
# (so no sacct and no accounts), and short jobs want quick status polling.
TEST_CLUSTER_OPTIONS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
)

# States in which a job has ended for good (squeue keeps them for MinJobAge seconds).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@dataclass(frozen=True)
class SlurmCluster:
    state_dir: Path
    env: dict  # environment for SLURM clients and for snakemake, venv first on PATH

    def run(self, *cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(c) for c in cmd], env=self.env, text=True, capture_output=True, check=check, **kwargs
        )

    def sbatch(self, *args: str) -> str:
        """Submit a batch job; returns its job id."""
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str:
        out = self.run("squeue", "-h", "--states=all", "-j", job_id, "-o", "%T").stdout
        return out.strip()

    def wait_for_state(self, job_id: str, states: set[str], timeout: float) -> str:
        """Poll until the job is in one of `states`; fails the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        pytest.fail(f"job {job_id} still {state or 'unknown'} after {timeout}s, not in {sorted(states)}")

    def requeue(self, job_id: str) -> None:
        """Requeue a running job as preemption does; returns once it is pending again. The
        cluster lets it start again about 10 s later (cred_expire in cluster.sh)."""
        self.run("scontrol", "requeue", job_id)
        self.wait_for_state(job_id, {"PENDING"}, timeout=60)

    def wait_until_finished(self, job_id: str, timeout: float) -> str:
        return self.wait_for_state(job_id, FINAL_STATES, timeout)

    @staticmethod
    def snakemake_command(*args: str) -> list[str]:
        """snakemake with the SLURM profile, verbose so that the plugin's sbatch calls and
        the SLURM job ids are in its output."""
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--workflow-profile",
            str(SLURM_PROFILE),
            *TEST_CLUSTER_OPTIONS,
            "--verbose",
            *args,
        ]

    def snakemake(self, workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run snakemake with the SLURM profile in `workdir`; does not raise on failure."""
        return subprocess.run(
            self.snakemake_command(*args),
            cwd=workdir,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def start_snakemake(self, workdir: Path, output: Path, *args: str) -> subprocess.Popen:
        """Start snakemake with the SLURM profile in the background, stdout and stderr to
        `output` (which the caller can follow while it runs)."""
        with open(output, "w") as out:
            return subprocess.Popen(
                self.snakemake_command(*args),
                cwd=workdir,
                env=self.env,
                text=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def _cluster_env() -> dict:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(STATE_DIR / "slurm.conf")
    # Jobs inherit this environment (sbatch --export=ALL) and call `python -m snakemake`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HEPRED_SLURM_DIR"] = str(STATE_DIR)
    return env


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (it installs packages and runs slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    env = _cluster_env()
    started = subprocess.run(
        ["bash", str(CLUSTER_SH), "start"], env=env, text=True, capture_output=True, timeout=900
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], env=env, capture_output=True, timeout=300)
        pytest.fail(f"the SLURM test cluster did not start:\n{started.stderr[-3000:]}")
    try:
        yield SlurmCluster(state_dir=STATE_DIR, env=env)
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], env=env, capture_output=True, timeout=300)
