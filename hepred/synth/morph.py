"""Registration-style synthesis without learning (after Abramova et al.): the image is warped by
a smooth displacement that carries the lesion boundary onto the target mask's boundary."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from hepred.synth.data import CaseSlab
from hepred.synth.masks import signed_distance


def boundary_displacement(lesion: np.ndarray, target: np.ndarray, pixel_mm: tuple[float, float],
                          falloff_mm: float, smooth_px: float) -> np.ndarray:
    """Backward displacement [2 (y, x), H, W] in pixels: the output at x samples the input at x + u(x).

    With signed distances d_s (lesion) and d_t (target), u = (d_t - d_s) * grad d_s moves each
    point to where the lesion's distance equals the target's, to first order, so the target's
    boundary samples the lesion's boundary. Beyond the zone the boundary sweeps, u decays over
    falloff_mm, so far tissue stays where it is.
    """
    source_distance = signed_distance(lesion, pixel_mm)
    target_distance = signed_distance(target, pixel_mm)
    gradient = np.stack(np.gradient(source_distance, *pixel_mm))
    normal = gradient / np.maximum(np.sqrt((gradient ** 2).sum(axis=0)), 1e-6)
    reach = max(float(source_distance[target].max()), 0.0) if target.any() else 0.0
    decay = np.exp(-(np.maximum(source_distance - reach, 0.0) / falloff_mm) ** 2)
    displacement_mm = (target_distance - source_distance) * decay * normal
    displacement = displacement_mm / np.asarray(pixel_mm)[:, None, None]
    if smooth_px > 0:
        displacement = np.stack([ndimage.gaussian_filter(plane, smooth_px) for plane in displacement])
    return displacement.astype(np.float32)


def _fill_outside_brain(plane: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Outside values replaced by the nearest brain value, so sampling near the rim never fetches -1024."""
    nearest = ndimage.distance_transform_edt(~brain, return_distances=False, return_indices=True)
    return plane[tuple(nearest)]


def morph_slab(slab: CaseSlab, target: np.ndarray, falloff_mm: float, smooth_px: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Warped slices (int16 HU) and the warped lesion mask, which the image follows exactly."""
    x_mm, y_mm, _ = slab.spacing_mm
    grid = np.mgrid[0:slab.hu.shape[1], 0:slab.hu.shape[2]].astype(np.float32)
    images, masks = np.empty_like(slab.hu), np.empty(slab.hu.shape, dtype=bool)
    for k, brain in enumerate(slab.brain):
        coords = grid + boundary_displacement(slab.lesion[k], target[k], (y_mm, x_mm), falloff_mm, smooth_px)
        filled = _fill_outside_brain(slab.hu[k].astype(np.float32), brain)
        warped = ndimage.map_coordinates(filled, coords, order=1, mode="nearest")
        lesion = ndimage.map_coordinates(slab.lesion[k].astype(np.float32), coords, order=1, mode="nearest") >= 0.5
        lesion &= brain
        if lesion.any():
            images[k] = np.where(brain, np.round(warped), slab.hu[k]).astype(np.int16)
            masks[k] = lesion
        else:  # a target this small would erase the lesion: keep the slice as it is
            images[k], masks[k] = slab.hu[k], slab.lesion[k]
    return images, masks
