"""Does each synthetic CT carry its label? Class fidelity, train-on-synthetic and marker
fidelity of one fold's synthetic versions, against the fold's real cases.

A synthetic version helps the classifier only if the features the label depends on survive
synthesis. Three checks, per fold, on the training cache's grid (the images the generator
learned from and the classifier trains on), on the slices synthesis repaints:

- class fidelity: the radiomics model (``hepred.baselines``, the same recipe as the radiomics
  row) fitted on the fold's real training cases scores the synthetic versions, each by the
  model fitted without its source case; the AUC of their labels, beside the out-of-fold AUC
  of the same models on the real training cases;
- train on synthetic, test on real (TSTR): the same recipe fitted on the synthetic versions
  only, scored on the fold's real validation patients, beside the model fitted on the real
  training cases (TRTR);
- marker fidelity: the lesion features that carry the expansion signal (density spread,
  hypodense fraction, shape irregularity, volume; ``hepred.markers``) for real and synthetic
  lesions per label, with the standardised difference between labels in each: a synthetic set
  that flattens the differences between labels shows it here.

No generator or classifier is chosen from these figures: they describe the synthetic data.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from hepred import io  # noqa: E402
from hepred.baselines import baseline_logits, fit_baseline, out_of_fold_logits  # noqa: E402
from hepred.errors import HepredError  # noqa: E402
from hepred.markers import array_markers  # noqa: E402
from hepred.radiomics import array_features  # noqa: E402
from hepred.synth.data import _load_array, case_label, load_case_slab  # noqa: E402

logger = logging.getLogger(__name__)

# The markers shown (a subset of hepred.markers.MARKER_FEATURES, one per sign).
SHOWN_MARKERS = {
    "density_sd_hu": "density SD (HU)",
    "hypodense_fraction": "hypodense fraction",
    "solidity": "solidity (1 = convex)",
    "log_volume_ml": "log volume (mL)",
}
GROUPS = ("real", "synthetic")


def _volumes(preprocess_dir: Path, manifest_path: Path, fold: dict, labels: dict[str, int], min_lesion_pixels: int,
             log: logging.Logger) -> list[dict]:
    """(group, case, label, HU, lesion, spacing) of the real training and validation cases (the
    slices synthesis uses) and of every synthetic version in the manifest."""
    volumes = []
    for group, cases in (("real", fold["train"]), ("validation", fold["val"])):
        for case in cases:
            slab = load_case_slab(preprocess_dir, case, case_label(labels, case), min_lesion_pixels)
            if slab is None:
                log.warning("case %s: no slice with %d lesion pixels; not in the fidelity checks", case,
                            min_lesion_pixels)
                continue
            volumes.append({"group": group, "case_id": case, "source_case": case, "label": slab.label,
                            "hu": slab.hu, "lesion": slab.lesion, "spacing": slab.spacing_mm})
    spacing = {volume["case_id"]: volume["spacing"] for volume in volumes}
    try:
        manifest = pd.read_csv(manifest_path, dtype={"synthetic_id": str, "source_case": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise HepredError(f"cannot read synthetic manifest: {str(error).splitlines()[0]}", path=manifest_path) from None
    folder = Path(manifest_path).parent
    for row in manifest.itertuples(index=False):
        if row.source_case not in spacing:
            raise HepredError("synthetic version of a case that is not a training case of this fold",
                              case_id=row.synthetic_id, path=manifest_path)
        volumes.append({
            "group": "synthetic", "case_id": row.synthetic_id, "source_case": row.source_case, "label": int(row.label),
            "hu": _load_array(folder / f"{row.synthetic_id}_hu.npy", row.synthetic_id, np.int16),
            "lesion": _load_array(folder / f"{row.synthetic_id}_lesion.npy", row.synthetic_id, np.uint8),
            "spacing": spacing[row.source_case],
        })
    return volumes


def fidelity_features(volumes: list[dict], radiomics_settings: dict, log: logging.Logger) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per volume: who it is (group, case, source, label), its radiomics row and its markers row.
    A volume whose lesion is empty (a generator may erase a tiny lesion), or whose markers are
    refused (no brain around the lesion), is left out with a warning."""
    meta, radiomics, markers = [], [], []
    for volume in volumes:
        if not np.any(volume["lesion"]):
            log.warning("%s %s: empty lesion on the synthesised slices; not in the fidelity checks",
                        volume["group"], volume["case_id"])
            continue
        try:
            marker_row = array_markers(volume["hu"], volume["lesion"], volume["spacing"], volume["case_id"])
        except HepredError as error:
            log.warning("%s %s: %s; not in the fidelity checks", volume["group"], volume["case_id"], error.message)
            continue
        meta.append({key: volume[key] for key in ("group", "case_id", "source_case", "label")})
        radiomics.append(array_features(volume["hu"], volume["lesion"], volume["spacing"], volume["case_id"],
                                        radiomics_settings))
        markers.append(marker_row)
    meta = pd.DataFrame(meta).set_index("case_id")
    return meta, pd.concat(radiomics).set_index("case_id"), pd.concat(markers).set_index("case_id")


def _auc(labels: pd.Series, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if labels.nunique() == 2 else math.nan


def source_held_out_logits(features: pd.DataFrame, meta: pd.DataFrame, real: list[str], synthetic: list[str],
                           folds: int, seed: int) -> pd.Series:
    """Each real training case, and each synthetic version of it, scored by the radiomics recipe
    fitted without that case (``hepred.baselines.out_of_fold_logits``, the versions tied to their
    source).

    A version is a near copy of its source: scored by a model that saw the source, it would be
    scored in-sample, and class fidelity would beat the real cases' out-of-fold reference
    merely by that. Held out together, both figures are out-of-sample and compare."""
    position = {case: index for index, case in enumerate(real)}
    logits = out_of_fold_logits(
        "radiomics", features.loc[real].to_numpy(), meta.loc[real, "label"].to_numpy().astype(int), folds, seed,
        companions=features.loc[synthetic].to_numpy(),
        owners=np.array([position[source] for source in meta.loc[synthetic, "source_case"]], dtype=int),
    )
    return pd.Series(logits, index=real + synthetic)


def class_fidelity(meta: pd.DataFrame, radiomics: pd.DataFrame, inner_folds: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """Class fidelity and TSTR AUCs with their real-data references (see the module's docstring),
    and each volume's logits, so that the folds can be pooled: from the model fitted on the real
    training cases (for those cases and their synthetic versions, the one fitted without the
    source case, ``source_held_out_logits``) and from the one fitted on synthetic versions."""
    labels = meta["label"].astype(int).to_dict()
    real = meta.index[meta["group"] == "real"].tolist()
    synthetic = meta.index[meta["group"] == "synthetic"].tolist()
    validation = meta.index[meta["group"] == "validation"].tolist()
    scores = {"synthetic_versions": len(synthetic), "real_training_cases": len(real),
              "real_validation_cases": len(validation), "class_fidelity_auc": math.nan,
              "class_fidelity_real_reference_auc": math.nan, "trtr_validation_auc": math.nan,
              "tstr_validation_auc": math.nan, "notes": []}
    logits = meta[["group", "source_case", "label"]].copy()
    logits["real_model_logit"] = logits["synthetic_model_logit"] = math.nan
    # A fold too small for the radiomics recipe (3 of each class) gets no figure, with the reason:
    # a QC check must not stop the run.
    def fitted_on(cases: list[str], what: str) -> dict | None:
        try:
            return fit_baseline("radiomics", radiomics, labels, cases, inner_folds, seed, out_of_fold=False)
        except HepredError as error:
            scores["notes"].append(f"no model of the {what}: {error.message}")
            return None

    on_real = fitted_on(real, "real training cases")
    if on_real is not None:
        logits["real_model_logit"] = baseline_logits(on_real, radiomics, logits.index.tolist())
        held_out = source_held_out_logits(radiomics.loc[:, on_real["columns"]], meta, real, synthetic,
                                          on_real["inner_folds"], seed)
        logits.loc[held_out.index, "real_model_logit"] = held_out
        scores["class_fidelity_auc"] = _auc(meta.loc[synthetic, "label"], logits.loc[synthetic, "real_model_logit"])
        scores["class_fidelity_real_reference_auc"] = _auc(meta.loc[real, "label"], logits.loc[real, "real_model_logit"])
        scores["trtr_validation_auc"] = _auc(meta.loc[validation, "label"], logits.loc[validation, "real_model_logit"])
    on_synthetic = fitted_on(synthetic, "synthetic versions")
    if on_synthetic is not None:
        logits["synthetic_model_logit"] = baseline_logits(on_synthetic, radiomics, logits.index.tolist())
        scores["tstr_validation_auc"] = _auc(meta.loc[validation, "label"], logits.loc[validation, "synthetic_model_logit"])
    for note in scores["notes"]:
        logger.warning("fidelity: %s", note)
    return scores, logits


def marker_fidelity(meta: pd.DataFrame, markers: pd.DataFrame) -> pd.DataFrame:
    """Per marker and group (real training cases, synthetic versions): mean and SD per label, and
    the standardised difference between labels (expanded minus not, over the pooled SD)."""
    rows = []
    table = markers.join(meta[["group", "label"]])
    for marker in markers.columns:
        for group in GROUPS:
            values = table[table["group"] == group]
            by_label = {label: values.loc[values["label"] == label, marker].astype(float) for label in (0, 1)}
            pooled_sd = math.sqrt((by_label[0].var(ddof=1) + by_label[1].var(ddof=1)) / 2) if all(
                len(v) > 1 for v in by_label.values()) else math.nan
            rows.append({
                "marker": marker, "group": group, "n_no_expansion": len(by_label[0]), "n_expansion": len(by_label[1]),
                "mean_no_expansion": by_label[0].mean(), "sd_no_expansion": by_label[0].std(ddof=1),
                "mean_expansion": by_label[1].mean(), "sd_expansion": by_label[1].std(ddof=1),
                "label_difference_sd": (by_label[1].mean() - by_label[0].mean()) / pooled_sd
                if pooled_sd and np.isfinite(pooled_sd) else math.nan,
            })
    return pd.DataFrame(rows)


def plot_markers(meta: pd.DataFrame, markers: pd.DataFrame, out_png: Path, title: str) -> None:
    """One panel per shown marker: real and synthetic lesions side by side, per label."""
    table = markers.join(meta[["group", "label"]])
    figure, axes = plt.subplots(1, len(SHOWN_MARKERS), figsize=(3.2 * len(SHOWN_MARKERS), 3.2), layout="constrained")
    positions, colours = [0.8, 1.2, 1.8, 2.2], {"real": "#4477aa", "synthetic": "#ee6677"}
    for axis, (marker, name) in zip(axes, SHOWN_MARKERS.items()):
        data, where, colour = [], [], []
        for index, (label, group) in enumerate([(0, "real"), (0, "synthetic"), (1, "real"), (1, "synthetic")]):
            values = table.loc[(table["label"] == label) & (table["group"] == group), marker].astype(float)
            if len(values):
                data.append(values.to_numpy())
                where.append(positions[index])
                colour.append(colours[group])
        boxes = axis.boxplot(data, positions=where, widths=0.35, patch_artist=True, showfliers=False)
        for patch, tone in zip(boxes["boxes"], colour):
            patch.set_facecolor(tone)
            patch.set_alpha(0.6)
        axis.set_xticks([1, 2], ["no expansion", "expansion"])
        axis.set_title(name, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[group], alpha=0.6) for group in GROUPS]
    figure.legend(handles, ["real training cases", "synthetic versions"], loc="outside lower center", ncol=2, fontsize=8)
    figure.suptitle(title, fontsize=10)
    with io.atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def write_fidelity(
    preprocess_dir: Path,
    manifest_path: Path,
    fold_index: int,
    fold: dict,
    labels: dict[str, int],
    min_lesion_pixels: int,
    radiomics_settings: dict,
    method: str,
    out_dir: Path,
    seed: int,
    log: logging.Logger = logger,
) -> dict:
    """fidelity.json, fidelity_logits.csv, marker_fidelity.csv, markers.csv and markers.png of one
    fold in ``out_dir``."""
    out_dir = Path(out_dir)
    volumes = _volumes(Path(preprocess_dir), Path(manifest_path), fold, labels, min_lesion_pixels, log)
    meta, radiomics, markers = fidelity_features(volumes, radiomics_settings, log)
    aucs, logits = class_fidelity(meta, radiomics, int(radiomics_settings["inner_folds"]), seed)
    scores = {"fold": fold_index, "method": method, **aucs}
    logits.insert(0, "fold", fold_index)
    io.write_csv(out_dir / "fidelity_logits.csv", logits.reset_index())
    summary = marker_fidelity(meta, markers)
    io.write_csv(out_dir / "markers.csv", meta.join(markers).reset_index())
    io.write_csv(out_dir / "marker_fidelity.csv", summary)
    plot_markers(meta, markers, out_dir / "markers.png",
                 f"fold {fold_index}: lesion markers of real and {method} synthetic CT")
    io.write_json(out_dir / "fidelity.json", scores)
    log.info(
        "fold %d fidelity (%s): class fidelity AUC %.3f (real out-of-fold %.3f); TSTR %.3f vs TRTR %.3f on %d "
        "validation patients",
        fold_index, method, scores["class_fidelity_auc"], scores["class_fidelity_real_reference_auc"],
        scores["tstr_validation_auc"], scores["trtr_validation_auc"], scores["real_validation_cases"],
    )
    return scores
