"""The ``synthesis`` config section: the schema's defaults, and the checks the schema cannot express."""
from __future__ import annotations

from typing import Any

from hepred.config import SPEED_SETTINGS, section_settings
from hepred.errors import HepredError


def synthesis_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The synthesis section with defaults filled in; unknown keys and bad values are errors."""
    settings = section_settings("synthesis", cfg)
    low, high = settings["target_mask"]["growth"]
    if not -1.0 < low <= high:
        raise HepredError("synthesis.target_mask.growth must be [low, high] with -1 < low <= high")
    low, high = settings["train_margin_px"]
    if not 0 <= low <= high:
        raise HepredError("synthesis.train_margin_px must be [low, high] with 0 <= low <= high")
    return settings


# How fast synthetic versions are made, not what they are: every version's noise comes from
# its own seed, whatever the batch it is sampled in.
SPEED_KEYS = SPEED_SETTINGS["synthesis"]
# Each method's own section; only the chosen one changes a result.
METHOD_SECTIONS = ("diffusion", "gan", "morph")


def result_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters of a ``synthesize`` job: the section without ``SPEED_KEYS`` and without
    the settings of the methods not chosen."""
    settings = synthesis_settings(cfg)
    unused = set(METHOD_SECTIONS) - {settings["method"]}
    return {key: value for key, value in settings.items() if key not in SPEED_KEYS and key not in unused}


def model_settings(settings: dict) -> dict:
    """What fixes the trained model: changing any of it makes an old checkpoint unusable, and
    these are the only settings a ``train_generator`` job passes."""
    keys = ("method", "patch_size", "min_lesion_pixels", "hu_scale", "hu_clip", "train_margin_px", "epochs",
            "batch_size")
    method = settings["method"]
    # The number of DDIM steps is a sampling choice, free to change after training.
    network = {key: value for key, value in settings[method].items() if key != "ddim_steps"}
    return {**{key: settings[key] for key in keys}, method: network}
