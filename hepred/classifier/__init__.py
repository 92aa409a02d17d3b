"""Stage 6: the slice classifier (EfficientNet-B0 on CT window(s) + lesion mask) per fold and scenario."""

from hepred.classifier.model import build_model, load_classifier
from hepred.classifier.train import (
    DEFAULTS,
    PAPER_PRESET,
    SCENARIOS,
    classifier_settings,
    patient_table,
    train_classifier,
    train_step,
)

__all__ = [
    "DEFAULTS",
    "PAPER_PRESET",
    "SCENARIOS",
    "build_model",
    "classifier_settings",
    "load_classifier",
    "patient_table",
    "train_classifier",
    "train_step",
]
