"""`make run`'s workflow on the default 40-patient demo cohort (about a quarter of an hour)."""
import json

import pandas as pd
import pytest
import yaml

from hepred.simulate import cohort_difficulty
from tests.workflow.conftest import REPO, run_snakemake


@pytest.mark.slow
def test_default_demo_end_to_end(workdir):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = "cpu"
    run_snakemake(workdir, config)
    results = workdir / "results"

    difficulty = cohort_difficulty(workdir / "demo_data")
    assert 0.85 <= difficulty["oracle_auc"] <= 0.95
    assert difficulty["volume_auc"] <= 0.70

    dice = pd.read_csv(results / "qc/skull_strip_dice.csv")
    assert dice["dice"].min() >= 0.95

    for fold in range(5):
        shift = json.loads((results / f"fold_{fold}/synthetic/qc/wasserstein.json").read_text())
        assert abs(shift["mean_hu_difference"]) <= 10

    summary = pd.read_csv(results / "statistics/summary.csv")
    assert list(summary["scenario"]) == ["t1", "t2", "t5"]
    assert summary.drop(columns=["p_delong_vs_t1", "p_mcnemar_vs_t1", "p_wilcoxon_vs_t1"]).notna().all().all()
    rerun = run_snakemake(workdir, config, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
