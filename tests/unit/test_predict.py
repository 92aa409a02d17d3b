"""hepred.predict: the fold ensemble of one scenario applied to new cases from a sample sheet."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from scipy.special import expit

from hepred.baselines import baseline_logits, fit_baseline, load_baseline
from hepred.classifier import build_model, classifier_settings
from hepred.errors import HepredError
from hepred.markers import marker_features
from hepred.patient_rules import PATIENT_RULES
from hepred.predict import OUTPUT_COLUMNS, predict
from hepred.preprocess import preprocess_settings
from hepred.radiomics import radiomics_features
from hepred.training import save_weights

SPACING = (3.2, 3.2, 16.0)
SHAPE = (8, 64, 64)  # z, y, x
RADIOMICS = {"bin_width": 5.0, "force_2d": True}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def phantom_head(path_prefix: Path, lesion_offset: float) -> tuple[Path, Path]:
    """Skull (1000 HU) around brain (34 HU) with a 70 HU lesion, air outside; NIfTI CT + mask."""
    nz, ny, nx = SHAPE
    z, y, x = np.meshgrid(
        (np.arange(nz) - nz / 2) * SPACING[2],
        (np.arange(ny) - ny / 2) * SPACING[1],
        (np.arange(nx) - nx / 2) * SPACING[0],
        indexing="ij",
    )

    def ellipsoid(a, b, c, dx=0.0, dy=0.0, dz=0.0):
        return ((x - dx) / a) ** 2 + ((y - dy) / b) ** 2 + ((z - dz) / c) ** 2 < 1

    inner = ellipsoid(66, 84, 56)
    hu = np.full(SHAPE, -1000.0)
    hu[ellipsoid(75, 93, 65) & ~inner] = 1000
    hu[inner] = 34
    lesion = ellipsoid(18, 16, 30, dx=lesion_offset, dy=-20)
    hu[lesion] = 70
    hu += np.random.default_rng(0).normal(0, 4, SHAPE)
    ct = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    ct.SetSpacing(SPACING)
    ct.SetOrigin((-100.0, -100.0, -64.0))
    mask = sitk.GetImageFromArray(lesion.astype(np.uint8))
    mask.CopyInformation(ct)
    ct_path, lesion_path = Path(f"{path_prefix}_ct.nii.gz"), Path(f"{path_prefix}_lesion.nii.gz")
    sitk.WriteImage(ct, str(ct_path))
    sitk.WriteImage(mask, str(lesion_path))
    return ct_path, lesion_path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """results/fold_{0,1}/classifier/t5/model.pt: two differently initialised tiny models."""
    cfg = classifier_settings({"model": "test_efficientnet", "image_size": 32, "crop": 16, "min_lesion_pixels": 5})
    for fold in range(2):
        torch.manual_seed(fold)
        model = build_model(cfg)
        extra = {
            "classifier": cfg,
            "preprocess": preprocess_settings({"size": 32}),
            "fold": fold,
            "scenario": "t5",
            # A far-off max-rule offset shows which rule's offset predict applies.
            "logit_offsets": {"mean": 0.0, "max": -30.0, "middle": 0.0},
            "train_cases": ["old1", "old2", "old3"],
        }
        save_weights(
            tmp_path / "results" / f"fold_{fold}" / "classifier" / "t5" / "model.pt", model.state_dict(), extra
        )
    return tmp_path / "results"


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    rows = []
    for case, offset in (("new1", 25.0), ("new2", -25.0)):
        ct, lesion = phantom_head(tmp_path / case, offset)
        rows.append({"case_id": case, "ct": ct.name, "lesion": lesion.name})
    path = tmp_path / "samples.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_predict_averages_fold_models_with_spread(models_dir, sheet, tmp_path):
    out_csv = tmp_path / "pred" / "predictions.csv"
    result = predict(models_dir, sheet, out_csv, scenario="t5", config={"device": "cpu"}, work_dir=tmp_path / "work")
    assert list(result.columns) == OUTPUT_COLUMNS
    assert list(result["case_id"]) == ["new1", "new2"]
    assert result["probability"].between(0, 1).all()
    assert (result["n_models"] == 2).all()
    assert (result["fold_models_min"] <= result["probability"]).all() and (
        result["probability"] <= result["fold_models_max"]
    ).all()
    # Two different random models disagree, so the spread is positive.
    assert (result["fold_models_sd"] > 0).all()
    assert list(result["prediction"]) == [int(p >= 0.5) for p in result["probability"]]
    pd.testing.assert_frame_equal(pd.read_csv(out_csv), result, check_dtype=False)
    # The new cases were preprocessed with the settings stored in the models (size 32).
    assert np.load(tmp_path / "work" / "preprocess" / "new1" / "hu.npy", mmap_mode="r").shape[1:] == (32, 32)

    strict = predict(
        models_dir, sheet, tmp_path / "strict.csv", config={"device": "cpu", "statistics": {"threshold": 1.0}}
    )
    assert (strict["prediction"] == 0).all()
    np.testing.assert_allclose(strict["probability"], result["probability"])

    # The run's slice aggregation (statistics.aggregation) applies to new cases too, with that
    # rule's own calibration offset.
    maxed = predict(
        models_dir, sheet, tmp_path / "max.csv", config={"device": "cpu", "statistics": {"aggregation": "max"}}
    )
    assert (maxed["probability"] < 1e-9).all()


def test_explain_writes_gradcam_maps_on_each_new_cases_ct_grid(models_dir, sheet, tmp_path):
    explain = tmp_path / "explain"
    result = predict(models_dir, sheet, tmp_path / "p.csv", scenario="t5", config={"device": "cpu"}, explain_dir=explain)
    index = pd.read_csv(explain / "index.csv")
    assert list(index["case_id"]) == list(result["case_id"])
    for row in index.itertuples():
        assert len(str(row.slices).split()) == 3 and (explain / row.png).stat().st_size > 0
        overlay = sitk.ReadImage(str(explain / row.nifti))
        ct = sitk.ReadImage(str(tmp_path / f"{row.case_id}_ct.nii.gz"))
        # On the patient's CT grid, finite, in [0, 1] and not empty.
        assert overlay.GetSize() == ct.GetSize()
        assert overlay.GetOrigin() == pytest.approx(ct.GetOrigin()) and overlay.GetSpacing() == pytest.approx(ct.GetSpacing())
        values = sitk.GetArrayFromImage(overlay)
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1 + 1e-6 and values.max() > 0
    with pytest.raises(HepredError, match="--explain shows where an image model looks"):
        predict(models_dir, sheet, tmp_path / "v.csv", scenario="volume", config={"device": "cpu"}, explain_dir=explain)


def test_explain_reuses_the_scores_of_the_prediction_and_shows_what_it_would_score_itself(models_dir, sheet, tmp_path, monkeypatch):
    import hepred.predict as predict_module
    import hepred.saliency as saliency_module

    calls = {"predict": 0, "explain": 0}

    def counting(where, original):
        def wrapper(*args, **kwargs):
            calls[where] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(predict_module, "view_logits", counting("predict", predict_module.view_logits))
    monkeypatch.setattr(saliency_module, "view_logits", counting("explain", saliency_module.view_logits))
    predict(models_dir, sheet, tmp_path / "p.csv", scenario="t5", config={"device": "cpu"}, explain_dir=tmp_path / "reused")
    n_models = len(list(Path(models_dir).glob("fold_*/classifier/t5/model.pt")))
    assert n_models > 1 and calls == {"predict": n_models, "explain": 0}

    # The same maps when explain scores the slices itself.
    explain_alone = predict_module.explain_cases
    monkeypatch.setattr(
        predict_module, "explain_cases", lambda *args, scored_view_logits, **kwargs: explain_alone(*args, **kwargs)
    )
    predict(models_dir, sheet, tmp_path / "q.csv", scenario="t5", config={"device": "cpu"}, explain_dir=tmp_path / "alone")
    assert calls["explain"] == n_models
    reused, alone = (pd.read_csv(tmp_path / name / "index.csv") for name in ("reused", "alone"))
    pd.testing.assert_frame_equal(reused, alone)


def test_predict_refuses_a_model_without_calibration_offsets(models_dir, sheet, tmp_path):
    path = models_dir / "fold_1" / "classifier" / "t5" / "model.pt"
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["logit_offsets"]
    save_weights(path, payload["state_dict"], payload["meta"])
    with pytest.raises(HepredError, match="fold_1.*rerun train_classifier"):
        predict(models_dir, sheet, tmp_path / "out.csv", config={"device": "cpu"}, work_dir=tmp_path / "work")
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "work").exists()


def test_predict_refuses_missing_models_and_single_ct_without_lesion(models_dir, sheet, tmp_path):
    with pytest.raises(HepredError, match="t1/model.pt"):
        predict(models_dir, sheet, tmp_path / "out.csv", scenario="t1")
    ct, _ = phantom_head(tmp_path / "single", 20.0)
    with pytest.raises(HepredError, match="lesion"):
        predict(models_dir, ct, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_predict_single_ct_with_its_lesion(models_dir, tmp_path):
    ct, lesion = phantom_head(tmp_path / "single", 20.0)
    result = predict(models_dir, ct, tmp_path / "out.csv", lesion=lesion, config={"device": "cpu"})
    assert list(result["case_id"]) == ["single_ct"] and result["probability"].between(0, 1).all()


def test_one_bad_case_among_three_fails_alone(models_dir, sheet, tmp_path, caplog):
    frame = pd.read_csv(sheet)
    frame.loc[len(frame)] = {"case_id": "lost", "ct": "nowhere_ct.nii.gz", "lesion": "new1_lesion.nii.gz"}
    frame = frame.iloc[[0, 2, 1]]
    frame.to_csv(sheet, index=False)
    out_csv = tmp_path / "pred.csv"
    with caplog.at_level("ERROR", logger="hepred.predict"):
        result = predict(models_dir, sheet, out_csv, config={"device": "cpu"}, work_dir=tmp_path / "work")
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line == f"case lost: {tmp_path / 'nowhere_ct.nii.gz'}: file not found"
    assert list(result["case_id"]) == ["new1", "lost", "new2"]
    scored = result.set_index("case_id")
    assert scored.loc[["new1", "new2"], "probability"].between(0, 1).all()
    assert scored.loc[["new1", "new2"], "error"].isna().all() and scored.loc["lost", "error"] == line
    assert np.isnan(scored.loc["lost", "probability"]) and scored.loc["lost", "n_models"] == 0
    assert (result["scenario"] == "t5").all() and (result["patient_rule"] == "mean").all()
    assert (result["models_dir"] == str(models_dir.resolve())).all()
    written = pd.read_csv(out_csv)
    assert list(written.columns) == OUTPUT_COLUMNS and written["error"].notna().sum() == 1


def test_without_a_config_the_runs_own_rule_and_threshold_apply(models_dir, sheet, tmp_path):
    with pytest.raises(HepredError, match="statistics/metrics.json.*pass the run's config"):
        predict(models_dir, sheet, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    (models_dir / "statistics").mkdir()
    run = {"config": {"aggregation": "max", "threshold": 0.25}, "n_patients": 40}
    (models_dir / "statistics" / "metrics.json").write_text(json.dumps(run))
    result = predict(models_dir, sheet, tmp_path / "out.csv")
    assert (result["patient_rule"] == "max").all() and (result["threshold"] == 0.25).all()
    assert (result["probability"] < 1e-9).all()  # the max rule's own offset (-30) applied


def test_a_case_of_the_runs_cohort_is_warned_about(models_dir, sheet, tmp_path, caplog):
    path = models_dir / "fold_0" / "classifier" / "t5" / "model.pt"
    payload = torch.load(path, weights_only=True)
    payload["meta"]["train_cases"] = ["new1", "old1"]
    save_weights(path, payload["state_dict"], payload["meta"])
    (models_dir / "folds").mkdir()
    splits = {"folds": [{"train": ["new1", "old1"], "val": ["old2"], "test": ["new2"]}]}
    (models_dir / "folds" / "splits.json").write_text(json.dumps(splits))
    with caplog.at_level("WARNING", logger="hepred.predict"):
        result = predict(models_dir, sheet, tmp_path / "out.csv", config={"device": "cpu"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and warnings[0].startswith("case new1: ") and warnings[1].startswith("case new2: ")
    assert all("run's own cohort" in w for w in warnings)
    assert list(result["in_run_cohort"]) == [True, True]


def phantom_features(images: dict[str, tuple[Path, Path]]) -> pd.DataFrame:
    """Radiomics and marker features of each case's (CT, lesion), one row per case."""
    rows = []
    for case, (ct, lesion) in images.items():
        radiomics = radiomics_features(ct, lesion, case, RADIOMICS).set_index("case_id")
        rows.append(radiomics.join(marker_features(ct, lesion, case).set_index("case_id")))
    return pd.concat(rows)


@pytest.fixture
def baseline_models(models_dir: Path, sheet: Path, tmp_path: Path) -> Path:
    """Beside the t5 models: volume, radiomics and markers models of two folds, fitted on made-up
    patients whose features come from the two phantoms, and a fusion of radiomics and markers with t5."""
    features = phantom_features({case: (tmp_path / f"{case}_ct.nii.gz", tmp_path / f"{case}_lesion.nii.gz")
                                 for case in ("new1", "new2")})
    rng = np.random.default_rng(0)
    cohort = pd.concat([features] * 10, ignore_index=True)
    cohort = cohort * rng.lognormal(0, 0.1, cohort.shape)
    cohort.index = [f"old{i}" for i in range(len(cohort))]
    labels = {case: int(i % 2) for i, case in enumerate(cohort.index)}
    for fold in range(2):
        for model in ("volume", "radiomics", "markers"):
            fitted = fit_baseline(model, cohort, labels, list(cohort.index), inner_folds=3, seed=fold)
            folder = models_dir / f"fold_{fold}" / "classifier" / model
            folder.mkdir(parents=True)
            (folder / "model.pkl").write_bytes(pickle.dumps({**fitted, "fold": fold, "seed": fold, "settings": RADIOMICS}))
        scale = {column: {"t5": {"mean": 0.0, "sd": 2.0}, "radiomics": {"mean": 0.5, "sd": 1.5},
                          "markers": {"mean": -0.5, "sd": 1.0}}
                 for column in PATIENT_RULES}
        folder = models_dir / f"fold_{fold}" / "classifier" / "fusion"
        folder.mkdir(parents=True)
        (folder / "fusion.json").write_text(json.dumps(
            {"fold": fold, "image_scenario": "t5", "models": ["radiomics", "markers"], "anchor": "radiomics", "scale": scale}
        ))
    return models_dir


def test_baselines_and_fusion_score_new_cases_as_their_folds_did(baseline_models, sheet, tmp_path):
    config = {"device": "cpu"}
    image = predict(baseline_models, sheet, tmp_path / "t5.csv", scenario="t5", config=config, work_dir=tmp_path / "w1")
    work = tmp_path / "w2"
    radiomics = predict(baseline_models, sheet, tmp_path / "r.csv", scenario="radiomics", config=config, work_dir=work)
    assert list(radiomics["case_id"]) == ["new1", "new2"] and (radiomics["n_models"] == 2).all()
    assert not (work / "preprocess").exists()  # a baseline needs the ingested CT only
    features = phantom_features({case: (work / "ingest" / case / "ct.nii.gz", work / "ingest" / case / "lesion.nii.gz")
                                 for case in ("new1", "new2")})
    for model, scored in (("radiomics", radiomics), ("markers", predict(
            baseline_models, sheet, tmp_path / "m.csv", scenario="markers", config=config, work_dir=tmp_path / "w3"))):
        fold_models = [load_baseline(baseline_models / f"fold_{k}/classifier/{model}/model.pkl") for k in (0, 1)]
        expected = np.mean([expit(baseline_logits(m, features, ["new1", "new2"])) for m in fold_models], axis=0)
        np.testing.assert_allclose(scored["probability"], expected)

    volume = predict(baseline_models, sheet, tmp_path / "v.csv", scenario="volume", config=config)
    assert volume["probability"].between(0, 1).all() and (volume["scenario"] == "volume").all()

    fused = predict(baseline_models, sheet, tmp_path / "f.csv", scenario="fusion", config=config)
    # Each fold fuses its own t5 model with its own radiomics and markers models; t5's per-fold scores are
    # not in predict's output, so check the fusion's range and that it moved off both inputs.
    assert fused["probability"].between(0, 1).all() and (fused["n_models"] == 2).all()
    assert not np.allclose(fused["probability"], radiomics["probability"])
    assert not np.allclose(fused["probability"], image["probability"])


@pytest.mark.parametrize("scenario, unused", [("markers", "radiomics_features"), ("radiomics", "marker_features"),
                                              ("volume", "marker_features")])
def test_each_patient_level_model_extracts_only_its_own_features(baseline_models, sheet, tmp_path, monkeypatch, scenario, unused):
    # radiomics costs seconds per case; a markers model must not pay for it, nor radiomics for the markers.
    def refuse(*args, **kwargs):
        raise AssertionError(f"{scenario} extracted {unused}")

    monkeypatch.setattr(f"hepred.predict.{unused}", refuse)
    scored = predict(baseline_models, sheet, tmp_path / "p.csv", scenario=scenario, config={"device": "cpu"})
    assert scored["probability"].between(0, 1).all() and (scored["n_models"] == 2).all()


def test_a_case_the_markers_refuse_fails_alone(baseline_models, sheet, tmp_path):
    # Clot density all round the lesion, as in a CT cropped to it: no brain to read the swirl sign
    # against (air only far off, at the far end of the y axis, so that it reads as HU).
    ct = sitk.ReadImage(str(tmp_path / "new1_ct.nii.gz"))
    hu = np.full(sitk.GetArrayFromImage(ct).shape, 70, np.int16)
    hu[:, -5:, :] = -1000
    cropped = sitk.GetImageFromArray(hu)
    cropped.CopyInformation(ct)
    sitk.WriteImage(cropped, str(tmp_path / "crop_ct.nii.gz"))
    frame = pd.read_csv(sheet)
    frame.loc[len(frame)] = {"case_id": "crop", "ct": "crop_ct.nii.gz", "lesion": "new1_lesion.nii.gz"}
    frame.to_csv(sheet, index=False)

    scored = predict(baseline_models, sheet, tmp_path / "m.csv", scenario="markers", config={"device": "cpu"})

    scored = scored.set_index("case_id")
    assert scored.loc[["new1", "new2"], "probability"].between(0, 1).all()
    assert scored.loc[["new1", "new2"], "error"].isna().all()
    assert scored.loc["crop", "error"].startswith(f"case crop: {tmp_path / 'new1_lesion.nii.gz'}: no brain parenchyma")
    assert np.isnan(scored.loc["crop", "probability"])


def test_a_fusion_from_before_several_models_is_refused_before_any_case_is_read(baseline_models, sheet, tmp_path, monkeypatch):
    stale = baseline_models / "fold_1" / "classifier" / "fusion" / "fusion.json"
    stored = json.loads(stale.read_text())
    del stored["models"]
    stale.write_text(json.dumps(stored))

    def refuse(*args, **kwargs):
        raise AssertionError("a case was ingested for a fusion that cannot score it")

    monkeypatch.setattr("hepred.predict.ingest_case", refuse)
    with pytest.raises(HepredError, match="predates fusing several models") as raised:
        predict(baseline_models, sheet, tmp_path / "f.csv", scenario="fusion", config={"device": "cpu"})
    assert raised.value.path == str(stale)
    assert not (tmp_path / "f.csv").exists()


def test_a_markers_model_of_markers_this_hepred_does_not_measure_is_refused_before_any_case_is_read(
    baseline_models, sheet, tmp_path, monkeypatch
):
    stale = baseline_models / "fold_1" / "classifier" / "markers" / "model.pkl"
    fitted = pickle.loads(stale.read_bytes())
    fitted["columns"] = ["radial_cv", *fitted["columns"][1:]]  # a marker an older hepred measured
    stale.write_bytes(pickle.dumps(fitted))

    def refuse(*args, **kwargs):
        raise AssertionError("a case was ingested for a model that cannot score it")

    monkeypatch.setattr("hepred.predict.ingest_case", refuse)
    for scenario in ("markers", "fusion"):
        with pytest.raises(HepredError, match=r"does not measure \(radial_cv;") as raised:
            predict(baseline_models, sheet, tmp_path / "m.csv", scenario=scenario, config={"device": "cpu"})
        assert raised.value.path == str(stale)
    assert not (tmp_path / "m.csv").exists()


def test_scoring_new_cases_does_not_load_the_training_loop():
    # predict (and anyone scoring with a trained model) needs settings, scoring and
    # calibration, never hepred.classifier.train.
    code = "import sys, hepred.predict; print('hepred.classifier.train' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_scored_logits_that_do_not_match_the_slices_are_refused(models_dir, sheet, tmp_path, monkeypatch):
    import hepred.predict as predict_module

    explain = predict_module.explain_cases

    def truncated(*args, scored_view_logits, **kwargs):
        return explain(*args, scored_view_logits=[logits[..., :-1] for logits in scored_view_logits], **kwargs)

    monkeypatch.setattr(predict_module, "explain_cases", truncated)
    with pytest.raises(HepredError, match="are not 2 models x"):
        predict(models_dir, sheet, tmp_path / "p.csv", scenario="t5", config={"device": "cpu"}, explain_dir=tmp_path / "e")
