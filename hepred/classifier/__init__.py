"""Stage 6: the slice classifier (EfficientNet-B0 on CT window(s) + lesion mask) per fold and scenario.

By concern: ``settings`` (scenarios, the config section), ``data`` and ``augment`` (slices
and their batches), ``model``, ``scoring`` (inference with test-time views),
``calibration`` (patient probabilities and their offsets) and ``train`` (the training
loop). Scoring needs nothing from ``train``.
"""

from hepred.classifier.model import build_model, load_classifier
from hepred.classifier.settings import SCENARIOS, classifier_settings

__all__ = ["SCENARIOS", "build_model", "classifier_settings", "load_classifier"]
