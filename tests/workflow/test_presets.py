"""The shipped presets validate and plan the whole workflow (dry run)."""
import pytest
import yaml

from tests.workflow.conftest import REPO, run_snakemake


@pytest.mark.parametrize("preset", ["paper.yaml", "benchmark.yaml"])
def test_preset_passes_a_dry_run(workdir, preset):
    config = yaml.safe_load((REPO / "configs" / preset).read_text())
    config.setdefault("results", "results")
    result = run_snakemake(workdir, config, "-n", "--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / preset))
    output = result.stdout + result.stderr
    assert "train_classifier" in output and "train_generator" in output and "statistics" in output
    if preset == "paper.yaml":
        assert "20 train_classifier" in " ".join(output.split()) or "train_classifier 20" in " ".join(output.split())
