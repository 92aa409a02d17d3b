"""`make run`'s workflow on the default 40-patient demo cohort (about a quarter of an hour)."""
import json

import pandas as pd
import pytest
import yaml

from hepred.report import fidelity_table
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
    assert list(summary["scenario"]) == ["t1", "t2", "t5", "fusion", "markers", "radiomics", "volume", "null_t2"]
    assert summary.drop(columns=[c for c in summary if c.startswith("p_")]).notna().all().all()
    # A p-value is empty only where a row is its own reference, and a null control stays out of Holm.
    missing = {column: sorted(summary.loc[summary[column].isna(), "scenario"]) for column in summary if column.startswith("p_")}
    for column in ("p_delong_vs_t1", "p_mcnemar_vs_t1", "p_wilcoxon_vs_t1"):
        assert missing[column] == ["t1"], column
    assert missing["p_delong_vs_t1_holm"] == ["null_t2", "t1"]
    best = missing["p_delong_vs_best_image"]
    assert len(best) == 1 and best[0] in ("t1", "t2", "t5")
    assert missing["p_delong_vs_best_image_holm"] == sorted([*best, "null_t2"])
    # The synthetic versions carry their labels (pooled over the folds; 0.5 would mean they do not).
    qc = sorted(results.glob("fold_*/synthetic/qc/fidelity.json"))
    pooled = fidelity_table(qc, [path.with_name("fidelity_logits.csv") for path in qc]).set_index("fold").loc["pooled"]
    assert pooled["class_fidelity_auc"] > 0.6 and pooled["tstr_validation_auc"] > 0.6
    rerun = run_snakemake(workdir, config, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
