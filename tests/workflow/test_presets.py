"""The shipped presets validate and plan the whole workflow (dry run)."""
import os

import pytest
import yaml

from hepred.config import validate_config
from tests.workflow.conftest import REPO, run_snakemake


@pytest.mark.parametrize("preset", ["paper.yaml", "benchmark.yaml"])
def test_preset_passes_a_dry_run(workdir, preset):
    # As a user runs it: the demo config.yaml, with the preset given by --configfile over it.
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    result = run_snakemake(workdir, demo, "-n", configfiles=(REPO / "configs" / preset,))
    output = result.stdout + result.stderr
    assert "train_classifier" in output and "train_generator" in output and "statistics" in output
    if preset == "paper.yaml":
        # 4 scenarios and the null control null_t2, 5 folds each.
        planned = " ".join(output.split())
        assert "25 train_classifier" in planned or "train_classifier 25" in planned
        assert "train_baseline 15" in planned and "fusion 5" in planned  # volume, radiomics, markers


def test_paper_preset_fixes_every_setting_the_demo_config_changes():
    # The workflow merges configs/paper.yaml over config.yaml: no demo choice may leak through.
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    defaults = validate_config({})
    for section in ("classifier", "synthesis", "preprocess", "statistics"):
        leaked = {key for key in set(demo[section]) - set(paper[section]) if demo[section][key] != defaults[section][key]}
        assert not leaked, f"demo {section} setting(s) {sorted(leaked)} reach a paper run"
    assert paper["statistics"]["aggregation"] == "mean"


def test_the_readme_override_of_one_key_plans_a_run(workdir):
    # README: --config preprocess='{size: 256}'; Snakemake passes the 256 as a string.
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    result = run_snakemake(workdir, demo, "-n", "--config", "preprocess={size: 256}")
    assert "train_classifier" in result.stdout + result.stderr


def test_a_run_without_reference_rows_plans_only_the_image_scenarios(workdir):
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    demo["baselines"] = {"models": [], "null_control": "", "fusion": ""}
    result = run_snakemake(workdir, demo, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    planned = result.stdout + result.stderr
    assert "rule train_classifier" in planned and "rule train_baseline" not in planned and "rule fusion" not in planned


def test_a_gpu_workstation_runs_one_training_job_per_visible_gpu(workdir, tmp_path, monkeypatch):
    # A fake nvidia-smi that lists two GPUs stands in for the driver.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "GPU 0: Fake A (UUID: GPU-a)"\necho "GPU 1: Fake B (UUID: GPU-b)"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    limit = "hepred: 2 GPU(s) visible: at most 2 training job(s) at a time"
    assert limit in run_snakemake(workdir, demo, "-n").stderr

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert "hepred: 1 GPU(s) visible: at most 1 training job(s)" in run_snakemake(workdir, demo, "-n").stderr
    # The user's own limit, a CPU run and a machine without GPUs set none.
    assert "GPU(s) visible" not in run_snakemake(workdir, demo, "-n", "--resources", "gpu=4").stderr
    assert "GPU(s) visible" not in run_snakemake(workdir, {**demo, "device": "cpu"}, "-n").stderr
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "GPU(s) visible" not in run_snakemake(workdir, demo, "-n").stderr
