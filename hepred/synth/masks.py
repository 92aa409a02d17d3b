"""Target lesion masks for synthetic versions: grown or shrunk to a drawn volume, elastically
deformed, and kept inside the brain; and the region each synthesis repaints."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from hepred.synth.data import CaseSlab


def signed_distance(mask: np.ndarray, sampling) -> np.ndarray:
    """Distance (in the units of ``sampling``) to the mask boundary: negative inside, positive outside."""
    mask = mask.astype(bool)
    return (ndimage.distance_transform_edt(~mask, sampling=sampling)
            - ndimage.distance_transform_edt(mask, sampling=sampling)).astype(np.float32)


def smooth_displacement(shape: tuple[int, int], pixel_mm: tuple[float, float], amplitude_mm: float,
                        smooth_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A random smooth in-plane displacement field [2 (y, x), H, W] in pixels, RMS length amplitude_mm."""
    noise = rng.standard_normal((2, *shape))
    if amplitude_mm <= 0:
        return np.zeros_like(noise, dtype=np.float32)
    field = np.stack([ndimage.gaussian_filter(noise[axis], sigma=smooth_mm / np.asarray(pixel_mm), mode="reflect")
                      for axis in range(2)])
    field_mm = field * np.asarray(pixel_mm)[:, None, None]
    rms = float(np.sqrt((field_mm ** 2).sum(axis=0).mean()))
    return (field / max(rms, 1e-12) * amplitude_mm).astype(np.float32)


def warp_slices(stack: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample every slice of ``stack`` at (grid + displacement); edges continue the border values."""
    grid = np.mgrid[0:stack.shape[1], 0:stack.shape[2]].astype(np.float32)
    coords = grid + displacement
    return np.stack([ndimage.map_coordinates(plane, coords, order=order, mode="nearest") for plane in stack])


def lesion_distance(slab: CaseSlab) -> np.ndarray:
    """3D signed distance (mm) to the case's lesion, on the slab's slices: growth follows the lesion's shape."""
    x_mm, y_mm, z_mm = slab.spacing_mm
    return signed_distance(slab.full_lesion, sampling=(z_mm, y_mm, x_mm))[slab.slices]


def vary_target_mask(slab: CaseSlab, distance: np.ndarray, growth_range: tuple[float, float], elastic_mm: float,
                     elastic_smooth_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A new lesion mask for the slab's slices: a level set of the lesion ``distance`` (from
    lesion_distance) holding a relative volume change drawn from growth_range, after an elastic
    deformation of typical size elastic_mm, restricted to the brain. A slice left empty keeps its lesion."""
    x_mm, y_mm, _ = slab.spacing_mm
    field = smooth_displacement(distance.shape[1:], (y_mm, x_mm), elastic_mm, elastic_smooth_mm, rng)
    distance = warp_slices(distance, field)
    brain = slab.brain
    growth = rng.uniform(*growth_range)
    wanted = round(float(slab.lesion.sum()) * (1.0 + growth))
    # The k brain pixels nearest the lesion, k the wanted volume. Pixel distances tie a lot on
    # coarse grids; a slightly smoothed distance orders the tied pixels, so the volume is exact.
    candidates = np.flatnonzero(brain)
    tie_break = ndimage.gaussian_filter(distance, sigma=(0, 1, 1)).ravel()[candidates]
    order = np.lexsort((tie_break, distance.ravel()[candidates]))
    target = np.zeros(distance.shape, dtype=bool)
    target.ravel()[candidates[order[:int(np.clip(wanted, 1, candidates.size))]]] = True
    empty = ~target.any(axis=(1, 2))
    target[empty] = slab.lesion[empty]
    return target


def repaint_region(lesion: np.ndarray, target: np.ndarray, brain: np.ndarray, margin_px: float) -> np.ndarray:
    """Pixels a synthesis replaces in each slice: old and new lesion plus a ring of margin_px, brain only."""
    union = lesion | target
    region = np.stack([ndimage.distance_transform_edt(~plane) <= margin_px if plane.any() else plane
                       for plane in union])
    return region & brain
