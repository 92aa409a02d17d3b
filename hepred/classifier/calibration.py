"""From slice logits to patient probabilities: test-time views averaged, the patient rules
of ``hepred.patient_rules`` applied, and the per-rule logit offsets of the prevalence
calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from hepred.patient_rules import PATIENT_RULES, combine_slices

# Logit margin of the calibration search past the most extreme validation logit.
CALIBRATION_MARGIN = 40.0


def probabilities(logits: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Mean over the views of [V, N] logits of sigmoid(logit + ``offset``)."""
    return expit(logits.astype(np.float64) + offset).mean(axis=0)


def rule_probabilities(items: pd.DataFrame, logits: np.ndarray, offset: float, rule: str) -> pd.Series:
    """Per case_id, the probabilities of its slices (``logits`` + ``offset``, mean over the
    views) combined by ``rule``. ``items`` holds the case_id and slice of each of the [V, N]
    ``logits``' columns."""
    frame = items[["case_id", "slice"]].assign(probability=probabilities(logits, offset))
    return combine_slices(frame, "probability", rule)


def patient_table(items: pd.DataFrame, logits: np.ndarray, offsets: dict[str, float]) -> pd.DataFrame:
    """Per case: its number of slices and, for every rule of ``PATIENT_RULES``, the combined
    probability of its slices, each rule with its own logit offset (see ``rule_probabilities``)."""
    table = pd.DataFrame({"n_slices": items.groupby("case_id", sort=True).size()})
    for column, rule in PATIENT_RULES.items():
        table[column] = rule_probabilities(items, logits, offsets[rule], rule)
    return table.rename_axis("case_id").reset_index()


def prevalence_offsets(items: pd.DataFrame, logits: np.ndarray, prevalence: float) -> dict[str, float]:
    """Per patient rule, the logit offset that makes the validation patients' mean probability
    equal the training prevalence.

    Models trained on a few dozen patients rank a fold's patients well but settle at
    different overall levels, which pooling the folds' predictions turns into noise. The
    offsets are fitted on the fold's validation cases without their labels, never on the
    test fold, and one number added to every logit cannot change the fold's own ranking.
    Each rule gets its own: the max of a patient's slices sits higher than their mean, so
    one offset for all would leave the fixed threshold calling most patients positive.
    """
    target = min(max(prevalence, 1e-3), 1 - 1e-3)

    def excess(offset: float, rule: str) -> float:
        return float(rule_probabilities(items, logits, offset, rule).mean()) - target

    # Beyond these offsets every slice probability is below 1e-17 or above 1 - 1e-17, so the
    # mean crosses any target in between, whatever range the logits span.
    low = -float(np.max(logits)) - CALIBRATION_MARGIN
    high = -float(np.min(logits)) + CALIBRATION_MARGIN
    return {rule: float(brentq(excess, low, high, args=(rule,))) for rule in PATIENT_RULES.values()}
