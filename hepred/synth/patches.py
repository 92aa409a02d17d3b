"""Patches around the hematoma: crop, scale to the network size, normalise, and paste back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from hepred.synth.data import OUTSIDE_HU


@dataclass(frozen=True)
class Box:
    """A square crop of a slice; it may reach past the image, where crops are padded."""

    y0: int
    x0: int
    side: int


def patch_box(mask: np.ndarray, patch_size: int, pad_px: int) -> Box:
    """The square around ``mask`` plus pad_px on every side, at least patch_size wide."""
    ys, xs = np.nonzero(mask)
    extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) + 2 * pad_px
    side = int(max(patch_size, extent))
    center_y = (ys.min() + ys.max() + 1) / 2.0
    center_x = (xs.min() + xs.max() + 1) / 2.0
    return Box(round(float(center_y) - side / 2.0), round(float(center_x) - side / 2.0), side)


def _overlap(box: Box, size: int) -> tuple[slice, slice, slice, slice]:
    """Slices of the image and of the crop where the two overlap."""
    y_lo, x_lo = max(box.y0, 0), max(box.x0, 0)
    y_hi, x_hi = min(box.y0 + box.side, size), min(box.x0 + box.side, size)
    return (slice(y_lo, y_hi), slice(x_lo, x_hi),
            slice(y_lo - box.y0, y_hi - box.y0), slice(x_lo - box.x0, x_hi - box.x0))


def crop(plane: np.ndarray, box: Box, fill) -> np.ndarray:
    out = np.full((box.side, box.side), fill, dtype=plane.dtype)
    image_y, image_x, crop_y, crop_x = _overlap(box, plane.shape[0])
    out[crop_y, crop_x] = plane[image_y, image_x]
    return out


def resize(plane: np.ndarray, size: int) -> np.ndarray:
    """Area average when shrinking (masks become fractions), bilinear when enlarging; same size: a copy."""
    if plane.shape[0] == size:
        return plane.astype(np.float32, copy=True)
    tensor = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    if plane.shape[0] > size:
        out = F.interpolate(tensor, size=(size, size), mode="area")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def normalise(hu: np.ndarray, lesion_mean: float, scale: float, clip: float) -> np.ndarray:
    """HU relative to the source lesion's mean density: generators learn texture and contrast."""
    return np.clip((hu.astype(np.float32) - lesion_mean) / scale, -clip, clip)


def denormalise(values: np.ndarray, lesion_mean: float, scale: float) -> np.ndarray:
    return values * scale + lesion_mean


def paste(plane: np.ndarray, generated_hu: np.ndarray, box: Box, region: np.ndarray, feather_px: float) -> np.ndarray:
    """Put the generated patch (network size, HU) back into the slice inside ``region`` only.

    A feather of a few pixels inside the region's edge blends generated and original values so
    no seam shows; outside the region every pixel keeps its original value.
    """
    full = resize(generated_hu, box.side)
    image_y, image_x, crop_y, crop_x = _overlap(box, plane.shape[0])
    canvas = plane.astype(np.float32)
    canvas[image_y, image_x] = full[crop_y, crop_x]
    if feather_px > 0:
        weight = np.clip(ndimage.distance_transform_edt(region) / feather_px, 0.0, 1.0)
    else:
        weight = region.astype(np.float32)
    blended = weight * canvas + (1.0 - weight) * plane.astype(np.float32)
    out = plane.copy()
    out[region] = np.clip(np.round(blended[region]), OUTSIDE_HU + 1, 3071).astype(plane.dtype)
    return out
