"""Simulated demo cohort: head CT DICOM series with an intracerebral hematoma that may grow.

Every patient is drawn from its own random streams, seeded by (seed, case index), so one
case can be regenerated alone and nothing depends on the cohort size or the worker count.
A patient is first a set of parameters (`sample_patient_parameters`): head shape, scan
tilt, hematoma shape and the imaging markers known to predict expansion, which set the
latent probability of expansion and so the label. The images are then rendered from these
parameters: anatomy and hematoma are analytic shapes in the head's own frame, evaluated at
the world coordinates of each grid (the tilted DICOM grid for the CT, the axis-aligned grid
of a tilt-corrected series for the masks), so the masks fall on the CT exactly.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from hepred.errors import HepredError
from hepred.io import save_sitk, write_csv

MARKERS = ("irregularity", "heterogeneity", "hypodensity", "blend_sign")

# Latent expansion model: logit = intercept + weights . markers (volume as a z-score of its
# log). Tuned so that, over many cohorts of 400, the oracle AUC (latent probability vs
# label) is about 0.89, volume alone about 0.54 and the prevalence about 35 % (see
# latent_difficulty).
LOGIT_INTERCEPT = -8.6
LOGIT_WEIGHTS = {"irregularity": 4.6, "heterogeneity": 4.6, "hypodensity": 4.6, "blend_sign": 2.5, "volume": 0.3}
BLEND_SIGN_RATE = 0.25
VOLUME_MEDIAN_ML = 15.0
VOLUME_LOG_SD = 0.65
VOLUME_RANGE_ML = (4.0, 60.0)
# Follow-up growth, chosen far from the HE rule's thresholds (> 6 mL or > 33 %).
EXPANSION_GROWTH = (0.40, 1.10)
STABLE_GROWTH = (-0.10, 0.15)
STABLE_MAX_GROWTH_ML = 3.5

AIR_HU = -1000.0
SOFT_TISSUE_HU = 45.0
STORED_OFFSET = 1024  # stored value = HU + 1024 (RescaleIntercept -1024, slope 1)
STORED_MAX = 4095  # 12 bits stored
# Reconstruction blur, in pixels: softens edges and correlates the noise a little.
BLUR_PIXELS = 0.8
# Lobe sharpness of an irregular hematoma outline (smaller: narrower lobes).
LOBE_WIDTH = 0.12
MIN_FIELD_OF_VIEW_MM = 215.0


# --------------------------------------------------------------------------- parameters
@dataclass
class HeadParameters:
    semi_axes: np.ndarray  # inner table (lateral, antero-posterior, vertical), mm
    taper: float  # the head widens posteriorly: lateral semi-axis * (1 + taper * v / B)
    floor_fraction: float  # skull base at w = -floor_fraction * C
    floor_bone_mm: float
    skull_mm: float
    scalp_mm: float
    csf_mm: float  # subarachnoid CSF rim inside the inner table
    cortex_mm: float
    ventricle_scale: float
    gyral_phase: np.ndarray
    gray_hu: float
    white_hu: float
    deep_gray_hu: float
    csf_hu: float
    scalp_hu: float
    cortical_bone_hu: float
    diploe_hu: float
    noise_sd: float
    offset_mm: np.ndarray  # placement in the field of view (lateral, antero-posterior, above the lowest slice)
    table_z_mm: float


@dataclass
class HematomaParameters:
    side: int  # +1 patient's left, -1 right
    center: np.ndarray  # head frame, mm
    rotation: np.ndarray  # hematoma frame -> head frame
    semi_axes: np.ndarray  # mm, before lobulation
    lobe_directions: np.ndarray  # [M, 3] unit vectors (hematoma frame)
    lobe_amplitudes: np.ndarray  # [M]
    satellite_centers: np.ndarray  # [S, 3] head frame, mm
    satellite_radii: np.ndarray  # [S] mm
    island_centers: np.ndarray  # [I, 3] head frame, mm
    island_radii: np.ndarray  # [I] mm
    island_hu: np.ndarray  # [I]
    base_hu: float
    texture_wavevectors: np.ndarray  # [K, 3] rad/mm (head frame)
    texture_phases: np.ndarray  # [K]
    texture_sd: float
    blend: bool  # blend sign: a hypodense and a hyperdense part with a sharp interface
    blend_normal: np.ndarray  # hematoma frame
    blend_offset: float  # in normalised hematoma units
    blend_hu: tuple[float, float]  # (hypodense part, hyperdense part)
    growth_direction: np.ndarray  # hematoma frame
    growth_bias: float


@dataclass
class PatientParameters:
    irregularity: float
    heterogeneity: float
    hypodensity: float
    blend_sign: int
    nominal_volume_ml: float
    latent_logit: float
    latent_probability: float
    label: int
    growth_quantile: float  # position of the follow-up growth inside its label's range
    tilt_deg: float
    head: HeadParameters
    hematoma: HematomaParameters

    def markers(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in MARKERS}


def case_id_for(index: int) -> str:
    """Case ids sim001, sim002, ... (index counts from 0)."""
    return f"sim{index + 1:03d}"


def case_streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators (parameters, image noise, fake identity) for one case."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)


def latent_logit(markers: dict[str, float], volume_ml: float) -> float:
    volume_z = (math.log(volume_ml) - math.log(VOLUME_MEDIAN_ML)) / VOLUME_LOG_SD
    logit = LOGIT_INTERCEPT + LOGIT_WEIGHTS["volume"] * volume_z
    return logit + sum(LOGIT_WEIGHTS[name] * float(markers[name]) for name in MARKERS)


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.normal(size=(count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _sphere_directions(count: int = 1500) -> np.ndarray:
    """Evenly spread unit vectors (Fibonacci sphere) for averages over directions."""
    k = np.arange(count) + 0.5
    z = 1 - 2 * k / count
    phi = math.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _lobe_factor(directions: np.ndarray, lobe_directions: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """Radial scale of the lobulated outline along unit `directions` [..., 3]."""
    if len(amplitudes) == 0:
        return np.ones(directions.shape[:-1], dtype=directions.dtype)
    cosines = directions @ lobe_directions.T.astype(directions.dtype)
    return 1 + np.exp((cosines - 1) / LOBE_WIDTH) @ amplitudes.astype(directions.dtype)


def _sample_head(rng: np.random.Generator) -> HeadParameters:
    return HeadParameters(
        semi_axes=np.array([rng.uniform(60, 68), rng.uniform(78, 88), rng.uniform(54, 62)]),
        taper=rng.uniform(0.03, 0.10),
        floor_fraction=rng.uniform(0.55, 0.62),
        floor_bone_mm=rng.uniform(8, 12),
        skull_mm=rng.uniform(5, 7.5),
        scalp_mm=rng.uniform(3, 5.5),
        csf_mm=rng.uniform(1.5, 3.5),
        cortex_mm=rng.uniform(3.0, 4.5),
        ventricle_scale=rng.uniform(0.8, 1.4),
        gyral_phase=rng.uniform(0, 2 * math.pi, size=3),
        gray_hu=rng.uniform(38, 42),
        white_hu=rng.uniform(25, 30),
        deep_gray_hu=rng.uniform(34, 38),
        csf_hu=rng.uniform(5, 15),
        scalp_hu=rng.uniform(35, 45),
        cortical_bone_hu=rng.uniform(1000, 1500),
        diploe_hu=rng.uniform(750, 950),
        noise_sd=rng.uniform(4, 8),
        offset_mm=np.array([rng.uniform(-5, 5), rng.uniform(-3, 3), rng.uniform(3, 10)]),
        table_z_mm=rng.uniform(-180, -120),
    )


def _sample_hematoma(
    rng: np.random.Generator, head: HeadParameters, volume_ml: float, markers: dict[str, float]
) -> HematomaParameters:
    irregularity, heterogeneity, hypodensity = (markers[m] for m in ("irregularity", "heterogeneity", "hypodensity"))
    A, B, C = head.semi_axes
    side = 1 if rng.random() < 0.5 else -1
    # Deep (basal ganglia, thalamus) to lobar positions, low enough to stay inside the
    # tilt-corrected grid and far enough from the inner table for the follow-up growth.
    center = np.array([side * rng.uniform(0.2, 0.45) * A, rng.uniform(-0.35, 0.15) * B, rng.uniform(-0.15, 0.25) * C])
    rotation = _random_rotation(rng)
    ratios = np.exp(rng.normal(0, 0.15, size=3))
    ratios /= np.prod(ratios) ** (1 / 3)

    n_lobes = 3 + int(round(5 * irregularity))
    lobe_directions = _unit_vectors(rng, n_lobes)
    lobe_amplitudes = irregularity * rng.uniform(0.3, 0.7, size=n_lobes)
    # Scale the ellipsoid so that the lobulated shape has the nominal volume.
    mean_cubed = float(np.mean(_lobe_factor(_sphere_directions(), lobe_directions, lobe_amplitudes) ** 3))
    radius = (3 * volume_ml * 1000 / (4 * math.pi * mean_cubed)) ** (1 / 3)
    semi_axes = radius * ratios

    n_satellites = int(rng.binomial(3, irregularity**2))
    satellite_dirs = _unit_vectors(rng, n_satellites)
    satellite_distance = rng.uniform(1.15, 1.5, size=n_satellites) * _lobe_factor(
        satellite_dirs, lobe_directions, lobe_amplitudes
    )
    satellite_centers = center + (satellite_dirs * semi_axes * satellite_distance[:, None]) @ rotation.T
    satellite_radii = rng.uniform(2.5, 4.5, size=n_satellites)

    # Swirl-like hypodense islands: more and larger with the hypodensity marker.
    n_islands = int(math.floor(hypodensity * 6))
    island_dirs = _unit_vectors(rng, n_islands)
    island_depth = rng.uniform(0.0, 0.6, size=n_islands)
    island_centers = center + (island_dirs * semi_axes * island_depth[:, None]) @ rotation.T
    island_radii = rng.uniform(1.5, 2.5, size=n_islands) + 3.0 * hypodensity
    island_hu = rng.uniform(30, 45, size=n_islands)

    n_modes = 16
    wavelengths = rng.uniform(8, 14, size=n_modes)
    texture_wavevectors = _unit_vectors(rng, n_modes) * (2 * math.pi / wavelengths)[:, None]
    texture_phases = rng.uniform(0, 2 * math.pi, size=n_modes)

    return HematomaParameters(
        side=side,
        center=center,
        rotation=rotation,
        semi_axes=semi_axes,
        lobe_directions=lobe_directions,
        lobe_amplitudes=lobe_amplitudes,
        satellite_centers=satellite_centers,
        satellite_radii=satellite_radii,
        island_centers=island_centers,
        island_radii=island_radii,
        island_hu=island_hu,
        base_hu=rng.uniform(58, 72),
        texture_wavevectors=texture_wavevectors,
        texture_phases=texture_phases,
        texture_sd=1.5 + 12 * heterogeneity,
        blend=bool(markers["blend_sign"]),
        blend_normal=_unit_vectors(rng, 1)[0],
        blend_offset=rng.uniform(-0.3, 0.3),
        blend_hu=(rng.uniform(38, 48), rng.uniform(72, 85)),
        growth_direction=_unit_vectors(rng, 1)[0],
        growth_bias=rng.uniform(0, 0.4),
    )


def sample_patient_parameters(rng: np.random.Generator, tilt_fraction: float = 0.3) -> PatientParameters:
    """Draw one patient: markers, volume, latent probability, label, anatomy and scan tilt.

    The markers and the label come first, so the latent model can be studied on many
    patients without rendering any image (see `latent_difficulty`).
    """
    markers = {name: float(rng.beta(1.3, 1.3)) for name in ("irregularity", "heterogeneity", "hypodensity")}
    markers["blend_sign"] = int(rng.random() < BLEND_SIGN_RATE)
    volume_ml = float(np.clip(math.exp(rng.normal(math.log(VOLUME_MEDIAN_ML), VOLUME_LOG_SD)), *VOLUME_RANGE_ML))
    logit = latent_logit(markers, volume_ml)
    probability = 1 / (1 + math.exp(-logit))
    label = int(rng.random() < probability)
    growth_quantile = float(rng.random())
    # Both draws always happen, so the tilt fraction does not shift the other parameters.
    tilted = rng.random() < tilt_fraction
    tilt_deg = float(rng.uniform(10, 20))
    head = _sample_head(rng)
    return PatientParameters(
        **markers,
        nominal_volume_ml=volume_ml,
        latent_logit=logit,
        latent_probability=probability,
        label=label,
        growth_quantile=growth_quantile,
        tilt_deg=tilt_deg if tilted else 0.0,
        head=head,
        hematoma=_sample_hematoma(rng, head, volume_ml, markers),
    )


def sample_cohort_parameters(n: int, seed: int = 0, tilt_fraction: float = 0.3) -> list[PatientParameters]:
    return [sample_patient_parameters(case_streams(seed, i)[0], tilt_fraction) for i in range(n)]


def _difficulty(labels, probabilities, volumes) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=int)
    if labels.min() == labels.max():
        raise HepredError("difficulty needs both labels in the cohort")
    return {
        "oracle_auc": float(roc_auc_score(labels, probabilities)),
        "volume_auc": float(roc_auc_score(labels, volumes)),
        "prevalence": float(labels.mean()),
    }


def latent_difficulty(n: int = 400, seed: int = 0) -> dict[str, float]:
    """Oracle and volume-only AUC of the latent model alone (no images rendered)."""
    patients = sample_cohort_parameters(n, seed)
    return _difficulty(
        [p.label for p in patients], [p.latent_probability for p in patients], [p.nominal_volume_ml for p in patients]
    )


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Grid:
    """A voxel grid: world (LPS, mm) = origin + steps @ (i, j, k); shape is (x, y, z)."""

    shape: tuple[int, int, int]
    origin: np.ndarray
    steps: np.ndarray  # columns: world displacement per step of i (column), j (row), k (slice)

    def to_image(self, array_zyx: np.ndarray):
        """SimpleITK image on this grid (its steps give spacing and direction cosines)."""
        import SimpleITK as sitk

        spacing = np.linalg.norm(self.steps, axis=0)
        image = sitk.GetImageFromArray(array_zyx)
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in (self.steps / spacing).ravel()])
        return image


@dataclass(frozen=True)
class Scan:
    """Where the head lies in the scanner: its frame follows the (tilted) slices."""

    dicom: Grid  # the acquired series, rows along [0, cos t, sin t], slices along z
    mask: Grid  # grid of the tilt-corrected series (hepred.dicom's output grid; the DICOM grid if untilted)
    head_center: np.ndarray  # world
    head_axes: np.ndarray  # columns: head frame axes (u lateral, v antero-posterior, w vertical) in world
    tilt_rad: float
    slice_mm: float


def plan_scan(params: PatientParameters, matrix: int, pixel_mm: float, slice_mm: float, n_slices: int) -> Scan:
    """The two grids of a patient and the head pose within them.

    The head is pitched with the gantry (technicians tilt along the skull base), so each
    tilted slice is a plane of constant height in the head frame; its skull base lies just
    above the lowest slice.
    """
    t = math.radians(params.tilt_deg)
    e_u = np.array([1.0, 0.0, 0.0])
    e_v = np.array([0.0, math.cos(t), math.sin(t)])
    e_w = np.cross(e_u, e_v)  # [0, -sin t, cos t]: normal of the tilted slices
    fov = (matrix - 1) * pixel_mm
    origin = np.array([-fov / 2, -fov / 2, params.head.table_z_mm])
    head = params.head
    w_c = head.floor_fraction * head.semi_axes[2] + head.offset_mm[2]
    # Centre the head in the slice through its centre; IPP moves along z, so that slice's
    # field of view is shifted by w_c * tan t along the rows.
    u_c = fov / 2 + head.offset_mm[0]
    v_c = fov / 2 + w_c * math.tan(t) + head.offset_mm[1]
    center = origin + u_c * e_u + v_c * e_v + w_c * e_w

    dicom_steps = np.stack([pixel_mm * e_u, pixel_mm * e_v, slice_mm * np.array([0.0, 0.0, 1.0])], axis=1)
    dicom = Grid((matrix, matrix, n_slices), origin, dicom_steps)
    if params.tilt_deg == 0:
        mask = dicom
    else:
        # The converter's grid (dcm2niix convention): the acquired planes, slice distance
        # slice_mm * cos t along their normal, each plane shifted in-plane by the tilt, and
        # rows added so that no acquired pixel falls off it.
        row_shift = np.arange(n_slices) * slice_mm * math.sin(t) / pixel_mm
        first_row = math.floor(row_shift.min() + 1e-3)
        n_rows = matrix + math.ceil(row_shift.max() - 1e-3) - first_row
        mask_steps = np.stack([pixel_mm * e_u, pixel_mm * e_v, slice_mm * math.cos(t) * e_w], axis=1)
        mask = Grid((matrix, n_rows, n_slices), origin + first_row * pixel_mm * e_v, mask_steps)
    return Scan(dicom, mask, center, np.stack([e_u, e_v, e_w], axis=1), t, slice_mm)


def _head_affine(scan: Scan, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Head coordinates = offset + matrix @ (i, j, k); tiny terms set to exactly zero."""
    matrix = scan.head_axes.T @ grid.steps
    matrix[np.abs(matrix) < 1e-9] = 0.0
    offset = scan.head_axes.T @ (grid.origin - scan.head_center)
    return offset, matrix


def _slice_head_coords(scan: Scan, grid: Grid, k: int, rows: slice = slice(None), cols: slice = slice(None)):
    """Head coordinates (u, v, w) of slice k, each broadcastable to (rows, cols).

    Terms with a zero coefficient are left out, so on the DICOM grid u is a row vector, v a
    column and w a scalar: the slice is a plane of constant height in the head frame.
    """
    offset, matrix = _head_affine(scan, grid)
    nx, ny, _ = grid.shape
    i = np.arange(nx, dtype=np.float64)[cols][None, :]
    j = np.arange(ny, dtype=np.float64)[rows][:, None]
    coords = []
    for c in range(3):
        value = offset[c] + matrix[c, 2] * k
        if matrix[c, 0]:
            value = value + matrix[c, 0] * i
        if matrix[c, 1]:
            value = value + matrix[c, 1] * j
        coords.append(value.astype(np.float32) if isinstance(value, np.ndarray) else float(value))
    return coords


def _covered_by_dicom(scan: Scan, k: int, rows: slice = slice(None)) -> np.ndarray:
    """Rows of mask-grid slice k that the acquired DICOM slice k covers.

    Both grids share each slice plane; the corrected grid's planes are shifted in-plane by
    the tilt, so its first and last rows can lie beyond what the detector saw.
    """
    nx, ny, nz = scan.mask.shape
    j = np.arange(ny, dtype=np.float64)[rows]
    world = scan.mask.origin[:, None] + scan.mask.steps[:, 1:2] * j[None, :] + scan.mask.steps[:, 2:3] * k
    dicom_index = np.linalg.solve(scan.dicom.steps, world - scan.dicom.origin[:, None])
    dicom_row = dicom_index[1]
    return ((dicom_row >= -1e-6) & (dicom_row <= scan.dicom.shape[1] - 1 + 1e-6))[:, None]


def _check_head_fits(params: PatientParameters, scan: Scan, case_id: str, out_dir: Path) -> None:
    """The skull must lie within every slice's field of view and the brain within the stack."""
    head = params.head
    A, B, C = head.semi_axes
    offset, matrix = _head_affine(scan, scan.dicom)
    nx, ny, nz = scan.dicom.shape
    k = np.arange(nz)
    w = offset[2] + matrix[2, 2] * k
    u_range = offset[0] + np.array([0, matrix[0, 0] * (nx - 1)])
    v_low = offset[1] + matrix[1, 2] * k
    v_high = v_low + matrix[1, 1] * (ny - 1)
    outer = head.skull_mm
    height = np.clip(1 - (w / (C + outer)) ** 2, 0, None) ** 0.5
    half_u = (A * (1 + head.taper) + outer) * height
    half_v = (B + outer) * height
    inside = (u_range[0] <= -half_u) & (half_u <= u_range[1]) & (v_low <= -half_v) & (half_v <= v_high)
    top = offset[2] + matrix[2, 2] * (nz - 1)
    if not inside.all() or top < C + head.csf_mm:
        raise HepredError(
            f"the simulated head does not fit the scan: use matrix * pixel_mm >= {MIN_FIELD_OF_VIEW_MM:.0f} mm "
            "and (n_slices - 1) * slice_mm >= 125 mm",
            case_id=case_id,
            path=out_dir,
        )


# --------------------------------------------------------------------------- anatomy
def _ellipsoid_q(u, v, w, semi_u, semi_v, semi_w):
    """(u/a)^2 + (v/b)^2 + (w/c)^2: inside the ellipsoid where <= 1."""
    return (u / semi_u) ** 2 + (v / semi_v) ** 2 + (w / semi_w) ** 2


def _lateral_semi_axis(head: HeadParameters, v):
    A, B, _ = head.semi_axes
    return A * (1 + head.taper * v / B)


def _intracranial(head: HeadParameters, u, v, w) -> np.ndarray:
    """Inside the inner table of the skull and above the skull base."""
    A_v = _lateral_semi_axis(head, v)
    _, B, C = head.semi_axes
    floor = -head.floor_fraction * C
    return (_ellipsoid_q(u, v, w, A_v, B, C) <= 1) & (w > floor)


# Lateral ventricles (frontal horn and body, atrium), third ventricle and deep gray
# nuclei: (centre u, v, w), semi-axes, in mm of an average head; ventricles scale.
_VENTRICLES = (
    ((7.0, -10.0, 18.0), (4.0, 24.0, 6.0)),
    ((14.0, 20.0, 8.0), (4.0, 12.0, 5.0)),
)
_THIRD_VENTRICLE = ((0.0, 0.0, 0.0), (1.5, 12.0, 9.0))
_DEEP_GRAY = ((18.0, -5.0, 5.0), (9.0, 16.0, 10.0))


def _paint_ellipsoid(image, u, v, w, center, semi, value) -> None:
    """Set `value` inside an axis-aligned ellipsoid on a slice with 1-D u (cols), v (rows), scalar w."""
    dw = (w - center[2]) / semi[2]
    if abs(dw) >= 1:
        return
    cols = np.flatnonzero(np.abs(u[0] - center[0]) < semi[0])
    rows = np.flatnonzero(np.abs(v[:, 0] - center[1]) < semi[1])
    if len(cols) == 0 or len(rows) == 0:
        return
    block = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inside = _ellipsoid_q(u[:, block[1]] - center[0], v[block[0]] - center[1], 0.0, *semi[:2], 1.0) <= 1 - dw**2
    image[block][inside] = value


def _anatomy_slice(head: HeadParameters, u, v, w: float) -> np.ndarray:
    """HU of one DICOM slice without hematoma and noise (u: row vector, v: column, w: scalar)."""
    _, B, C = head.semi_axes
    A_v = _lateral_semi_axis(head, v)
    image = np.full((v.shape[0], u.shape[1]), AIR_HU, dtype=np.float32)

    def inside(offset_mm, extra=0.0):
        return _ellipsoid_q(u, v, w, A_v + offset_mm + extra, B + offset_mm + extra, C + offset_mm + extra) <= 1

    image[inside(head.skull_mm + head.scalp_mm)] = head.scalp_hu
    image[inside(head.skull_mm)] = head.cortical_bone_hu
    image[inside(0.7 * head.skull_mm) & ~inside(0.3 * head.skull_mm)] = head.diploe_hu
    cavity = inside(0.0)
    floor = -head.floor_fraction * C
    if w <= floor:
        image[cavity] = head.cortical_bone_hu if w > floor - head.floor_bone_mm else SOFT_TISSUE_HU
        return image
    image[cavity] = head.csf_hu
    if w <= floor + head.csf_mm:
        return image
    parenchyma = inside(-head.csf_mm)
    image[parenchyma] = head.gray_hu
    # Gyri and sulci: the cortical ribbon thickens and thins along a smooth periodic field,
    # and CSF-filled clefts follow the field's zero set.
    phase = head.gyral_phase
    gyral = np.sin(u / 3.0 + phase[0]) + np.sin(v / 3.5 + phase[1]) + math.sin(w / 3.0 + phase[2])
    white = inside(-head.csf_mm, -head.cortex_mm * (1 + 0.25 * gyral))
    if w > floor + head.csf_mm + head.cortex_mm:
        image[white] = head.white_hu
    image[parenchyma & ~white & (np.abs(gyral) < 0.2)] = head.csf_hu
    s = head.ventricle_scale
    for side in (-1, 1):
        center, semi = _DEEP_GRAY
        _paint_ellipsoid(image, u, v, w, (side * center[0], *center[1:]), semi, head.deep_gray_hu)
        for center, semi in _VENTRICLES:
            _paint_ellipsoid(
                image,
                u,
                v,
                w,
                (side * center[0] * s**0.5, *center[1:]),
                (semi[0] * s, semi[1], semi[2] * s),
                head.csf_hu,
            )
    center, semi = _THIRD_VENTRICLE
    _paint_ellipsoid(image, u, v, w, center, (semi[0] * s, semi[1], semi[2]), head.csf_hu)
    # Interhemispheric fissure above the corpus callosum.
    if w > 25:
        image[(np.abs(u) < 1.2) & parenchyma] = head.csf_hu
    return image


# --------------------------------------------------------------------------- hematoma
def _hematoma_frame(hematoma: HematomaParameters, points: np.ndarray) -> np.ndarray:
    """Head-frame points [..., 3] in the hematoma frame, divided by its semi-axes."""
    relative = (points - hematoma.center.astype(np.float32)) @ hematoma.rotation.astype(np.float32)
    return relative / hematoma.semi_axes.astype(np.float32)


def hematoma_levelsets(hematoma: HematomaParameters, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Baseline level set f (<= 1 inside) and growth level set at head-frame points [..., 3].

    f grows roughly linearly with distance from the centre, so {f <= tau} for tau > 1 is a
    larger hematoma of the same shape; the growth level set divides f by a factor that
    favours one direction, so a follow-up expands more on one side.
    """
    normalised = _hematoma_frame(hematoma, points)
    radius = np.linalg.norm(normalised, axis=-1)
    directions = normalised / np.maximum(radius, np.float32(1e-6))[..., None]
    level = radius / _lobe_factor(directions, hematoma.lobe_directions, hematoma.lobe_amplitudes)
    for center, satellite_radius in zip(hematoma.satellite_centers, hematoma.satellite_radii):
        distance = np.linalg.norm(points - center.astype(np.float32), axis=-1)
        level = np.minimum(level, distance / np.float32(satellite_radius))
    bias = 1 + hematoma.growth_bias * np.maximum(directions @ hematoma.growth_direction.astype(np.float32), 0)
    return level, level / bias


def _hematoma_extent_mm(hematoma: HematomaParameters) -> float:
    """Radius of a sphere about the centre that holds the baseline hematoma."""
    extent = float(hematoma.semi_axes.max() * (1 + hematoma.lobe_amplitudes.sum()))
    for center, radius in zip(hematoma.satellite_centers, hematoma.satellite_radii):
        extent = max(extent, float(np.linalg.norm(center - hematoma.center) + radius))
    return extent


def _hematoma_hu(hematoma: HematomaParameters, points: np.ndarray) -> np.ndarray:
    """HU inside the hematoma at head-frame points [N, 3]: base density with a smooth
    heterogeneous texture, the blend sign's two parts, and hypodense swirl islands. All are
    defined in mm of the head frame, so they are the same objects at any resolution."""
    phases = points @ hematoma.texture_wavevectors.T.astype(np.float32) + hematoma.texture_phases.astype(np.float32)
    texture = np.float32(hematoma.texture_sd * math.sqrt(2 / len(hematoma.texture_phases))) * np.cos(phases).sum(-1)
    if hematoma.blend:
        dense = _hematoma_frame(hematoma, points) @ hematoma.blend_normal.astype(np.float32) > hematoma.blend_offset
        hypo, hyper = hematoma.blend_hu
        hu = np.where(dense, np.clip(hyper + texture, 50, 90), np.clip(hypo + texture, 30, 50))
    else:
        hu = np.clip(hematoma.base_hu + texture, 50, 90)
    for center, radius, island_hu in zip(hematoma.island_centers, hematoma.island_radii, hematoma.island_hu):
        hu[np.linalg.norm(points - center.astype(np.float32), axis=-1) <= radius] = island_hu
    return hu.astype(np.float32)


def growth_fraction(label: int, growth_quantile: float, baseline_ml: float) -> float:
    """Relative follow-up growth, far from the HE rule's thresholds on either side."""
    if label:
        low, high = EXPANSION_GROWTH
    else:
        low, high = STABLE_GROWTH[0], min(STABLE_GROWTH[1], STABLE_MAX_GROWTH_ML / baseline_ml)
    return low + growth_quantile * (high - low)


def _index_box(grid: Grid, center_world: np.ndarray, radius_mm: float) -> tuple[slice, slice, slice]:
    """Index ranges (i, j, k) of `grid` covering a world sphere, clipped to the grid."""
    corners = np.array(np.meshgrid(*[[-radius_mm, radius_mm]] * 3, indexing="ij")).reshape(3, -1).T
    indices = np.linalg.solve(grid.steps, (center_world + corners - grid.origin).T)
    low = np.clip(np.floor(indices.min(axis=1)).astype(int), 0, grid.shape)
    high = np.clip(np.ceil(indices.max(axis=1)).astype(int) + 1, low, grid.shape)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def _box_slices(params: PatientParameters, scan: Scan, grid: Grid, radius_mm: float):
    """Per slice of a box about the hematoma: (k, rows, cols, head-frame points [r, c, 3],
    where hematoma may lie: intracranial, its own hemisphere and, on the corrected grid,
    acquired)."""
    center_world = scan.head_center + scan.head_axes @ params.hematoma.center
    cols, rows, slices = _index_box(grid, center_world, radius_mm)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    for k in range(slices.start, slices.stop):
        u, v, w = _slice_head_coords(scan, grid, k, rows, cols)
        points = np.stack([np.broadcast_to(np.float32(c), shape) for c in (u, v, w)], axis=-1)
        domain = _intracranial(params.head, u, v, w) & (params.hematoma.side * u > 1.0)
        if grid is not scan.dicom:
            domain = domain & _covered_by_dicom(scan, k, rows)
        yield k, rows, cols, points, np.broadcast_to(domain, shape)


@dataclass
class LesionMasks:
    baseline: np.ndarray  # uint8 [z, y, x] on the mask grid
    followup: np.ndarray
    baseline_voxels: int
    followup_voxels: int
    voxel_ml: float


def render_lesion_masks(params: PatientParameters, scan: Scan, case_id: str = "") -> LesionMasks:
    """Baseline and follow-up masks on the corrected grid, with exact voxel counts.

    The follow-up adds the voxels of lowest growth level set outside the baseline (or, when
    it shrinks, keeps the baseline voxels of lowest f) until its volume is the planned one,
    so the HE rule on voxel counts gives back the simulated label.
    """
    grid = scan.mask
    hematoma = params.hematoma
    voxel_ml = abs(float(np.linalg.det(grid.steps))) / 1000
    max_growth = EXPANSION_GROWTH[1] if params.label else STABLE_GROWTH[1]
    radius = _hematoma_extent_mm(hematoma) * (1 + max_growth) ** (1 / 3) * (1 + hematoma.growth_bias) * 1.25
    radius += 2 * float(np.abs(grid.steps).max())
    nx, ny, nz = grid.shape
    flat, level, growth_level = [], [], []
    for k, rows, cols, points, domain in _box_slices(params, scan, grid, radius):
        jj, ii = np.nonzero(domain)
        f, g = hematoma_levelsets(hematoma, points[jj, ii])
        flat.append(np.ravel_multi_index((np.full_like(jj, k), jj + rows.start, ii + cols.start), (nz, ny, nx)))
        level.append(f)
        growth_level.append(g)
    flat, level, growth_level = (np.concatenate(a) if a else np.zeros(0) for a in (flat, level, growth_level))
    inside = level <= 1
    n_baseline = int(inside.sum())
    if n_baseline < 10:
        raise HepredError(f"the simulated hematoma covers only {n_baseline} voxels: use a finer grid", case_id=case_id)
    growth = growth_fraction(params.label, params.growth_quantile, n_baseline * voxel_ml)
    n_followup = int(round(n_baseline * (1 + growth)))
    baseline_flat = flat[inside]
    if n_followup >= n_baseline:
        outside = np.flatnonzero(~inside)
        if len(outside) < n_followup - n_baseline:
            raise HepredError("no room for the simulated hematoma growth", case_id=case_id)
        order = np.argsort(growth_level[outside], kind="stable")[: n_followup - n_baseline]
        followup_flat = np.concatenate([baseline_flat, flat[outside[order]]])
    else:
        followup_flat = baseline_flat[np.argsort(level[inside], kind="stable")[:n_followup]]
    masks = []
    for selected in (baseline_flat, followup_flat):
        mask = np.zeros(nz * ny * nx, dtype=np.uint8)
        mask[selected] = 1
        masks.append(mask.reshape(nz, ny, nx))
    return LesionMasks(masks[0], masks[1], n_baseline, n_followup, voxel_ml)


def render_brain_mask(params: PatientParameters, scan: Scan) -> np.ndarray:
    """Truth brain mask on the corrected grid: everything inside the inner table of the
    skull (parenchyma, CSF, ventricles, hematoma) where the series acquired data."""
    grid = scan.mask
    nx, ny, nz = grid.shape
    brain = np.zeros((nz, ny, nx), dtype=np.uint8)
    for k in range(nz):
        u, v, w = _slice_head_coords(scan, grid, k)
        inside = _intracranial(params.head, u, v, w)
        if grid is not scan.dicom:
            inside = inside & _covered_by_dicom(scan, k)
        brain[k] = np.broadcast_to(inside, (ny, nx))
    return brain


def _blur_noise_gain(sigma: float) -> float:
    """Standard deviation of white noise after the in-plane Gaussian blur, per unit input."""
    impulse = np.zeros(65)
    impulse[32] = 1.0
    kernel = gaussian_filter1d(impulse, sigma)
    return float(np.sum(kernel**2))


def render_ct(params: PatientParameters, scan: Scan, baseline: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stored pixel values (uint16, HU + 1024) of the DICOM series, [slice, row, column].

    `baseline` is the baseline mask; on an untilted series the hematoma is painted exactly
    where it is, on a tilted one its level set is evaluated on the tilted grid.
    """
    grid = scan.dicom
    nx, ny, nz = grid.shape
    hu = np.empty((nz, ny, nx), dtype=np.float32)
    for k in range(nz):
        u, v, w = _slice_head_coords(scan, grid, k)
        hu[k] = _anatomy_slice(params.head, u, v, w)
    hematoma = params.hematoma
    for k, rows, cols, points, domain in _box_slices(params, scan, grid, _hematoma_extent_mm(hematoma) + 2):
        if scan.mask is grid:
            inside = baseline[k, rows, cols].astype(bool)
        else:
            inside = domain & (hematoma_levelsets(hematoma, points)[0] <= 1)
        if inside.any():
            hu[k, rows, cols][inside] = _hematoma_hu(hematoma, points[inside])
    # Quantum noise, then the reconstruction blur that softens edges and correlates the noise.
    white_sd = params.head.noise_sd / _blur_noise_gain(BLUR_PIXELS)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(white_sd)
    hu = gaussian_filter(hu, sigma=(0, BLUR_PIXELS, BLUR_PIXELS))
    return np.clip(np.rint(hu) + STORED_OFFSET, 0, STORED_MAX).astype(np.uint16)


def _ellipsoid_chord(points: np.ndarray, direction: np.ndarray, semi_axes) -> np.ndarray:
    """Length of the line through `points` along `direction` inside an ellipsoid (head frame)."""
    inverse = 1 / np.asarray(semi_axes, dtype=np.float64) ** 2
    a = np.sum(direction**2 * inverse)
    b = points @ (direction * inverse)
    c = (points**2) @ inverse - 1
    return 2 * np.sqrt(np.clip(b**2 - a * c, 0, None)) / a


LOCALIZER_SIZE = 256
LOCALIZER_PIXEL_MM = 1.0


def render_localizer(params: PatientParameters, scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    """A coronal (antero-posterior) projection of the head, as a scout image.

    Returns stored pixels (uint16, rows along -z, columns along +x) and the world position
    of the top-left pixel.
    """
    head = params.head
    size = LOCALIZER_SIZE
    top_left = scan.head_center + np.array([-size / 2, 0.0, size / 2]) * LOCALIZER_PIXEL_MM
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    world = top_left + LOCALIZER_PIXEL_MM * np.stack([cols, np.zeros_like(cols), -rows], axis=-1)
    points = (world - scan.head_center) @ scan.head_axes
    direction = scan.head_axes.T @ np.array([0.0, 1.0, 0.0])
    A, B, C = head.semi_axes
    inner = _ellipsoid_chord(points, direction, (A, B, C))
    skull = _ellipsoid_chord(points, direction, (A + head.skull_mm, B + head.skull_mm, C + head.skull_mm))
    extent = head.skull_mm + head.scalp_mm
    scalp = _ellipsoid_chord(points, direction, (A + extent, B + extent, C + extent))
    # The skull base is a bone plate under the brain; the neck an elliptic cylinder below it.
    height = points[..., 2]
    floor = -head.floor_fraction * C
    skull_base = (height <= floor) & (height > floor - head.floor_bone_mm)
    neck = _ellipsoid_chord(points - np.array([0.0, 10.0, 0.0]), direction, (45.0, 50.0, np.inf))
    neck = np.where(height <= floor - head.floor_bone_mm, neck, 0.0)
    # Line integral of attenuation relative to water: soft tissue ~1, bone ~2.
    integral = np.maximum(scalp, neck) + 1.2 * (skull - inner) + 1.2 * np.where(skull_base, inner, 0.0)
    stored = np.clip(np.rint(10 * integral), 0, STORED_MAX).astype(np.uint16)
    return stored, top_left


# --------------------------------------------------------------------------- DICOM
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _uid(seed: int, case_id: str, *parts) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["hepred-simulate", str(seed), case_id, *map(str, parts)]))


def _fake_identity(index: int, seed: int, rng: np.random.Generator) -> dict[str, str]:
    """Invented identifiers, distinctive enough that a test can prove they never leak."""
    birth = f"{int(rng.integers(1935, 1986)):04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {
        "PatientName": f"SIM^PATIENT^{index + 1:03d}",
        "PatientID": f"FAKEID-{seed}-{index + 1:03d}",
        "PatientBirthDate": birth,
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "AccessionNumber": f"FAKEACC{seed}{index + 1:03d}",
        "InstitutionName": "SIMULATED HOSPITAL",
        "ReferringPhysicianName": "SIM^REFERRER",
        "StudyDate": f"2024{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "StudyTime": "101500",
    }


def _ct_dataset(identity: dict[str, str], study_uid: str, frame_uid: str, series_uid: str, sop_uid: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in identity.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "CT"
    ds.Manufacturer = "HEPRED SIMULATOR"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.StudyID = "1"
    ds.KVP = "120"
    ds.RescaleIntercept = str(-STORED_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _set_pixels(ds, stored: np.ndarray) -> None:
    ds.set_pixel_data(np.ascontiguousarray(stored), "MONOCHROME2", 12, generate_instance_uid=False)


def write_dicom_series(
    folder: Path,
    params: PatientParameters,
    scan: Scan,
    stored: np.ndarray,
    case_id: str,
    index: int,
    seed: int,
    identity_rng: np.random.Generator,
) -> None:
    """The axial series (one file per slice) and a coronal localizer, written to a temporary
    folder that replaces `folder` only when complete."""
    identity = _fake_identity(index, seed, identity_rng)
    study_uid, frame_uid = _uid(seed, case_id, "study"), _uid(seed, case_id, "frame")
    series_uid, localizer_uid = _uid(seed, case_id, "series"), _uid(seed, case_id, "localizer")
    grid = scan.dicom
    pixel_mm = float(grid.steps[0, 0])
    orientation = [float(x) for x in (*grid.steps[:, 0] / pixel_mm, *grid.steps[:, 1] / pixel_mm)]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dicom.", dir=folder.parent))
    try:
        for k in range(grid.shape[2]):
            position = grid.origin + grid.steps[:, 2] * k
            ds = _ct_dataset(identity, study_uid, frame_uid, series_uid, _uid(seed, case_id, "slice", k))
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SeriesNumber = 2
            ds.SeriesDescription = "HEAD WO"
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [round(float(x), 4) for x in position]
            ds.ImageOrientationPatient = [round(x, 6) for x in orientation]
            ds.PixelSpacing = [pixel_mm, pixel_mm]
            ds.SliceThickness = scan.slice_mm
            ds.SliceLocation = round(float(position[2]), 4)
            ds.GantryDetectorTilt = round(params.tilt_deg, 4)
            ds.WindowCenter = "40"
            ds.WindowWidth = "80"
            _set_pixels(ds, stored[k])
            ds.save_as(staging / f"CT{k + 1:04d}.dcm", enforce_file_format=True)

        pixels, top_left = render_localizer(params, scan)
        ds = _ct_dataset(identity, study_uid, frame_uid, localizer_uid, _uid(seed, case_id, "localizer", 0))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesNumber = 1
        ds.SeriesDescription = "TOPOGRAM AP"
        ds.InstanceNumber = 1
        ds.ImagePositionPatient = [round(float(x), 4) for x in top_left]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        ds.PixelSpacing = [LOCALIZER_PIXEL_MM, LOCALIZER_PIXEL_MM]
        _set_pixels(ds, pixels)
        ds.save_as(staging / "LOC0001.dcm", enforce_file_format=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- cohort
def simulate_case(
    out_dir: Path,
    index: int,
    seed: int,
    matrix: int,
    pixel_mm: float,
    slice_mm: float,
    n_slices: int,
    tilt_fraction: float,
) -> dict:
    """Write one patient (DICOM, masks, truth brain mask) and return its truth row."""
    out_dir = Path(out_dir)
    case_id = case_id_for(index)
    params_rng, image_rng, identity_rng = case_streams(seed, index)
    params = sample_patient_parameters(params_rng, tilt_fraction)
    scan = plan_scan(params, matrix, pixel_mm, slice_mm, n_slices)
    _check_head_fits(params, scan, case_id, out_dir)

    lesions = render_lesion_masks(params, scan, case_id)
    stored = render_ct(params, scan, lesions.baseline, image_rng)
    write_dicom_series(out_dir / case_id / "dicom", params, scan, stored, case_id, index, seed, identity_rng)
    del stored
    case_dir = out_dir / case_id
    save_sitk(case_dir / "lesion.nii.gz", scan.mask.to_image(lesions.baseline))
    save_sitk(case_dir / "followup_lesion.nii.gz", scan.mask.to_image(lesions.followup))
    save_sitk(out_dir / "truth" / f"{case_id}_brain.nii.gz", scan.mask.to_image(render_brain_mask(params, scan)))

    baseline_ml = lesions.baseline_voxels * lesions.voxel_ml
    followup_ml = lesions.followup_voxels * lesions.voxel_ml
    return {
        "case_id": case_id,
        "label": params.label,
        "latent_probability": params.latent_probability,
        "latent_logit": params.latent_logit,
        "baseline_volume_ml": baseline_ml,
        "followup_volume_ml": followup_ml,
        "growth_ml": followup_ml - baseline_ml,
        "growth_percent": 100 * (lesions.followup_voxels - lesions.baseline_voxels) / lesions.baseline_voxels,
        "tilt_deg": params.tilt_deg,
        **params.markers(),
        "nominal_volume_ml": params.nominal_volume_ml,
    }


def _check_settings(out_dir: Path, n, matrix, pixel_mm, slice_mm, n_slices, tilt_fraction, workers) -> None:
    problems = []
    if int(n) < 1:
        problems.append(f"n must be >= 1, got {n}")
    if int(matrix) < 32:
        problems.append(f"matrix must be >= 32, got {matrix}")
    if int(n_slices) < 4:
        problems.append(f"n_slices must be >= 4, got {n_slices}")
    if not 0 <= float(tilt_fraction) <= 1:
        problems.append(f"tilt_fraction must lie in [0, 1], got {tilt_fraction}")
    if int(workers) < 1:
        problems.append(f"workers must be >= 1, got {workers}")
    if float(pixel_mm) <= 0 or float(slice_mm) <= 0:
        problems.append("pixel_mm and slice_mm must be positive")
    elif matrix * pixel_mm < MIN_FIELD_OF_VIEW_MM:
        problems.append(
            f"field of view matrix * pixel_mm = {matrix * pixel_mm:.0f} mm is smaller than a head "
            f"(>= {MIN_FIELD_OF_VIEW_MM:.0f} mm)"
        )
    if problems:
        raise HepredError("; ".join(problems), path=out_dir)


def simulate_cohort(
    out_dir: Path,
    n: int = 40,
    seed: int = 0,
    matrix: int = 512,
    pixel_mm: float = 0.45,
    slice_mm: float = 5.0,
    n_slices: int = 28,
    tilt_fraction: float = 0.3,
    workers: int = 1,
) -> Path:
    """Write the demo cohort to `out_dir` and return the path of its samples.csv.

    Per case: `{case}/dicom/*.dcm` (axial CT series + localizer), `{case}/lesion.nii.gz`,
    `{case}/followup_lesion.nii.gz`; ground truth in `truth/{case}_brain.nii.gz` and
    `truth.csv`. The two tables are written last, so they exist only for a complete cohort.
    """
    out_dir = Path(out_dir)
    _check_settings(out_dir, n, matrix, pixel_mm, slice_mm, n_slices, tilt_fraction, workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(
        seed=int(seed),
        matrix=int(matrix),
        pixel_mm=float(pixel_mm),
        slice_mm=float(slice_mm),
        n_slices=int(n_slices),
        tilt_fraction=float(tilt_fraction),
    )
    if workers > 1:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            futures = [pool.submit(simulate_case, out_dir, i, **settings) for i in range(n)]
            rows = [future.result() for future in futures]
    else:
        rows = [simulate_case(out_dir, i, **settings) for i in range(n)]

    truth = pd.DataFrame(rows)
    write_csv(out_dir / "truth.csv", truth)
    samples = pd.DataFrame(
        {
            "case_id": truth["case_id"],
            "ct": [f"{case}/dicom" for case in truth["case_id"]],
            "lesion": [f"{case}/lesion.nii.gz" for case in truth["case_id"]],
            "followup_lesion": [f"{case}/followup_lesion.nii.gz" for case in truth["case_id"]],
        }
    )
    sheet = out_dir / "samples.csv"
    write_csv(sheet, samples)
    return sheet


def load_truth(out_dir: Path) -> pd.DataFrame:
    """The simulator's truth table (one row per case)."""
    path = Path(out_dir) / "truth.csv"
    try:
        return pd.read_csv(path, dtype={"case_id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HepredError(f"cannot read the simulated truth: {str(exc).splitlines()[0]}", path=path) from None


def cohort_difficulty(out_dir: Path) -> dict[str, float]:
    """AUC of the latent probability (oracle) and of the baseline volume alone for the labels."""
    truth = load_truth(out_dir)
    return _difficulty(truth["label"], truth["latent_probability"], truth["baseline_volume_ml"])
