"""How well ``hepred.markers`` reads the simulator's latent markers from the images, on a
finished run's (or a development cohort's) marker features.

Per latent marker: the marker feature that follows it best (Spearman) and the share of its
variance all features explain (R^2, 5-fold CV ridge). Then the markers model of the workflow
(``hepred.baselines.build_estimator``) against a logistic model of the true markers and log
volume, both in the same repeated stratified 5-fold CV: the gap is what the images, as read,
lose of the markers. Repeats make the figure steadier than the run's one set of folds, so
that features can be compared on development cohorts (never on the cohort reported).

    python benchmarks/bench_markers.py --results /tmp/dev7_results --data /tmp/dev7
"""

from __future__ import annotations

from pathlib import Path

import harness
import numpy as np
import pandas as pd
from harness import Figure
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PowerTransformer

from hepred.baselines import build_estimator, read_feature_table
from hepred.markers import MARKER_FEATURES
from hepred.simulate import MARKERS, load_truth


def repeated_cv_auc(features: pd.DataFrame, labels: np.ndarray, model: str, repeats: int) -> float:
    """Mean over repeats of the pooled out-of-fold AUC of ``build_estimator(model)``."""
    aucs = []
    for repeat in range(repeats):
        logits = np.zeros(len(labels))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=repeat).split(features, labels):
            fitted = build_estimator(model, 5, repeat).fit(features.iloc[train], labels[train])
            logits[test] = fitted.decision_function(features.iloc[test])
        aucs.append(roc_auc_score(labels, logits))
    return float(np.mean(aucs))


def measure(results: Path, data: Path, repeats: int) -> list[Figure]:
    features = read_feature_table(sorted((results / "markers").glob("*/features.csv")))[list(MARKER_FEATURES)]
    truth = load_truth(data).set_index("case_id").loc[features.index]
    labels = truth["label"].to_numpy()
    figures = []
    for marker in MARKERS:
        target = truth[marker].to_numpy(dtype=float)
        spearman = features.apply(lambda column: pd.Series(column.to_numpy()).corr(pd.Series(target), method="spearman"))
        best = spearman.abs().idxmax()
        ridge = make_pipeline(PowerTransformer(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        predicted = cross_val_predict(ridge, features, target, cv=KFold(5, shuffle=True, random_state=0))
        explained = 1 - np.mean((predicted - target) ** 2) / np.var(target)
        figures.append(Figure(f"{marker}_spearman", float(spearman[best]), note=best))
        figures.append(Figure(f"{marker}_cv_r2", float(explained)))
    true_markers = truth[list(MARKERS)].assign(log_volume=np.log(truth["baseline_volume_ml"]))
    note = f"{len(labels)} patients, {int(labels.sum())} HE, {repeats} x 5-fold CV"
    figures.append(Figure("oracle_auc", float(roc_auc_score(labels, truth["latent_probability"])), note=note))
    figures.append(Figure("true_marker_model_auc", repeated_cv_auc(true_markers, labels, "volume", repeats)))
    figures.append(Figure("markers_model_auc", repeated_cv_auc(features, labels, "markers", repeats)))
    return figures


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--results", type=Path, default=harness.REPO / "benchmark_results")
    parser.add_argument("--data", type=Path, default=harness.REPO / "benchmark_data", help="the simulated cohort (its truth.csv)")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    harness.finish(measure(args.results, args.data, repeats), args.json, f"markers read from {args.results}")


if __name__ == "__main__":
    main()
