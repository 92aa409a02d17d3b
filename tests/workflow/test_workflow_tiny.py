"""The whole workflow, every stage, on a tiny simulated cohort (a few minutes on 2 cores)."""
import json
from pathlib import Path

import pandas as pd
import pytest

from hepred.stats import summary_columns
from tests.workflow.conftest import REPO, run_snakemake

TINY_CONFIG = REPO / "tests/workflow/config_tiny.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny_run")
    import yaml

    run_snakemake(workdir, yaml.safe_load(TINY_CONFIG.read_text()))
    return workdir


def test_every_stage_ran_and_the_summary_is_complete(finished_run):
    results = finished_run / "results"
    summary = pd.read_csv(results / "statistics/summary.csv")
    assert list(summary.columns) == summary_columns("t1")
    # The image scenarios, the fusion, the baselines and the null control, each on the same folds.
    assert list(summary["scenario"]) == ["t1", "t2", "t3", "t5", "fusion", "markers", "radiomics", "volume", "null_t2"]
    assert list(summary["kind"]) == ["image"] * 4 + ["fusion", "baseline", "baseline", "baseline", "null_control"]
    assert summary["auc"].between(0, 1).all()
    assert summary.loc[summary.scenario != "t1", "p_delong_vs_t1"].between(0, 1).all()
    findings = summary[~summary.scenario.isin(["t1", "null_t2"])]
    assert findings["p_delong_vs_t1_holm"].between(0, 1).all()
    # The null control is a check: raw p only, outside the Holm families.
    assert summary.set_index("scenario")["p_delong_vs_t1_holm"].isna()[["t1", "null_t2"]].all()
    assert summary["p_delong_vs_best_image"].isna().sum() == 1
    assert "Null control" in (results / "statistics/summary.md").read_text()
    for name in ("summary.md", "roc.png", "metrics.json", "per_fold.csv", "rule_sensitivity.csv"):
        assert (results / "statistics" / name).stat().st_size > 0
    assert (results / "qc/skull_strip_dice.csv").exists()
    for fold in (0, 1):
        assert (results / f"fold_{fold}/generator/model.pt").exists()
        manifest = pd.read_csv(results / f"fold_{fold}/synthetic/manifest.csv")
        assert (manifest.groupby("source_case").size() == 2).all()  # versions: 2
        for qc in ("montage.png", "hu_stats.csv", "wasserstein.json", "generator_loss.csv", "generator_loss.png"):
            assert (results / f"fold_{fold}/synthetic/qc" / qc).exists(), qc


def test_saliency_maps_and_the_report_cover_every_test_patient(finished_run):
    import SimpleITK as sitk

    results = finished_run / "results"
    splits = json.loads((results / "folds/splits.json").read_text())["folds"]
    for fold, split in enumerate(splits):
        folder = results / f"fold_{fold}/saliency/t2"  # auto: the fusion's image scenario
        index = pd.read_csv(folder / "index.csv")
        assert sorted(index["case_id"]) == sorted(split["test"])
        for row in index.itertuples():
            overlay = sitk.ReadImage(str(folder / row.nifti))
            ct = sitk.ReadImage(str(results / f"ingest/{row.case_id}/ct.nii.gz"))
            assert overlay.GetSize() == ct.GetSize() and overlay.GetOrigin() == pytest.approx(ct.GetOrigin())
            assert (folder / row.png).stat().st_size > 0
    page = (results / "report.html").read_text()
    for section in ("What was run", "Results", "ROC curves", "Per-patient out-of-fold predictions", "Saliency",
                    "Training curves", "Synthesis QC", "Preprocessing QC"):
        assert f">{section}</h2>" in page, section
    n_cases = len(pd.read_csv(results / "labels.csv"))
    # ROC, saliency, curves, synthesis montages and marker plots, preprocessing QC
    assert page.count("<img ") == 1 + n_cases + 2 * 5 + 2 + 2 + n_cases
    assert "Does each synthetic CT carry its label?" in page and "Marker fidelity" in page
    assert "16 patients" in page and "null_t2" in page


def test_out_of_fold_predictions_cover_every_patient_once_per_scenario(finished_run):
    results = finished_run / "results"
    splits = json.loads((results / "folds/splits.json").read_text())
    for scenario in ("t1", "t2", "t3", "t5", "null_t2", "volume", "radiomics", "markers", "fusion"):
        frames = [pd.read_csv(results / f"fold_{k}/classifier/{scenario}/predictions_patients.csv") for k in (0, 1)]
        patients = pd.concat(frames)
        assert sorted(patients["case_id"]) == sorted(c for fold in splits["folds"] for c in fold["test"])


def test_no_held_out_patient_reached_a_generator(finished_run):
    results = finished_run / "results"
    splits = json.loads((results / "folds/splits.json").read_text())
    for k, fold in enumerate(splits["folds"]):
        held_out = set(fold["val"]) | set(fold["test"])
        trained_on = set(json.loads((results / f"fold_{k}/generator/trained_on.json").read_text())["cases"])
        sources = set(pd.read_csv(results / f"fold_{k}/synthetic/manifest.csv")["source_case"])
        assert trained_on and trained_on <= set(fold["train"]) and not trained_on & held_out
        assert sources <= set(fold["train"]) and not sources & held_out


def test_a_second_run_has_nothing_to_do(finished_run):
    import yaml

    result = run_snakemake(finished_run, yaml.safe_load(TINY_CONFIG.read_text()), "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_report_builds_without_warnings(finished_run):
    import yaml

    report = finished_run / "report.html"
    result = run_snakemake(finished_run, yaml.safe_load(TINY_CONFIG.read_text()), "--report", str(report))
    assert report.stat().st_size > 0
    # docutils warnings (a clashing link target, a broken caption) show up in the rendered page.
    assert "WARNING" not in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]


def test_a_window_change_retrains_without_redoing_the_cache(finished_run):
    import yaml

    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["preprocess"]["windows"] = [{"level": 40, "width": 80}, {"level": 60, "width": 60}]
    result = run_snakemake(finished_run, config, "-n")
    planned = " ".join((result.stdout + result.stderr).split())
    assert "train_classifier" in planned and "rule preprocess" not in planned


def planned_jobs(result) -> dict[str, int]:
    """Rule -> number of jobs, from the 'Job stats' table of a dry run (empty: nothing to do)."""
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = (line.split() for line in table.splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def test_speed_settings_rerun_nothing(finished_run):
    import yaml

    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["classifier"]["num_workers"] = 2
    config["synthesis"]["sample_batch_size"] = 3
    config["resources"]["training_threads"] = 2
    config["device"] = "auto"
    assert planned_jobs(run_snakemake(finished_run, config, "-n")) == {}


def test_a_result_setting_plans_exactly_the_jobs_it_changes(finished_run):
    import yaml

    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["classifier"]["lr"] = 1e-3
    # 2 folds x (t1, t2, t3, t5, null_t2); the fusion and the saliency maps read t2; nothing upstream.
    expected = {"train_classifier": 10, "fusion": 2, "saliency": 2, "statistics": 1, "html_report": 1, "all": 1}
    assert planned_jobs(run_snakemake(finished_run, config, "-n")) == expected

    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["synthesis"]["versions"] = 3
    # New versions from the same generators: synthesis and the scenarios that train on it.
    expected = {"synthesize": 2, "synthesis_fidelity": 2, "train_classifier": 4, "statistics": 1, "html_report": 1, "all": 1}
    assert planned_jobs(run_snakemake(finished_run, config, "-n")) == expected


def test_models_record_their_settings_and_keep_no_checkpoint(finished_run):
    results = finished_run / "results"
    models = sorted(results.glob("fold_*/classifier/*/model.pt")) + sorted(results.glob("fold_*/generator/model.pt"))
    assert len(models) == 2 * 5 + 2
    for model in models:
        record = json.loads((model.parent / "trained_with.json").read_text())
        assert record["environment"]["threads"] == 1 and record["environment"]["device"] == "cpu"
        assert record["environment"]["packages"]["torch"]
    classifier = json.loads((results / "fold_0/classifier/t2/trained_with.json").read_text())
    assert classifier["settings"]["classifier"]["lr"] == 0.0003 and "num_workers" not in classifier["settings"]["classifier"]
    assert not list(results.rglob("checkpoint_latest.pt")), "checkpoints stay after training finished"


def test_no_patient_identifier_in_any_output_or_log(finished_run):
    # The simulator writes fake identifiers into the DICOM headers (names, ids, birth dates).
    needles = ["SIM^PATIENT", "FAKEID", "FAKEACC", "PatientName", "PatientBirthDate"]
    for path in (finished_run / "results").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".csv", ".log", ".md", ".tsv", ".html"}:
            text = path.read_text(errors="replace")
            for needle in needles:
                assert needle not in text, f"{needle} found in {path}"
