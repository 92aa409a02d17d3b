"""DICOM CT series -> SimpleITK image in Hounsfield units on a regular grid.

A folder (searched recursively) may hold a whole study: localizers, derived images such
as exam summaries, several series and non-image files. We pick one axial CT series, sort
its slices along the slice normal and place every pixel where its DICOM tags say it lies.

Geometry follows the dcm2niix gantry-tilt convention: the output keeps the acquired slice
planes (direction = row, column and normal of ImageOrientationPatient), its slices are
spaced by the table step projected onto the normal, and each slice is shifted in-plane
along the column direction by the amount the tilt moved it; rows are added so that no
pixel falls off the grid. A gantry-tilted series thus needs only a sub-pixel in-plane
interpolation, never an interpolation across (thick) slices. Uneven slice spacing, such as
a protocol acquired in blocks of different steps (posterior fossa in thin slices, cerebrum
in thick ones), is resampled onto the median step, linearly between the two neighbouring
slices; a step much larger than the steps on either side of it is a hole and is refused.
An untilted, evenly spaced series is copied as it is, without any resampling.

Compressed transfer syntaxes (JPEG Lossless, JPEG-LS, JPEG 2000) are decoded by pydicom's
pixel handlers with the pylibjpeg plugins.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import MediaStorageDirectoryStorage

from hepred.errors import HepredError
from hepred.io import save_sitk

logger = logging.getLogger(__name__)

# ImageType values of images that are not slices of an axial volume.
NON_VOLUME_IMAGE_TYPES = frozenset({"LOCALIZER", "DERIVED", "SECONDARY"})
# Technical acquisition tags kept in the metadata; nothing that identifies a patient,
# a study or an institution (no names, IDs, dates, UIDs).
TECHNICAL_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "SliceThickness",
    "PixelSpacing",
    "GantryDetectorTilt",
    "ConvolutionKernel",
    "SeriesNumber",
)
# A slice step above this multiple of the steps on either side of it (and of the median
# step) means slices are missing.
MAX_GAP_FACTOR = 1.5
# Steps that differ from the median by more than this fraction are resampled.
UNEVEN_STEP_TOLERANCE = 0.01
# Orientation cosines may differ by this much and still count as one orientation.
ORIENTATION_TOLERANCE = 1e-3
# Slices closer than this (mm) along the normal are duplicates.
DUPLICATE_DISTANCE_MM = 0.01
# A slice normal within 45 degrees of the body axis counts as axial.
MIN_AXIAL_COSINE = math.cos(math.radians(45))
# Header values longer than this are not read during the folder scan (pixel data).
HEADER_DEFER_BYTES = 1024
INT16_MIN, INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


@dataclass(frozen=True)
class SliceHeader:
    """One DICOM file's header (read without its pixel data)."""

    path: Path
    dataset: pydicom.Dataset

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.dataset.get(keyword, default)

    @property
    def image_type(self) -> set[str]:
        return {str(value).upper() for value in (self.get("ImageType") or [])}

    @property
    def has_geometry(self) -> bool:
        """Position, orientation, spacing and an image pixel module: placeable in space."""
        keywords = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
        return all(self.get(keyword) not in (None, "", []) for keyword in keywords)

    @property
    def has_pixels(self) -> bool:
        return "PixelData" in self.dataset

    @property
    def is_volume_slice(self) -> bool:
        """An original CT slice, not a localizer, a derived image or an exam summary."""
        return (
            self.get("Modality") == "CT"
            and self.has_geometry
            and self.has_pixels
            and not (self.image_type & NON_VOLUME_IMAGE_TYPES)
        )


@dataclass(frozen=True)
class StackGeometry:
    """Where the sorted slices lie: every slice starts at first_position + distance * stacking."""

    row_dir: np.ndarray  # unit vector along a row (increasing column index)
    col_dir: np.ndarray  # unit vector along a column (increasing row index)
    normal: np.ndarray
    stacking: np.ndarray  # unit vector from the first to the last slice position
    first_position: np.ndarray
    distances: np.ndarray  # mm along `stacking`, ascending, first = 0
    row_spacing: float  # PixelSpacing[0]: distance between rows
    col_spacing: float  # PixelSpacing[1]: distance between columns
    rows: int
    cols: int
    duplicates_dropped: int = 0  # files that repeated another slice exactly

    @property
    def step(self) -> float:
        return float(np.median(np.diff(self.distances)))

    @property
    def tilt_deg(self) -> float:
        """Angle between the stacking direction and the slice normal (gantry tilt)."""
        return math.degrees(math.atan2(float(self.stacking @ self.col_dir), float(self.stacking @ self.normal)))

    @property
    def is_even(self) -> bool:
        steps = np.diff(self.distances)
        return bool(np.all(np.abs(steps - self.step) <= UNEVEN_STEP_TOLERANCE * self.step))

    @property
    def blocks(self) -> list[tuple[float, int]]:
        """Runs of equal slice steps, in order: (step mm, number of steps)."""
        runs: list[list] = []
        for step in np.diff(self.distances):
            if runs and abs(step - runs[-1][0]) <= UNEVEN_STEP_TOLERANCE * runs[-1][0]:
                runs[-1][1] += 1
            else:
                runs.append([float(step), 1])
        return [(round(step, 3), count) for step, count in runs]


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _read_header(path: Path) -> SliceHeader | None:
    """Header of a DICOM file; None for files that are not DICOM images (e.g. Philips DIRFILE)."""
    try:
        # Large values (the pixel data) are skipped, not read: we only learn that they exist.
        dataset = pydicom.dcmread(path, defer_size=HEADER_DEFER_BYTES)
    except InvalidDicomError:
        return None
    except Exception as exc:  # a DICOM preamble but a broken body: the study is damaged
        raise HepredError(f"unreadable DICOM file ({_one_line(exc)})", path=path) from exc
    if dataset.get("SeriesInstanceUID") is None:
        storage_class = getattr(dataset, "file_meta", {}).get("MediaStorageSOPClassUID")
        if storage_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in dataset:
            return None  # a directory file, not an image
        # Every image, report or overlay has a series; pydicom silently stops at the end of
        # a truncated file, so a missing series means the file is cut short or damaged.
        raise HepredError("corrupt or truncated DICOM file (no series information)", path=path)
    return SliceHeader(path, dataset)


def scan_dicom_folder(dicom_dir: str | Path) -> dict[str, list[SliceHeader]]:
    """Headers of all DICOM images below `dicom_dir`, grouped by SeriesInstanceUID."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise HepredError("DICOM folder not found", path=dicom_dir)
    series: dict[str, list[SliceHeader]] = {}
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is not None:
            series.setdefault(str(header.get("SeriesInstanceUID")), []).append(header)
    return series


def _describe(headers: list[SliceHeader]) -> str:
    """Series number and image count: enough for a user to find it; no UID or free text."""
    return f"series {headers[0].get('SeriesNumber', '?')} ({len(headers)} images)"


def _series_summary(headers: list[SliceHeader]) -> str:
    """What tells series of one study apart: number, description, kernel, images (no UID)."""
    first = headers[0]
    kernel = _json_value(first.get("ConvolutionKernel")) if first.get("ConvolutionKernel") else "?"
    return (
        f"series {first.get('SeriesNumber', '?')} ('{first.get('SeriesDescription', '') or '?'}', "
        f"kernel {kernel}, {len(headers)} images)"
    )


def _is_axial(headers: list[SliceHeader]) -> bool:
    cosines = np.asarray(headers[0].get("ImageOrientationPatient"), dtype=float)
    return abs(np.cross(cosines[:3], cosines[3:])[2]) >= MIN_AXIAL_COSINE


def select_series(
    series: dict[str, list[SliceHeader]], dicom_dir: Path, series_uid: str | None = None
) -> list[SliceHeader]:
    """The slices of the named series, else of the largest axial CT volume series.

    Two largest series of the same size (typically one study reconstructed with a
    soft-tissue and a bone kernel) are refused: nothing in the tags says which one a
    lesion mask was drawn on.
    """
    found = "; ".join(_describe(h) for h in series.values()) or "no DICOM images"
    if series_uid:
        if series_uid not in series:
            raise HepredError(f"the requested series is not in this folder (found: {found})", path=dicom_dir)
        headers = series[series_uid]
        slices = [h for h in headers if h.has_geometry and h.has_pixels]
        if not slices:
            raise HepredError(f"{_describe(headers)} has no placeable image slices", path=dicom_dir)
    else:
        candidates = []
        for headers in series.values():
            slices = [h for h in headers if h.is_volume_slice]
            if len(slices) >= 2 and _is_axial(slices):  # a single image is a scout or a summary
                candidates.append((headers, slices))
        if not candidates:
            raise HepredError(f"no axial CT series found (found: {found})", path=dicom_dir)
        # Largest first; ties broken by series number so that the listing is reproducible.
        candidates.sort(key=lambda c: (-len(c[1]), str(c[1][0].get("SeriesNumber", "")), str(c[1][0].path)))
        headers, slices = candidates[0]
        tied = [c for c in candidates if len(c[1]) == len(slices)]
        if len(tied) > 1:
            raise HepredError(
                f"{len(tied)} axial CT series of {len(slices)} images each, cannot tell which to use: "
                # The UIDs are shown here only: the user needs one to choose.
                + "; ".join(f"{_series_summary(c[1])} uid {c[1][0].get('SeriesInstanceUID')}" for c in tied)
                + "; name one by its uid in the sample sheet's series_uid column (hepred dicom2nifti: --series UID)",
                path=dicom_dir,
            )
        if len(candidates) > 1:
            logger.info(
                "took the largest of %d axial CT series, %s (others: %s); set series_uid to take another",
                len(candidates),
                _series_summary(slices),
                "; ".join(_series_summary(c[1]) for c in candidates[1:]),
            )
    # A file that looks like the other slices but lacks their position or pixels was cut
    # short (pydicom stops silently at the end of a file); dropping it would hide a hole.
    chosen = {h.path for h in slices}
    for header in headers:
        if header.path not in chosen and header.image_type == slices[0].image_type:
            raise HepredError("incomplete DICOM slice: no position or pixel data (truncated file?)", path=header.path)
    return slices


def _single_value(slices: list[SliceHeader], keyword: str, what: str, dicom_dir: Path, tol: float = 0.0):
    values = [np.asarray(h.get(keyword), dtype=float) for h in slices]
    for header, value in zip(slices, values):
        if value.shape != values[0].shape or np.max(np.abs(value - values[0])) > tol:
            raise HepredError(
                f"{_describe(slices)} has mixed {what} ({header.path.name}: {value.tolist()} vs "
                f"{slices[0].path.name}: {values[0].tolist()}); cannot build one volume",
                path=dicom_dir,
            )
    return values[0]


def stack_geometry(slices: list[SliceHeader], dicom_dir: Path) -> tuple[list[SliceHeader], StackGeometry]:
    """Sort slices along the normal and check that they form one placeable volume."""
    name = _describe(slices)
    if len(slices) < 2:
        raise HepredError(f"{name}: a volume needs at least 2 slices", path=dicom_dir)
    cosines = _single_value(slices, "ImageOrientationPatient", "orientations", dicom_dir, ORIENTATION_TOLERANCE)
    row_spacing, col_spacing = _single_value(slices, "PixelSpacing", "pixel spacings", dicom_dir, 1e-4)
    rows = int(_single_value(slices, "Rows", "matrix sizes", dicom_dir))
    cols = int(_single_value(slices, "Columns", "matrix sizes", dicom_dir))
    row_dir = cosines[:3] / np.linalg.norm(cosines[:3])
    col_dir = cosines[3:] / np.linalg.norm(cosines[3:])
    normal = np.cross(row_dir, col_dir)

    positions = np.array([np.asarray(h.get("ImagePositionPatient"), dtype=float) for h in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices, positions, dropped = _without_exact_duplicates(
        [slices[i] for i in order], positions[order], normal, name, dicom_dir
    )
    if len(slices) < 2:
        raise HepredError(f"{name}: a volume needs at least 2 slices at different positions", path=dicom_dir)

    offsets = positions - positions[0]
    stacking = offsets[-1] / np.linalg.norm(offsets[-1])
    distances = offsets @ stacking
    # The positions must lie on one line that does not drift along the rows: that is what a
    # table feed (with or without gantry tilt) produces, and all the resampling below assumes.
    off_line = np.linalg.norm(offsets - distances[:, None] * stacking, axis=1)
    tolerance = 0.1 * min(row_spacing, col_spacing)
    if off_line.max() > tolerance or abs(offsets[-1] @ row_dir) > tolerance:
        raise HepredError(
            f"{name}: slice positions do not lie on one line across the rows "
            f"(off by up to {max(off_line.max(), abs(offsets[-1] @ row_dir)):.2f} mm); cannot place them",
            path=dicom_dir,
        )
    geometry = StackGeometry(
        row_dir, col_dir, normal, stacking, positions[0], distances, float(row_spacing), float(col_spacing), rows, cols,
        duplicates_dropped=dropped,
    )
    _refuse_holes(slices, np.diff(distances), name, dicom_dir)
    return slices, geometry


def _in_folder(header: SliceHeader, dicom_dir: Path) -> str:
    """The file's path inside the user's DICOM folder: its name alone may repeat in sub-folders."""
    return str(header.path.relative_to(dicom_dir)) if header.path.is_relative_to(dicom_dir) else header.path.name


def _refuse_holes(slices: list[SliceHeader], steps: np.ndarray, name: str, dicom_dir: Path) -> None:
    """A step much larger than the steps on both sides of it (and than the median) is a hole.

    Comparing with the neighbours, not only with the median, lets a protocol change its step
    between blocks (4 mm, then 7 mm) while a hole inside an evenly spaced block is still found.
    """
    median = float(np.median(steps))
    for index, step in enumerate(steps):
        neighbours = [steps[i] for i in (index - 1, index + 1) if 0 <= i < len(steps)]
        if neighbours and step > MAX_GAP_FACTOR * max(max(neighbours), median):
            raise HepredError(
                f"{name}: missing slices: {step:.2f} mm between {_in_folder(slices[index], dicom_dir)} and "
                f"{_in_folder(slices[index + 1], dicom_dir)}, where the slices around them are "
                f"{max(neighbours):.2f} mm apart",
                path=dicom_dir,
            )


def _without_exact_duplicates(
    slices: list[SliceHeader], positions: np.ndarray, normal: np.ndarray, name: str, dicom_dir: Path
) -> tuple[list[SliceHeader], np.ndarray, int]:
    """Drop slices sent twice (same position and pixels, a new SOPInstanceUID); refuse conflicting ones.

    `slices` are sorted along the normal. Returns the kept slices, their positions and the
    number dropped (with a warning naming the files).
    """
    keep = [0]
    dropped = []
    for index in range(1, len(slices)):
        kept = keep[-1]
        if (positions[index] - positions[kept]) @ normal >= DUPLICATE_DISTANCE_MM:
            keep.append(index)
            continue
        first, second = slices[kept], slices[index]
        same_place = np.linalg.norm(positions[index] - positions[kept]) < DUPLICATE_DISTANCE_MM
        if not (same_place and np.array_equal(hu_slice(first), hu_slice(second))):
            raise HepredError(
                f"{name}: duplicate slice positions with different content ({_in_folder(first, dicom_dir)} and "
                f"{_in_folder(second, dicom_dir)}); remove the wrong one",
                path=dicom_dir,
            )
        dropped.append(_in_folder(second, dicom_dir))
    if dropped:
        logger.warning(
            "%s: dropped %d slice(s) sent twice (same position and pixel data as another): %s",
            name,
            len(dropped),
            ", ".join(dropped),
        )
    return [slices[i] for i in keep], positions[keep], len(dropped)


def hu_slice(header: SliceHeader) -> np.ndarray:
    """One file's pixel data in HU (float64), decoded whatever its transfer syntax."""
    try:
        dataset = pydicom.dcmread(header.path)
    except Exception as exc:
        raise HepredError(f"unreadable DICOM pixel data ({_one_line(exc)})", path=header.path) from exc
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        encoding = f"{syntax.name}: " if syntax is not None else ""
        raise HepredError(f"unreadable DICOM pixel data ({encoding}{_one_line(exc)})", path=header.path) from exc
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float64) * slope + intercept


def read_hu_stack(slices: list[SliceHeader], geometry: StackGeometry) -> np.ndarray:
    """Pixel data of the sorted slices in HU as int16 [slice, row, column]; one read per file."""
    stack = np.empty((len(slices), geometry.rows, geometry.cols), dtype=np.int16)
    for index, header in enumerate(slices):
        hu = hu_slice(header)
        if hu.shape != (geometry.rows, geometry.cols):
            raise HepredError(
                f"pixel data of shape {hu.shape} is not one {geometry.rows}x{geometry.cols} slice", path=header.path
            )
        stack[index] = np.clip(np.rint(hu), INT16_MIN, INT16_MAX)
    return stack


def _slice_at(stack: np.ndarray, distances: np.ndarray, distance: float, step: float) -> np.ndarray:
    """The slice plane at `distance` along the stacking direction, linear between neighbours."""
    nearest = int(np.argmin(np.abs(distances - distance)))
    # Exact hits are copied; each slice stands for a slab, so half a step past the ends too.
    if abs(distances[nearest] - distance) <= 1e-3 * step or distance <= distances[0] or distance >= distances[-1]:
        return stack[nearest].astype(np.float32)
    upper = int(np.searchsorted(distances, distance))
    weight = (distance - distances[upper - 1]) / (distances[upper] - distances[upper - 1])
    return (1 - weight) * stack[upper - 1].astype(np.float32) + weight * stack[upper].astype(np.float32)


def _shift_rows(plane: np.ndarray, first_row: float, n_rows: int, fill: float) -> np.ndarray:
    """Rows first_row, first_row + 1, ... of `plane` (fractional: linear between rows)."""
    source = first_row + np.arange(n_rows)
    inside = (source >= -0.5) & (source <= plane.shape[0] - 0.5)  # a row covers +-half a pixel
    source = np.clip(source, 0, plane.shape[0] - 1)
    lower = np.floor(source).astype(int)
    upper = np.minimum(lower + 1, plane.shape[0] - 1)
    weight = (source - lower)[:, None].astype(np.float32)
    shifted = (1 - weight) * plane[lower] + weight * plane[upper]
    shifted[~inside] = fill
    return shifted


@dataclass(frozen=True)
class OutputGrid:
    """The regular grid a slice stack is placed on (see module docstring)."""

    slice_distances: np.ndarray  # mm along the stacking direction of each output slice
    row_shift: np.ndarray  # in-plane shift (rows) of each output slice caused by the tilt
    first_row: int  # output row 0 relative to the first slice's row 0
    size: tuple[int, int, int]  # (columns, rows, slices)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def empty_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        image = sitk.Image(list(self.size), pixel_type)
        return self.place(image)

    def place(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def output_grid(geometry: StackGeometry) -> OutputGrid:
    """Regular grid for a stack: acquired planes, median step, rows added for the tilt shift."""
    step = geometry.step
    n_slices = int(math.floor(geometry.distances[-1] / step + 0.5)) + 1
    distances = np.arange(n_slices) * step
    sin_tilt = float(geometry.stacking @ geometry.col_dir)
    cos_tilt = float(geometry.stacking @ geometry.normal)
    row_shift = distances * sin_tilt / geometry.row_spacing
    if np.max(np.abs(row_shift)) < 1e-3:  # rounding noise of the positions, not a tilt
        row_shift = np.zeros_like(row_shift)
    first_row = math.floor(row_shift.min() + 1e-3)
    n_rows = geometry.rows + math.ceil(row_shift.max() - 1e-3) - first_row
    origin = geometry.first_position + first_row * geometry.row_spacing * geometry.col_dir
    direction = np.column_stack([geometry.row_dir, geometry.col_dir, geometry.normal]).ravel()
    return OutputGrid(
        slice_distances=distances,
        row_shift=row_shift,
        first_row=first_row,
        size=(geometry.cols, n_rows, n_slices),
        spacing=(geometry.col_spacing, geometry.row_spacing, step * cos_tilt),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction),
    )


def resample_to_regular_grid(stack: np.ndarray, geometry: StackGeometry) -> tuple[sitk.Image, bool]:
    """Place the slice stack on its output grid; returns (image, whether values were resampled)."""
    grid = output_grid(geometry)
    n_cols, n_rows, n_slices = grid.size
    if geometry.is_even and n_slices == len(geometry.distances) and n_rows == geometry.rows:
        return grid.place(sitk.GetImageFromArray(stack)), False
    fill = float(stack.min())  # the scanner's own padding value, as dcm2niix does
    volume = np.empty((n_slices, n_rows, n_cols), dtype=np.int16)
    for k, distance in enumerate(grid.slice_distances):
        plane = _slice_at(stack, geometry.distances, float(distance), geometry.step)
        shift = grid.row_shift[k] - grid.first_row
        if abs(shift - round(shift)) > 1e-3:
            plane = _shift_rows(plane, -shift, n_rows, fill)
        else:  # whole-row shift: a copy, no interpolation
            padded = np.full((n_rows, n_cols), fill, dtype=np.float32)
            offset = int(round(shift))
            padded[offset : offset + geometry.rows] = plane
            plane = padded
        volume[k] = np.clip(np.rint(plane), INT16_MIN, INT16_MAX)
    return grid.place(sitk.GetImageFromArray(volume)), True


def _json_value(value: Any) -> Any:
    """DICOM values (DS, IS, MultiValue, PersonName...) as plain JSON numbers/strings/lists."""
    if isinstance(value, (list, tuple, MultiValue)):
        return [_json_value(v) for v in value]
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    return str(value)


def grid_metadata(image: sitk.Image) -> dict:
    """The output grid of an image, as stored in the metadata of every ingested CT."""
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [float(v) for v in image.GetSpacing()],
        "origin_mm": [float(v) for v in image.GetOrigin()],
        "direction": [float(v) for v in image.GetDirection()],
    }


def convert_series_with_metadata(dicom_dir: str | Path, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
    """Read one axial CT series as int16 HU on a regular grid, with its technical metadata."""
    dicom_dir = Path(dicom_dir)
    series = scan_dicom_folder(dicom_dir)
    slices, geometry = stack_geometry(select_series(series, dicom_dir, series_uid), dicom_dir)
    stack = read_hu_stack(slices, geometry)
    image, resampled = resample_to_regular_grid(stack, geometry)
    first = slices[0]
    metadata = {tag: _json_value(first.get(tag)) for tag in TECHNICAL_TAGS if first.get(tag) not in (None, "")}
    if not geometry.is_even:
        logger.info(
            "%s: uneven slice steps (mm x count: %s) resampled onto a regular %.2f mm step",
            _describe(slices),
            ", ".join(f"{step:g} x {count}" for step, count in geometry.blocks),
            geometry.step,
        )
    metadata.update(
        n_slices=len(slices),
        duplicate_slices_dropped=geometry.duplicates_dropped,
        slice_step_mm=geometry.step,
        slice_steps_mm=[[step, count] for step, count in geometry.blocks],
        uneven_spacing=not geometry.is_even,
        tilt_deg=geometry.tilt_deg,
        resampled=resampled,
        **grid_metadata(image),
    )
    return image, metadata


def reference_grid(dicom_dir: str | Path, series_uid: str | None = None) -> sitk.Image:
    """An empty uint8 image on the grid `convert_series` would produce, from the headers only.

    For drawing masks that must fall exactly on the converted CT (e.g. simulated data).
    """
    dicom_dir = Path(dicom_dir)
    slices = select_series(scan_dicom_folder(dicom_dir), dicom_dir, series_uid)
    return output_grid(stack_geometry(slices, dicom_dir)[1]).empty_image()


def convert_series(dicom_dir: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read one axial CT series as int16 HU on a regular grid (tilt and spacing corrected)."""
    return convert_series_with_metadata(dicom_dir, series_uid)[0]


def dicom_to_nifti(dicom_dir: str | Path, out_path: str | Path, series_uid: str | None = None) -> dict:
    """Convert a DICOM folder to a NIfTI file (written atomically); returns the technical metadata."""
    image, metadata = convert_series_with_metadata(dicom_dir, series_uid)
    save_sitk(out_path, image)
    return metadata
