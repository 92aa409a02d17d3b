"""Statistics stage: out-of-fold patient predictions -> metrics, confidence intervals, paired tests.

Input: the classifier stage's ``fold_{k}/classifier/{scenario}/predictions_patients.csv`` files.
Every scenario is scored on its pooled out-of-fold predictions (one probability per patient,
each patient predicted once, by the fold that held it out) and per fold, and every scenario is
compared with a reference scenario on the same patients (DeLong, McNemar, Wilcoxon over folds).
The threshold is fixed by the configuration and never tuned on these predictions.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from hepred.errors import HepredError
from hepred.io import save_figure, write_csv, write_json, write_text
from hepred.config import section_settings
from hepred.patient_rules import RULE_COLUMNS

METRICS = ("auc", "accuracy", "f1", "sensitivity", "specificity", "balanced_accuracy")
METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "f1": "F1",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "balanced_accuracy": "Balanced accuracy",
}
CI_METHODS = {"percentile": "percentile", "bca": "BCa"}
# What each row of the summary is: an image scenario (t1, t2, ...), its null control (null_t2),
# a patient-level baseline (volume, radiomics, markers) or the fusion of baselines with an image scenario.
# "null_control", not "null": pandas reads a bare null in a CSV as a missing value.
KINDS = ("image", "fusion", "baseline", "null_control")  # also the order of the rows
# Fold-AUC differences are compared to this many decimals (ties must stay ties).
WILCOXON_DECIMALS = 12
BASELINE_NAMES = ("volume", "radiomics", "markers")
REQUIRED_COLUMNS = ("case_id", "fold", "scenario", "label")


# --------------------------------------------------------------------------------------------
# configuration and input


def resolve_config(cfg: dict | None) -> dict:
    """The ``statistics`` section with the schema's defaults filled in, plus the run's ``seed``
    (default 0) and the patient-rule column that ``aggregation`` names."""
    cfg = {key: value for key, value in (cfg or {}).items() if value is not None}
    seed = int(cfg.pop("seed", 0))
    resolved = section_settings("statistics", cfg)
    return {**resolved, "seed": seed, "probability_column": RULE_COLUMNS[resolved["aggregation"]]}


def read_predictions_file(path: Path, probability_column: str) -> pd.DataFrame:
    """One predictions_patients.csv as (case_id, fold, scenario, label, probability), validated."""
    path = Path(path)
    try:
        # keep_default_na: a case id such as NA or null is an id, not a missing value.
        frame = pd.read_csv(path, dtype={"case_id": str, "scenario": str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise HepredError("predictions file not found", path=path) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise HepredError(f"cannot read predictions table ({type(error).__name__})", path=path) from None
    missing = [column for column in (*REQUIRED_COLUMNS, probability_column) if column not in frame.columns]
    if missing:
        raise HepredError(f"missing column(s) {', '.join(missing)}", path=path)
    if frame.empty:
        raise HepredError("predictions table has no rows", path=path)
    frame = frame[list(REQUIRED_COLUMNS) + [probability_column]].rename(columns={probability_column: "probability"})

    for column in ("label", "probability", "fold"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna()
        if bad.any():
            case = frame.loc[bad.idxmax(), "case_id"]
            raise HepredError(f"{column} is missing or not a number", case_id=case, path=path)
        frame[column] = numeric
    not_binary = ~frame["label"].isin([0, 1])
    if not_binary.any():
        row = frame.loc[not_binary.idxmax()]
        raise HepredError(f"label must be 0 or 1, got {row['label']!r}", case_id=row["case_id"], path=path)
    outside = (frame["probability"] < 0) | (frame["probability"] > 1)
    if outside.any():
        row = frame.loc[outside.idxmax()]
        raise HepredError(f"probability {row['probability']!r} lies outside [0, 1]", case_id=row["case_id"], path=path)
    if (frame["fold"] != frame["fold"].round()).any():
        raise HepredError("fold must be an integer", path=path)
    frame["label"] = frame["label"].astype(int)
    frame["fold"] = frame["fold"].astype(int)
    frame["source"] = str(path)
    return frame


def load_predictions(prediction_files: Iterable[Path], probability_column: str) -> pd.DataFrame:
    """All prediction files stacked; a patient may appear once per scenario only."""
    files = [Path(path) for path in prediction_files]
    if not files:
        raise HepredError("no predictions_patients.csv files were given")
    frame = pd.concat([read_predictions_file(path, probability_column) for path in files], ignore_index=True)
    duplicated = frame.duplicated(subset=["scenario", "case_id"], keep=False)
    if duplicated.any():
        rows = frame[duplicated].sort_values(["scenario", "case_id"])
        first = rows.iloc[0]
        sources = sorted(set(rows.loc[rows["case_id"] == first["case_id"], "source"]))
        raise HepredError(
            f"appears more than once in scenario {first['scenario']} (in {', '.join(sources)})",
            case_id=first["case_id"],
            path=sources[0],
        )
    return frame


def check_pairing(frame: pd.DataFrame, reference: str) -> None:
    """Paired comparisons need every scenario on the same patients, labels and folds."""
    scenarios = sorted(frame["scenario"].unique())
    if reference not in scenarios:
        raise HepredError(f"reference scenario {reference!r} is not among the predictions ({', '.join(scenarios)})")
    truth = frame[frame["scenario"] == reference].set_index("case_id")
    for scenario in scenarios:
        if scenario == reference:
            continue
        other = frame[frame["scenario"] == scenario].set_index("case_id")
        only_reference = sorted(set(truth.index) - set(other.index))
        only_other = sorted(set(other.index) - set(truth.index))
        if only_reference or only_other:
            case = (only_reference or only_other)[0]
            where = (
                f"in {reference} but not in {scenario}" if only_reference else f"in {scenario} but not in {reference}"
            )
            raise HepredError(
                f"scenarios have different patient sets: {len(only_reference) + len(only_other)} patient(s) differ, "
                f"this one is {where}",
                case_id=case,
                path=(other if only_other else truth).loc[case, "source"],
            )
        joined = truth[["label", "fold"]].merge(
            other[["label", "fold", "source"]], left_index=True, right_index=True, suffixes=("", "_other")
        )
        for column in ("label", "fold"):
            differs = joined[column] != joined[f"{column}_other"]
            if differs.any():
                case = joined.index[differs.argmax()]
                raise HepredError(
                    f"{column} differs between scenario {reference} and {scenario}",
                    case_id=case,
                    path=joined.loc[case, "source"],
                )
    if frame.loc[frame["scenario"] == reference, "label"].nunique() < 2:
        raise HepredError("all patients have the same label; the metrics need both classes")


# --------------------------------------------------------------------------------------------
# metrics


def scenario_kind(scenario: str) -> str:
    """One of ``KINDS``, from the scenario's name."""
    if scenario.startswith("null_"):
        return "null_control"
    if scenario in BASELINE_NAMES:
        return "baseline"
    if scenario == "fusion":
        return "fusion"
    return "image"


def holm_adjust(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values of one family of tests (NaN entries stay NaN and do
    not count towards the family size)."""
    finite = sorted((p, name) for name, p in pvalues.items() if not math.isnan(p))
    adjusted = dict.fromkeys(pvalues, math.nan)
    running = 0.0
    for rank, (p, name) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[name] = running
    return adjusted


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC from the probabilities and the threshold metrics of `probability >= threshold`.

    A metric that is undefined on these patients (AUC or balanced accuracy with one class,
    sensitivity without positives, specificity without negatives) is NaN, never 0.
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = (probabilities >= threshold).astype(int)
    both_classes = np.unique(labels).size == 2
    return {
        "auc": float(skm.roc_auc_score(labels, probabilities)) if both_classes else math.nan,
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(skm.f1_score(labels, predicted, pos_label=1, zero_division=np.nan)),
        "sensitivity": float(skm.recall_score(labels, predicted, pos_label=1, zero_division=np.nan)),
        "specificity": float(skm.recall_score(labels, predicted, pos_label=0, zero_division=np.nan)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if both_classes else math.nan,
    }


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, int]:
    predicted = (np.asarray(probabilities, dtype=float) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(np.asarray(labels, dtype=int), predicted, labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def roc_points(labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """The empirical ROC curve (fpr, tpr, threshold), as sklearn computes it."""
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float))
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


# --------------------------------------------------------------------------------------------
# bootstrap confidence intervals


def stratified_metric_statistic(metric: str, threshold: float) -> Callable[..., np.ndarray]:
    """A vectorised statistic of (positive probabilities, negative probabilities) for scipy.

    scipy.stats.bootstrap calls it on thousands of resamples at once; the sklearn functions
    work on one resample per call and would make the stage slow, so the same definitions are
    evaluated here from counts along the last axis (tests check both agree on real data).
    """
    if metric not in METRICS:
        raise HepredError(f"unknown metric {metric!r}")

    def statistic(positives: np.ndarray, negatives: np.ndarray, axis: int = -1) -> np.ndarray:
        positives = np.moveaxis(np.asarray(positives, dtype=float), axis, -1)
        negatives = np.moveaxis(np.asarray(negatives, dtype=float), axis, -1)
        lead = np.broadcast_shapes(positives.shape[:-1], negatives.shape[:-1])
        positives = np.broadcast_to(positives, lead + positives.shape[-1:])
        negatives = np.broadcast_to(negatives, lead + negatives.shape[-1:])
        n_pos, n_neg = positives.shape[-1], negatives.shape[-1]
        if metric == "auc":
            # Mann-Whitney form of the empirical AUC; midranks count ties as one half.
            ranks = stats.rankdata(np.concatenate([positives, negatives], axis=-1), axis=-1)
            return (ranks[..., :n_pos].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        tp = (positives >= threshold).sum(axis=-1)
        tn = (negatives < threshold).sum(axis=-1)
        fn, fp = n_pos - tp, n_neg - tn
        sensitivity, specificity = tp / n_pos, tn / n_neg
        if metric == "accuracy":
            return (tp + tn) / (n_pos + n_neg)
        if metric == "f1":
            return 2 * tp / (2 * tp + fp + fn)  # n_pos >= 1, so the denominator is positive
        if metric == "sensitivity":
            return sensitivity
        if metric == "specificity":
            return specificity
        return (sensitivity + specificity) / 2

    return statistic


def bootstrap_ci(
    labels: np.ndarray,
    probabilities: np.ndarray,
    metric: str,
    threshold: float,
    n_resamples: int,
    confidence: float,
    method: str,
    seed: int,
) -> tuple[float, float]:
    """Bootstrap confidence interval of one pooled metric, resampling patients within each class.

    Stratifying by label keeps both classes in every resample, so the AUC is defined in all of
    them (as pROC's default stratified bootstrap). A fresh generator from the same seed makes
    every metric and every scenario use the same patient resamples. NaN when a class has fewer
    than two patients, or when BCa is asked for and the bootstrap distribution is degenerate.
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    positives, negatives = probabilities[labels == 1], probabilities[labels == 0]
    if positives.size < 2 or negatives.size < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = stats.bootstrap(
                (positives, negatives),
                stratified_metric_statistic(metric, threshold),
                n_resamples=n_resamples,
                paired=False,
                vectorized=True,
                confidence_level=confidence,
                method=CI_METHODS[method],
                rng=np.random.default_rng(seed),
            )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# --------------------------------------------------------------------------------------------
# paired tests


def delong_placements(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components (placement values) by the midrank method of Sun & Xu (2014).

    ``scores`` is [k, N] (k predictors on the same N patients). Returns V10 [k, m], for each
    positive the fraction of negatives it outranks (ties count 1/2), and V01 [k, n], for each
    negative the fraction of positives that outrank it. Midranks make this O(N log N) instead
    of the O(m n) pairwise comparisons of DeLong et al. (1988).
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    positives, negatives = scores[:, labels == 1], scores[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    rank_positives = stats.rankdata(positives, axis=1)  # Tx: midranks among the positives
    rank_negatives = stats.rankdata(negatives, axis=1)  # Ty: midranks among the negatives
    rank_all = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)  # Tz
    v10 = (rank_all[:, :m] - rank_positives) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_negatives) / m
    return v10, v01


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs [k] and their DeLong covariance matrix [k, k]: S10 / m + S01 / n."""
    v10, v01 = delong_placements(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.full((len(aucs), len(aucs)), np.nan)
        s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.full((len(aucs), len(aucs)), np.nan)
    return aucs, s10 / m + s01 / n


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated AUCs (same patients), two-sided.

    Equal AUCs give z = 0 and p = 1, also when the difference has zero variance (identical
    predictions); a non-zero difference with zero variance gives p = 0, as in pROC.
    """
    aucs, covariance = delong_covariance(labels, np.vstack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if math.isnan(variance):
        z = math.nan
    elif difference == 0.0:
        z = 0.0
    elif variance <= 0.0:
        z = math.copysign(math.inf, difference)
    else:
        z = difference / math.sqrt(variance)
    p = math.nan if math.isnan(z) else float(2 * stats.norm.sf(abs(z)))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "auc_difference": difference,
        "variance_a": float(covariance[0, 0]),
        "variance_b": float(covariance[1, 1]),
        "covariance": float(covariance[0, 1]),
        "z": z,
        "p": p,
    }


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar p-value from the discordant counts b and c, two-sided.

    Without discordant pairs there is no evidence of a difference: p = 1.
    """
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def mcnemar_test(labels: np.ndarray, predicted_reference: np.ndarray, predicted_other: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on per-patient correctness of two classifiers at the threshold.

    b: reference correct and other wrong; c: reference wrong and other correct.
    """
    labels = np.asarray(labels, dtype=int)
    correct_reference = np.asarray(predicted_reference, dtype=int) == labels
    correct_other = np.asarray(predicted_other, dtype=int) == labels
    b = int(np.sum(correct_reference & ~correct_other))
    c = int(np.sum(~correct_reference & correct_other))
    return {"b": b, "c": c, "p": mcnemar_exact(b, c)}


def wilcoxon_folds(values_other: pd.Series, values_reference: pd.Series) -> dict[str, Any]:
    """Wilcoxon signed-rank test over per-fold values (Series indexed by fold), two-sided.

    Folds where either value is NaN are left out. NaN when no fold remains or all differences
    are zero (the test is then undefined). The p-value comes from the exact distribution of
    the statistic over all 2**k sign flips of the observed differences, which stays exact
    when differences tie (midranks).
    With k folds the two-sided p cannot go below 2 / 2**k (0.0625 for 5 folds): it can never
    reach 0.05 with 5 folds.
    """
    paired = pd.concat([values_other.rename("other"), values_reference.rename("reference")], axis=1).dropna()
    # Rounded so that differences equal on paper (0.9 - 0.8 and 0.8 - 0.7) tie in their ranks
    # instead of being split by floating-point error.
    differences = np.round((paired["other"] - paired["reference"]).to_numpy(), WILCOXON_DECIMALS)
    result = {"n_folds": int(len(paired)), "statistic": math.nan, "p": math.nan}
    if len(paired) == 0 or bool((differences == 0).all()):
        return result
    outcome = stats.wilcoxon(
        differences,
        alternative="two-sided",
        method=stats.PermutationMethod(n_resamples=np.inf),
    )
    result.update(statistic=float(outcome.statistic), p=float(outcome.pvalue))
    return result


def minimum_wilcoxon_p(n_folds: int) -> float:
    """Smallest two-sided exact Wilcoxon signed-rank p attainable with n_folds pairs."""
    return 2.0 / 2**n_folds if n_folds > 0 else math.nan


# --------------------------------------------------------------------------------------------
# the stage


def summary_columns(reference: str = "t1") -> list[str]:
    """The exact column order of summary.csv."""
    columns = ["scenario", "kind", "n_patients", "auc", "auc_ci_low", "auc_ci_high"]
    columns += [metric for metric in METRICS if metric != "auc"]
    columns += [f"{metric}_ci_{side}" for metric in METRICS if metric != "auc" for side in ("low", "high")]
    columns += [f"{metric}_fold_{stat}" for metric in METRICS for stat in ("mean", "sd")]
    columns += [f"p_delong_vs_{reference}", f"p_delong_vs_{reference}_holm"]
    columns += [f"p_{test}_vs_{reference}" for test in ("mcnemar", "wilcoxon")]
    columns += ["p_delong_vs_best_image", "p_delong_vs_best_image_holm"]
    return columns


def order_scenarios(scenarios: Iterable[str], reference: str) -> list[str]:
    """Reference first, then the others by kind (``KINDS``) and name."""
    others = sorted(set(scenarios) - {reference}, key=lambda name: (KINDS.index(scenario_kind(name)), name))
    return [reference] + others


def per_fold_metrics(frame: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, list[str]]:
    """Metrics of every scenario within every fold, plus notes on the undefined ones."""
    rows, notes = [], []
    for (scenario, fold), group in frame.groupby(["scenario", "fold"], sort=True):
        values = classification_metrics(group["label"].to_numpy(), group["probability"].to_numpy(), threshold)
        if group["label"].nunique() < 2:
            notes.append(
                f"{scenario} fold {fold}: only class {int(group['label'].iloc[0])} among its "
                f"{len(group)} test patient(s); AUC, balanced accuracy and "
                f"{'sensitivity' if group['label'].iloc[0] == 0 else 'specificity'} are NaN in that fold"
            )
        rows.append({"scenario": scenario, "fold": int(fold), "n_patients": int(len(group)), **values})
    return pd.DataFrame(rows), notes


def evaluate_scenarios(frame: pd.DataFrame, cfg: dict, reference: str) -> dict[str, Any]:
    """Everything the outputs report, as plain data."""
    threshold = cfg["threshold"]
    scenarios = order_scenarios(frame["scenario"], reference)
    per_fold, notes = per_fold_metrics(frame, threshold)
    by_scenario = {
        name: group.sort_values("case_id").reset_index(drop=True) for name, group in frame.groupby("scenario")
    }
    reference_rows = by_scenario[reference]
    labels = reference_rows["label"].to_numpy()
    folds = sorted(frame["fold"].unique())
    results: dict[str, Any] = {}
    for scenario in scenarios:
        rows = by_scenario[scenario]
        probabilities = rows["probability"].to_numpy()
        folds_of_scenario = per_fold[per_fold["scenario"] == scenario].set_index("fold")
        entry: dict[str, Any] = {
            "n_patients": int(len(rows)),
            "pooled": classification_metrics(labels, probabilities, threshold),
            "ci": {},
            "fold_mean": {},
            "fold_sd": {},
            "confusion_matrix": confusion_counts(labels, probabilities, threshold),
        }
        for metric in METRICS:
            low, high = bootstrap_ci(
                labels, probabilities, metric, threshold, cfg["bootstrap"], cfg["ci"], cfg["ci_method"], cfg["seed"]
            )
            if math.isnan(low) or math.isnan(high):
                notes.append(
                    f"{scenario}: no bootstrap interval for {metric} (a class has < 2 patients or BCa is degenerate)"
                )
            entry["ci"][metric] = [low, high]
            values = folds_of_scenario[metric].dropna()
            entry["fold_mean"][metric] = float(values.mean()) if len(values) else math.nan
            entry["fold_sd"][metric] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        if scenario != reference:
            reference_probabilities = reference_rows["probability"].to_numpy()
            delong = delong_test(labels, probabilities, reference_probabilities)
            mcnemar = mcnemar_test(
                labels, reference_probabilities >= threshold, probabilities >= threshold
            )
            wilcoxon = wilcoxon_folds(
                folds_of_scenario["auc"], per_fold[per_fold["scenario"] == reference].set_index("fold")["auc"]
            )
            if math.isnan(wilcoxon["p"]):
                notes.append(
                    f"{scenario} vs {reference}: Wilcoxon p is NaN (no fold pairs or all fold AUC differences are zero)"
                )
            entry["vs_reference"] = {"delong": delong, "mcnemar": mcnemar, "wilcoxon": wilcoxon}
        results[scenario] = entry
    best_image = compare_with_best_image(results, by_scenario, labels)
    holm = holm_adjust(
        {name: entry["vs_reference"]["delong"]["p"] for name, entry in results.items() if in_holm_family(name, reference)}
    )
    for name, entry in results.items():
        if name != reference:
            entry["vs_reference"]["delong"]["p_holm"] = holm.get(name, math.nan)
    return {
        "scenarios": results,
        "best_image": best_image,
        "null_verdicts": null_verdicts(results, by_scenario, labels),
        "order": scenarios,
        "per_fold": per_fold,
        "folds": [int(fold) for fold in folds],
        "n_positive": int(labels.sum()),
        "n_negative": int(len(labels) - labels.sum()),
        "notes": notes,
    }


def compare_with_best_image(results: dict[str, Any], by_scenario: dict[str, pd.DataFrame], labels: np.ndarray) -> str:
    """DeLong of every scenario against the image scenario with the highest pooled AUC (raw and
    Holm over that family), stored as ``vs_best_image``; returns that scenario's name."""
    images = [name for name in results if scenario_kind(name) == "image"]
    best = max(images, key=lambda name: (results[name]["pooled"]["auc"], name))
    best_probabilities = by_scenario[best]["probability"].to_numpy()
    raw = {}
    for name, entry in results.items():
        if name != best:
            entry["vs_best_image"] = delong_test(labels, by_scenario[name]["probability"].to_numpy(), best_probabilities)
            if in_holm_family(name, best):
                raw[name] = entry["vs_best_image"]["p"]
    holm = holm_adjust(raw)
    for name, entry in results.items():
        if name != best:
            entry["vs_best_image"]["p_holm"] = holm.get(name, math.nan)
    return best


def in_holm_family(scenario: str, reference: str) -> bool:
    """Whether a comparison with ``reference`` counts towards its Holm family: every model but
    the reference itself and the null controls, which are checks, not findings (their raw p
    stands alone)."""
    return scenario != reference and scenario_kind(scenario) != "null_control"


def null_verdicts(results: dict[str, Any], by_scenario: dict[str, pd.DataFrame], labels: np.ndarray) -> list[dict]:
    """For each null control: does the recipe it shadows beat it, and does the best model that
    learned from true labels? (DeLong, two-sided, p < 0.05 with a higher AUC.)"""
    learned = [name for name in results if scenario_kind(name) != "null_control"]
    best = max(learned, key=lambda name: (results[name]["pooled"]["auc"], name))
    verdicts = []
    for null in (name for name in results if scenario_kind(name) == "null_control"):
        recipe = null.removeprefix("null_")
        for model in dict.fromkeys(name for name in (recipe, best) if name in results):
            test = delong_test(
                labels, by_scenario[model]["probability"].to_numpy(), by_scenario[null]["probability"].to_numpy()
            )
            beats = test["auc_difference"] > 0 and test["p"] < 0.05
            role = "recipe" if model == recipe else "best"
            verdicts.append({"model": model, "role": role, "null": null, "delong": test, "beats_null": bool(beats)})
    return verdicts


def summary_table(evaluation: dict[str, Any], reference: str) -> pd.DataFrame:
    rows = []
    for scenario in evaluation["order"]:
        entry = evaluation["scenarios"][scenario]
        row: dict[str, Any] = {"scenario": scenario, "kind": scenario_kind(scenario), "n_patients": entry["n_patients"]}
        for metric in METRICS:
            row[metric] = entry["pooled"][metric]
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = entry["ci"][metric]
            row[f"{metric}_fold_mean"] = entry["fold_mean"][metric]
            row[f"{metric}_fold_sd"] = entry["fold_sd"][metric]
        tests = entry.get("vs_reference")
        row[f"p_delong_vs_{reference}"] = tests["delong"]["p"] if tests else math.nan
        row[f"p_delong_vs_{reference}_holm"] = tests["delong"]["p_holm"] if tests else math.nan
        versus_best = entry.get("vs_best_image")
        row["p_delong_vs_best_image"] = versus_best["p"] if versus_best else math.nan
        row["p_delong_vs_best_image_holm"] = versus_best["p_holm"] if versus_best else math.nan
        row[f"p_mcnemar_vs_{reference}"] = tests["mcnemar"]["p"] if tests else math.nan
        row[f"p_wilcoxon_vs_{reference}"] = tests["wilcoxon"]["p"] if tests else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=summary_columns(reference))


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined values become null."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fmt_p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def method_note(cfg: dict, reference: str, n_folds: int) -> str:
    ci_name = "percentile" if cfg["ci_method"] == "percentile" else "bias-corrected and accelerated (BCa)"
    return (
        f"Each patient's probability is the {cfg['aggregation']} of its slice probabilities "
        f"(column `{cfg['probability_column']}`), predicted by the one fold model that did not train on it; "
        f"a patient is called HE-positive when this probability is >= {cfg['threshold']:g} "
        "(fixed in advance, not tuned). Pooled metrics use all out-of-fold predictions together; fold "
        f"metrics are computed within each of the {n_folds} test folds and summarised as mean ± SD (SD with "
        "n - 1). AUC is the empirical area under the ROC curve of the probabilities (sklearn). "
        f"{cfg['ci'] * 100:g} % confidence intervals are {ci_name} bootstrap intervals over patients "
        f"(scipy.stats.bootstrap, {cfg['bootstrap']} resamples, seed {cfg['seed']}), resampling positives and "
        "negatives separately so every resample contains both classes; all scenarios share the same "
        f"resamples. Each scenario is compared with {reference} on the same patients: DeLong's test for two "
        "correlated AUCs (fast midrank algorithm of Sun & Xu 2014), McNemar's exact test on per-patient "
        "correctness at the threshold (binomial test on the discordant pairs), and the Wilcoxon signed-rank "
        f"test over the per-fold AUCs (with {n_folds} folds the smallest attainable two-sided p is "
        f"{minimum_wilcoxon_p(n_folds):.4g}; exact sign-flip distribution, also with tied differences). "
        "Every scenario is also compared with the image scenario of highest pooled AUC (DeLong). All tests are "
        "two-sided; Holm-adjusted DeLong p-values (family: all comparisons against the same scenario, null "
        "controls left out) stand beside the raw ones. Baselines (volume, radiomics, clinical NCCT markers) and the fusion are patient-level models fitted on "
        "each fold's training and validation patients; a null control is an image scenario trained on labels "
        "permuted within each fold's training and validation patients and scored against the true labels: "
        "its AUC is what that recipe reaches without learning from labels."
    )


def null_sentences(evaluation: dict[str, Any]) -> list[str]:
    """The answer to "does the best model beat a model trained on shuffled labels?", in words."""
    lines = []
    for verdict in evaluation["null_verdicts"]:
        test = verdict["delong"]
        outcome = "beats" if verdict["beats_null"] else "does **not** beat"
        who = (
            f"{verdict['model']} (AUC {test['auc_a']:.3f}), trained as the null control but on the true labels,"
            if verdict["role"] == "recipe"
            else f"The best model, {verdict['model']} (AUC {test['auc_a']:.3f}),"
        )
        lines.append(
            f"**Null control.** {who} {outcome} the null control "
            f"{verdict['null']} (AUC {test['auc_b']:.3f} against the true labels; ΔAUC "
            f"{test['auc_difference']:+.3f}, DeLong p {_fmt_p(test['p'])})."
        )
    return lines


def summary_markdown(
    evaluation: dict[str, Any], summary: pd.DataFrame, cfg: dict, reference: str, sensitivity: pd.DataFrame | None = None
) -> str:
    n_folds = len(evaluation["folds"])
    lines = [
        "# Hematoma expansion prediction: statistics",
        "",
        f"{int(summary['n_patients'].iloc[0])} patients ({evaluation['n_positive']} HE, "
        f"{evaluation['n_negative']} no HE), {n_folds} folds. Aggregation: **{cfg['aggregation']}** of slice "
        f"probabilities; threshold: **{cfg['threshold']:g}**; reference scenario: **{reference}**.",
        "",
        f"## Pooled out-of-fold metrics ({cfg['ci'] * 100:g} % bootstrap CI)",
        "",
        "| scenario | " + " | ".join(METRIC_LABELS[metric] for metric in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for _, row in summary.iterrows():
        cells = [
            f"{_fmt(row[metric])} ({_fmt(row[f'{metric}_ci_low'])}–{_fmt(row[f'{metric}_ci_high'])})"
            for metric in METRICS
        ]
        lines.append(f"| {row['scenario']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per-fold metrics (mean ± SD over folds)",
        "",
        "| scenario | " + " | ".join(METRIC_LABELS[metric] for metric in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for _, row in summary.iterrows():
        cells = [f"{_fmt(row[f'{metric}_fold_mean'])} ± {_fmt(row[f'{metric}_fold_sd'])}" for metric in METRICS]
        lines.append(f"| {row['scenario']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Paired tests against {reference}",
        "",
        "| scenario | ΔAUC | p DeLong | p DeLong (Holm) | McNemar b / c | p McNemar | p Wilcoxon (fold AUC) |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in evaluation["order"]:
        tests = evaluation["scenarios"][scenario].get("vs_reference")
        if tests is None:
            lines.append(f"| {scenario} (reference) | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {scenario} | {tests['delong']['auc_difference']:+.3f} | {_fmt_p(tests['delong']['p'])} | "
            f"{_fmt_p(tests['delong']['p_holm'])} | "
            f"{tests['mcnemar']['b']} / {tests['mcnemar']['c']} | {_fmt_p(tests['mcnemar']['p'])} | "
            f"{_fmt_p(tests['wilcoxon']['p'])} |"
        )
    best = evaluation["best_image"]
    lines += [
        "",
        f"## Paired DeLong tests against the best image scenario ({best})",
        "",
        "| scenario | ΔAUC | p DeLong | p DeLong (Holm) |",
        "|---|---|---|---|",
    ]
    for scenario in evaluation["order"]:
        test = evaluation["scenarios"][scenario].get("vs_best_image")
        if test is None:
            lines.append(f"| {scenario} (best image scenario) | – | – | – |")
            continue
        lines.append(
            f"| {scenario} | {test['auc_difference']:+.3f} | {_fmt_p(test['p'])} | {_fmt_p(test['p_holm'])} |"
        )
    lines += ["", *null_sentences(evaluation)]
    if sensitivity is not None:
        lines += [
            "",
            "## Sensitivity: other patient rules (not the pre-specified analysis)",
            "",
            f"Pooled AUC of every scenario under each rule; the analysis above uses **{cfg['aggregation']}**, "
            "fixed before the run. Patient-level models (baselines) have one probability and read the same "
            "under every rule.",
            "",
            "| scenario | " + " | ".join(sensitivity.columns) + " |",
            "|---|" + "---|" * len(sensitivity.columns),
        ]
        for scenario, row in sensitivity.iterrows():
            lines.append(f"| {scenario} | " + " | ".join(_fmt(value) for value in row) + " |")
    lines += ["", "## Method", "", method_note(cfg, reference, n_folds), ""]
    if evaluation["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in evaluation["notes"]] + [""]
    return "\n".join(lines)


def roc_figure(frame: pd.DataFrame, order: list[str], summary: pd.DataFrame):
    """ROC curves of every scenario on the pooled out-of-fold predictions."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no display needed

    figure = Figure(figsize=(5.5, 5.0))
    axes = figure.add_subplot(1, 1, 1)
    aucs = summary.set_index("scenario")["auc"]
    for scenario in order:
        rows = frame[frame["scenario"] == scenario]
        points = roc_points(rows["label"].to_numpy(), rows["probability"].to_numpy())
        axes.plot(points["fpr"], points["tpr"], label=f"{scenario} (AUC {aucs[scenario]:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    axes.set_xlabel("1 - specificity (false positive rate)")
    axes.set_ylabel("sensitivity (true positive rate)")
    axes.set_title("Pooled out-of-fold ROC")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def rule_sensitivity(prediction_files: list[Path], order: list[str]) -> pd.DataFrame:
    """Pooled AUC of every scenario (rows, in ``order``) under every patient rule (columns)."""
    columns = {}
    for rule, column in RULE_COLUMNS.items():
        frame = load_predictions(prediction_files, column)
        columns[rule] = {
            scenario: float(skm.roc_auc_score(group["label"], group["probability"]))
            for scenario, group in frame.groupby("scenario")
        }
    return pd.DataFrame(columns).loc[order]


def run_statistics(prediction_files: list[Path], cfg: dict, out_dir: Path, reference: str = "t1") -> pd.DataFrame:
    """The statistics stage: read every predictions_patients.csv, write the reports, return the summary.

    Writes to ``out_dir``: summary.csv (one row per scenario, columns of ``summary_columns``),
    per_fold.csv, rule_sensitivity.csv (pooled AUC under every patient rule), metrics.json
    (everything, with the configuration used), summary.md, roc.png.
    """
    settings = resolve_config(cfg)
    out_dir = Path(out_dir)
    frame = load_predictions(prediction_files, settings["probability_column"])
    check_pairing(frame, reference)
    evaluation = evaluate_scenarios(frame, settings, reference)
    summary = summary_table(evaluation, reference)
    sensitivity = rule_sensitivity(prediction_files, evaluation["order"])

    metrics = {
        "config": {**settings, "reference": reference},
        "inputs": sorted(str(Path(path)) for path in prediction_files),
        "n_patients": int(summary["n_patients"].iloc[0]),
        "n_positive": evaluation["n_positive"],
        "n_negative": evaluation["n_negative"],
        "folds": evaluation["folds"],
        "minimum_wilcoxon_p": minimum_wilcoxon_p(len(evaluation["folds"])),
        "scenarios": {
            scenario: {
                **entry,
                "per_fold": evaluation["per_fold"][evaluation["per_fold"]["scenario"] == scenario]
                .drop(columns="scenario")
                .to_dict(orient="records"),
            }
            for scenario, entry in evaluation["scenarios"].items()
        },
        "best_image": evaluation["best_image"],
        "null_verdicts": evaluation["null_verdicts"],
        "rule_sensitivity_auc": sensitivity.to_dict(orient="index"),
        "method": method_note(settings, reference, len(evaluation["folds"])),
        "notes": evaluation["notes"],
    }
    per_fold = evaluation["per_fold"][["scenario", "fold", "n_patients", *METRICS]]
    write_csv(out_dir / "per_fold.csv", per_fold)
    write_json(out_dir / "metrics.json", _finite_or_none(metrics))
    write_csv(out_dir / "rule_sensitivity.csv", sensitivity.rename_axis("scenario").reset_index())
    write_text(out_dir / "summary.md", summary_markdown(evaluation, summary, settings, reference, sensitivity))
    save_figure(out_dir / "roc.png", roc_figure(frame, evaluation["order"], summary))
    write_csv(out_dir / "summary.csv", summary)
    return summary
