import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from hepred.errors import HepredError
from hepred.preprocess import (
    OUTPUT_FILES,
    apply_windows,
    dice,
    preprocess_case,
    preprocess_settings,
    resample_slices,
    skull_strip,
    skull_strip_scores,
)

SPACING = (1.6, 1.6, 8.0)
SHAPE = (16, 128, 128)  # z, y, x: 205 mm field of view, 128 mm of slices


def synthetic_head(seed=0, air_inside=False):
    """Ellipsoid shells (scalp, fat, skull 1000 HU, CSF rim, brain, ventricles, lesion), a head
    holder, the neck below the skull and a narrow canal of soft tissue through the skull base
    that joins the cavity to the neck; LPS identity direction, slice 0 below the skull.

    Returns the CT image, the true intracranial mask and the lesion mask ([z, y, x] arrays).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = SHAPE
    sx, sy, sz = SPACING
    z, y, x = np.meshgrid(
        np.arange(nz) * sz - 64, (np.arange(ny) - ny / 2) * sy, (np.arange(nx) - nx / 2) * sx, indexing="ij"
    )

    def ellipsoid(a, b, c, dx=0.0, dy=0.0, dz=0.0):
        return ((x - dx) / a) ** 2 + ((y - dy) / b) ** 2 + ((z - dz) / c) ** 2 < 1

    inner = ellipsoid(66, 84, 56)
    skull = ellipsoid(73, 91, 63) & ~inner
    hu = np.full(SHAPE, -1000.0)
    hu[ellipsoid(79, 97, 69)] = 40  # scalp
    hu[ellipsoid(77, 95, 67) & ~skull & ~inner] = -90  # subcutaneous fat
    hu[skull] = 1000
    if not air_inside:
        hu[inner] = 8  # CSF rim
        hu[ellipsoid(62, 80, 52)] = 34
        hu[ellipsoid(10, 22, 14, dx=-9) | ellipsoid(10, 22, 14, dx=9)] = 6  # ventricles
    lesion = ellipsoid(14, 12, 12, dx=28, dy=-35, dz=10)  # left frontal (anterior = -y in LPS)
    hu[lesion] = 70
    hu[(z < -60) & (np.hypot(x / 55, (y - 10) / 60) < 1)] = 45  # neck
    hu[(np.hypot(x, y - 15) < 4) & (z < -40) & ~inner] = 35  # canal through the skull base
    hu[(y > 98) & (np.abs(x) < 90)] = 300  # head holder
    hu += rng.normal(0, 6, SHAPE)
    ct = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    ct.SetSpacing(SPACING)
    ct.SetOrigin((-100.0, -90.0, -64.0))
    return ct, inner.astype(np.uint8), lesion.astype(np.uint8)


def write_case(tmp_path, ct, lesion, name="case"):
    ct_path, lesion_path = tmp_path / f"{name}_ct.nii.gz", tmp_path / f"{name}_lesion.nii.gz"
    lesion_image = sitk.GetImageFromArray(lesion)
    lesion_image.CopyInformation(ct)
    sitk.WriteImage(ct, str(ct_path))
    sitk.WriteImage(lesion_image, str(lesion_path))
    return ct_path, lesion_path


def test_dice():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    assert dice(a, b) == 1.0
    a[:2] = 1
    b[1:3] = 1
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_apply_windows_maps_each_window_to_unit_range():
    hu = np.array([[-1000, 0, 40, 80, 1000]], dtype=np.int16)
    out = apply_windows(hu, [{"level": 40, "width": 80}, {"level": 0, "width": 2000}])
    assert out.dtype == np.float32 and out.shape == (2, 1, 5)
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out[1, 0], [0.0, 0.5, 0.52, 0.54, 1.0], atol=1e-6)
    with pytest.raises(HepredError, match="width"):
        apply_windows(hu, [{"level": 40, "width": 0}])


def test_settings_fill_defaults_and_reject_unknown_keys():
    settings = preprocess_settings({"size": 64, "skull_strip": {"bone_hu": 300}})
    assert settings["size"] == 64 and settings["windows"] == [{"level": 40, "width": 80}]
    assert settings["skull_strip"]["bone_hu"] == 300 and "opening_mm" in settings["skull_strip"]
    with pytest.raises(HepredError, match="bone_threshold"):
        preprocess_settings({"skull_strip": {"bone_threshold": 300}})
    with pytest.raises(HepredError, match="size"):
        preprocess_settings({"size": 2})


@pytest.mark.parametrize("seed", [0, 1])
def test_skull_strip_recovers_the_inner_table_region(seed):
    ct, truth, _ = synthetic_head(seed)
    mask = sitk.GetArrayFromImage(skull_strip(ct))
    assert mask.dtype == np.uint8
    assert dice(mask, truth) >= 0.95
    # Neither the neck (joined through the canal) nor scalp or holder may leak in.
    assert mask[0].sum() == 0
    assert np.logical_and(mask, truth == 0).sum() < 0.02 * truth.sum()


def test_skull_strip_finds_an_empty_skull_cavity():
    # A skull phantom holds air, not brain: the cavity is what the skull encloses.
    ct, truth, _ = synthetic_head(air_inside=True)
    mask = sitk.GetArrayFromImage(skull_strip(ct))
    assert dice(mask, truth) >= 0.9


def test_skull_strip_without_a_head_is_an_error():
    air = sitk.GetImageFromArray(np.full((4, 32, 32), -1000, np.int16))
    with pytest.raises(HepredError, match="cavity"):
        skull_strip(air)


def test_resample_slices_keeps_the_field_of_view():
    image = sitk.GetImageFromArray(np.zeros((3, 40, 40), np.float32))
    image.SetSpacing((0.5, 0.5, 5.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    small = resample_slices(image, 10, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    assert small.GetSize() == (10, 10, 3)
    assert small.GetSpacing() == pytest.approx((2.0, 2.0, 5.0))
    # The first pixel's outer edge stays where it was.
    assert np.asarray(small.GetOrigin()) - np.asarray(small.GetSpacing()) / 2 == pytest.approx(
        np.asarray(image.GetOrigin()) - np.asarray(image.GetSpacing()) / 2
    )


def test_resample_slices_pads_a_non_square_field_of_view():
    array = np.ones((1, 40, 20), np.float32)  # 10 mm wide, 20 mm high
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 5.0))
    small = sitk.GetArrayFromImage(resample_slices(image, 10, sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32))
    assert small.shape == (1, 10, 10)
    # Square 2 mm pixels: the 10 mm wide image fills 5 middle columns over all rows.
    columns = np.flatnonzero(small[0].all(axis=0))
    assert len(columns) == 5 and columns[0] in (2, 3) and np.all(np.diff(columns) == 1)
    assert small[0].sum() == 50


def test_preprocess_case_writes_the_contract(tmp_path):
    ct, truth, lesion = synthetic_head()
    ct_path, lesion_path = write_case(tmp_path, ct, lesion)
    out = tmp_path / "preprocess" / "c1"
    info = preprocess_case("c1", ct_path, lesion_path, out, {"size": 64})
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert json.loads((out / "info.json").read_text()) == info

    mask_image = sitk.ReadImage(str(out / "brain_mask.nii.gz"))
    assert mask_image.GetPixelID() == sitk.sitkUInt8 and mask_image.GetSize() == ct.GetSize()
    assert mask_image.GetSpacing() == pytest.approx(ct.GetSpacing())
    assert dice(sitk.GetArrayFromImage(mask_image), truth) >= 0.95

    hu, small_lesion = np.load(out / "hu.npy"), np.load(out / "lesion.npy")
    assert hu.shape == small_lesion.shape == (SHAPE[0], 64, 64)
    assert hu.dtype == np.int16 and small_lesion.dtype == np.uint8
    outside = hu == -1024
    assert 0.2 < outside.mean() < 0.9
    assert np.median(hu[~outside]) == pytest.approx(34, abs=6)  # brain, not bone
    assert hu[~outside & (small_lesion == 0)].max() < 90  # no bone bled into the brain edge
    assert info["lesion_pixels"] == small_lesion.sum(axis=(1, 2)).tolist()
    # The lesion is anterior: in the upper half of the rows (row 0 = anterior).
    rows = np.nonzero(small_lesion)[1]
    assert rows.max() < 32
    assert info["spacing_mm"] == pytest.approx([128 * 1.6 / 64, 128 * 1.6 / 64, 8.0], rel=1e-5)
    voxel_ml = np.prod(SPACING) / 1000
    assert info["lesion_volume_ml"] == pytest.approx(lesion.sum() * voxel_ml, rel=1e-4)
    assert info["brain_volume_ml"] == pytest.approx(truth.sum() * voxel_ml, rel=0.05)
    assert info["size"] == 64 and "windows" not in info

    # The QC montage outlines the brain in green and the lesion in red.
    montage = np.asarray(Image.open(out / "montage.png").convert("RGB"))
    pixels = {tuple(colour) for colour in np.unique(montage.reshape(-1, 3), axis=0).tolist()}
    assert (0, 255, 0) in pixels and (255, 0, 0) in pixels


def test_orientation_of_the_input_does_not_change_the_arrays(tmp_path):
    ct, _, lesion = synthetic_head()
    lesion_image = sitk.GetImageFromArray(lesion)
    lesion_image.CopyInformation(ct)
    # Same voxels, stored right-anterior-superior (rows and columns flipped).
    flipped_ct = sitk.DICOMOrient(ct, "RAS")
    flipped_lesion = sitk.DICOMOrient(lesion_image, "RAS")
    assert flipped_ct.GetDirection() != ct.GetDirection()
    paths = write_case(tmp_path, ct, lesion, "lps")
    flipped_paths = tmp_path / "ras_ct.nii.gz", tmp_path / "ras_lesion.nii.gz"
    sitk.WriteImage(flipped_ct, str(flipped_paths[0]))
    sitk.WriteImage(flipped_lesion, str(flipped_paths[1]))
    preprocess_case("a", *paths, tmp_path / "a", {"size": 32})
    preprocess_case("b", *flipped_paths, tmp_path / "b", {"size": 32})
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "hu.npy"), np.load(tmp_path / "b" / "hu.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "lesion.npy"), np.load(tmp_path / "b" / "lesion.npy"))
    # The brain mask stays on the grid of its own input.
    mask_b = sitk.ReadImage(str(tmp_path / "b" / "brain_mask.nii.gz"))
    assert mask_b.GetDirection() == pytest.approx(flipped_ct.GetDirection())
    mask_a = sitk.ReadImage(str(tmp_path / "a" / "brain_mask.nii.gz"))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.DICOMOrient(mask_b, "LPS")), sitk.GetArrayFromImage(mask_a)
    )


def test_bad_input_names_the_case_and_file_and_leaves_nothing(tmp_path):
    ct, _, lesion = synthetic_head()
    out = tmp_path / "out"
    out.mkdir()
    (out / "hu.npy").write_bytes(b"stale output of an earlier run")

    other_grid = sitk.GetImageFromArray(lesion[:, :64])
    other_grid.CopyInformation(sitk.GetImageFromArray(np.zeros((16, 64, 128), np.int16)))
    ct_path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct, str(ct_path))
    lesion_path = tmp_path / "lesion.nii.gz"
    sitk.WriteImage(other_grid, str(lesion_path))
    with pytest.raises(HepredError, match="not on the CT grid") as caught:
        preprocess_case("c7", ct_path, lesion_path, out, {})
    assert str(caught.value).startswith(f"case c7: {lesion_path}:")
    assert not out.exists()

    no_air = sitk.GetImageFromArray(np.full((4, 16, 16), 40, np.int16))
    sitk.WriteImage(no_air, str(ct_path))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8)), str(lesion_path))
    with pytest.raises(HepredError, match="HU"):
        preprocess_case("c7", ct_path, lesion_path, out, {})
    with pytest.raises(HepredError, match="not found"):
        preprocess_case("c7", tmp_path / "missing.nii.gz", lesion_path, out, {})
    assert not out.exists()


def test_skull_strip_scores_compares_each_mask_with_its_truth(tmp_path):
    truth = np.zeros((4, 10, 10), np.uint8)
    truth[:, 2:8, 2:8] = 1
    mask = truth.copy()
    mask[:, 2:8, 2:5] = 0  # half of the truth
    for name, array, folder in (
        ("c1_brain", truth, tmp_path / "demo" / "truth"),
        ("brain_mask", mask, tmp_path / "c1"),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.nii.gz"))
    scores = skull_strip_scores(tmp_path / "demo", [tmp_path / "c1" / "brain_mask.nii.gz"], tmp_path / "qc.csv")
    assert scores["case_id"].tolist() == ["c1"]
    assert scores["dice"].iloc[0] == pytest.approx(2 / 3, abs=1e-4)
    assert (tmp_path / "qc.csv").read_text().startswith("case_id,dice,")
    with pytest.raises(HepredError, match="c2"):
        skull_strip_scores(tmp_path / "demo", [tmp_path / "c2" / "brain_mask.nii.gz"], tmp_path / "qc.csv")


def test_errors_name_the_users_file_not_the_ingested_copy(tmp_path):
    copy = tmp_path / "results" / "ingest" / "c8"
    copy.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 16, 16), 40, np.int16)), str(copy / "ct.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8)), str(copy / "lesion.nii.gz"))
    users_ct, users_lesion = tmp_path / "data" / "c8_dicom", tmp_path / "data" / "c8_mask.nii.gz"
    with pytest.raises(HepredError, match="HU") as caught:
        preprocess_case(
            "c8",
            copy / "ct.nii.gz",
            copy / "lesion.nii.gz",
            tmp_path / "out",
            {},
            user_files={copy / "ct.nii.gz": users_ct, copy / "lesion.nii.gz": users_lesion},
        )
    assert str(caught.value).startswith(f"case c8: {users_ct}: ") and "results" not in str(caught.value)
    assert not (tmp_path / "out").exists()
