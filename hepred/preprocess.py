"""Stage 3: skull stripping from HU, in-plane resampling and windowing of one ingested CT.

Outputs per case (see docs/architecture.md, stage 3): ``brain_mask.nii.gz`` on the ingest
CT grid, ``hu.npy`` / ``lesion.npy`` on the resampled [Z, S, S] grid (row 0 = anterior),
``info.json`` and a QC ``montage.png``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hepred import io
from hepred.config import section_settings
from hepred.errors import HepredError

log = logging.getLogger(__name__)

# The QC montage shows the skull stripping in a fixed brain window: the configured windows are
# applied when the classifier reads a slice, so changing them never redoes this stage.
QC_WINDOW = {"level": 40, "width": 80}

OUTSIDE_HU = -1024
# Below this HU a voxel is air (midway between air and water).
AIR_HU = -500.0
# Gaps in thin bone (sutures, temporal squama, partial volume) narrower than this are sealed
# before looking for the region the skull encloses.
SEAL_MM = 2.0
# Morphology runs on an in-plane grid of about this spacing: 4-5x fewer pixels than a
# 0.45 mm scan, while staying well below the brain edge accuracy Dice 0.95 needs.
WORK_SPACING_MM = 1.0
# Bone partial volume at the edge of the brain mask: voxels within RIM_MM of the edge and
# denser than fresh blood (RIM_HU) are left out of hu.npy.
RIM_MM = 1.5
RIM_HU = 100.0
# Montage: at most this many axial panels, each shown at most this many pixels wide.
MONTAGE_PANELS = 24
MONTAGE_PIXELS = 256
OUTPUT_FILES = ("brain_mask.nii.gz", "hu.npy", "lesion.npy", "info.json", "montage.png")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def apply_windows(hu: np.ndarray, windows: list[dict]) -> np.ndarray:
    """Map HU to [0, 1] through each window; returns float32 [C, *hu.shape]."""
    if not windows:
        raise HepredError("preprocess.windows must list at least one window")
    hu = np.asarray(hu, dtype=np.float32)
    channels = np.empty((len(windows),) + hu.shape, dtype=np.float32)
    for channel, window in enumerate(windows):
        level, width = float(window["level"]), float(window["width"])
        if width <= 0:
            raise HepredError(f"preprocess.windows: width must be > 0, got {width}")
        np.subtract(hu, level - width / 2.0, out=channels[channel])
        channels[channel] /= width
        np.clip(channels[channel], 0.0, 1.0, out=channels[channel])
    return channels


def _radius_px(image: sitk.Image, radius_mm: float) -> list[int]:
    """In-plane kernel radius in pixels for a physical radius; 0 across slices (2D operation)."""
    sx, sy = image.GetSpacing()[:2]
    return [max(1, round(radius_mm / sx)), max(1, round(radius_mm / sy)), 0]


def _per_slice(image: sitk.Image, operation) -> sitk.Image:
    """Apply a 2D SimpleITK operation to each axial slice (5 mm slices are not a 3D neighbourhood)."""
    result = sitk.JoinSeries([operation(image[:, :, k]) for k in range(image.GetSize()[2])])
    result.CopyInformation(image)
    return result


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask, False), sortByObjectSize=True)
    return sitk.Equal(labels, 1)


def skull_strip(ct: sitk.Image, bone_hu: float = 400, tissue_hu=(-20, 130), opening_mm: float = 6.0) -> sitk.Image:
    """Mask (uint8, on the grid of ``ct``) of everything inside the inner table of the skull.

    The last image axis must be the slice axis. Morphology is in-plane with physical radii,
    so thick anisotropic slices are handled; connectivity is 3D.
    """
    # Only the spacing matters here; a plain frame lets slices be split and joined freely.
    plain = sitk.Image(ct)
    plain.SetOrigin((0.0, 0.0, 0.0))
    plain.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sx, sy = ct.GetSpacing()[:2]
    shrink = [max(1, round(WORK_SPACING_MM / sx)), max(1, round(WORK_SPACING_MM / sy)), 1]
    # Averaging shrink (not subsampling) keeps thin bone visible on the coarse grid.
    work = sitk.BinShrink(sitk.Cast(plain, sitk.sitkFloat32), shrink)

    bone = sitk.BinaryThreshold(work, float(bone_hu), 1e9, 1, 0)
    sealed = sitk.BinaryMorphologicalClosing(bone, _radius_px(work, SEAL_MM), sitk.sitkBall, 1, True)
    not_bone = sitk.Not(sealed)
    # Whatever a closed skull ring surrounds is intracranial, whatever its HU.
    enclosed_by_bone = _per_slice(sealed, sitk.BinaryFillhole)
    # Air pockets inside the head: pneumocephalus, or the empty cavity of a skull phantom whose
    # thin bone falls below bone_hu; sinuses are cut off by bone and the opening below.
    body = sitk.BinaryThreshold(work, AIR_HU, 1e9, 1, 0)
    enclosed_air = sitk.And(_per_slice(body, sitk.BinaryFillhole), sitk.Not(body))
    # Where the ring is open (skull base, vertex) the cavity is found as soft tissue.
    tissue = sitk.BinaryThreshold(work, float(tissue_hu[0]), float(tissue_hu[1]), 1, 0)
    candidate = sitk.And(sitk.Or(sitk.Or(enclosed_by_bone, enclosed_air), tissue), not_bone)

    # Opening by the largest component: erode to cut thin bridges through foramina, keep the
    # cavity, grow it back by the same radius but never beyond the candidate voxels.
    radius = _radius_px(work, opening_mm)
    core = sitk.BinaryErode(candidate, radius, sitk.sitkBall, 0, 1)
    core = _largest_component(core)
    if sitk.GetArrayViewFromImage(core).max() == 0:
        raise HepredError("no intracranial cavity found (no soft tissue inside bone)")
    cavity = sitk.And(sitk.BinaryDilate(core, radius, sitk.sitkBall, 0, 1), candidate)
    # Calcifications, clips and noise leave holes inside the cavity; they are intracranial.
    cavity = _per_slice(_largest_component(cavity), sitk.BinaryFillhole)

    # Back to the full grid: interpolate the mask linearly and cut at 0.5 for a smooth edge.
    smooth = sitk.Resample(sitk.Cast(cavity, sitk.sitkFloat32), plain, sitk.Transform(), sitk.sitkLinear, 0.0)
    mask = sitk.Cast(sitk.BinaryThreshold(smooth, 0.5, 2.0, 1, 0), sitk.sitkUInt8)
    mask.CopyInformation(ct)
    return mask


def preprocess_settings(cfg: dict | None) -> dict[str, Any]:
    """The preprocess config section with the schema's defaults filled in, plus the checks the
    schema cannot express."""
    settings = section_settings("preprocess", cfg)
    low, high = settings["skull_strip"]["tissue_hu"]
    if not low < high < settings["skull_strip"]["bone_hu"]:
        raise HepredError("preprocess.skull_strip: need tissue_hu low < high < bone_hu")
    apply_windows(np.zeros(1, np.float32), settings["windows"])  # validates the windows
    return settings


def resample_slices(image: sitk.Image, size: int, interpolator: int, default: float, pixel_type: int) -> sitk.Image:
    """Resample every axial slice to size x size over the same field of view; z is unchanged.

    A non-square field of view is padded (centred) to its longer side, so pixels stay square.
    """
    nx, ny, nz = image.GetSize()
    sx, sy, sz = image.GetSpacing()
    pixel = max(nx * sx, ny * sy) / size
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    # Same centre as the input slice; outer pixel edges stay where they were.
    shift = direction @ np.array(
        [(nx - 1) * sx / 2 - (size - 1) * pixel / 2, (ny - 1) * sy / 2 - (size - 1) * pixel / 2, 0.0]
    )
    origin = tuple(float(v) for v in np.asarray(image.GetOrigin()) + shift)
    return sitk.Resample(
        image,
        [size, size, nz],
        sitk.Transform(),
        interpolator,
        origin,
        (pixel, pixel, sz),
        image.GetDirection(),
        default,
        pixel_type,
    )


def cache_geometry(info_path: Path, case_id: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Origin and direction of a case's cache grid, as preprocess wrote them to info.json;
    (None, None) for a cache written before it recorded them."""
    info = io.read_json(info_path)
    if "origin_mm" not in info or "direction" not in info:
        return None, None
    origin, direction = tuple(float(v) for v in info["origin_mm"]), tuple(float(v) for v in info["direction"])
    if len(origin) != 3 or len(direction) != 9:
        raise HepredError("origin_mm must be 3 numbers and direction 9", case_id=case_id, path=info_path)
    return origin, direction


def on_cache_grid(array: np.ndarray, spacing, origin, direction, case_id: str, what: str) -> sitk.Image:
    """``array`` ([Z, S, S], a case's cache grid) as an image in patient space, so that it
    overlays the case's CT; a cache without recorded geometry is refused, naming ``what``."""
    if origin is None or direction is None:
        raise HepredError(
            "info.json has no origin_mm/direction (written by an older hepred): rerun preprocess "
            f"(snakemake --forcerun preprocess) so {what} can be placed on the patient's CT",
            case_id=case_id,
        )
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction])
    return image


def stripped_hu_slices(ct: sitk.Image, brain: sitk.Image, size: int) -> tuple[np.ndarray, sitk.Image]:
    """Skull-stripped HU (int16 [Z, size, size], outside the brain -1024) and an image on its
    grid (whose spacing, origin and direction place the array in patient space).

    Voxels above RIM_HU at the edge of the mask are partial volume with the inner table:
    they stay in the brain mask (the truth counts them) but not in the image, where they
    would draw a bright, blood-like ring. Masked interpolation (HU x mask / mask) then lets
    rim pixels average brain voxels only, so neither bone nor the -1024 fill bleeds in.
    """
    inner = sitk.GrayscaleErode(brain, _radius_px(ct, RIM_MM), sitk.sitkBox)  # fast box erosion of 0/1
    rim_bone = sitk.And(sitk.GreaterEqual(ct, RIM_HU), sitk.Not(inner))
    keep = sitk.And(brain, sitk.Not(rim_bone))
    weight = resample_slices(sitk.Cast(keep, sitk.sitkFloat32), size, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    masked = sitk.Mask(sitk.Cast(ct, sitk.sitkFloat32), keep)
    weighted_hu = sitk.GetArrayFromImage(resample_slices(masked, size, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    weight_np = sitk.GetArrayFromImage(weight)
    inside = weight_np >= 0.5
    hu = np.full(inside.shape, OUTSIDE_HU, dtype=np.int16)
    hu[inside] = np.round(weighted_hu[inside] / weight_np[inside]).astype(np.int16)
    return hu, weight


def _read_image(path: Path, case_id: str, what: str) -> sitk.Image:
    if not path.is_file():
        raise HepredError(f"{what} not found", case_id=case_id, path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise HepredError(f"cannot read {what}: {reason}", case_id=case_id, path=path) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise HepredError(f"{what} must be a 3D single-channel image", case_id=case_id, path=path)
    return image


def _check_same_grid(ct: sitk.Image, other: sitk.Image, case_id: str, path: Path) -> None:
    same = (
        ct.GetSize() == other.GetSize()
        and np.allclose(ct.GetSpacing(), other.GetSpacing(), rtol=1e-4, atol=1e-5)
        and np.allclose(ct.GetOrigin(), other.GetOrigin(), atol=1e-2)
        and np.allclose(ct.GetDirection(), other.GetDirection(), atol=1e-4)
    )
    if not same:
        raise HepredError(
            f"lesion mask is not on the CT grid (size {other.GetSize()} vs {ct.GetSize()}, "
            f"spacing {tuple(round(v, 4) for v in other.GetSpacing())} vs "
            f"{tuple(round(v, 4) for v in ct.GetSpacing())})",
            case_id=case_id,
            path=path,
        )


def _montage(case_id: str, ct: np.ndarray, brain: np.ndarray, lesion: np.ndarray, spacing, window: dict, info: dict):
    """QC image: axial slices through the brain, windowed, brain outline green, lesion red.
    Drawn with PIL rather than matplotlib: it is made for every case, and matplotlib's import
    and rendering were half of a case's preprocessing time."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    slices = np.flatnonzero(brain.any(axis=(1, 2)))
    slices = slices[np.unique(np.linspace(0, len(slices) - 1, min(MONTAGE_PANELS, len(slices))).round().astype(int))]
    step = max(1, int(np.ceil(max(ct.shape[1:]) / MONTAGE_PIXELS)))
    columns = min(6, len(slices))
    rows = int(np.ceil(len(slices) / columns))
    gray = (apply_windows(ct[slices, ::step, ::step], [window])[0] * 255).round().astype(np.uint8)
    height, width = gray.shape[1:]
    # Rows are stretched by the pixel aspect (row spacing over column spacing), as the scanner saw them.
    panel_height = max(1, round(height * spacing[1] / spacing[0]))
    gap, label, header = 4, 12, 18
    canvas = Image.new("RGB", (columns * (width + gap) + gap, header + rows * (panel_height + label + gap)), "black")
    draw = ImageDraw.Draw(canvas)
    for panel, z in enumerate(slices):
        rgb = np.repeat(gray[panel][..., None], 3, axis=2)
        for mask, colour in ((brain, (0, 255, 0)), (lesion, (255, 0, 0))):
            inside = mask[z, ::step, ::step].astype(bool)
            rgb[inside & ~ndimage.binary_erosion(inside)] = colour
        left = gap + (panel % columns) * (width + gap)
        top = header + (panel // columns) * (panel_height + label + gap)
        draw.text((left, top), f"slice {z}", fill="white")
        canvas.paste(Image.fromarray(rgb).resize((width, panel_height), Image.NEAREST), (left, top + label))
    draw.text(
        (gap, 3),
        f"{case_id}: brain {info['brain_volume_ml']:.0f} mL (green), lesion {info['lesion_volume_ml']:.1f} mL (red), "
        f"window {window['level']}/{window['width']}",
        fill="white",
    )
    return canvas


def _remove_outputs(out_dir: Path) -> None:
    for name in OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    with contextlib.suppress(OSError):
        out_dir.rmdir()  # only when empty: never touch files that are not ours


def preprocess_case(
    case_id: str, ct_path: Path, lesion_path: Path, out_dir: Path, cfg: dict, user_files: dict | None = None
) -> dict:
    """Skull strip, resample and QC one ingested case; returns the info.json content.

    `user_files` maps the ingested copies (ct_path, lesion_path) to the user's own files
    they came from: errors name those, never a path the workflow made. On any failure
    every output of the case is removed, so a rerun starts clean.
    """
    ct_path, lesion_path, out_dir = Path(ct_path), Path(lesion_path), Path(out_dir)
    try:
        return _preprocess(case_id, ct_path, lesion_path, out_dir, preprocess_settings(cfg))
    except HepredError as error:
        _remove_outputs(out_dir)
        renamed = error.naming_user_files(user_files)
        if renamed is error:
            raise
        raise renamed from error
    except BaseException:
        _remove_outputs(out_dir)
        raise


def _preprocess(case_id: str, ct_path: Path, lesion_path: Path, out_dir: Path, settings: dict) -> dict:
    ct = _read_image(ct_path, case_id, "CT")
    lesion = _read_image(lesion_path, case_id, "lesion mask")
    _check_same_grid(ct, lesion, case_id, lesion_path)
    if not np.issubdtype(sitk.GetArrayViewFromImage(ct).dtype, np.integer):
        ct = sitk.Round(ct)
    hu_min = float(sitk.GetArrayViewFromImage(ct).min())
    if hu_min > AIR_HU:
        raise HepredError(
            f"CT does not look like HU: no air (minimum {hu_min:.0f}, expected < {AIR_HU:.0f})",
            case_id=case_id,
            path=ct_path,
        )
    ct = sitk.Cast(ct, sitk.sitkInt16)
    lesion = sitk.Cast(sitk.NotEqual(lesion, 0), sitk.sitkUInt8)

    # Work in LPS (a lossless axis permutation/flip): axial slices last, row 0 = anterior.
    ct_lps = sitk.DICOMOrient(ct, "LPS")
    lesion_lps = sitk.DICOMOrient(lesion, "LPS")
    try:
        brain_lps = skull_strip(ct_lps, **settings["skull_strip"])
    except HepredError as exc:
        raise exc.with_context(case_id=case_id, path=ct_path) from None
    if ct_lps.GetDirection() == ct.GetDirection():
        brain = brain_lps
    else:
        brain = sitk.Resample(brain_lps, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

    size = settings["size"]
    hu, grid = stripped_hu_slices(ct_lps, brain_lps, size)
    lesion_small = resample_slices(lesion_lps, size, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    lesion_np = sitk.GetArrayFromImage(lesion_small)

    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    brain_np = sitk.GetArrayFromImage(brain_lps)
    lesion_full = sitk.GetArrayFromImage(lesion_lps)
    outside = int(np.logical_and(lesion_full > 0, brain_np == 0).sum())
    if lesion_full.any() and outside > 0.05 * lesion_full.sum():
        log.warning(
            "case %s: %.0f%% of the lesion lies outside the brain mask", case_id, 100.0 * outside / lesion_full.sum()
        )
    info = {
        "spacing_mm": [round(float(v), 6) for v in grid.GetSpacing()],
        # Where the cache lies in patient space (LPS, as SimpleITK): synthetic volumes and
        # saliency maps made on this grid are written with it, so they overlay the CT.
        "origin_mm": [float(v) for v in grid.GetOrigin()],
        "direction": [float(v) for v in grid.GetDirection()],
        "lesion_pixels": [int(v) for v in lesion_np.sum(axis=(1, 2))],
        "brain_volume_ml": float(brain_np.sum()) * voxel_ml,
        "lesion_volume_ml": float(lesion_full.sum()) * voxel_ml,
        "size": size,
    }
    montage = _montage(
        case_id,
        sitk.GetArrayViewFromImage(ct_lps),
        brain_np,
        lesion_full,
        ct_lps.GetSpacing(),
        QC_WINDOW,
        info,
    )

    io.save_sitk(out_dir / "brain_mask.nii.gz", brain)
    io.save_npy(out_dir / "hu.npy", hu)
    io.save_npy(out_dir / "lesion.npy", lesion_np)
    io.save_pil(out_dir / "montage.png", montage)
    # info.json last: its presence means the case is complete.
    io.write_json(out_dir / "info.json", info)
    spacing = info["spacing_mm"]
    log.info(
        "case %s: skull stripped (brain %.0f ml, lesion %.1f ml); cache of %d slices of %d x %d px at "
        "%.2f x %.2f x %.2f mm, %d with lesion",
        case_id,
        info["brain_volume_ml"],
        info["lesion_volume_ml"],
        hu.shape[0],
        size,
        size,
        *spacing,
        sum(1 for pixels in info["lesion_pixels"] if pixels),
    )
    return info


def skull_strip_scores(demo_dir: Path, mask_paths: list[Path], out_csv: Path):
    """Demo cohort QC: Dice of each brain mask (``preprocess/{case}/brain_mask.nii.gz``) against
    the simulator's ``truth/{case}_brain.nii.gz``; writes and returns one row per case.

    The truth is resampled (nearest) onto the mask grid when the grids differ.
    """
    import pandas as pd

    rows = []
    for mask_path in map(Path, mask_paths):
        case_id = mask_path.parent.name
        mask = _read_image(mask_path, case_id, "brain mask")
        truth = _read_image(Path(demo_dir) / "truth" / f"{case_id}_brain.nii.gz", case_id, "true brain mask")
        truth = sitk.Resample(truth, mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
        mask_np, truth_np = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(truth) > 0
        rows.append(
            {
                "case_id": case_id,
                "dice": round(dice(mask_np, truth_np), 5),
                "mask_volume_ml": round(float(mask_np.sum()) * voxel_ml, 2),
                "truth_volume_ml": round(float(truth_np.sum()) * voxel_ml, 2),
            }
        )
    scores = pd.DataFrame(rows, columns=["case_id", "dice", "mask_volume_ml", "truth_volume_ml"])
    if len(scores):
        log.info(
            "skull strip Dice: mean %.4f, worst %.4f (%s)",
            scores["dice"].mean(),
            scores["dice"].min(),
            scores.loc[scores["dice"].idxmin(), "case_id"],
        )
    io.write_csv(out_csv, scores)
    return scores
