"""Ingest one case: CT + lesion mask(s) -> ct.nii.gz, lesion.nii.gz, meta.json, or a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tests.unit.dicom_testdata import IDENTIFIERS, read_series_uid, tilted_orientation, write_series, write_slice

from hepred import dicom
from hepred.errors import HepredError
from hepred.ingest import OUTPUT_NAMES, ingest_case


def nifti_ct(path: Path, size=(16, 16, 8), spacing=(0.9, 0.9, 5.0), origin=(-7.0, -7.0, 30.0)) -> Path:
    """A float CT (HU) with a bright block, as a NIfTI file."""
    values = np.full(size[::-1], -1000.4, dtype=np.float32)
    values[2:6, 4:12, 4:12] = 40.4
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def mask_like(reference: sitk.Image, path: Path, block=(slice(2, 5), slice(5, 9), slice(5, 9)), value=1) -> Path:
    """A label mask on the grid of `reference` with `value` in `block` ([z, y, x])."""
    values = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    values[block] = value
    mask = sitk.GetImageFromArray(values)
    mask.CopyInformation(reference)
    sitk.WriteImage(mask, str(path))
    return path


def labelmap_like(reference: sitk.Image, path: Path) -> Path:
    """A 3D Slicer style labelmap on the grid of `reference`: hematoma 1 inside edema 2."""
    values = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    values[1:7, 3:13, 3:13] = 2
    values[2:5, 5:9, 5:9] = 1
    mask = sitk.GetImageFromArray(values)
    mask.CopyInformation(reference)
    sitk.WriteImage(mask, str(path))
    return path


def read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def assert_nothing_written(out_dir: Path) -> None:
    assert not any((out_dir / name).exists() for name in OUTPUT_NAMES)
    assert not out_dir.exists() or not any(p.name.startswith(".") for p in out_dir.iterdir())


def test_dicom_case_is_ingested_on_the_tilt_corrected_grid(tmp_path):
    write_series(tmp_path / "Doe_Jane" / "dicom", tilt_deg=10.0)
    ct_grid = dicom.convert_series(tmp_path / "Doe_Jane" / "dicom")
    lesion = mask_like(ct_grid, tmp_path / "lesion.nii.gz")
    followup_reference = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    followup_reference.SetSpacing((2.0, 2.0, 2.0))
    followup = mask_like(followup_reference, tmp_path / "followup.nii.gz", (slice(0, 5), slice(0, 5), slice(0, 5)))
    out_dir = tmp_path / "results" / "ingest" / "c01"

    meta = ingest_case("c01", tmp_path / "Doe_Jane" / "dicom", lesion, followup, None, out_dir)

    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUT_NAMES)
    ct, mask = read(out_dir / "ct.nii.gz"), read(out_dir / "lesion.nii.gz")
    assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(ct_grid))
    assert ct.GetSize() == mask.GetSize()
    assert np.allclose(ct.GetOrigin(), mask.GetOrigin()) and np.allclose(ct.GetDirection(), mask.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1}

    voxel_ml = float(np.prod(ct_grid.GetSpacing())) / 1000
    assert meta["lesion_voxels"] == 3 * 4 * 4
    assert meta["lesion_volume_ml"] == pytest.approx(48 * voxel_ml)
    assert meta["followup_lesion_volume_ml"] == pytest.approx(125 * 8 / 1000)
    assert meta["ct_source"] == "dicom" and meta["lesion_resampled"] is False
    assert meta["tilt_deg"] == pytest.approx(10.0, abs=1e-4)
    stored = json.loads((out_dir / "meta.json").read_text())
    assert stored == json.loads(json.dumps(meta))
    text = (out_dir / "meta.json").read_text()
    assert str(tmp_path) not in text and "Doe_Jane" not in text
    for value in IDENTIFIERS.values():
        assert value not in text


def test_nifti_ct_with_a_mask_on_a_finer_grid_is_resampled(tmp_path):
    ct_path = nifti_ct(tmp_path / "ct.nii.gz")
    ct = read(ct_path)
    # Same world extent, half the in-plane spacing and a third of the slice spacing.
    fine = sitk.Image([32, 32, 24], sitk.sitkUInt8)
    fine.SetSpacing((0.45, 0.45, 5.0 / 3))
    fine.SetOrigin((-7.0 - 0.225, -7.0 - 0.225, 30.0 - 2.5 + 5.0 / 6))
    lesion = mask_like(fine, tmp_path / "lesion.nii.gz", (slice(6, 15), slice(10, 18), slice(10, 18)), value=2)
    out_dir = tmp_path / "out"

    meta = ingest_case("c02", ct_path, lesion, None, None, out_dir)

    written = read(out_dir / "ct.nii.gz")
    assert written.GetPixelID() == sitk.sitkInt16
    values = sitk.GetArrayFromImage(written)
    assert set(np.unique(values)) == {-1000, 40}
    assert np.allclose(written.GetSpacing(), ct.GetSpacing()) and np.allclose(written.GetOrigin(), ct.GetOrigin())
    mask = read(out_dir / "lesion.nii.gz")
    assert mask.GetSize() == ct.GetSize() and np.allclose(mask.GetOrigin(), ct.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1}
    assert meta["lesion_resampled"] is True and meta["ct_source"] == "nifti"
    fine_volume = 9 * 8 * 8 * 0.45 * 0.45 * (5.0 / 3) / 1000
    assert meta["lesion_volume_ml"] == pytest.approx(fine_volume, rel=0.35)
    assert meta["followup_lesion_volume_ml"] is None and meta["followup_lesion_file"] is None
    assert meta["ct_file"] == "ct.nii.gz" and meta["lesion_file"] == "lesion.nii.gz"


def _dicom_case(tmp_path: Path, **series_kwargs) -> tuple[Path, Path]:
    """A DICOM CT folder and a lesion mask on its grid."""
    folder = tmp_path / "dicom"
    write_series(folder, **series_kwargs)
    reference = sitk.Image([32, 32, 6], sitk.sitkUInt8)
    reference.SetSpacing((0.9, 0.8, 5.0))
    reference.SetOrigin((-12.0, -10.0, 40.0))
    return folder, mask_like(reference, tmp_path / "lesion.nii.gz")


def _case_missing_ct(tmp_path):
    lesion = mask_like(read(nifti_ct(tmp_path / "ref.nii.gz")), tmp_path / "lesion.nii.gz")
    return tmp_path / "absent_ct.nii.gz", lesion, None, "absent_ct.nii.gz"


def _case_missing_lesion(tmp_path):
    return nifti_ct(tmp_path / "ct.nii.gz"), tmp_path / "absent_lesion.nii.gz", None, "absent_lesion.nii.gz"


def _case_truncated_dicom(tmp_path):
    folder, lesion = _dicom_case(tmp_path)
    victim = sorted(folder.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-200])
    return folder, lesion, None, victim.name


def _case_ct_not_an_image(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    ct.write_text("this is a report, not an image\n")
    lesion = mask_like(read(nifti_ct(tmp_path / "ref.nii.gz")), tmp_path / "lesion.nii.gz")
    return ct, lesion, None, "ct.nii.gz"


def _case_mask_elsewhere(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    shifted = read(ct)
    shifted.SetOrigin((-7.0, -7.0, 80.0))  # 50 mm higher: another scan's mask
    return ct, mask_like(shifted, tmp_path / "lesion.nii.gz"), None, "lesion.nii.gz"


def _case_empty_mask(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    return ct, mask_like(read(ct), tmp_path / "lesion.nii.gz", value=0), None, "lesion.nii.gz"


def _case_missing_slice(tmp_path):
    folder, lesion = _dicom_case(tmp_path, distances=[0, 5, 10, 20, 25, 30])
    return folder, lesion, None, "dicom"


def _case_mixed_orientation(tmp_path):
    folder, lesion = _dicom_case(tmp_path)
    odd = folder / "IM0002.dcm"
    write_slice(odd, (-12.0, -10.0, 50.0), tilted_orientation(8.0), read_series_uid(odd))
    return folder, lesion, None, "dicom"


def _case_fractional_mask(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    values = np.zeros((8, 16, 16), dtype=np.float32)
    values[3, 5:9, 5:9] = 0.5
    mask = sitk.GetImageFromArray(values)
    mask.CopyInformation(read(ct))
    sitk.WriteImage(mask, str(tmp_path / "prob.nii.gz"))
    return ct, tmp_path / "prob.nii.gz", None, "prob.nii.gz"


def _case_ct_given_as_mask(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    int16_ct = sitk.Cast(sitk.Round(read(ct)), sitk.sitkInt16)  # integer HU: only the sign gives it away
    sitk.WriteImage(int16_ct, str(tmp_path / "ct_int16.nii.gz"))
    return ct, tmp_path / "ct_int16.nii.gz", None, "ct_int16.nii.gz"


def _case_ct_not_in_hu(tmp_path):
    values = np.zeros((8, 16, 16), dtype=np.uint16)
    values[2:6, 4:12, 4:12] = 1064  # stored values 0..4095: the scanner's rescale not applied
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "raw_ct.nii.gz"))
    lesion = mask_like(read(tmp_path / "raw_ct.nii.gz"), tmp_path / "lesion.nii.gz")
    return tmp_path / "raw_ct.nii.gz", lesion, None, "raw_ct.nii.gz"


def _case_labelmap_mask(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    return ct, labelmap_like(read(ct), tmp_path / "segmentation.nii.gz"), None, "segmentation.nii.gz"


def _case_cropped_mask_reaching_outside(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    box = sitk.RegionOfInterest(read(mask_like(read(ct), tmp_path / "full.nii.gz")), [8, 8, 4], [4, 4, 2])
    box.SetOrigin((box.GetOrigin()[0] + 10.0, *box.GetOrigin()[1:]))  # 10 mm past the CT's right edge
    sitk.WriteImage(box, str(tmp_path / "box.nii.gz"))
    return ct, tmp_path / "box.nii.gz", None, "box.nii.gz"


def _case_empty_followup(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    lesion = mask_like(read(ct), tmp_path / "lesion.nii.gz")
    return ct, lesion, mask_like(read(ct), tmp_path / "followup.nii.gz", value=0), "followup.nii.gz"


@pytest.mark.parametrize(
    "make_case, message",
    [
        (_case_missing_ct, "file not found"),
        (_case_missing_lesion, "file not found"),
        (_case_truncated_dicom, "unreadable DICOM pixel data"),
        (_case_ct_not_an_image, "not a readable NIfTI image"),
        (_case_mask_elsewhere, "lesion mask does not match its CT"),
        (_case_empty_mask, "lesion mask is empty"),
        (_case_missing_slice, "missing slices"),
        (_case_mixed_orientation, "mixed orientations"),
        (_case_fractional_mask, "non-integer values"),
        (_case_ct_given_as_mask, "negative values"),
        (_case_empty_followup, "follow-up lesion mask is empty"),
        (_case_ct_not_in_hu, "not in Hounsfield units: no air"),
        (_case_labelmap_mask, r"2 labels \(1, 2\), not one: .*ingest\.lesion_labels"),
        (_case_cropped_mask_reaching_outside, "does not match its CT: it reaches outside the CT"),
    ],
    ids=lambda v: v.__name__[6:] if callable(v) else None,
)
def test_bad_input_names_case_and_file_and_leaves_nothing(tmp_path, make_case, message):
    ct, lesion, followup, file_name = make_case(tmp_path)
    out_dir = tmp_path / "results" / "ingest" / "case_7"
    out_dir.mkdir(parents=True)
    (out_dir / "ct.nii.gz").write_bytes(b"stale output of an earlier run")

    with pytest.raises(HepredError, match=message) as info:
        ingest_case("case_7", ct, lesion, followup, None, out_dir)

    text = str(info.value)
    assert text.startswith("case case_7: ") and file_name in text and "\n" not in text
    assert_nothing_written(out_dir)


def test_labelmap_counts_only_the_configured_hematoma_labels(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    segmentation = labelmap_like(read(ct), tmp_path / "segmentation.nii.gz")
    followup = labelmap_like(read(ct), tmp_path / "followup.nii.gz")
    meta = ingest_case("c03", ct, segmentation, followup, None, tmp_path / "out", lesion_labels=[1])
    assert meta["lesion_voxels"] == 3 * 4 * 4  # the hematoma only, not the edema around it
    assert meta["followup_lesion_volume_ml"] == pytest.approx(48 * 0.9 * 0.9 * 5.0 / 1000)
    assert meta["lesion_labels"] == [1]
    assert set(np.unique(sitk.GetArrayFromImage(read(tmp_path / "out" / "lesion.nii.gz")))) == {0, 1}

    with pytest.raises(HepredError, match=r"none of the hematoma labels \[3\] of ingest.lesion_labels \(its values: 1, 2\)"):
        ingest_case("c03", ct, segmentation, None, None, tmp_path / "out3", lesion_labels=[3])
    assert_nothing_written(tmp_path / "out3")


def test_binary_mask_stored_as_0_255_is_one_label(tmp_path):
    ct = nifti_ct(tmp_path / "ct.nii.gz")
    meta = ingest_case("c04", ct, mask_like(read(ct), tmp_path / "m.nii.gz", value=255), None, None, tmp_path / "out")
    assert meta["lesion_voxels"] == 3 * 4 * 4 and meta["lesion_resampled"] is False


@pytest.mark.parametrize("source", ["nifti", "tilted_dicom"])
def test_mask_cropped_to_a_box_in_ct_world_space_is_resampled_onto_the_ct(tmp_path, source):
    if source == "nifti":
        ct = nifti_ct(tmp_path / "ct.nii.gz")
        grid = read(ct)
    else:
        ct = tmp_path / "dicom"
        write_series(ct, tilt_deg=15.0)
        grid = dicom.convert_series(ct)
    full = mask_like(grid, tmp_path / "full.nii.gz")
    # What 3D Slicer or ITK-SNAP save: the box around the lesion, in the CT's world space.
    box = sitk.RegionOfInterest(read(full), [6, 6, 5], [4, 4, 1])
    sitk.WriteImage(box, str(tmp_path / "box.nii.gz"))

    meta = ingest_case("c05", ct, tmp_path / "box.nii.gz", None, None, tmp_path / "out")

    assert meta["lesion_resampled"] is True and meta["lesion_voxels"] == 3 * 4 * 4
    written = sitk.GetArrayFromImage(read(tmp_path / "out" / "lesion.nii.gz"))
    assert np.array_equal(written, sitk.GetArrayFromImage(read(full)))
