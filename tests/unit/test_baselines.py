"""Baselines beside the image scenarios: radiomics features, volume and radiomics models, fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from hepred.baselines import (
    PENALTY_GRID,
    baseline_logits,
    fit_baseline,
    case_features,
    fuse_logits,
    reference_scale,
    load_baseline,
    train_baseline,
    train_fusion,
)
from hepred.patient_rules import PATIENT_COLUMNS, PATIENT_RULES
from hepred.errors import HepredError
from hepred.markers import MARKER_FEATURES
from hepred.radiomics import VOLUME_FEATURE, feature_value, radiomics_features

SETTINGS = {"bin_width": 5.0, "force_2d": True, "inner_folds": 3}
SPACING = (0.5, 0.5, 5.0)


def write_case(folder: Path, radius_mm: float, hypodense: bool, seed: int) -> tuple[Path, Path]:
    """A CT in HU with a spherical hematoma (60 HU, or with a 35 HU core) and its mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:10, 0:64, 0:64]
    distance = np.sqrt(((x - 32) * SPACING[0]) ** 2 + ((y - 32) * SPACING[1]) ** 2 + ((z - 5) * SPACING[2]) ** 2)
    hu = rng.normal(35, 3, z.shape)
    lesion = distance <= radius_mm
    hu[lesion] = rng.normal(60, 3, int(lesion.sum()))
    if hypodense:
        hu[distance <= radius_mm / 2] = 35
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ct.nii.gz", folder / "lesion.nii.gz"
    for array, path in ((hu.astype(np.int16), paths[0]), (lesion.astype(np.uint8), paths[1])):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        sitk.WriteImage(image, str(path))
    return paths


def test_radiomics_features_of_a_lesion_on_the_native_grid(tmp_path):
    ct, lesion = write_case(tmp_path / "a", radius_mm=8.0, hypodense=True, seed=0)
    row = radiomics_features(ct, lesion, "a", SETTINGS)
    assert row["case_id"].tolist() == ["a"]
    values = row.drop(columns="case_id").iloc[0]
    assert np.isfinite(values.to_numpy(float)).all()
    voxels = int(sitk.GetArrayFromImage(sitk.ReadImage(str(lesion))).sum())
    assert values[VOLUME_FEATURE] == pytest.approx(voxels * np.prod(SPACING))
    assert {"original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Sphericity"} <= set(values.index)
    # The hypodense core lowers the lesion's 10th percentile to the core's 35 HU.
    assert values["original_firstorder_10Percentile"] < 45


def test_an_empty_lesion_is_one_line_naming_case_and_file(tmp_path):
    ct, lesion = write_case(tmp_path / "e", radius_mm=-1.0, hypodense=False, seed=0)
    with pytest.raises(HepredError, match=r"case e: .*lesion.nii.gz: lesion mask is empty"):
        radiomics_features(ct, lesion, "e", SETTINGS)


def feature_table(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Made-up features: the label follows log volume and one texture feature, plus a constant column."""
    rng = np.random.default_rng(seed)
    cases = [f"p{i:03d}" for i in range(n)]
    log_volume = rng.normal(3, 0.8, n)
    texture = rng.normal(0, 1, n)
    labels = (log_volume - 3 + texture + rng.normal(0, 0.7, n) > 0.3).astype(int)
    table = pd.DataFrame(
        {
            VOLUME_FEATURE: np.exp(log_volume) * 1000,
            "original_glcm_Contrast": texture,
            "original_firstorder_Noise": rng.normal(0, 1, n),
            "constant": 1.0,
        },
        index=pd.Index(cases, name="case_id"),
    )
    return table, dict(zip(cases, labels.tolist()))


def write_feature_files(folder: Path, table: pd.DataFrame) -> list[Path]:
    paths = []
    for case, row in table.iterrows():
        path = folder / case / "features.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"case_id": case, **row.to_dict()}]).to_csv(path, index=False)
        paths.append(path)
    return paths


def test_a_shape_feature_with_a_round_off_imaginary_part_reads_as_its_real_part():
    # As pyradiomics gave it for a round lesion whose two axes are equal.
    assert feature_value("original_shape_Elongation", np.complex128(1 - 4e-17j), "c1") == 1.0
    assert isinstance(feature_value("original_firstorder_Mean", np.float64(65.5), "c1"), float)
    with pytest.raises(HepredError, match="case c1: .*original_shape_Flatness is complex"):
        feature_value("original_shape_Flatness", np.complex128(0.3 + 0.2j), "c1")


def test_volume_and_radiomics_models_learn_from_the_fitted_patients_only():
    table, labels = feature_table(n=200)
    cases = list(table.index)
    fitted_on, held_out = cases[:140], cases[140:]
    volume = fit_baseline("volume", table, labels, fitted_on, inner_folds=3, seed=0)
    radiomics = fit_baseline("radiomics", table, labels, fitted_on, inner_folds=3, seed=0)
    assert volume["columns"] == ["log_volume_ml"]
    assert "constant" not in radiomics["columns"] and len(radiomics["columns"]) == 3
    assert radiomics["fitted_on"] == sorted(fitted_on)
    assert radiomics["estimator"][-1].C_ in PENALTY_GRID
    truth = [labels[c] for c in held_out]
    assert roc_auc_score(truth, baseline_logits(volume, table, held_out)) > 0.6
    assert roc_auc_score(truth, baseline_logits(radiomics, table, held_out)) > roc_auc_score(
        truth, baseline_logits(volume, table, held_out)
    )
    # Out-of-fold logits of the fitted patients: each from a model that did not see it, so
    # they rank the fitted patients about as well as new ones and spread less than in-sample ones.
    out_of_fold = radiomics["out_of_fold_logits"]
    assert len(out_of_fold) == len(fitted_on)
    assert np.std(out_of_fold) < np.std(baseline_logits(radiomics, table, radiomics["fitted_on"]))
    assert roc_auc_score([labels[c] for c in radiomics["fitted_on"]], out_of_fold) > 0.6


def test_a_fold_model_sees_neither_its_test_labels_nor_its_test_features(tmp_path):
    table, labels = feature_table(n=80)
    cases = list(table.index)
    fold = {"train": cases[:50], "val": cases[50:64], "test": cases[64:]}
    features = write_feature_files(tmp_path / "features", table)
    first = train_baseline("radiomics", 0, fold, labels, features, SETTINGS, tmp_path / "a", 0)
    # Other labels and other features for the test patients: the same model, so the same scores
    # wherever the test features are the same.
    relabelled = {**labels, **{case: 1 - labels[case] for case in fold["test"]}}
    shuffled = table.copy()
    shuffled.loc[fold["test"][:8]] = shuffled.loc[fold["test"][8:]].to_numpy()[:8]
    second = train_baseline(
        "radiomics", 0, fold, relabelled, write_feature_files(tmp_path / "other", shuffled), SETTINGS, tmp_path / "b", 0
    )
    same = fold["test"][8:]
    assert first.set_index("case_id").loc[same, "probability_mean"].tolist() == pytest.approx(
        second.set_index("case_id").loc[same, "probability_mean"].tolist()
    )
    assert (tmp_path / "a" / "model.pkl").read_bytes() != b""
    a, b = load_baseline(tmp_path / "a" / "model.pkl"), load_baseline(tmp_path / "b" / "model.pkl")
    assert np.array_equal(a["out_of_fold_logits"], b["out_of_fold_logits"])


def test_a_missing_feature_row_names_the_case():
    table, labels = feature_table()
    with pytest.raises(HepredError, match="case ghost: no radiomics features"):
        fit_baseline("radiomics", table, labels, list(table.index[:30]) + ["ghost"], inner_folds=3, seed=0)


def test_baseline_predictions_read_the_same_under_every_patient_rule(tmp_path):
    table, labels = feature_table()
    cases = list(table.index)
    fold = {"train": cases[:36], "val": cases[36:48], "test": cases[48:]}
    out = tmp_path / "fold_0" / "classifier" / "radiomics"
    train_baseline("radiomics", 0, fold, labels, write_feature_files(tmp_path / "features", table), SETTINGS, out, 0)
    patients = pd.read_csv(out / "predictions_patients.csv")
    assert list(patients.columns) == PATIENT_COLUMNS
    assert sorted(patients["case_id"]) == sorted(fold["test"])
    assert patients["label"].tolist() == [labels[c] for c in patients["case_id"]]
    assert (patients["scenario"] == "radiomics").all()
    for column in PATIENT_RULES:
        assert patients[column].tolist() == patients["probability_mean"].tolist()
    assert load_baseline(out / "model.pkl")["fitted_on"] == sorted(fold["train"] + fold["val"])


def test_fusion_averages_the_models_on_the_first_ones_scale():
    image_val = np.array([-10.0, 0.0, 10.0, 20.0])  # mean 5, SD sqrt(125)
    radiomics_reference = np.array([-2.0, 0.0, 2.0])  # mean 0, SD sqrt(8/3)
    scales = {"t2": reference_scale(image_val), "radiomics": reference_scale(radiomics_reference)}
    image_test = np.array([5.0, 5.0 + np.sqrt(125.0)])  # z = 0 and z = 1
    fused = fuse_logits({"radiomics": np.array([1.0, 1.0]), "t2": image_test}, scales, anchor="radiomics")
    assert fused == pytest.approx([0.5, 0.5 * (1 + np.sqrt(8 / 3))])
    # A third model weighs a third; the anchor's logits are taken as they are.
    scales["markers"] = reference_scale(np.array([10.0, 12.0, 14.0]))  # mean 12
    three = fuse_logits({"radiomics": np.array([1.0]), "markers": np.array([12.0]), "t2": np.array([5.0])}, scales, "radiomics")
    assert three == pytest.approx([1.0 / 3])
    # A model whose reference scores are all equal still fuses (its scale is 1).
    assert reference_scale(np.zeros(4))["sd"] == 1.0


def marker_table(table: pd.DataFrame, labels: dict[str, int], seed: int = 2) -> pd.DataFrame:
    """Made-up markers: the isodense volume follows the label (2.5 SD apart: the held-out AUC
    was 0.83-0.95 over 8 noise seeds; at 1.5 SD it was 0.60-0.82, so adding a marker column
    could fail the test by chance), the others are noise."""
    rng = np.random.default_rng(seed)
    markers = pd.DataFrame(rng.normal(0, 1, (len(table), len(MARKER_FEATURES))), index=table.index, columns=list(MARKER_FEATURES))
    markers["isodense_ml"] += 2.5 * np.array([labels[case] for case in table.index])
    return markers


def test_the_markers_model_reads_the_marker_columns_only_and_radiomics_never_reads_them(tmp_path):
    table, labels = feature_table(n=120)
    markers = marker_table(table, labels)
    joined = case_features(write_feature_files(tmp_path / "r", table), write_feature_files(tmp_path / "m", markers))
    cases = list(table.index)
    fitted = fit_baseline("markers", joined, labels, cases[:90], inner_folds=3, seed=0)
    radiomics = fit_baseline("radiomics", joined, labels, cases[:90], inner_folds=3, seed=0)
    assert fitted["columns"] == list(MARKER_FEATURES)
    assert not set(radiomics["columns"]) & set(MARKER_FEATURES)
    assert roc_auc_score([labels[c] for c in cases[90:]], baseline_logits(fitted, joined, cases[90:])) > 0.7
    with pytest.raises(HepredError, match="markers: no marker features"):
        fit_baseline("markers", table, labels, cases[:90], inner_folds=3, seed=0)


def test_fusion_writes_every_rule_from_the_image_model_of_that_rule(tmp_path):
    table, labels = feature_table()
    markers = marker_table(table, labels)
    cases = list(table.index)
    fold = {"train": cases[:36], "val": cases[36:48], "test": cases[48:]}
    features = write_feature_files(tmp_path / "features", table)
    marker_files = write_feature_files(tmp_path / "markers", markers)
    joined = case_features(features, marker_files)
    for model in ("radiomics", "markers"):
        train_baseline(model, 0, fold, labels, features, SETTINGS, tmp_path / model, 0, marker_files=marker_files)
    models = [tmp_path / "radiomics" / "model.pkl", tmp_path / "markers" / "model.pkl"]
    rng = np.random.default_rng(1)
    image_dir = tmp_path / "t2"
    image_dir.mkdir()
    for name, patients in (("predictions_patients.csv", fold["test"]), ("predictions_validation.csv", fold["val"])):
        frame = pd.DataFrame({"case_id": patients, "fold": 0, "scenario": "t2", "n_slices": 3})
        frame["label"] = [labels[c] for c in patients]
        for column in PATIENT_RULES:
            frame[column] = expit(rng.normal(0, 3, len(patients)))
        frame[PATIENT_COLUMNS].to_csv(image_dir / name, index=False)
    out = tmp_path / "fusion"
    fused = train_fusion(
        0, fold, labels, features, models,
        image_dir / "predictions_patients.csv", image_dir / "predictions_validation.csv", out, marker_files=marker_files,
    )
    written = pd.read_csv(out / "predictions_patients.csv")
    assert list(written.columns) == PATIENT_COLUMNS and (written["scenario"] == "fusion").all()
    image = pd.read_csv(image_dir / "predictions_patients.csv").set_index("case_id")
    validation = pd.read_csv(image_dir / "predictions_validation.csv")
    fitted = {model: load_baseline(tmp_path / model / "model.pkl") for model in ("radiomics", "markers")}
    test_logits = {model: baseline_logits(fitted[model], joined, sorted(fold["test"])) for model in fitted}
    stored = json.loads((out / "fusion.json").read_text())
    assert stored["models"] == ["radiomics", "markers"] and stored["anchor"] == "radiomics"
    for column in PATIENT_RULES:
        scale = stored["scale"][column]
        # The image model's scale is that of its validation patients, a patient-level model's
        # that of its out-of-fold logits: never a test patient's.
        image_val = logit(validation[column].to_numpy())
        assert (scale["t2"]["mean"], scale["t2"]["sd"]) == pytest.approx((image_val.mean(), image_val.std()))
        for model in fitted:
            oof = fitted[model]["out_of_fold_logits"]
            assert (scale[model]["mean"], scale[model]["sd"]) == pytest.approx((oof.mean(), oof.std()))
        logits = {**test_logits, "t2": logit(image.loc[sorted(fold["test"]), column].to_numpy())}
        assert fused[column].to_numpy() == pytest.approx(expit(fuse_logits(logits, scale, "radiomics")))
    assert written["n_slices"].tolist() == [3] * len(fold["test"])

    # Other test scores and test labels change the fused test scores, never the scale.
    image["probability_mean"] = expit(rng.normal(0, 3, len(image)))
    image.reset_index().to_csv(image_dir / "predictions_patients.csv", index=False)
    relabelled = {**labels, **{case: 1 - labels[case] for case in fold["test"]}}
    train_fusion(
        0, fold, relabelled, features, models,
        image_dir / "predictions_patients.csv", image_dir / "predictions_validation.csv", tmp_path / "again",
        marker_files=marker_files,
    )
    assert json.loads((tmp_path / "again" / "fusion.json").read_text())["scale"] == stored["scale"]


def test_log_scales_add_features_of_the_filtered_images(tmp_path):
    ct, lesion = write_case(tmp_path / "a", radius_mm=8.0, hypodense=True, seed=0)
    plain = radiomics_features(ct, lesion, "a", SETTINGS)
    filtered = radiomics_features(ct, lesion, "a", {**SETTINGS, "log_sigma_mm": [2.0]})
    added = sorted(set(filtered.columns) - set(plain.columns))
    assert added and all(name.startswith("log-sigma-2-0-mm") for name in added)
    assert "log-sigma-2-0-mm-3D_firstorder_Mean" in added or "log-sigma-2-0-mm-2D_firstorder_Mean" in added
    assert filtered[plain.columns].equals(plain)
