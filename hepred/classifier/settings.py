"""The classifier's settings and scenarios: what a run trains, read from the config schema.

Torch-free, so that the workflow, statistics and predict can ask about scenarios and
settings without loading the network code.
"""

from __future__ import annotations

from typing import Any

from hepred.config import SPEED_SETTINGS, section_settings
from hepred.errors import HepredError

# scenario -> (augmentation, synthetic data), as numbered in the paper (t4 was not reported).
SCENARIOS = {"t1": (False, False), "t2": (True, False), "t3": (False, True), "t5": (True, True)}


# A null control ``null_<scenario>`` trains exactly as its scenario on labels permuted within the
# fold's training and validation patients and is scored against the true test labels.
NULL_PREFIX = "null_"
# Settings that change how fast a model trains or scores, never what it learns: they are
# left out of a job's parameters and of the resume fingerprint, so changing them reruns
# nothing, and they are written beside the model (``trained_with.json``). The device and
# the thread count are speed settings too, outside this section.
SPEED_KEYS = SPEED_SETTINGS["classifier"]
# Which scenarios run is a choice of jobs, not a setting of any one of them.
JOB_CHOICE_KEYS = ("scenarios",)


def image_scenario(scenario: str) -> str:
    """The image scenario whose recipe ``scenario`` follows: itself, or the one a null control shadows."""
    base = scenario.removeprefix(NULL_PREFIX)
    if base not in SCENARIOS:
        expected = ", ".join([*SCENARIOS, *(NULL_PREFIX + name for name in SCENARIOS)])
        raise HepredError(f"unknown scenario {scenario!r}; expected one of {expected}")
    return base


def classifier_settings(cfg: dict | None) -> dict[str, Any]:
    """The ``classifier`` config section with the schema's defaults filled in."""
    return section_settings("classifier", cfg)


def result_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The settings that change a trained model: the section without ``SPEED_KEYS`` and
    ``JOB_CHOICE_KEYS``; the parameters of a ``train_classifier`` job and its resume fingerprint."""
    settings = classifier_settings(cfg)
    return {key: value for key, value in settings.items() if key not in SPEED_KEYS + JOB_CHOICE_KEYS}
