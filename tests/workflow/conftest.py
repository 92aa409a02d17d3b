"""Helpers to run the real workflow with Snakemake in a scratch directory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

def run_snakemake(
    workdir: Path, config: dict, *args: str, check: bool = True, configfiles: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the workflow of this repository with `config` (written to workdir/config.yaml), then
    `configfiles` merged over it in order, as `--configfile` does for a user."""
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [
        str(SNAKEMAKE),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(config_path), *map(str, configfiles),
        "--cores", "2",
        *args,
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # The Snakefile's `configfile: "config.yaml"` is read from the working directory.
    (tmp_path / "config.yaml").write_text("{}\n")
    return tmp_path
