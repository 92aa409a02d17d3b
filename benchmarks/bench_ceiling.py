"""Where a simulated cohort's AUC is lost, rung by rung, on the finished run's own folds.

1. oracle: the latent expansion probability the labels were drawn from (no model can beat it);
2. true markers: a logistic model of the simulator's markers and log volume, fitted on each
   fold's training and validation cases: what a perfect reader of the markers would reach;
3. lesion features: the same logistic model on hand-made features of the lesion in the
   classifier's own cache (HU distribution inside the hematoma, outline, parts): what a simple
   radiomics model sees in the images;
4. every row's pooled AUC from ``statistics/summary.csv``: image scenarios, fusion, the volume
   and radiomics baselines and the null control.

The gap between rungs 1 and 2 is the price of learning from this many patients, between 2 and
3 what the images (as rendered and resampled) hide of the markers, between 3 and 4 what the
network misses of what is visible.

    python benchmarks/bench_ceiling.py --results benchmark_results --data benchmark_data
"""

from __future__ import annotations

import json
from pathlib import Path

import harness
import numpy as np
import pandas as pd
from harness import Figure
from scipy import ndimage
from scipy.spatial import ConvexHull
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hepred.labels import read_labels
from hepred.simulate import MARKERS, cohort_difficulty, load_truth

# Below clotted blood (50-90 HU in the simulator): the blend sign's hypodense part and
# swirl-like islands; the lesion rim is eroded first so that partial volume with brain does
# not count.
HYPODENSE_HU = 46.0
DENSE_HU = 55.0
SMOOTH_MM = 1.5
MIN_SLICE_PIXELS = 8


def _outline_features(lesion: np.ndarray) -> tuple[float, float]:
    """Area-weighted mean solidity and circularity (perimeter² / 4π area) of the lesion's slices."""
    solidity, circularity, weights = [], [], []
    for plane in lesion:
        area = int(plane.sum())
        if area < MIN_SLICE_PIXELS:
            continue
        rows, cols = np.nonzero(plane)
        # Pixel corners, so the hull of a one-pixel-wide lesion still has an area.
        corners = np.concatenate([np.stack([rows + dr, cols + dc], 1) for dr in (0, 1) for dc in (0, 1)])
        solidity.append(area / ConvexHull(corners).volume)
        perimeter = int((plane & ~ndimage.binary_erosion(plane)).sum())
        circularity.append(perimeter**2 / (4 * np.pi * area))
        weights.append(area)
    if not weights:
        return 1.0, 1.0
    return float(np.average(solidity, weights=weights)), float(np.average(circularity, weights=weights))


def lesion_features(hu: np.ndarray, lesion: np.ndarray, pixel_mm: float) -> dict[str, float]:
    """Hand-made features of one case's hematoma from its cache arrays ([z, y, x] HU and mask)."""
    lesion = lesion > 0
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), (0, SMOOTH_MM / pixel_mm, SMOOTH_MM / pixel_mm))
    core = ndimage.binary_erosion(lesion, structure=np.ones((1, 3, 3)))
    values = smooth[core] if core.sum() >= 20 else smooth[lesion]
    dense = values[values > DENSE_HU]
    hypodense = np.zeros_like(lesion)
    hypodense[core if core.sum() >= 20 else lesion] = values < HYPODENSE_HU
    parts, n_parts = ndimage.label(hypodense)
    part_sizes = np.bincount(parts.ravel())[1:]
    solidity, circularity = _outline_features(lesion)
    return {
        "hypodense_fraction": float((values < HYPODENSE_HU).mean()),
        "largest_hypodense_part": float(part_sizes.max() / values.size) if n_parts else 0.0,
        "hypodense_parts": float(n_parts),
        "dense_iqr": float(np.subtract(*np.percentile(dense, [75, 25]))) if dense.size > 10 else 0.0,
        "dense_sd": float(dense.std()) if dense.size > 10 else 0.0,
        "median_hu": float(np.median(values)),
        "lesion_parts": float(ndimage.label(lesion)[1]),
        "solidity": solidity,
        "circularity": circularity,
        "log_volume": float(np.log(lesion.sum())),
    }


def cache_features(preprocess_dir: Path, case_ids: list[str]) -> pd.DataFrame:
    rows = {}
    for case_id in case_ids:
        case_dir = preprocess_dir / case_id
        pixel_mm = json.loads((case_dir / "info.json").read_text())["spacing_mm"][0]
        rows[case_id] = lesion_features(np.load(case_dir / "hu.npy"), np.load(case_dir / "lesion.npy"), pixel_mm)
    return pd.DataFrame.from_dict(rows, orient="index")


def out_of_fold_auc(features: pd.DataFrame, labels: pd.Series, folds: list[dict]) -> float:
    """Pooled AUC of a standardised logistic model fitted on each fold's training + validation cases."""
    predictions = []
    for fold in folds:
        fitted_on = fold["train"] + fold["val"]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(features.loc[fitted_on].to_numpy(), labels.loc[fitted_on].to_numpy())
        tested = features.loc[fold["test"]].to_numpy()
        predictions.append(pd.Series(model.predict_proba(tested)[:, 1], index=fold["test"]))
    pooled = pd.concat(predictions)
    return float(roc_auc_score(labels.loc[pooled.index], pooled))


def measure(results: Path, data: Path) -> list[Figure]:
    labels = pd.Series(read_labels(results / "labels.csv"))
    folds = json.loads((results / "folds" / "splits.json").read_text())["folds"]
    truth = load_truth(data).set_index("case_id").loc[labels.index]
    if not (truth["label"] == labels).all():
        raise SystemExit(f"{results / 'labels.csv'} does not match {data / 'truth.csv'}: another cohort?")
    markers = truth[list(MARKERS)].assign(log_volume=np.log(truth["baseline_volume_ml"]))
    oracle = cohort_difficulty(data)["oracle_auc"]
    figures = [
        Figure("oracle_auc", oracle, note=f"{len(labels)} patients, {int(labels.sum())} HE"),
        Figure("true_marker_model_auc", out_of_fold_auc(markers, labels, folds)),
        Figure(
            "lesion_feature_model_auc",
            out_of_fold_auc(cache_features(results / "preprocess", list(labels.index)), labels, folds),
        ),
    ]
    summary = pd.read_csv(results / "statistics" / "summary.csv").set_index("scenario")
    figures += [
        Figure(f"{row['kind']}_{scenario}_auc", float(row["auc"])) for scenario, row in summary.iterrows()
    ]
    learned = summary.loc[summary["kind"] != "null_control", "auc"]
    figures.append(
        Figure("best_model_gap_to_oracle", oracle - float(learned.max()), note=learned.idxmax(), target="<= 0.05")
    )
    return figures


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--results", type=Path, default=harness.REPO / "benchmark_results")
    parser.add_argument(
        "--data", type=Path, default=harness.REPO / "benchmark_data", help="the simulated cohort (its truth.csv)"
    )
    args = parser.parse_args()
    harness.finish(measure(args.results, args.data), args.json, f"AUC ceiling of {args.results}")


if __name__ == "__main__":
    main()
