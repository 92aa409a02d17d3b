"""Tiny synthetic CT DICOM series for the dicom and ingest tests.

Pixel values are a linear function of the pixel's world position (see `hu_at`), so any
conversion that places pixels correctly and interpolates linearly reproduces `hu_at`
exactly at every output voxel inside the scanned region.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-123456",
    "PatientBirthDate": "19500101",
    "AccessionNumber": "ACC-998877",
    "InstitutionName": "Saint Example Hospital",
    "StudyDate": "20240102",
}


def hu_at(points: np.ndarray) -> np.ndarray:
    """HU at world points [..., 3] (LPS mm): a smooth ramp in all three axes."""
    return 2.0 * points[..., 0] + 3.0 * points[..., 1] + 4.0 * points[..., 2]


def tilted_orientation(tilt_deg: float) -> list[float]:
    """ImageOrientationPatient of an axial slice with the gantry tilted about the x axis."""
    t = math.radians(tilt_deg)
    return [1.0, 0.0, 0.0, 0.0, math.cos(t), math.sin(t)]


def write_slice(
    path: Path,
    position,
    orientation,
    series_uid: str,
    *,
    rows: int = 32,
    cols: int = 32,
    pixel_spacing=(0.8, 0.9),
    instance: int = 1,
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    hu: np.ndarray | None = None,
    series_number: int = 2,
    kernel: str = "H30s",
    description: str = "Head 5 mm",
) -> Path:
    """One CT slice file whose HU follow `hu_at` (or `hu` when given)."""
    position = np.asarray(position, dtype=float)
    orientation = np.asarray(orientation, dtype=float)
    row_spacing, col_spacing = pixel_spacing
    if hu is None:
        r, c = np.mgrid[0:rows, 0:cols]
        points = position + c[..., None] * col_spacing * orientation[:3] + r[..., None] * row_spacing * orientation[3:]
        hu = hu_at(points)
    raw = np.rint((hu - intercept) / slope).astype(np.int16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.Manufacturer = "Acme"
    ds.ManufacturerModelName = "Tiny CT"
    ds.KVP = "120"
    ds.SliceThickness = "5"
    ds.ConvolutionKernel = kernel
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{row_spacing:g}", f"{col_spacing:g}"]
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = raw.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    *,
    n_slices: int = 6,
    step: float = 5.0,
    tilt_deg: float = 0.0,
    distances=None,
    origin=(-12.0, -10.0, 40.0),
    series_uid: str | None = None,
    **slice_kwargs,
) -> tuple[str, list[Path]]:
    """An axial series; slices advance along +z (the table), tilted planes if tilt_deg != 0.

    Files are written in reverse order of position so that sorting is exercised.
    """
    series_uid = series_uid or generate_uid()
    distances = np.arange(n_slices) * step if distances is None else np.asarray(distances, dtype=float)
    orientation = tilted_orientation(tilt_deg)
    paths = []
    for index, distance in reversed(list(enumerate(distances))):
        position = np.asarray(origin, dtype=float) + [0.0, 0.0, distance]
        path = folder / f"IM{index:04d}.dcm"
        paths.append(write_slice(path, position, orientation, series_uid, instance=index + 1, **slice_kwargs))
    return series_uid, sorted(paths)


def read_series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def write_block_head_series(
    folder: Path, blocks, *, tilt_deg: float = 18.5, gap_mm: float = 0.0, matrix: int = 128, pixel_mm: float = 1.8
) -> list[Path]:
    """A simulated head (hepred.simulate) acquired as one series in blocks of different table steps.

    `blocks` lists (step_mm, n_slices); each block starts one step of its own (plus
    `gap_mm`) after the last slice of the previous one, as the table moves on, and all share
    the gantry tilt. Written with the simulator's DICOM writer, one sub-folder per block.
    """
    import dataclasses

    from hepred import simulate

    params = simulate.sample_patient_parameters(np.random.default_rng(3), tilt_fraction=0.0)
    params.tilt_deg = tilt_deg
    start = 0.0
    for index, (step, n_slices) in enumerate(blocks):
        scan = simulate.plan_scan(params, matrix, pixel_mm, step, n_slices)
        if index:
            start += step + gap_mm
        grid = dataclasses.replace(scan.dicom, origin=scan.dicom.origin + np.array([0.0, 0.0, start]))
        scan = dataclasses.replace(scan, dicom=grid)
        stored = simulate.render_ct(params, scan, np.zeros((1, 1, 1), np.uint8), np.random.default_rng(index))
        identity_rng = np.random.default_rng(0)
        simulate.write_dicom_series(folder / f"block{index + 1}", params, scan, stored, "blocks", 0, 0, identity_rng)
        start += (n_slices - 1) * step
    return sorted(folder.rglob("CT*.dcm"))
