"""Batched resize and augmentation on the training device.

Augmentation is a horizontal flip, a random quarter turn and a small random rotation/scale.
The lesion-centred crop has no canonical orientation for the texture and outline that carry
the signal, so quarter turns keep the label. All of it is one affine matrix per sample,
applied to the whole batch at once by MONAI's ``AffineTransform`` on the device: that costs
microseconds per slice, where a per-sample CPU transform costs ~20 ms at 512 px and would
starve a GPU. Parameters are drawn from a generator seeded by (seed, epoch), so an epoch's
augmentation is reproducible and a resumed run repeats it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import AffineTransform

# Matrices act on normalised (x, y) coordinates as in torch's affine_grid; outside is zero.
_WARP = AffineTransform(normalized=True, padding_mode="zeros", align_corners=False, reverse_indexing=False)


def augmentation_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 2])


def _affines(flip: np.ndarray, angle: np.ndarray, zoom: np.ndarray) -> torch.Tensor:
    """[n, 2, 3] sampling matrices (output -> input) for a flip of x, a rotation and a zoom."""
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.zeros((len(flip), 2, 3), dtype=np.float32)
    # Column x (left-right) is flipped by negating its input coordinate.
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    # Quarter turns land exactly on pixel centres; drop float dust so they resample exactly.
    theta[np.abs(theta) < 1e-7] = 0.0
    return torch.from_numpy(theta)


def draw_affines(rng: np.random.Generator, n: int, cfg: dict) -> torch.Tensor:
    """[n, 2, 3] sampling matrices (normalised coordinates) for a batch of ``n`` samples.

    Each sample: horizontal flip with ``flip_prob``; a quarter turn (0-3) when ``rotate90``;
    with ``affine_prob`` a rotation in +-``rotate_deg`` and a zoom in 1 +- ``scale_range``.
    Five numbers are drawn per sample whatever is applied, so the stream of draws never
    depends on the outcome.
    """
    draws = rng.random((n, 5))
    flip = np.where(draws[:, 0] < cfg["flip_prob"], -1.0, 1.0)
    warp = draws[:, 1] < cfg["affine_prob"]
    angle = np.where(warp, math.radians(cfg["rotate_deg"]) * (2 * draws[:, 2] - 1), 0.0)
    if cfg["rotate90"]:
        angle = angle + np.floor(4 * draws[:, 4]) * (math.pi / 2)
    zoom = np.where(warp, 1.0 + cfg["scale_range"] * (2 * draws[:, 3] - 1), 1.0)
    return _affines(flip, angle, zoom)


def dihedral_affines(n: int, rotate90: bool) -> list[torch.Tensor]:
    """Test-time views matching training: identity and flip, times the four quarter turns
    when those were trained on; each a [n, 2, 3] batch of matrices."""
    views = []
    for turn in range(4) if rotate90 else range(1):
        for flip in (1.0, -1.0):
            views.append(_affines(np.full(n, flip), np.full(n, turn * math.pi / 2), np.ones(n)))
    return views


def prepare_batch(images: torch.Tensor, image_size: int, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Resize a [B, C, N, N] batch to ``image_size`` and warp it by ``theta`` when given.

    Outside the image the warp pads zeros, which is both the windowed value of air and
    'no lesion' in the mask channel.
    """
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    if theta is not None:
        images = _WARP(images, theta.to(images.device, images.dtype))
    return images
