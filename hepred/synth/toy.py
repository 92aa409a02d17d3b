"""A small self-made cohort in the preprocess output format, for tests and the synthesis benchmark."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from hepred import io
from hepred.synth.data import OUTSIDE_HU


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / max(float(noise.std()), 1e-6)


def toy_case(rng: np.random.Generator, size: int, n_slices: int, lesion_slices: int
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """HU [Z, S, S] of a skull-stripped brain (30-40 HU texture) with an irregular 60-85 HU
    hematoma holding darker islands; its lesion mask; and an HE label (more islands: HE)."""
    zz, yy, xx = np.mgrid[0:n_slices, 0:size, 0:size].astype(np.float32)
    mid = (n_slices - 1) / 2.0
    taper = np.sqrt(np.clip(1.0 - ((zz - mid) / (n_slices / 1.6)) ** 2, 0.2, 1.0))
    brain = ((yy - size / 2) / (0.42 * size * taper)) ** 2 + ((xx - size / 2) / (0.36 * size * taper)) ** 2 <= 1.0
    tissue = 35.0 + 3.0 * _smooth_noise(rng, brain.shape, (0, size / 16, size / 16)) + 2.5 * rng.standard_normal(brain.shape)

    center_y = size / 2 + rng.uniform(-0.15, 0.15) * size
    center_x = size / 2 + rng.uniform(-0.12, 0.12) * size
    radius_y, radius_x = rng.uniform(0.06, 0.11, 2) * size
    center_z = n_slices // 2
    half_depth = lesion_slices / 2.0 + 0.3
    shape_noise = 0.18 * _smooth_noise(rng, brain.shape, (1, size / 20, size / 20))
    ellipsoid = (((yy - center_y) / radius_y) ** 2 + ((xx - center_x) / radius_x) ** 2
                 + ((zz - center_z) / half_depth) ** 2)
    lesion = (ellipsoid + shape_noise <= 1.0) & brain
    lesion_hu = rng.uniform(64.0, 78.0) + 4.0 * rng.standard_normal(brain.shape)

    n_islands = int(rng.integers(0, 4))
    islands = np.zeros_like(lesion)
    for _ in range(n_islands):
        points = np.argwhere(lesion)
        cz, cy, cx = points[rng.integers(len(points))]
        islands |= (((yy - cy) ** 2 + (xx - cx) ** 2) <= (0.025 * size) ** 2) & (np.abs(zz - cz) <= 1)
    hu = np.where(lesion, lesion_hu, tissue)
    hu = np.where(lesion & islands, rng.uniform(30.0, 40.0) + 3.0 * rng.standard_normal(brain.shape), hu)
    hu = np.where(brain, np.round(hu), OUTSIDE_HU).astype(np.int16)
    return hu, lesion.astype(np.uint8), int(n_islands >= 2)


def write_toy_preprocessed_cohort(out_dir: Path, n_cases: int, size: int = 64, n_slices: int = 8,
                                  lesion_slices: int = 5, seed: int = 0, fov_mm: float = 230.0
                                  ) -> dict[str, int]:
    """Write ``{out_dir}/{case}/hu.npy, lesion.npy, info.json``; return the HE labels by case id."""
    labels = {}
    spacing = [fov_mm / size, fov_mm / size, 5.0]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for index in range(n_cases):
        case_id = f"toy{index:03d}"
        hu, lesion, label = toy_case(np.random.default_rng([seed, index]), size, n_slices, lesion_slices)
        case_dir = Path(out_dir) / case_id
        io.save_npy(case_dir / "hu.npy", hu)
        io.save_npy(case_dir / "lesion.npy", lesion)
        io.write_json(case_dir / "info.json", {
            "spacing_mm": spacing, "lesion_pixels": [int(v) for v in lesion.sum(axis=(1, 2))],
            "brain_volume_ml": float((hu > OUTSIDE_HU).sum()) * voxel_ml,
            "lesion_volume_ml": float(lesion.sum()) * voxel_ml, "size": size,
            "origin_mm": [-fov_mm / 2, -fov_mm / 2, -20.0], "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        })
        labels[case_id] = label
    return labels
