"""The ``synthesis`` config section: defaults, and the checks the schema cannot express."""
from __future__ import annotations

import copy
from typing import Any

from hepred.errors import HepredError

METHODS = ("diffusion", "gan", "morph")

DEFAULTS: dict[str, Any] = {
    "method": "diffusion",
    "versions": 5,
    # Square patch (px) around the hematoma that the learned generators repaint; a lesion too
    # large for it is cropped with more context and scaled down to this size.
    "patch_size": 48,
    "min_lesion_pixels": 20,
    "epochs": 40,
    "batch_size": 16,
    "sample_batch_size": 32,
    # Patch intensities are (HU - mean HU of the source slice's lesion) / hu_scale, clipped:
    # the generator learns texture and the lesion/brain contrast, not each patient's density.
    "hu_scale": 50.0,
    "hu_clip": 2.0,
    # Ring (px) around lesion and target removed before repainting: a random width in
    # train_margin_px while training (so the generator also learns to fill in brain where a
    # lesion shrinks), sample_margin_px when synthesising.
    "train_margin_px": [2, 6],
    "sample_margin_px": 2,
    "feather_px": 2.0,
    "target_mask": {
        # Relative lesion volume change drawn uniformly per version (-0.3 = 30 % smaller,
        # 1.0 = doubled; the growth steps of Abramova et al. were 0.33, 0.68 and 1.0).
        "growth": [-0.3, 1.0],
        # RMS length of a smooth random in-plane displacement (correlation length elastic_smooth_mm).
        "elastic_mm": 3.0,
        "elastic_smooth_mm": 12.0,
    },
    "diffusion": {
        # Sized for the CPU demo (about 0.28 GFLOP per 48 px patch and step); widen on a GPU.
        "channels": [16, 32, 32],
        "attention_levels": [False, False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "num_head_channels": 8,
        "num_train_timesteps": 1000,
        "schedule": "linear_beta",
        "ddim_steps": 20,
        "lr": 1e-3,
    },
    "gan": {
        "channels": [16, 32, 64],
        "num_res_units": 1,
        "disc_channels": 16,
        "disc_layers": 2,
        "l1_weight": 100.0,
        "lr": 2e-4,
    },
    "morph": {
        # Beyond the zone the lesion boundary moves through, the displacement decays with
        # this length (mm), like the mass effect of a growing hematoma on its neighbourhood.
        "falloff_mm": 10.0,
        "smooth_px": 1.0,
    },
}


def _merge(defaults: dict[str, Any], given: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(given) - set(defaults)
    if unknown:
        raise HepredError(f"unknown {where} keys: {sorted(unknown)}")
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], dict):
            merged[key] = _merge(defaults[key], dict(value or {}), f"{where}.{key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def synthesis_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The synthesis section with defaults filled in; unknown keys and bad values are errors."""
    settings = _merge(DEFAULTS, dict(cfg or {}), "synthesis")
    if settings["method"] not in METHODS:
        raise HepredError(f"synthesis.method must be one of {list(METHODS)}, got {settings['method']!r}")
    if settings["patch_size"] < 16 or settings["patch_size"] % 8:
        raise HepredError(f"synthesis.patch_size must be a multiple of 8 and >= 16, got {settings['patch_size']}")
    if settings["versions"] < 1:
        raise HepredError("synthesis.versions must be >= 1")
    low, high = settings["target_mask"]["growth"]
    if not -1.0 < low <= high:
        raise HepredError("synthesis.target_mask.growth must be [low, high] with -1 < low <= high")
    low, high = settings["train_margin_px"]
    if not 0 <= low <= high:
        raise HepredError("synthesis.train_margin_px must be [low, high] with 0 <= low <= high")
    return settings
