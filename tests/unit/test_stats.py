"""Statistics stage: metrics, bootstrap intervals, paired tests, outputs and refusals."""
from __future__ import annotations

import json
import math
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from hepred import stats
from hepred.errors import HepredError

# --------------------------------------------------------------------------------------------
# metrics on a table worked out by hand
#
# patient:      p1   p2   p3   n1   n2   n3   n4   n5
# label:         1    1    1    0    0    0    0    0
# probability: 0.9  0.5  0.2  0.7  0.4  0.3  0.1  0.6
# >= 0.5:        1    1    0    1    0    0    0    1
# TP = 2 (p1, p2; 0.5 sits on the threshold and counts as positive), FN = 1 (p3),
# FP = 2 (n1, n5), TN = 3.
# accuracy = 5/8; sensitivity = 2/3; specificity = 3/5; F1 = 2*2 / (2*2 + 2 + 1) = 4/7;
# balanced accuracy = (2/3 + 3/5) / 2 = 19/30.
# AUC: p1 outranks 5 negatives, p2 outranks n2 n3 n4 (3), p3 outranks n4 (1): 9/15 = 0.6.
HAND_LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
HAND_PROBABILITIES = np.array([0.9, 0.5, 0.2, 0.7, 0.4, 0.3, 0.1, 0.6])
HAND_METRICS = {
    "auc": 9 / 15,
    "accuracy": 5 / 8,
    "f1": 4 / 7,
    "sensitivity": 2 / 3,
    "specificity": 3 / 5,
    "balanced_accuracy": 19 / 30,
}


def test_metrics_match_hand_computation():
    values = stats.classification_metrics(HAND_LABELS, HAND_PROBABILITIES, threshold=0.5)
    assert values == pytest.approx(HAND_METRICS, abs=1e-12)
    assert stats.confusion_counts(HAND_LABELS, HAND_PROBABILITIES, 0.5) == {"tn": 3, "fp": 2, "fn": 1, "tp": 2}


def test_threshold_is_used_as_given():
    # At 0.65 only p1 (0.9) and n1 (0.7) are called positive: TP 1, FP 1, FN 2, TN 4.
    values = stats.classification_metrics(HAND_LABELS, HAND_PROBABILITIES, threshold=0.65)
    assert values["sensitivity"] == pytest.approx(1 / 3)
    assert values["specificity"] == pytest.approx(4 / 5)
    assert values["auc"] == pytest.approx(0.6)  # threshold-free


def test_single_class_gives_nan_not_zero():
    values = stats.classification_metrics(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.2]), 0.5)
    assert math.isnan(values["auc"]) and math.isnan(values["sensitivity"]) and math.isnan(values["balanced_accuracy"])
    assert values["specificity"] == pytest.approx(2 / 3)
    assert values["accuracy"] == pytest.approx(2 / 3)


def test_vectorised_bootstrap_statistic_agrees_with_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    probabilities = np.round(rng.random(40), 1)  # ties, and values exactly on the threshold
    expected = stats.classification_metrics(labels, probabilities, 0.5)
    for metric in stats.METRICS:
        statistic = stats.stratified_metric_statistic(metric, 0.5)
        value = statistic(probabilities[labels == 1], probabilities[labels == 0])
        assert float(value) == pytest.approx(expected[metric], abs=1e-12), metric


# --------------------------------------------------------------------------------------------
# bootstrap


def _noisy_cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 3, int), np.zeros(n - n // 3, int)]
    probabilities = 1 / (1 + np.exp(-(1.2 * (2 * labels - 1) + rng.normal(size=n))))
    return labels, probabilities


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_contains_estimate_and_is_deterministic(method):
    labels, probabilities = _noisy_cohort()
    point = stats.classification_metrics(labels, probabilities, 0.5)
    for metric in ("auc", "accuracy", "sensitivity"):
        first = stats.bootstrap_ci(labels, probabilities, metric, 0.5, 300, 0.95, method, seed=11)
        again = stats.bootstrap_ci(labels, probabilities, metric, 0.5, 300, 0.95, method, seed=11)
        other = stats.bootstrap_ci(labels, probabilities, metric, 0.5, 300, 0.95, method, seed=12)
        assert first == again
        assert first != other
        assert first[0] < point[metric] < first[1]
        assert 0.0 <= first[0] and first[1] <= 1.0


def test_bootstrap_ci_narrows_with_lower_confidence():
    labels, probabilities = _noisy_cohort()
    wide = stats.bootstrap_ci(labels, probabilities, "auc", 0.5, 400, 0.95, "percentile", seed=1)
    narrow = stats.bootstrap_ci(labels, probabilities, "auc", 0.5, 400, 0.5, "percentile", seed=1)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_is_nan_without_two_patients_per_class():
    labels, probabilities = np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3])
    low, high = stats.bootstrap_ci(labels, probabilities, "auc", 0.5, 50, 0.95, "percentile", 0)
    assert math.isnan(low) and math.isnan(high)


# --------------------------------------------------------------------------------------------
# DeLong
#
# 3 positives, 3 negatives, two models on the same patients (model B has ties):
#            P1   P2   P3 |  N1   N2   N3
# model A:  0.9  0.6  0.4 | 0.7  0.3  0.2
# model B:  0.8  0.5  0.5 | 0.5  0.6  0.1
# Placement values (fraction of the other class outranked, ties 1/2):
# A: V10 = [1, 2/3, 2/3]   V01 = [1/3, 1, 1]       AUC_A = 7/9
# B: V10 = [1, 1/2, 1/2]   V01 = [2/3, 1/3, 1]     AUC_B = 2/3
# S10 (sample covariance, n - 1): var A = 1/27, var B = 1/12, cov = 1/18
# S01: var A = 4/27, var B = 1/9, cov = 0
# Var(AUC_A) = (1/27)/3 + (4/27)/3 = 5/81; Var(AUC_B) = (1/12)/3 + (1/9)/3 = 7/108;
# Cov = (1/18)/3 + 0/3 = 1/54; Var(A - B) = 5/81 + 7/108 - 2/54 = 29/324
# z = (1/9) / sqrt(29/324) = 2 / sqrt(29); p = erfc(z / sqrt(2)).
DELONG_LABELS = np.array([1, 1, 1, 0, 0, 0])
DELONG_A = np.array([0.9, 0.6, 0.4, 0.7, 0.3, 0.2])
DELONG_B = np.array([0.8, 0.5, 0.5, 0.5, 0.6, 0.1])


def test_delong_placements_by_hand():
    v10, v01 = stats.delong_placements(DELONG_LABELS, np.vstack([DELONG_A, DELONG_B]))
    np.testing.assert_allclose(v10, [[1, 2 / 3, 2 / 3], [1, 1 / 2, 1 / 2]], atol=1e-12)
    np.testing.assert_allclose(v01, [[1 / 3, 1, 1], [2 / 3, 1 / 3, 1]], atol=1e-12)


def test_delong_variance_and_p_by_hand():
    aucs, covariance = stats.delong_covariance(DELONG_LABELS, np.vstack([DELONG_A, DELONG_B]))
    np.testing.assert_allclose(aucs, [7 / 9, 2 / 3], atol=1e-12)
    expected = np.array([[F(5, 81), F(1, 54)], [F(1, 54), F(7, 108)]], dtype=float)
    np.testing.assert_allclose(covariance, expected, atol=1e-12)

    result = stats.delong_test(DELONG_LABELS, DELONG_A, DELONG_B)
    z = 2 / math.sqrt(29)
    assert result["auc_difference"] == pytest.approx(1 / 9)
    assert result["z"] == pytest.approx(z, abs=1e-12)
    assert result["p"] == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1e-12)  # about 0.7103
    # the test is symmetric
    swapped = stats.delong_test(DELONG_LABELS, DELONG_B, DELONG_A)
    assert swapped["z"] == pytest.approx(-z) and swapped["p"] == pytest.approx(result["p"])


def test_delong_identical_or_equal_aucs_give_p_one():
    same = stats.delong_test(DELONG_LABELS, DELONG_A, DELONG_A)
    assert same["z"] == 0.0 and same["p"] == 1.0
    # different predictions with the same ranking, hence the same AUC
    assert stats.delong_test(DELONG_LABELS, DELONG_A, DELONG_A**2)["p"] == pytest.approx(1.0)


def test_delong_matches_pairwise_definition_with_ties():
    # DeLong et al. (1988) by the O(m n) kernel psi(x, y) = 1, 1/2, 0 for x >, =, < y.
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(9, int), np.zeros(13, int)]
    scores = np.round(rng.random((2, labels.size)) + 0.3 * labels, 1)
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    expected = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    aucs, covariance = stats.delong_covariance(labels, scores)
    np.testing.assert_allclose(aucs, psi.mean(axis=(1, 2)), atol=1e-12)
    np.testing.assert_allclose(covariance, expected, atol=1e-12)


# Published example: pROC (Robin et al., BMC Bioinformatics 2011;12:77), data set aSAH
# (113 patients with aneurysmal subarachnoid haemorrhage, outcome Poor = 1), comparing the
# ROC curves of S100B and WFNS: roc.test(roc1, roc2) reports "Z = -2.209, p-value = 0.02718",
# AUCs 0.7313686 and 0.8236789; var(roc1) = 0.002668682, cov(roc1, roc2) = 0.001196156.
ASAH_POOR = "00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000000001111110001000"
ASAH_WFNS = "11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113125225552445111"
ASAH_S100B = (
    "0.13 0.14 0.10 0.04 0.13 0.10 0.47 0.16 0.18 0.10 0.12 0.10 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 0.09 "
    "0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 0.25 0.50 0.46 "
    "0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06 0.13 2.07 0.10 0.14 0.15 0.07 0.06 0.77 0.05 0.09 "
    "0.30 0.03 0.09 0.04 0.23 0.70 0.09 0.27 0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.10 0.08 0.11 0.33 0.11 0.28 "
    "0.07 0.10 0.32 0.22 0.07 0.05 0.24 0.38 0.10 0.15 0.08 0.14 0.10 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 "
    "0.74 0.15 0.47 0.17 0.44 0.15 0.50 0.48"
)


def test_delong_reproduces_published_proc_example():
    labels = np.array([int(c) for c in ASAH_POOR])
    wfns = np.array([float(c) for c in ASAH_WFNS])
    s100b = np.array([float(v) for v in ASAH_S100B.split()])
    assert labels.size == wfns.size == s100b.size == 113 and labels.sum() == 41

    result = stats.delong_test(labels, s100b, wfns)
    assert result["auc_a"] == pytest.approx(0.7313686, abs=5e-8)
    assert result["auc_b"] == pytest.approx(0.8236789, abs=5e-8)
    assert result["variance_a"] == pytest.approx(0.002668682, abs=5e-10)
    assert result["covariance"] == pytest.approx(0.001196156, abs=5e-10)
    assert result["z"] == pytest.approx(-2.209, abs=5e-4)
    assert result["p"] == pytest.approx(0.02718, abs=5e-6)


# --------------------------------------------------------------------------------------------
# McNemar and Wilcoxon


def test_mcnemar_exact_known_counts():
    # b = 1, c = 8: p = 2 * P(X <= 1 | X ~ Bin(9, 1/2)) = 2 * (1 + 9) / 512
    assert stats.mcnemar_exact(1, 8) == pytest.approx(0.0390625, abs=1e-15)
    assert stats.mcnemar_exact(8, 1) == pytest.approx(0.0390625, abs=1e-15)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_mcnemar_counts_discordant_correctness():
    labels = np.array([1, 1, 0, 0, 1, 0])
    reference = np.array([1, 0, 0, 1, 1, 0])  # correct: T F T F T T
    other = np.array([1, 1, 1, 0, 0, 0])  # correct: T T F T F T
    result = stats.mcnemar_test(labels, reference, other)
    # b: reference right, other wrong -> patients 3 and 5; c: reference wrong, other right -> 2 and 4
    assert (result["b"], result["c"]) == (2, 2)
    assert result["p"] == pytest.approx(1.0)


def test_wilcoxon_returns_what_scipy_returns():
    folds = pd.Index([0, 1, 2, 3, 4], name="fold")
    other = pd.Series([0.71, 0.80, 0.62, 0.90, 0.75], index=folds)
    reference = pd.Series([0.60, 0.82, 0.55, 0.70, 0.74], index=folds)
    expected = scipy_stats.wilcoxon(other.to_numpy(), reference.to_numpy())
    result = stats.wilcoxon_folds(other, reference)
    assert result["p"] == expected.pvalue and result["statistic"] == expected.statistic
    assert result["n_folds"] == 5


def test_wilcoxon_five_folds_cannot_go_below_minimum():
    folds = pd.Index(range(5), name="fold")
    reference = pd.Series([0.5, 0.6, 0.55, 0.52, 0.58], index=folds)
    better = stats.wilcoxon_folds(pd.Series([0.9] * 5, index=folds), reference)
    assert better["p"] == pytest.approx(0.0625) == stats.minimum_wilcoxon_p(5)


def test_wilcoxon_nan_when_all_differences_zero_and_drops_nan_folds():
    folds = pd.Index(range(5), name="fold")
    values = pd.Series([0.7, 0.8, 0.6, 0.9, 0.75], index=folds)
    assert math.isnan(stats.wilcoxon_folds(values, values.copy())["p"])
    with_nan = values.copy()
    with_nan.iloc[0] = np.nan
    result = stats.wilcoxon_folds(with_nan + 0.01 * np.arange(1, 6), values)
    assert result["n_folds"] == 4
    expected = scipy_stats.wilcoxon(values.iloc[1:] + 0.01 * np.arange(2, 6), values.iloc[1:])
    assert result["p"] == pytest.approx(expected.pvalue)


# --------------------------------------------------------------------------------------------
# the stage end to end


EXPECTED_COLUMNS = [
    "scenario", "kind", "n_patients", "auc", "auc_ci_low", "auc_ci_high",
    "accuracy", "f1", "sensitivity", "specificity", "balanced_accuracy",
    "accuracy_ci_low", "accuracy_ci_high", "f1_ci_low", "f1_ci_high",
    "sensitivity_ci_low", "sensitivity_ci_high", "specificity_ci_low", "specificity_ci_high",
    "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
    "auc_fold_mean", "auc_fold_sd", "accuracy_fold_mean", "accuracy_fold_sd", "f1_fold_mean", "f1_fold_sd",
    "sensitivity_fold_mean", "sensitivity_fold_sd", "specificity_fold_mean", "specificity_fold_sd",
    "balanced_accuracy_fold_mean", "balanced_accuracy_fold_sd",
    "p_delong_vs_t1", "p_delong_vs_t1_holm", "p_mcnemar_vs_t1", "p_wilcoxon_vs_t1",
    "p_delong_vs_best_image", "p_delong_vs_best_image_holm",
]  # fmt: skip

CONFIG = {"aggregation": "mean", "threshold": 0.5, "bootstrap": 200, "seed": 7, "ci": 0.95}


def write_predictions(root: Path, scenarios=("t1", "t3", "t5"), n=30, k=5, seed=0, strengths=None) -> list[Path]:
    """Made-up out-of-fold predictions: later scenarios separate the classes better (or as
    ``strengths`` says, one per scenario)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 3, int), np.zeros(n - n // 3, int)]
    folds = np.arange(n) % k
    files = []
    for index, scenario in enumerate(scenarios):
        strength = 0.5 + index if strengths is None else strengths[index]
        probability = 1 / (1 + np.exp(-(strength * (2 * labels - 1) + rng.normal(size=n))))
        for fold in range(k):
            rows = folds == fold
            frame = pd.DataFrame(
                {
                    "case_id": [f"c{i:03d}" for i in np.flatnonzero(rows)],
                    "fold": fold,
                    "scenario": scenario,
                    "probability_mean": probability[rows],
                    "probability_max": np.minimum(1.0, probability[rows] * 1.5),
                    "probability_middle": probability[rows][::-1],
                    "label": labels[rows],
                    "n_slices": 4,
                }
            )
            path = root / f"fold_{fold}" / "classifier" / scenario / "predictions_patients.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            files.append(path)
    return files


def _strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_end_to_end_writes_every_file(tmp_path):
    files = write_predictions(tmp_path / "results")
    out = tmp_path / "results" / "statistics"
    summary = stats.run_statistics(files, CONFIG, out)

    for name in ("summary.csv", "per_fold.csv", "metrics.json", "summary.md", "roc.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left

    written = pd.read_csv(out / "summary.csv")
    assert list(written.columns) == EXPECTED_COLUMNS == stats.summary_columns("t1")
    assert list(summary.columns) == EXPECTED_COLUMNS
    assert list(written["scenario"]) == ["t1", "t3", "t5"]
    assert (written["n_patients"] == 30).all()
    reference = written.iloc[0]
    assert reference[["p_delong_vs_t1", "p_mcnemar_vs_t1", "p_wilcoxon_vs_t1"]].isna().all()
    assert written.iloc[1:][["p_delong_vs_t1", "p_mcnemar_vs_t1", "p_wilcoxon_vs_t1"]].notna().all().all()
    for metric in stats.METRICS:
        assert (written[f"{metric}_ci_low"] <= written[metric]).all()
        assert (written[metric] <= written[f"{metric}_ci_high"]).all()

    per_fold = pd.read_csv(out / "per_fold.csv")
    assert list(per_fold.columns) == ["scenario", "fold", "n_patients", *stats.METRICS]
    assert len(per_fold) == 3 * 5
    t3 = per_fold[per_fold["scenario"] == "t3"]
    assert written.loc[1, "auc_fold_mean"] == pytest.approx(t3["auc"].mean())
    assert written.loc[1, "auc_fold_sd"] == pytest.approx(t3["auc"].std(ddof=1))

    metrics = _strict_json(out / "metrics.json")
    assert metrics["config"]["bootstrap"] == 200 and metrics["config"]["probability_column"] == "probability_mean"
    assert metrics["config"]["reference"] == "t1"
    assert set(metrics["scenarios"]) == {"t1", "t3", "t5"}
    confusion = metrics["scenarios"]["t5"]["confusion_matrix"]
    assert sum(confusion.values()) == 30 and confusion["tp"] + confusion["fn"] == 10
    assert metrics["scenarios"]["t5"]["pooled"]["auc"] == pytest.approx(written.loc[2, "auc"])
    assert len(metrics["scenarios"]["t3"]["per_fold"]) == 5
    assert "vs_reference" not in metrics["scenarios"]["t1"]
    mcnemar = metrics["scenarios"]["t5"]["vs_reference"]["mcnemar"]
    assert mcnemar["p"] == pytest.approx(stats.mcnemar_exact(mcnemar["b"], mcnemar["c"]))

    report = (out / "summary.md").read_text()
    assert "**mean**" in report and "**0.5**" in report and "0.0625" in report
    for scenario in ("t1", "t3", "t5"):
        assert f"| {scenario} " in report


def test_end_to_end_is_deterministic(tmp_path):
    files = write_predictions(tmp_path / "results")
    stats.run_statistics(files, CONFIG, tmp_path / "a")
    stats.run_statistics(list(reversed(files)), CONFIG, tmp_path / "b")
    for name in ("summary.csv", "per_fold.csv", "summary.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first, second = _strict_json(tmp_path / "a" / "metrics.json"), _strict_json(tmp_path / "b" / "metrics.json")
    assert first["scenarios"] == second["scenarios"]


def test_aggregation_picks_its_column(tmp_path):
    files = write_predictions(tmp_path / "results", scenarios=("t1", "t2"))
    mean = stats.run_statistics(files, CONFIG, tmp_path / "mean")
    middle = stats.run_statistics(files, {**CONFIG, "aggregation": "middle"}, tmp_path / "middle")
    frame = pd.concat(pd.read_csv(f) for f in files)
    t2 = frame[frame["scenario"] == "t2"].sort_values("case_id")
    expected = stats.classification_metrics(t2["label"], t2["probability_middle"], 0.5)["auc"]
    assert middle.loc[1, "auc"] == pytest.approx(expected)
    assert middle.loc[1, "auc"] != mean.loc[1, "auc"]
    assert "probability_middle" in (tmp_path / "middle" / "summary.md").read_text()


def test_single_class_fold_gives_nan_auc_and_a_note():
    frame = pd.DataFrame(
        {
            "scenario": ["t1"] * 6,
            "fold": [0, 0, 0, 1, 1, 1],
            "label": [1, 0, 1, 0, 0, 0],
            "probability": [0.8, 0.3, 0.6, 0.2, 0.7, 0.1],
        }
    )
    per_fold, notes = stats.per_fold_metrics(frame, 0.5)
    assert per_fold.loc[0, "auc"] == pytest.approx(1.0)
    assert math.isnan(per_fold.loc[1, "auc"]) and math.isnan(per_fold.loc[1, "sensitivity"])
    assert len(notes) == 1 and "t1 fold 1" in notes[0]


# --------------------------------------------------------------------------------------------
# refusals


def _rewrite(path: Path, change) -> None:
    frame = pd.read_csv(path, dtype={"case_id": str})
    change(frame).to_csv(path, index=False)


def test_refuses_missing_column(tmp_path):
    files = write_predictions(tmp_path)
    _rewrite(files[0], lambda f: f.drop(columns="label"))
    with pytest.raises(HepredError, match="missing column.*label") as error:
        stats.run_statistics(files, CONFIG, tmp_path / "out")
    assert str(files[0]) in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_refuses_missing_aggregation_column(tmp_path):
    files = write_predictions(tmp_path)
    _rewrite(files[0], lambda f: f.drop(columns="probability_max"))
    with pytest.raises(HepredError, match="probability_max"):
        stats.run_statistics(files, {**CONFIG, "aggregation": "max"}, tmp_path / "out")


def test_refuses_non_binary_label(tmp_path):
    files = write_predictions(tmp_path)

    def relabel(frame):
        frame.loc[0, "label"] = 2
        return frame

    _rewrite(files[0], relabel)
    with pytest.raises(HepredError, match="label must be 0 or 1") as error:
        stats.run_statistics(files, CONFIG, tmp_path / "out")
    assert "case c000" in str(error.value)


def test_refuses_probability_outside_unit_interval(tmp_path):
    files = write_predictions(tmp_path)

    def corrupt(frame):
        frame.loc[1, "probability_mean"] = 1.5
        return frame

    _rewrite(files[0], corrupt)
    with pytest.raises(HepredError, match="outside"):
        stats.run_statistics(files, CONFIG, tmp_path / "out")


def test_refuses_patient_twice_in_a_scenario(tmp_path):
    files = write_predictions(tmp_path)
    # fold_1/t1 also lists a patient of fold_0/t1
    _rewrite(files[3], lambda f: pd.concat([f, pd.read_csv(files[0], dtype={"case_id": str}).head(1)]))
    with pytest.raises(HepredError, match="more than once in scenario t1") as error:
        stats.run_statistics(files, CONFIG, tmp_path / "out")
    assert "case c000" in str(error.value)


def test_refuses_different_patient_sets(tmp_path):
    files = write_predictions(tmp_path)
    t3_file = next(f for f in files if "/t3/" in str(f))
    _rewrite(t3_file, lambda f: f.iloc[1:])
    with pytest.raises(HepredError, match="different patient sets") as error:
        stats.run_statistics(files, CONFIG, tmp_path / "out")
    assert "case c000" in str(error.value)


def test_refuses_label_disagreement_between_scenarios(tmp_path):
    files = write_predictions(tmp_path)
    t3_file = next(f for f in files if "/t3/" in str(f))

    def flip(frame):
        frame.loc[0, "label"] = 1 - frame.loc[0, "label"]
        return frame

    _rewrite(t3_file, flip)
    with pytest.raises(HepredError, match="label differs"):
        stats.run_statistics(files, CONFIG, tmp_path / "out")


def test_refuses_missing_reference_and_bad_config(tmp_path):
    files = write_predictions(tmp_path, scenarios=("t2", "t3"))
    with pytest.raises(HepredError, match="reference scenario 't1'"):
        stats.run_statistics(files, CONFIG, tmp_path / "out")
    with pytest.raises(HepredError, match="aggregation"):
        stats.run_statistics(files, {**CONFIG, "aggregation": "median"}, tmp_path / "out", reference="t2")
    with pytest.raises(HepredError, match="no predictions"):
        stats.run_statistics([], CONFIG, tmp_path / "out")


def test_reference_name_sets_p_columns(tmp_path):
    files = write_predictions(tmp_path, scenarios=("t2", "t3"))
    summary = stats.run_statistics(files, CONFIG, tmp_path / "out", reference="t2")
    assert list(summary.columns[-6:-2]) == ["p_delong_vs_t2", "p_delong_vs_t2_holm", "p_mcnemar_vs_t2", "p_wilcoxon_vs_t2"]
    assert list(summary["scenario"]) == ["t2", "t3"]


def test_holm_adjust_matches_the_step_down_rule():
    adjusted = stats.holm_adjust({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    # Sorted 0.01, 0.03, 0.04 over a family of 3: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04).
    assert adjusted["a"] == pytest.approx(0.03)
    assert adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06)
    assert math.isnan(adjusted["d"])
    assert stats.holm_adjust({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


def test_wilcoxon_is_exact_when_fold_differences_tie():
    # Differences 0.1, 0.1, 0.25, -0.1, 0.2 on paper; in floating point 0.9 - 0.8 and 0.8 - 0.7
    # differ in the last bits and would split the tie.
    other = pd.Series([0.8, 0.9, 0.75, 0.6, 0.7])
    reference = pd.Series([0.7, 0.8, 0.5, 0.7, 0.5])
    result = stats.wilcoxon_folds(other, reference)
    # Midranks 2, 2, 5, 2, 4 of |0.1|, |0.1|, 0.25, |-0.1|, 0.2: W- = 2. Over the 32 equally
    # likely sign flips, W- <= 2 happens 4 times (none negative, or one of the three tied) and
    # W+ <= 2 as often: p = 8/32.
    assert result["p"] == pytest.approx(8 / 32)


def test_rows_of_every_kind_are_ordered_compared_and_judged(tmp_path):
    files = write_predictions(
        tmp_path,
        scenarios=("null_t2", "volume", "t1", "t2", "fusion", "radiomics"),
        n=60,
        strengths=(0.0, 0.3, 0.4, 0.8, 1.0, 1.2),
    )
    out = tmp_path / "out"
    summary = stats.run_statistics(files, CONFIG, out)
    assert list(summary["scenario"]) == ["t1", "t2", "fusion", "radiomics", "volume", "null_t2"]
    assert dict(zip(summary["scenario"], summary["kind"]))["null_t2"] == "null_control"
    assert dict(zip(summary["scenario"], summary["kind"]))["radiomics"] == "baseline"
    # t2 separates better than t1: the best image scenario.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_image"] == "t2"
    best_row = summary.set_index("scenario").loc["t2"]
    assert math.isnan(best_row["p_delong_vs_best_image"])
    family = summary[~summary["scenario"].isin(["t2", "null_t2"])]
    assert (family["p_delong_vs_best_image_holm"] >= family["p_delong_vs_best_image"]).all()
    versus_t1 = summary[~summary["scenario"].isin(["t1", "null_t2"])]
    assert (versus_t1["p_delong_vs_t1_holm"] >= versus_t1["p_delong_vs_t1"]).all()
    # Radiomics is the best model overall; the null control (no signal) is far below it.
    learned = summary[summary["kind"] != "null_control"].set_index("scenario")["auc"]
    recipe, best = metrics["null_verdicts"]
    assert (recipe["model"], recipe["role"], recipe["null"], recipe["beats_null"]) == ("t2", "recipe", "null_t2", True)
    assert (best["model"], best["role"], best["beats_null"]) == (learned.idxmax(), "best", True)
    markdown = (out / "summary.md").read_text()
    assert "** t2 (AUC" in markdown and "), trained as the null control but on the true labels, beats" in markdown
    assert f"The best model, {learned.idxmax()} (AUC" in markdown
    # The null control is a check, not a finding: it has its raw p but no place in the Holm families.
    null_row = summary.set_index("scenario").loc["null_t2"]
    assert null_row["p_delong_vs_t1"] > 0 and math.isnan(null_row["p_delong_vs_t1_holm"])
    assert math.isnan(null_row["p_delong_vs_best_image_holm"])
    assert "## Sensitivity: other patient rules (not the pre-specified analysis)" in markdown
    sensitivity = pd.read_csv(out / "rule_sensitivity.csv").set_index("scenario")
    assert list(sensitivity.columns) == ["mean", "max", "middle"]
    assert sensitivity.loc["t1", "mean"] == pytest.approx(summary.set_index("scenario").loc["t1", "auc"])


def test_a_best_model_that_does_not_beat_the_null_is_said_so(tmp_path):
    files = write_predictions(tmp_path, scenarios=("t1", "null_t1"), strengths=(0.2, 0.2))
    stats.run_statistics(files, CONFIG, tmp_path / "out")
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "does **not** beat the null control null_t1" in markdown
