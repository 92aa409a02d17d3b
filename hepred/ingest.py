"""Ingest one case: CT (DICOM folder or NIfTI) and lesion mask(s) -> aligned NIfTI + metadata.

Writes, in the case's output folder, `ct.nii.gz` (int16 HU on a regular grid),
`lesion.nii.gz` (uint8 0/1 on the CT grid) and `meta.json` (technical metadata only: no
patient identifiers and no paths, only file names). Either all three exist or none.

A lesion mask is binary (0 and one other value, e.g. 0/1 or 0/255) unless the config names
the hematoma label(s) of a labelmap (`ingest.lesion_labels`): counting every non-zero
label of a labelmap (hematoma 1, edema 2) as hematoma would silently double volumes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hepred import dicom
from hepred.errors import HepredError
from hepred.io import save_sitk, write_json
from hepred.preprocess import AIR_HU

logger = logging.getLogger(__name__)

OUTPUT_NAMES = ("ct.nii.gz", "lesion.nii.gz", "meta.json")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# A mask on another grid (same world space, e.g. cropped to a box around the lesion) is
# accepted when it lies inside the CT to within one voxel of the coarser grid along each
# axis, and never less than this many mm.
EXTENT_TOLERANCE_MM = 3.0
LABELS_KEY = "ingest.lesion_labels"
# Label values listed in a message, at most.
MAX_LISTED_VALUES = 8


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path) -> sitk.Image:
    """A 3D scalar image from a NIfTI file; anything else is a HepredError naming the file."""
    if not path.is_file():
        raise HepredError("file not found", path=path)
    if not _is_nifti(path):
        raise HepredError("expected a NIfTI file (.nii or .nii.gz)", path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise HepredError("not a readable NIfTI image", path=path) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise HepredError(
            f"expected a 3D single-channel image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} channel(s)",
            path=path,
        )
    return image


def to_int16_hu(image: sitk.Image) -> sitk.Image:
    """Round and clip a CT image to int16 HU, keeping its geometry."""
    values = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(values)):  # the caller adds the file name
        raise HepredError("CT image contains NaN or infinite values")
    hu = np.clip(np.rint(values), dicom.INT16_MIN, dicom.INT16_MAX).astype(np.int16)
    out = sitk.GetImageFromArray(hu)
    out.CopyInformation(image)
    return out


def read_ct(ct: Path, series_uid: str | None) -> tuple[sitk.Image, dict]:
    """The CT as int16 HU and its technical metadata, from a DICOM folder or a NIfTI file."""
    if ct.is_dir():
        image, metadata = dicom.convert_series_with_metadata(ct, series_uid)
        return image, {"ct_source": "dicom", **metadata}
    if series_uid:
        raise HepredError("a series UID is given but the CT is not a DICOM folder", path=ct)
    if not ct.exists():
        raise HepredError("file not found", path=ct)
    image = to_int16_hu(read_nifti(ct))
    lowest = int(sitk.GetArrayViewFromImage(image).min())
    if lowest > AIR_HU:  # a head CT in HU always holds air (about -1000 HU) around the head
        raise HepredError(
            f"CT is not in Hounsfield units: no air (minimum {lowest}, expected < {AIR_HU:.0f}); "
            "values such as 0..4095 are stored values: rescale them to HU (value * slope + intercept) "
            "or give the DICOM folder",
            path=ct,
        )
    return image, {"ct_source": "nifti", **dicom.grid_metadata(image)}


def _listed(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:MAX_LISTED_VALUES])
    return shown + (f" and {len(values) - MAX_LISTED_VALUES} more" if len(values) > MAX_LISTED_VALUES else "")


def lesion_mask_array(image: sitk.Image, path: Path, lesion_labels: Sequence[int] = ()) -> np.ndarray:
    """Hematoma voxels as uint8 0/1: the configured labels, else the one non-zero value.

    Without `lesion_labels` a mask must be binary (0 and one other value); a labelmap with
    several labels is refused rather than all its labels counted as hematoma.
    """
    values = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise HepredError("lesion mask has non-integer values; expected labels (0 = background)", path=path)
    if np.any(values < 0):
        raise HepredError("lesion mask has negative values (is it a CT image?); expected labels 0/1", path=path)
    found = np.unique(values)
    found = found[found != 0]
    if lesion_labels:
        if found.size and not np.isin(found, lesion_labels).any():
            raise HepredError(
                f"lesion mask has none of the hematoma labels {list(lesion_labels)} of {LABELS_KEY} "
                f"(its values: {_listed(found)})",
                path=path,
            )
        return np.isin(values, lesion_labels).astype(np.uint8)
    if found.size > 1:
        raise HepredError(
            f"lesion mask has {found.size} labels ({_listed(found)}), not one: name the hematoma label(s) "
            f"in the config key {LABELS_KEY} (for example [{found[0]:g}])",
            path=path,
        )
    return (values != 0).astype(np.uint8)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Same size, spacing, origin and direction (within what NIfTI float storage keeps)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-5)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=0.01 * min(a.GetSpacing()))
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4)
    )


def world_extent(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(min, max) world corners of the region the voxels cover, and one voxel's world size."""
    size = np.array(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
            for corner in np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in size], indexing="ij")).reshape(3, -1).T
        ]
    )
    direction = np.array(image.GetDirection()).reshape(3, 3)
    voxel = np.abs(direction) @ np.array(image.GetSpacing())
    return corners.min(axis=0), corners.max(axis=0), voxel


def lies_inside(mask: sitk.Image, ct: sitk.Image) -> bool:
    """Whether the region the mask's voxels cover lies inside the CT's, up to the tolerance.

    Tested in the CT's own (continuous) index space, so that a tilted CT's oblique box is
    not replaced by the larger axis-aligned box around it.
    """
    size = np.array(mask.GetSize())
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in size], indexing="ij")).reshape(3, -1).T
    in_ct = np.array(
        [
            ct.TransformPhysicalPointToContinuousIndex(mask.TransformContinuousIndexToPhysicalPoint(corner.tolist()))
            for corner in corners
        ]
    )
    ct_spacing = np.array(ct.GetSpacing())
    tolerance = np.maximum(max(EXTENT_TOLERANCE_MM, *mask.GetSpacing()) / ct_spacing, 1.0)  # in CT voxels
    return bool(np.all(in_ct >= -0.5 - tolerance) and np.all(in_ct <= np.array(ct.GetSize()) - 0.5 + tolerance))


def mask_on_ct_grid(
    mask: sitk.Image, ct: sitk.Image, path: Path, lesion_labels: Sequence[int] = ()
) -> tuple[sitk.Image, bool]:
    """The hematoma mask on the CT grid (copied, or nearest-neighbour resampled); (mask, resampled).

    A mask on another grid of the same world space (finer, coarser, or cropped to a box
    around the lesion, as 3D Slicer and ITK-SNAP can save it) is resampled; one that
    reaches outside the CT is refused.
    """
    binary = sitk.GetImageFromArray(lesion_mask_array(mask, path, lesion_labels))
    if same_grid(mask, ct):
        binary.CopyInformation(ct)
        return binary, False
    binary.CopyInformation(mask)
    if not lies_inside(mask, ct):
        mask_low, mask_high, _ = world_extent(mask)
        ct_low, ct_high, _ = world_extent(ct)
        raise HepredError(
            "lesion mask does not match its CT: it reaches outside the CT (mask covers "
            f"{np.round(mask_low, 1).tolist()}..{np.round(mask_high, 1).tolist()} mm, CT covers "
            f"{np.round(ct_low, 1).tolist()}..{np.round(ct_high, 1).tolist()} mm)",
            path=path,
        )
    logger.info(
        "lesion mask on another grid (size %s, spacing %s mm) resampled onto the CT grid with nearest neighbour",
        list(mask.GetSize()),
        [round(v, 3) for v in mask.GetSpacing()],
    )
    return sitk.Resample(binary, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8), True


def lesion_volume_ml(mask: sitk.Image) -> tuple[int, float]:
    """Voxel count and volume (mL) of a 0/1 mask, from its own spacing."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return voxels, voxels * float(np.prod(mask.GetSpacing())) / 1000.0


def followup_volume_ml(path: Path, lesion_labels: Sequence[int] = ()) -> float:
    """Volume (mL) of the follow-up lesion mask; only its volume is used, on its own grid."""
    mask = read_nifti(path)
    voxels = int(np.count_nonzero(lesion_mask_array(mask, path, lesion_labels)))
    if voxels == 0:
        raise HepredError("follow-up lesion mask is empty", path=path)
    return voxels * float(np.prod(mask.GetSpacing())) / 1000.0


def _remove_outputs(out_dir: Path) -> None:
    for name in OUTPUT_NAMES:
        (out_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only when empty: never touch what others put there
        out_dir.rmdir()


def ingest_summary(meta: dict) -> str:
    """One line on what ingest did with a case (its log), from its meta.json."""
    size = "x".join(str(v) for v in meta.get("size", []))
    spacing = "x".join(f"{v:.2f}" for v in meta.get("spacing_mm", []))
    parts = [f"CT from {meta.get('ct_source', 'file')} ({meta.get('n_slices', '?')} slices, {size} voxels of {spacing} mm)"]
    if meta.get("SeriesNumber") is not None:
        parts.append(f"series number {meta['SeriesNumber']}")
    if meta.get("tilt_deg"):
        parts.append(f"gantry tilt {meta['tilt_deg']:.1f} deg corrected")
    if meta.get("resampled"):
        parts.append("uneven slices resampled to a regular grid")
    if meta.get("duplicate_slices_dropped"):
        parts.append(f"{meta['duplicate_slices_dropped']} duplicate slice(s) dropped")
    lesion = f"lesion {meta['lesion_volume_ml']:.1f} ml"
    if meta.get("lesion_resampled"):
        lesion += " (mask resampled onto the CT grid)"
    parts.append(lesion)
    if meta.get("followup_lesion_volume_ml") is not None:
        parts.append(f"follow-up lesion {meta['followup_lesion_volume_ml']:.1f} ml")
    return "; ".join(parts)


def ingest_case(
    case_id: str,
    ct: Path,
    lesion: Path,
    followup_lesion: Path | None,
    series_uid: str | None,
    out_dir: Path,
    lesion_labels: Sequence[int] = (),
) -> dict:
    """Ingest one case into `out_dir` (ct.nii.gz, lesion.nii.gz, meta.json); returns the metadata.

    Paths are absolute. `lesion_labels` are the hematoma values of labelmap masks (config
    `ingest.lesion_labels`; empty: masks must be binary). On any error nothing of the case
    is left in `out_dir` and a HepredError names the case and the offending file.
    """
    ct, lesion, out_dir = Path(ct), Path(lesion), Path(out_dir)
    followup_lesion = Path(followup_lesion) if followup_lesion else None
    current = ct
    try:
        ct_image, metadata = read_ct(ct, series_uid or None)
        current = lesion
        mask, resampled = mask_on_ct_grid(read_nifti(lesion), ct_image, lesion, lesion_labels)
        voxels, volume = lesion_volume_ml(mask)
        if voxels == 0:
            reason = "empty after resampling onto the CT grid" if resampled else "empty"
            raise HepredError(f"lesion mask is {reason}", path=lesion)
        followup_volume = None
        if followup_lesion is not None:
            current = followup_lesion
            followup_volume = followup_volume_ml(followup_lesion, lesion_labels)
        metadata.update(
            case_id=case_id,
            ct_file=ct.name,
            lesion_file=lesion.name,
            followup_lesion_file=followup_lesion.name if followup_lesion else None,
            lesion_labels=list(lesion_labels),
            lesion_resampled=resampled,
            lesion_voxels=voxels,
            lesion_volume_ml=volume,
            followup_lesion_volume_ml=followup_volume,
        )
        current = out_dir
        save_sitk(out_dir / "ct.nii.gz", ct_image)
        save_sitk(out_dir / "lesion.nii.gz", mask)
        write_json(out_dir / "meta.json", metadata)
        logger.info("case %s: %s", case_id, ingest_summary(metadata))
        return metadata
    except HepredError as error:
        _remove_outputs(out_dir)
        raise error.with_context(case_id=case_id, path=current) from error
    except BaseException:
        _remove_outputs(out_dir)
        raise
