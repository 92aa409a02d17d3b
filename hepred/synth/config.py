"""The ``synthesis`` config section: the schema's defaults, and the checks the schema cannot express."""
from __future__ import annotations

from typing import Any

from hepred.config import section_settings
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
