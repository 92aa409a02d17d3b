"""How a patient's slice probabilities become one patient probability: the one registry of
patient rules and of the columns of ``predictions_patients.csv`` that hold them.

A module of its own, without torch, so that the statistics, the baselines and predict read
the same names as the classifier that writes them.
"""

# Column of predictions_patients.csv -> the rule that combines a patient's slices into it.
PATIENT_RULES = {"probability": "mean", "probability_max": "max", "probability_middle": "middle"}
# Rule -> its column (statistics.aggregation names a rule).
RULE_COLUMNS = {rule: column for column, rule in PATIENT_RULES.items()}
PATIENT_COLUMNS = [
    "case_id",
    "fold",
    "scenario",
    "probability",
    "label",
    "n_slices",
    "probability_max",
    "probability_middle",
]
