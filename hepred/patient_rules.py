"""How a patient's slice probabilities become one patient probability: the one registry of
patient rules and of the columns of ``predictions_patients.csv`` that hold them.

A module of its own, without torch, so that the statistics, the baselines and predict read
the same names as the classifier that writes them.
"""

import pandas as pd

# Column of predictions_patients.csv -> the rule that combines a patient's slices into it.
# Each column is named after its rule; which one the statistics report is statistics.aggregation.
PATIENT_RULES = {"probability_mean": "mean", "probability_max": "max", "probability_middle": "middle"}
# Rule -> its column (statistics.aggregation names a rule).
RULE_COLUMNS = {rule: column for column, rule in PATIENT_RULES.items()}
PATIENT_COLUMNS = ["case_id", "fold", "scenario", "label", "n_slices", *PATIENT_RULES]


def combine_slices(slices: pd.DataFrame, column: str, rule: str) -> pd.Series:
    """Per case_id, its slices' ``column`` combined by ``rule``: mean (the paper's), max, or the
    middle one of its slices in slice order."""
    ordered = slices.sort_values(["case_id", "slice"], kind="stable")
    grouped = ordered.groupby("case_id", sort=True)[column]
    if rule == "mean":
        return grouped.mean()
    if rule == "max":
        return grouped.max()
    position = ordered.groupby("case_id", sort=True).cumcount()
    middle = (grouped.transform("size") - 1) // 2
    return ordered.loc[position == middle].set_index("case_id")[column].sort_index()
