import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation

from hepred.errors import HepredError
from hepred.dicom import convert_series, reference_grid
from hepred.simulate import (
    case_streams,
    cohort_difficulty,
    latent_difficulty,
    load_truth,
    sample_patient_parameters,
    simulate_case,
    simulate_cohort,
)

# A coarse grid with the real field of view (230 mm) and stack height (132 mm).
SMALL = dict(matrix=64, pixel_mm=3.6, slice_mm=12.0, n_slices=12)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    simulate_cohort(out, n=6, seed=0, tilt_fraction=0.5, **SMALL)
    return out


def read_series(case_dir: Path):
    """CT slices sorted by position, and the localizer(s)."""
    datasets = [pydicom.dcmread(path) for path in sorted((case_dir / "dicom").glob("*.dcm"))]
    localizers = [ds for ds in datasets if "LOCALIZER" in ds.ImageType]
    slices = sorted(
        (ds for ds in datasets if "LOCALIZER" not in ds.ImageType), key=lambda ds: ds.ImagePositionPatient[2]
    )
    return slices, localizers


def hu_volume(slices) -> np.ndarray:
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])


def mask(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def test_samples_sheet_points_at_the_files_and_has_no_label(cohort):
    sheet = pd.read_csv(cohort / "samples.csv")
    assert list(sheet.columns) == ["case_id", "ct", "lesion", "followup_lesion"]
    assert list(sheet["case_id"]) == [f"sim{i:03d}" for i in range(1, 7)]
    for row in sheet.itertuples():
        assert (cohort / row.ct).is_dir() and any((cohort / row.ct).glob("*.dcm"))
        assert (cohort / row.lesion).is_file() and (cohort / row.followup_lesion).is_file()
        assert (cohort / "truth" / f"{row.case_id}_brain.nii.gz").is_file()


def test_ct_series_has_the_ct_image_tags_and_hu_pixels(cohort):
    truth = load_truth(cohort)
    case = truth.loc[truth["tilt_deg"] == 0, "case_id"].iloc[0]
    slices, _ = read_series(cohort / case)
    assert len(slices) == SMALL["n_slices"]
    first = slices[0]
    assert first.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.Modality == "CT" and list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (first.Rows, first.Columns) == (64, 64)
    assert [float(x) for x in first.PixelSpacing] == [3.6, 3.6]
    assert first.PixelRepresentation == 0 and first.BitsAllocated == 16
    assert first.pixel_array.dtype == np.uint16
    assert float(first.RescaleIntercept) == -1024 and float(first.RescaleSlope) == 1
    assert [float(x) for x in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    positions = np.array([[float(x) for x in ds.ImagePositionPatient] for ds in slices])
    assert np.allclose(np.diff(positions[:, 2]), SMALL["slice_mm"]) and np.ptp(positions[:, :2], axis=0).max() == 0
    assert all(float(ds.SliceThickness) == SMALL["slice_mm"] for ds in slices)
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1

    hu = hu_volume(slices)
    brain = sitk.GetArrayFromImage(mask(cohort / "truth" / f"{case}_brain.nii.gz")).astype(bool)
    lesion = sitk.GetArrayFromImage(mask(cohort / case / "lesion.nii.gz")).astype(bool)
    assert hu[0, 0, 0] < -900  # air in the corner
    assert hu.max() > 700  # skull
    parenchyma = brain & ~binary_dilation(lesion, iterations=2)
    assert 10 < np.median(hu[parenchyma]) < 45
    assert 50 < np.median(hu[lesion]) < 90


def test_untilted_mask_grid_is_the_dicom_grid(cohort):
    truth = load_truth(cohort)
    case = truth.loc[truth["tilt_deg"] == 0, "case_id"].iloc[0]
    reader = sitk.ImageSeriesReader()
    slices, _ = read_series(cohort / case)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(cohort / case / "dicom"), slices[0].SeriesInstanceUID))
    ct = reader.Execute()
    lesion = mask(cohort / case / "lesion.nii.gz")
    assert lesion.GetSize() == ct.GetSize()
    assert np.allclose(lesion.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    assert np.allclose(lesion.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    assert np.allclose(lesion.GetDirection(), ct.GetDirection())
    assert lesion.GetPixelID() == sitk.sitkUInt8


def test_tilted_series_is_sheared_and_its_masks_lie_on_the_corrected_grid(cohort):
    truth = load_truth(cohort)
    tilted = truth[truth["tilt_deg"] > 0]
    assert len(tilted) >= 1
    case, tilt_deg = tilted.iloc[0][["case_id", "tilt_deg"]]
    assert 10 <= tilt_deg <= 20
    slices, _ = read_series(cohort / case)
    t = math.radians(tilt_deg)
    for ds in slices:
        assert np.allclose(
            [float(x) for x in ds.ImageOrientationPatient], [1, 0, 0, 0, math.cos(t), math.sin(t)], atol=1e-5
        )
        assert float(ds.GantryDetectorTilt) == pytest.approx(tilt_deg, abs=1e-3)
    positions = np.array([[float(x) for x in ds.ImagePositionPatient] for ds in slices])
    assert np.ptp(positions[:, :2], axis=0).max() == 0  # the table moves along z only
    assert np.allclose(np.diff(positions[:, 2]), SMALL["slice_mm"])

    # The masks lie on the converter's tilt-corrected grid, so ingest copies them as they
    # are, and the converted CT shows the hematoma inside the mask.
    lesion = mask(cohort / case / "lesion.nii.gz")
    grid = reference_grid(cohort / case / "dicom")
    assert lesion.GetSize() == grid.GetSize()
    assert np.allclose(lesion.GetOrigin(), grid.GetOrigin(), atol=1e-3)
    assert np.allclose(lesion.GetSpacing(), grid.GetSpacing(), atol=1e-4)
    assert np.allclose(lesion.GetDirection(), grid.GetDirection(), atol=1e-6)
    ct = sitk.GetArrayFromImage(convert_series(cohort / case / "dicom"))
    inside = sitk.GetArrayFromImage(lesion).astype(bool)
    assert np.median(ct[inside]) > 50
    # without the shear correction the mask misses the hematoma
    unsheared = hu_volume(slices)
    assert np.median(ct[inside]) - np.median(unsheared[:, : inside.shape[1]][inside[:, : unsheared.shape[1]]]) > 10


def test_localizer_is_its_own_series_in_the_same_folder(cohort):
    slices, localizers = read_series(cohort / "sim001")
    assert len(localizers) == 1
    localizer = localizers[0]
    assert list(localizer.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert localizer.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert localizer.SeriesInstanceUID != slices[0].SeriesInstanceUID
    assert localizer.StudyInstanceUID == slices[0].StudyInstanceUID
    assert [float(x) for x in localizer.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]  # coronal
    assert localizer.pixel_array.max() > localizer.pixel_array[0, 0]  # the head shows


def test_labels_are_recomputed_by_the_growth_rule(cohort):
    truth = load_truth(cohort)
    assert set(truth["label"]) == {0, 1}
    for row in truth.itertuples():
        baseline = mask(cohort / row.case_id / "lesion.nii.gz")
        followup = mask(cohort / row.case_id / "followup_lesion.nii.gz")
        voxel_ml = np.prod(baseline.GetSpacing()) / 1000
        n_baseline = int(sitk.GetArrayViewFromImage(baseline).sum(dtype=np.int64))
        n_followup = int(sitk.GetArrayViewFromImage(followup).sum(dtype=np.int64))
        growth_ml = (n_followup - n_baseline) * voxel_ml
        expanded = growth_ml > 6 or (n_followup - n_baseline) / n_baseline > 0.33
        assert int(expanded) == row.label, row.case_id
        assert n_baseline * voxel_ml == pytest.approx(row.baseline_volume_ml)
        assert n_followup * voxel_ml == pytest.approx(row.followup_volume_ml)
        assert 2 < row.baseline_volume_ml < 80


def test_truth_brain_mask_holds_both_lesion_masks(cohort):
    for case in load_truth(cohort)["case_id"]:
        brain = sitk.GetArrayFromImage(mask(cohort / "truth" / f"{case}_brain.nii.gz")).astype(bool)
        for name in ("lesion.nii.gz", "followup_lesion.nii.gz"):
            lesion = sitk.GetArrayFromImage(mask(cohort / case / name)).astype(bool)
            assert lesion.any() and not (lesion & ~brain).any()
        assert 0.9e6 < brain.sum() * np.prod(mask(cohort / "truth" / f"{case}_brain.nii.gz").GetSpacing()) < 1.8e6


def test_fake_identifiers_are_in_the_dicom_but_not_in_the_tables(cohort):
    slices, _ = read_series(cohort / "sim002")
    assert str(slices[0].PatientName) == "SIM^PATIENT^002"
    identifiers = [str(slices[0].PatientName), slices[0].PatientID, slices[0].PatientBirthDate]
    for table in ("samples.csv", "truth.csv"):
        text = (cohort / table).read_text()
        assert not any(identifier in text for identifier in identifiers)


def test_same_seed_gives_identical_files_whatever_the_cohort_size_or_workers(cohort, tmp_path):
    again = tmp_path / "again"
    simulate_cohort(again, n=3, seed=0, tilt_fraction=0.5, workers=2, **SMALL)
    alone = tmp_path / "alone"
    simulate_case(alone, 2, seed=0, tilt_fraction=0.5, **SMALL)
    for case, folder in (("sim001", again), ("sim003", again), ("sim003", alone)):
        files = sorted(p.relative_to(cohort / case) for p in (cohort / case).rglob("*") if p.is_file())
        assert files
        for name in files:
            assert (folder / case / name).read_bytes() == (cohort / case / name).read_bytes(), name
        truth_name = Path("truth") / f"{case}_brain.nii.gz"
        assert (folder / truth_name).read_bytes() == (cohort / truth_name).read_bytes()
    other = tmp_path / "other"
    simulate_case(other, 0, seed=1, tilt_fraction=0.5, **SMALL)
    assert (other / "sim001" / "lesion.nii.gz").read_bytes() != (cohort / "sim001" / "lesion.nii.gz").read_bytes()


def test_latent_model_meets_the_difficulty_targets():
    difficulty = latent_difficulty(400, seed=0)
    assert 0.85 <= difficulty["oracle_auc"] <= 0.95
    assert difficulty["volume_auc"] <= 0.70
    assert 0.25 <= difficulty["prevalence"] <= 0.45


def test_cohort_difficulty_reads_the_truth(cohort):
    difficulty = cohort_difficulty(cohort)
    assert set(difficulty) >= {"oracle_auc", "volume_auc"}
    assert all(0 <= value <= 1 for value in difficulty.values())


def test_parameters_depend_only_on_seed_and_case_index():
    first = sample_patient_parameters(case_streams(5, 3)[0])
    second = sample_patient_parameters(case_streams(5, 3)[0])
    other = sample_patient_parameters(case_streams(5, 4)[0])
    assert first.latent_probability == second.latent_probability
    assert np.array_equal(first.hematoma.center, second.hematoma.center)
    assert first.latent_probability != other.latent_probability


def test_a_field_of_view_smaller_than_a_head_is_refused(tmp_path):
    with pytest.raises(HepredError) as error:
        simulate_cohort(tmp_path / "x", n=2, matrix=64, pixel_mm=1.8)
    message = str(error.value)
    assert "field of view" in message and str(tmp_path / "x") in message and "\n" not in message
    assert not (tmp_path / "x" / "samples.csv").exists()


def test_missing_truth_is_a_one_line_error(tmp_path):
    with pytest.raises(HepredError) as error:
        load_truth(tmp_path)
    assert "truth.csv" in str(error.value)
