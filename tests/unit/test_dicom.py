"""DICOM folder -> HU image on a regular grid: selection, geometry, tilt, errors, metadata."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from tests.unit.dicom_testdata import IDENTIFIERS, hu_at, tilted_orientation, write_series, write_slice

from hepred import dicom
from hepred.errors import HepredError
from tests.unit.dicom_testdata import write_block_head_series

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("HEPRED_SHARED", REPO_ROOT.parent / "shared"))
PHILIPS = SHARED / "data" / "dcm_qa_ct" / "Philips_S21610"
DICOM_TRUTH = SHARED / "tools" / "dicom_truth.py"


def voxel_world_points(image: sitk.Image) -> np.ndarray:
    """World position (mm) of every voxel, shaped like the numpy array [z, y, x, 3]."""
    nx, ny, nz = image.GetSize()
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([x, y, z], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index * np.array(image.GetSpacing())) @ direction.T


def inside_scanned_region(points, origin, orientation, pixel_spacing, distances, rows, cols) -> np.ndarray:
    """Whether world points lie between the first and last slice and inside the slice matrix."""
    orientation = np.asarray(orientation, dtype=float)
    row_spacing, col_spacing = pixel_spacing
    basis = np.column_stack([orientation[:3] * col_spacing, orientation[3:] * row_spacing, [0.0, 0.0, 1.0]])
    c, r, d = np.linalg.solve(basis, (points - np.asarray(origin)).reshape(-1, 3).T)
    eps = 1e-6
    inside = (c > -eps) & (c < cols - 1 + eps) & (r > -eps) & (r < rows - 1 + eps)
    inside &= (d > distances[0] - eps) & (d < distances[-1] + eps)
    return inside.reshape(points.shape[:-1])


def plain_itk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_untilted_even_series_equals_a_plain_read(tmp_path):
    write_series(tmp_path / "ct", n_slices=6)
    image, meta = dicom.convert_series_with_metadata(tmp_path / "ct")
    plain = plain_itk_read(tmp_path / "ct")
    assert image.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(plain).astype(np.int16))
    assert image.GetSize() == plain.GetSize() == (32, 32, 6)
    assert np.allclose(image.GetSpacing(), plain.GetSpacing(), atol=1e-6)
    assert np.allclose(image.GetOrigin(), plain.GetOrigin(), atol=1e-6)
    assert np.allclose(image.GetDirection(), plain.GetDirection(), atol=1e-6)
    assert meta["resampled"] is False and meta["uneven_spacing"] is False
    assert meta["tilt_deg"] == pytest.approx(0.0, abs=1e-6)
    assert meta["n_slices"] == 6
    # The values are the HU of the world positions (slope/intercept applied).
    assert np.abs(sitk.GetArrayFromImage(image) - hu_at(voxel_world_points(image))).max() <= 0.5


@pytest.mark.parametrize("tilt", [20.0, -15.0])
def test_tilted_series_puts_every_pixel_at_its_world_position(tmp_path, tilt):
    distances = np.arange(6) * 5.0
    origin = (-12.0, -10.0, 40.0)
    write_series(tmp_path / "ct", tilt_deg=tilt, distances=distances, origin=origin)
    image, meta = dicom.convert_series_with_metadata(tmp_path / "ct")

    orientation = tilted_orientation(tilt)
    assert meta["tilt_deg"] == pytest.approx(tilt, abs=1e-4)
    assert meta["resampled"] is True
    # dcm2niix convention: acquired slice planes kept, spaced by step * cos(tilt) along the normal.
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction[:, 0], orientation[:3]) and np.allclose(direction[:, 1], orientation[3:])
    assert image.GetSpacing()[2] == pytest.approx(5.0 * np.cos(np.radians(tilt)))
    assert image.GetSize()[2] == 6 and image.GetSize()[1] > 32  # rows added for the shift

    values = sitk.GetArrayFromImage(image).astype(float)
    points = voxel_world_points(image)
    inside = inside_scanned_region(points, origin, orientation, (0.8, 0.9), distances, 32, 32)
    assert inside.sum() >= 0.9 * 32 * 32 * 6  # the scanned region is on the grid
    assert np.abs(values - hu_at(points))[inside].max() <= 1.0

    # Every DICOM pixel lies within the output grid.
    r, c = np.mgrid[0:32, 0:32]
    for distance in distances:
        pixel_points = np.asarray(origin) + [0, 0, distance] + c[..., None] * 0.9 * orientation[:3]
        pixel_points = pixel_points + r[..., None] * 0.8 * np.asarray(orientation[3:])
        for point in pixel_points.reshape(-1, 3)[::37]:
            index = np.array(image.TransformPhysicalPointToContinuousIndex(point.tolist()))
            assert np.all(index > -0.5 - 1e-6) and np.all(index < np.array(image.GetSize()) - 0.5 + 1e-6)

    # The same check fails for a reader that ignores the tilt: the test can tell.
    plain = plain_itk_read(tmp_path / "ct")
    plain_points = voxel_world_points(plain)
    plain_inside = inside_scanned_region(plain_points, origin, orientation, (0.8, 0.9), distances, 32, 32)
    plain_error = np.abs(sitk.GetArrayFromImage(plain) - hu_at(plain_points))[plain_inside]
    assert plain_error.max() > 10


@pytest.mark.parametrize("tilt", [0.0, 12.0])
def test_uneven_spacing_is_resampled_onto_the_median_step(tmp_path, tilt):
    # Three 2.5 mm steps in a 5 mm series: the output slices at 20 and 25 mm fall between slices.
    distances = np.array([0.0, 5.0, 10.0, 12.5, 15.0, 17.5, 22.5, 27.5])
    origin = (-12.0, -10.0, 40.0)
    write_series(tmp_path / "ct", distances=distances, tilt_deg=tilt, origin=origin)
    image, meta = dicom.convert_series_with_metadata(tmp_path / "ct")
    assert meta["uneven_spacing"] is True and meta["resampled"] is True
    assert meta["slice_step_mm"] == pytest.approx(5.0)
    assert meta["n_slices"] == 8
    assert image.GetSize()[2] == 7
    values = sitk.GetArrayFromImage(image).astype(float)
    points = voxel_world_points(image)
    orientation = tilted_orientation(tilt)
    inside = inside_scanned_region(points, origin, orientation, (0.8, 0.9), distances, 32, 32)
    assert inside.sum() >= 0.9 * 32 * 32 * 6
    assert np.abs(values - hu_at(points))[inside].max() <= 1.0


def _strip_position(path: Path) -> None:
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient
    ds.save_as(path)


def write_study(root: Path) -> dict[str, str]:
    """A study as scanners write it: scout, exam summary, derived series, two CT series, junk."""
    coronal = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    write_slice(
        root / "scout" / "IM1", (-12.0, 0.0, 80.0), coronal, "1.2.3.1", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    summary = write_slice(
        root / "summary" / "IM1",
        (0.0, 0.0, 0.0),
        [1, 0, 0, 0, 1, 0],
        "1.2.3.2",
        image_type=("DERIVED", "SECONDARY", "OTHER"),
    )
    _strip_position(summary)
    derived_uid, _ = write_series(
        root / "derived", n_slices=9, series_uid="1.2.3.3", image_type=("DERIVED", "SECONDARY", "AXIAL")
    )
    small_uid, _ = write_series(root / "small", n_slices=4, series_uid="1.2.3.4", series_number=3)
    large_uid, _ = write_series(root / "large", n_slices=7, series_uid="1.2.3.5", series_number=4)
    (root / "DIRFILE").write_bytes(b"PHILIPS DIRFILE, not an image\x00\x01")
    (root / "notes.txt").write_text("scanned at night\n")
    return {"small": small_uid, "large": large_uid, "derived": derived_uid}


def test_picks_the_largest_original_axial_series(tmp_path):
    write_study(tmp_path)
    image, meta = dicom.convert_series_with_metadata(tmp_path)
    assert meta["n_slices"] == 7 and image.GetSize()[2] == 7


def test_named_series_is_taken(tmp_path):
    uids = write_study(tmp_path)
    image, meta = dicom.convert_series_with_metadata(tmp_path, uids["small"])
    assert meta["n_slices"] == 4


def test_unknown_series_uid_is_refused(tmp_path):
    write_study(tmp_path)
    with pytest.raises(HepredError, match="requested series is not in this folder") as info:
        dicom.convert_series(tmp_path, "9.9.9")
    assert str(tmp_path) in str(info.value)


def test_study_without_axial_ct_is_refused(tmp_path):
    write_slice(
        tmp_path / "IM1",
        (0.0, 0.0, 0.0),
        [1, 0, 0, 0, 0, -1],
        "1.2.3.1",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    with pytest.raises(HepredError, match="no axial CT series found"):
        dicom.convert_series(tmp_path)


def _replace_slice(folder: Path, index: int, **kwargs) -> None:
    """Rewrite slice `index` of a series written by write_series with other attributes."""
    path = folder / f"IM{index:04d}.dcm"
    ds = pydicom.dcmread(path)
    position = [float(v) for v in ds.ImagePositionPatient]
    orientation = kwargs.pop("orientation", [float(v) for v in ds.ImageOrientationPatient])
    write_slice(path, position, orientation, str(ds.SeriesInstanceUID), instance=index + 1, **kwargs)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: write_series(d, distances=[0, 5, 10, 20, 25]), "missing slices"),
        (
            lambda d: (write_series(d, distances=[0, 5, 5, 10, 15]), _replace_slice(d, 2, hu=np.zeros((32, 32)))),
            "duplicate slice positions with different content",
        ),
        (lambda d: (write_series(d), _replace_slice(d, 2, orientation=tilted_orientation(10))), "mixed orientations"),
        (lambda d: (write_series(d), _replace_slice(d, 3, pixel_spacing=(0.7, 0.9))), "mixed pixel spacings"),
        (lambda d: (write_series(d), _replace_slice(d, 1, rows=30)), "mixed matrix sizes"),
    ],
    ids=["gap", "duplicate", "orientation", "spacing", "matrix"],
)
def test_series_that_cannot_be_placed_is_refused(tmp_path, damage, message):
    damage(tmp_path / "ct")
    with pytest.raises(HepredError, match=message) as info:
        dicom.convert_series(tmp_path / "ct")
    assert str(tmp_path / "ct") in str(info.value)


def test_a_single_slice_is_not_a_volume(tmp_path):
    uid, _ = write_series(tmp_path / "ct", n_slices=1)
    with pytest.raises(HepredError, match="at least 2 slices"):
        dicom.convert_series(tmp_path / "ct", uid)


IMAGE_POSITION_TAG = b"\x20\x00\x32\x00"  # (0020,0032) little endian


@pytest.mark.parametrize("cut", ["meta", "header", "position", "pixels"])
def test_truncated_file_is_an_error_naming_it(tmp_path, cut):
    _, paths = write_series(tmp_path / "ct")
    victim = paths[2]
    data = victim.read_bytes()
    keep = {"meta": 200, "header": 700, "position": data.index(IMAGE_POSITION_TAG), "pixels": len(data) - 100}[cut]
    victim.write_bytes(data[:keep])
    with pytest.raises(HepredError) as info:
        dicom.convert_series(tmp_path / "ct")
    assert str(victim) in str(info.value)


def test_rescale_is_applied_and_clipped_to_int16(tmp_path):
    uid = "1.2.3.9"
    for index, value in enumerate([40000.0, -40000.0, 124.0]):
        hu = np.full((32, 32), value)
        write_slice(
            tmp_path / f"IM{index}",
            (0.0, 0.0, 5.0 * index),
            [1, 0, 0, 0, 1, 0],
            uid,
            hu=hu,
            slope=2.0,
            intercept=-1000.0,
        )
    values = sitk.GetArrayFromImage(dicom.convert_series(tmp_path))
    assert values.dtype == np.int16
    assert values[0].min() == values[0].max() == 32767
    assert values[1].min() == values[1].max() == -32768
    assert values[2].min() == values[2].max() == 124


def test_dicom_to_nifti_writes_the_image_and_keeps_no_identifiers(tmp_path):
    uid, _ = write_series(tmp_path / "ct", tilt_deg=10.0)
    meta = dicom.dicom_to_nifti(tmp_path / "ct", tmp_path / "out" / "ct.nii.gz")
    written = sitk.ReadImage(str(tmp_path / "out" / "ct.nii.gz"))
    assert written.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(
        sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(dicom.convert_series(tmp_path / "ct"))
    )
    assert list(written.GetSize()) == meta["size"]
    assert meta["Manufacturer"] == "Acme" and meta["KVP"] == 120.0 and meta["ConvolutionKernel"] == "H30s"
    assert meta["PixelSpacing"] == [0.8, 0.9]
    text = json.dumps(meta)
    for value in [*IDENTIFIERS.values(), uid, "1.2.826.0.1.3680043"]:
        assert value not in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.nii.gz"]  # no temp file left


# Real Philips scanner output (dcm_qa_ct): gantry tilt, scout and derived series beside the CTs.
needs_philips = pytest.mark.skipif(
    not PHILIPS.is_dir() or not DICOM_TRUTH.is_file(), reason="shared dcm_qa_ct data absent"
)


def _dicom_truth():
    spec = importlib.util.spec_from_file_location("dicom_truth", DICOM_TRUTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_philips
@pytest.mark.parametrize("series", ["S2010", "S3010"])
def test_philips_tilted_series_pass_dicom_truth(tmp_path, capsys, series):
    uid = str(pydicom.dcmread(PHILIPS / series / "I10", stop_before_pixels=True).SeriesInstanceUID)
    out = tmp_path / f"{series}.nii.gz"
    meta = dicom.dicom_to_nifti(PHILIPS, out, uid)
    assert abs(meta["tilt_deg"]) > 15 and meta["resampled"] is True
    status = _dicom_truth().main(str(PHILIPS), str(out), uid)
    report = capsys.readouterr().out.strip()
    assert status == 0 and report.startswith("ok"), report


@needs_philips
def test_philips_study_picks_an_axial_ct_not_the_scout_or_derived(tmp_path):
    scout = str(pydicom.dcmread(PHILIPS / "S1000" / "I10", stop_before_pixels=True).SeriesInstanceUID)
    series = dicom.scan_dicom_folder(PHILIPS)
    chosen = dicom.select_series(series, PHILIPS)
    assert {h.get("SeriesInstanceUID") for h in chosen} == {str(chosen[0].get("SeriesInstanceUID"))}
    assert chosen[0].path.parent.name in {"S2010", "S3010"}
    assert scout in series and len(chosen) > 50
    assert all("AXIAL" in h.image_type and "DERIVED" not in h.image_type for h in chosen)


@pytest.mark.parametrize("kwargs", [{}, {"tilt_deg": -14.0}, {"distances": [0, 5, 10, 12.5, 15, 17.5, 22.5]}])
def test_reference_grid_is_the_grid_of_the_conversion(tmp_path, kwargs):
    write_series(tmp_path / "ct", **kwargs)
    grid = dicom.reference_grid(tmp_path / "ct")
    image = dicom.convert_series(tmp_path / "ct")
    assert grid.GetSize() == image.GetSize() and grid.GetPixelID() == sitk.sitkUInt8
    assert grid.GetSpacing() == image.GetSpacing() and grid.GetOrigin() == image.GetOrigin()
    assert grid.GetDirection() == image.GetDirection()


def test_two_series_of_the_same_size_are_refused_naming_each(tmp_path):
    soft, _ = write_series(tmp_path / "soft", series_number=2, kernel="H30s", description="Head 5 mm soft")
    bone, _ = write_series(tmp_path / "bone", series_number=3, kernel="H70h", description="Head 5 mm bone")
    with pytest.raises(HepredError, match="2 axial CT series of 6 images each") as info:
        dicom.convert_series(tmp_path)
    text = str(info.value)
    for expected in (soft, bone, "series 2", "series 3", "H30s", "H70h", "Head 5 mm soft", "Head 5 mm bone", "series_uid"):
        assert expected in text
    assert "--series" in text and "\n" not in text
    assert dicom.convert_series_with_metadata(tmp_path, bone)[1]["ConvolutionKernel"] == "H70h"


def test_a_slice_sent_twice_is_dropped_with_a_warning(tmp_path, caplog):
    write_series(tmp_path / "ct")
    again = tmp_path / "ct" / "IM0002_resent.dcm"
    again.write_bytes((tmp_path / "ct" / "IM0002.dcm").read_bytes())
    ds = pydicom.dcmread(again)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(again)
    with caplog.at_level("WARNING", logger="hepred.dicom"):
        image, meta = dicom.convert_series_with_metadata(tmp_path / "ct")
    assert meta["n_slices"] == 6 and meta["duplicate_slices_dropped"] == 1 and image.GetSize()[2] == 6
    assert np.abs(sitk.GetArrayFromImage(image) - hu_at(voxel_world_points(image))).max() <= 0.5
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "sent twice" in warning and "IM0002" in warning


TWO_BLOCKS = [(4.2, 16), (7.4, 10)]  # posterior fossa in 4.2 mm steps, then the cerebrum in 7.4 mm
needs_dicom_truth = pytest.mark.skipif(not DICOM_TRUTH.is_file(), reason="shared tools/dicom_truth.py absent")


@needs_dicom_truth
def test_two_block_tilted_series_is_placed_right_in_world_space(tmp_path, capsys):
    write_block_head_series(tmp_path / "ct", TWO_BLOCKS, tilt_deg=18.5)
    out = tmp_path / "ct.nii.gz"
    meta = dicom.dicom_to_nifti(tmp_path / "ct", out)
    assert meta["n_slices"] == 26 and meta["uneven_spacing"] is True and meta["resampled"] is True
    assert meta["tilt_deg"] == pytest.approx(18.5, abs=1e-3)
    assert meta["slice_steps_mm"] == [[4.2, 15], [7.4, 10]]
    status = _dicom_truth().main(str(tmp_path / "ct"), str(out))
    report = capsys.readouterr().out.strip()
    assert status == 0 and report.startswith("ok"), report


def test_a_hole_inside_an_evenly_spaced_block_is_still_refused(tmp_path):
    paths = write_block_head_series(tmp_path / "ct", TWO_BLOCKS, tilt_deg=18.5)
    paths[20].unlink()  # one slice of the 7.4 mm block
    with pytest.raises(HepredError, match=r"missing slices: 14\.80 mm .* slices around them are 7\.40 mm apart"):
        dicom.convert_series(tmp_path / "ct")


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """DCMTK's JPEG encoders, installed with apt-get (as the SLURM tests install slurm) when missing."""
    if shutil.which("dcmcjpeg") and shutil.which("dcmcjpls"):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("DCMTK (dcmcjpeg, dcmcjpls) is missing and apt-get cannot install it here")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "dcmtk"]):
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _compress(folder: Path, encoder: str) -> None:
    """Re-encode every image file in place (directory files such as DIRFILE stay as they are)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DIRFILE"):
        subprocess.run([encoder, str(path), str(path)], check=True, capture_output=True)


@pytest.mark.parametrize(
    "encoder, transfer_syntax",
    [("dcmcjpeg", "1.2.840.10008.1.2.4.70"), ("dcmcjpls", "1.2.840.10008.1.2.4.80")],
    ids=["jpeg_lossless_sv1", "jpeg_ls"],
)
def test_compressed_series_is_decoded(tmp_path, dcmtk, encoder, transfer_syntax):
    write_series(tmp_path / "plain", tilt_deg=10.0, intercept=0.0, hu=np.linspace(-1000, 1500, 32 * 32).reshape(32, 32))
    shutil.copytree(tmp_path / "plain", tmp_path / "compressed")
    _compress(tmp_path / "compressed", encoder)
    assert str(pydicom.dcmread(tmp_path / "compressed" / "IM0000.dcm").file_meta.TransferSyntaxUID) == transfer_syntax
    image = dicom.convert_series(tmp_path / "compressed")
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(dicom.convert_series(tmp_path / "plain")))


@needs_philips
def test_real_series_compressed_with_jpeg_lossless_passes_dicom_truth(tmp_path, capsys, dcmtk):
    shutil.copytree(PHILIPS / "S2010", tmp_path / "S2010")
    _compress(tmp_path / "S2010", "dcmcjpeg")
    out = tmp_path / "S2010.nii.gz"
    dicom.dicom_to_nifti(tmp_path / "S2010", out)
    status = _dicom_truth().main(str(tmp_path / "S2010"), str(out))
    report = capsys.readouterr().out.strip()
    assert status == 0 and report.startswith("ok"), report
