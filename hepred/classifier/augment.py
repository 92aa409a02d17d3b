"""Batched resize and augmentation on the training device.

Augmentation is the paper's horizontal flip plus a small random rotation/scale. Warping one
batch with a single ``grid_sample`` on the device costs microseconds per slice, where a
per-sample CPU transform costs ~20 ms at 512 px and would starve a GPU. Parameters are drawn
from a generator seeded by (seed, epoch), so an epoch's augmentation is reproducible and a
resumed run repeats it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def augmentation_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 2])


def draw_affines(rng: np.random.Generator, n: int, cfg: dict) -> torch.Tensor:
    """[n, 2, 3] sampling matrices (output -> input, normalised coordinates) for ``affine_grid``.

    Each sample: horizontal flip with ``flip_prob``; with ``affine_prob`` a rotation in
    +-``rotate_deg`` and a zoom in 1 +- ``scale_range``. Four numbers are drawn per sample
    whatever is applied, so the stream of draws never depends on the outcome.
    """
    draws = rng.random((n, 4))
    flip = np.where(draws[:, 0] < cfg["flip_prob"], -1.0, 1.0)
    warp = draws[:, 1] < cfg["affine_prob"]
    angle = np.where(warp, math.radians(cfg["rotate_deg"]) * (2 * draws[:, 2] - 1), 0.0)
    zoom = np.where(warp, 1.0 + cfg["scale_range"] * (2 * draws[:, 3] - 1), 1.0)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    # Column x (left-right) is flipped by negating its input coordinate.
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    return torch.from_numpy(theta)


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
        grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return images
