"""Reference models reported beside the image scenarios, on the same folds: lesion volume, a
radiomics model, a model of the clinical NCCT markers (``hepred.markers``), and the fusion of
these models with an image scenario.

A reviewer's first questions about a deep model are whether it beats what needs no deep
learning (lesion volume, radiomics) and whether it beats itself trained on noise (the null
control, ``hepred.classifier.train.permuted_labels``). These models answer the first; they
write the same ``predictions_patients.csv`` as the image scenarios so the statistics stage,
its paired tests and the report treat every row alike.

Each is fitted on the fold's training and validation patients (no early stopping needs the
validation patients here) and scores the fold's test patients, which it never saw.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PowerTransformer, StandardScaler

from hepred import io
from hepred.errors import HepredError
from hepred.markers import MARKER_FEATURES
from hepred.patient_rules import PATIENT_COLUMNS, PATIENT_RULES, RULE_COLUMNS
from hepred.radiomics import VOLUME_FEATURE

logger = logging.getLogger(__name__)

BASELINE_MODELS = ("volume", "radiomics", "markers")
FUSION = "fusion"
# The penalties LogisticRegressionCV chooses from (inverse L2 strength), strongest first.
PENALTY_GRID = np.logspace(-4, 2, 13)
# Probabilities are clipped this far from 0 and 1 before taking logits (an overconfident
# image model writes exact 0s and 1s).
PROBABILITY_EPSILON = 1e-9


# --------------------------------------------------------------------------------------------
# the feature table


def read_feature_table(paths: list[Path]) -> pd.DataFrame:
    """Every case's feature row of one kind (radiomics or markers), indexed by case_id."""
    frames = []
    for path in paths:
        try:
            # keep_default_na: a case id such as NA or null is an id, not a missing value.
            frames.append(pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False, na_values=[""]))
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise HepredError(f"cannot read features: {str(error).splitlines()[0]}", path=path) from None
    table = pd.concat(frames, ignore_index=True).set_index("case_id")
    if table.index.duplicated().any():
        case = table.index[table.index.duplicated()][0]
        files = [str(path) for path, frame in zip(paths, frames) if case in set(frame["case_id"])]
        raise HepredError(f"appears in more than one feature file ({', '.join(files)})", case_id=case, path=files[0])
    return table


def case_features(radiomics_files: list[Path], marker_files: list[Path] = ()) -> pd.DataFrame:
    """Each case's radiomics row joined with its markers row (when marker files are given)."""
    table = read_feature_table(radiomics_files)
    if marker_files:
        table = table.join(read_feature_table(marker_files), how="outer")
    return table


def model_features(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The columns ``model`` is fitted on: log volume (mL) alone, every radiomics feature, or the
    clinical markers."""
    if model == "volume":
        return pd.DataFrame({"log_volume_ml": np.log(table[VOLUME_FEATURE] / 1000.0)}, index=table.index)
    if model == "radiomics":
        return table.drop(columns=[column for column in MARKER_FEATURES if column in table]).astype(float)
    if model == "markers":
        absent = [column for column in MARKER_FEATURES if column not in table]
        if absent:
            raise HepredError(
                f"markers: no marker features ({absent[0]} missing; written by an older hepred?); "
                "rerun the marker_features rule (snakemake --forcerun marker_features)"
            )
        return table[list(MARKER_FEATURES)].astype(float)
    raise HepredError(f"unknown baseline model {model!r}; expected one of {', '.join(BASELINE_MODELS)}")


# --------------------------------------------------------------------------------------------
# the patient-level models


def build_estimator(model: str, inner_folds: int, seed: int):
    """Volume: plain logistic regression. Radiomics and markers: features made near-normal (Yeo-Johnson) and
    standardised, then L2-penalised logistic regression whose penalty is chosen by stratified
    inner cross-validation on the patients it is fitted on. The inner score is the log loss,
    a proper scoring rule: AUC ignores the scale of the logits and so keeps the strongest
    penalty, whose probabilities all sit at the prevalence and make the fixed threshold
    meaningless."""
    if model == "volume":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    inner = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
    return make_pipeline(
        PowerTransformer(method="yeo-johnson", standardize=True),
        LogisticRegressionCV(
            Cs=PENALTY_GRID,
            l1_ratios=(0.0,),
            cv=inner,
            scoring="neg_log_loss",
            max_iter=5000,
            use_legacy_attributes=False,
        ),
    )


def informative_columns(features: pd.DataFrame) -> list[str]:
    """Columns that vary among the patients a model is fitted on (a constant one carries nothing)."""
    spread = features.std(axis=0, ddof=0)
    return [column for column in features.columns if np.isfinite(spread[column]) and spread[column] > 0]


def fit_baseline(
    model: str, features: pd.DataFrame, labels: dict[str, int], fitted_on: list[str], inner_folds: int, seed: int,
    out_of_fold: bool = True,
) -> dict:
    """The fitted model of one fold: estimator, the columns it uses, the patients it saw and,
    for radiomics and markers (unless ``out_of_fold`` is off), those patients' out-of-fold logits (each from
    a model fitted without it, by the same recipe), which give the fusion an honest scale of the
    model's scores."""
    fitted_on = sorted(fitted_on)
    missing = [case for case in fitted_on if case not in features.index]
    if missing:
        raise HepredError(f"no {model} features for this case", case_id=missing[0])
    table = model_features(features, model).loc[fitted_on]
    bad = ~np.isfinite(table.to_numpy()).all(axis=1)
    if bad.any():
        raise HepredError(f"{model}: a feature is not finite", case_id=table.index[bad.argmax()])
    columns = informative_columns(table)
    if not columns:
        raise HepredError(f"{model}: no feature varies among the fold's training patients")
    targets = np.array([labels[case] for case in fitted_on])
    positives = int(targets.sum())
    folds = min(inner_folds, positives, len(targets) - positives)
    # A penalised model nests its penalty search inside the out-of-fold split: 3 of each class at least.
    if len(set(targets)) < 2 or (model != "volume" and folds < 3):
        raise HepredError(f"{model}: the fold's training patients need at least 3 of each class")
    values = table[columns].to_numpy()
    estimator = build_estimator(model, folds, seed).fit(values, targets)
    fitted = {"model": model, "estimator": estimator, "columns": columns, "fitted_on": fitted_on, "inner_folds": folds}
    if model != "volume" and out_of_fold:
        fitted["out_of_fold_logits"] = out_of_fold_logits(model, values, targets, folds, seed)
    return fitted


def out_of_fold_logits(
    model: str, values: np.ndarray, targets: np.ndarray, folds: int, seed: int,
    companions: np.ndarray | None = None, owners: np.ndarray | None = None,
) -> np.ndarray:
    """Each patient's ``model`` logit from the recipe fitted without it (stratified ``folds``-fold),
    the inner penalty search shrunk to the classes that each outer split leaves.

    ``companions`` (rows of features, each tied to the patient at position ``owners``) are scored
    by the model that held their owner out, and their logits follow the patients'."""
    companions = np.empty((0, values.shape[1])) if companions is None else companions
    owners = np.empty(0, dtype=int) if owners is None else np.asarray(owners)
    logits = np.empty(len(targets) + len(companions))
    for train, held_out in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + 1).split(values, targets):
        positives = int(targets[train].sum())
        inner = max(2, min(folds, positives, len(train) - positives))
        estimator = build_estimator(model, inner, seed).fit(values[train], targets[train])
        logits[held_out] = estimator.decision_function(values[held_out])
        tied = np.flatnonzero(np.isin(owners, held_out))
        if tied.size:
            logits[len(targets) + tied] = estimator.decision_function(companions[tied])
    return logits


def baseline_logits(fitted: dict, features: pd.DataFrame, cases: list[str]) -> np.ndarray:
    table = model_features(features, fitted["model"]).loc[cases, fitted["columns"]]
    return fitted["estimator"].decision_function(table.to_numpy())


def chosen_penalty(fitted: dict) -> float | None:
    final = fitted["estimator"][-1]
    return float(final.C_) if hasattr(final, "C_") else None


def patient_predictions(
    cases: list[str], probability: np.ndarray, labels: dict[str, int], fold_index: int, scenario: str,
    n_slices: pd.Series | None = None, by_rule: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """``predictions_patients.csv`` rows: a patient-level model has one probability, written in
    every patient-rule column so the statistics read it under any rule."""
    frame = pd.DataFrame({"case_id": cases, "fold": fold_index, "scenario": scenario})
    frame["label"] = [int(labels[case]) for case in cases]
    frame["n_slices"] = 0 if n_slices is None else n_slices.loc[cases].to_numpy()
    for column in PATIENT_RULES:
        frame[column] = probability if by_rule is None else by_rule[column]
    return frame[PATIENT_COLUMNS]


def train_baseline(
    model: str,
    fold_index: int,
    fold: dict,
    labels: dict[str, int],
    feature_files: list[Path],
    settings: dict,
    out_dir: Path,
    seed: int,
    log: logging.Logger = logger,
    marker_files: list[Path] = (),
) -> pd.DataFrame:
    """Fit ``model`` on the fold's training + validation patients, score its test patients;
    writes ``model.pkl`` and then ``predictions_patients.csv`` into ``out_dir``.
    ``feature_files``: the cases' radiomics files; ``marker_files``: their markers files."""
    features = case_features(feature_files, marker_files)
    fitted_on = list(fold["train"]) + list(fold["val"])
    try:
        fitted = fit_baseline(model, features, labels, fitted_on, int(settings["inner_folds"]), seed)
    except HepredError as error:
        raise HepredError(f"fold {fold_index}: {error.message}", case_id=error.case_id, path=error.path) from None
    test = sorted(fold["test"])
    probability = expit(baseline_logits(fitted, features, test))
    penalty = chosen_penalty(fitted)
    log.info(
        "fold %d %s: %d feature(s), fitted on %d patients%s; %d test patients scored",
        fold_index,
        model,
        len(fitted["columns"]),
        len(fitted_on),
        "" if penalty is None else f", penalty C = {penalty:.3g} chosen by {fitted['inner_folds']}-fold inner CV",
        len(test),
    )
    out_dir = Path(out_dir)
    with io.atomic_path(out_dir / "model.pkl") as tmp:
        tmp.write_bytes(pickle.dumps({**fitted, "fold": fold_index, "seed": seed, "settings": dict(settings)}))
    predictions = patient_predictions(test, probability, labels, fold_index, model)
    io.write_csv(out_dir / "predictions_patients.csv", predictions)
    return predictions


def load_baseline(path: Path) -> dict:
    """A fold's fitted patient-level model; a markers model fitted on markers this hepred no
    longer measures (one from an older release) is refused rather than fed other columns."""
    try:
        fitted = pickle.loads(Path(path).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise HepredError(f"cannot read baseline model: {error}", path=path) from None
    unmeasured = [column for column in fitted["columns"] if column not in MARKER_FEATURES] if fitted["model"] == "markers" else []
    if unmeasured:
        raise HepredError(
            f"markers model fitted on markers this hepred does not measure ({', '.join(unmeasured)}; written by an older "
            "hepred?): rerun the marker_features rule and the models it feeds (snakemake --forcerun marker_features)",
            path=path,
        )
    return fitted


# --------------------------------------------------------------------------------------------
# fusion of the radiomics model with an image scenario


def _logits(probability: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(probability, dtype=np.float64), PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON))


def _read_patients(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False, na_values=[""]).set_index("case_id")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise HepredError(f"cannot read predictions: {str(error).splitlines()[0]}", path=path) from None


def reference_scale(logits: np.ndarray) -> dict[str, float]:
    """Mean and SD of a model's logits on patients it was not fitted on: an image model's
    validation patients, a patient-level model's out-of-fold logits (in-sample logits spread
    wider than on new patients and would tilt the equal weights). No label is used."""
    sd = float(np.std(logits))
    # A model that scores every reference patient alike keeps its own scale.
    return {"mean": float(np.mean(logits)), "sd": sd if math.isfinite(sd) and sd > 0 else 1.0}


def fuse_logits(logits: dict[str, np.ndarray], scales: dict[str, dict[str, float]], anchor: str) -> np.ndarray:
    """The mean of the models' logits, each first brought to the ``anchor`` model's scale
    (``reference_scale``; the anchor's own logits are unchanged): the models weigh equally,
    as fixed before any result was seen."""
    target = scales[anchor]
    on_anchor_scale = [
        target["mean"] + target["sd"] * (np.asarray(values, dtype=np.float64) - scales[name]["mean"]) / scales[name]["sd"]
        for name, values in logits.items()
    ]
    return np.mean(on_anchor_scale, axis=0)


def train_fusion(
    fold_index: int,
    fold: dict,
    labels: dict[str, int],
    feature_files: list[Path],
    baseline_models: list[Path],
    image_test: Path,
    image_validation: Path,
    out_dir: Path,
    log: logging.Logger = logger,
    marker_files: list[Path] = (),
) -> pd.DataFrame:
    """Fuse fold ``fold_index``'s patient-level models (``baseline_models``: their model.pkl, the
    first one's logit scale is the fusion's) with its image model, per patient rule."""
    features = case_features(feature_files, marker_files)
    fitted = {}
    for path in baseline_models:
        model = load_baseline(path)
        if "out_of_fold_logits" not in model:
            raise HepredError(f"{model['model']} has no out-of-fold logits to fuse on", path=path)
        fitted[model["model"]] = model
    anchor = next(iter(fitted))
    test = sorted(fold["test"])
    image_test_rows, image_val_rows = _read_patients(image_test), _read_patients(image_validation)
    absent = sorted(set(test) - set(image_test_rows.index))
    if absent:
        raise HepredError("test patient missing from the image model's predictions", case_id=absent[0], path=image_test)
    image = image_test.parent.name
    baseline_test = {name: baseline_logits(model, features, test) for name, model in fitted.items()}
    baseline_scales = {name: reference_scale(model["out_of_fold_logits"]) for name, model in fitted.items()}
    scales, by_rule = {}, {}
    for column in PATIENT_RULES:
        scales[column] = {**baseline_scales, image: reference_scale(_logits(image_val_rows[column]))}
        logits = {**baseline_test, image: _logits(image_test_rows.loc[test, column])}
        by_rule[column] = expit(fuse_logits(logits, scales[column], anchor))
    log.info(
        "fold %d fusion: %s with %s (on its %d validation patients' scale), on %s's scale; %d test patients",
        fold_index,
        " and ".join(f"{name} ({len(model['columns'])} features)" for name, model in fitted.items()),
        image,
        len(image_val_rows),
        anchor,
        len(test),
    )
    predictions = patient_predictions(
        test, by_rule[RULE_COLUMNS["mean"]], labels, fold_index, FUSION, image_test_rows["n_slices"], by_rule
    )
    # What predict needs to fuse this fold's models for a new patient.
    io.write_json(
        Path(out_dir) / "fusion.json",
        {"fold": fold_index, "image_scenario": image, "models": list(fitted), "anchor": anchor, "scale": scales},
    )
    io.write_csv(Path(out_dir) / "predictions_patients.csv", predictions)
    return predictions


# --------------------------------------------------------------------------------------------
# new patients (hepred predict)


def fold_directories(models_dir: Path, scenario: str, marker: str) -> list[Path]:
    """``fold_*/classifier/{scenario}/`` folders holding ``marker``, in fold order."""
    folders = sorted(
        (path.parent for path in Path(models_dir).glob(f"fold_*/classifier/{scenario}/{marker}")),
        key=lambda folder: int(folder.parents[1].name.removeprefix("fold_")),
    )
    if not folders:
        raise HepredError(f"no fold_*/classifier/{scenario}/{marker} found", path=models_dir)
    return folders


def fold_models(models_dir: Path, models: list[str]) -> dict[str, dict[Path, dict]]:
    """Every fold's fitted model of each of ``models`` (volume, radiomics, markers), by its
    folder in fold order, read once: ``load_baseline`` refuses one this hepred cannot feed
    before any case is read."""
    return {
        model: {folder: load_baseline(folder / "model.pkl") for folder in fold_directories(models_dir, model, "model.pkl")}
        for model in models
    }


def baseline_probabilities(fitted_by_folder: dict[Path, dict], features: pd.DataFrame) -> list[pd.Series]:
    """Per fold model of one patient-level model (``fold_models``' entry for it), the HE
    probability of every case of ``features`` (the radiomics and markers rows of the new cases)."""
    cases = list(features.index)
    return [
        pd.Series(expit(baseline_logits(fitted, features, cases)), index=cases, name=str(folder))
        for folder, fitted in fitted_by_folder.items()
    ]


def fused_folds(models_dir: Path) -> list[tuple[Path, dict]]:
    """Every fold's fusion folder and its ``fusion.json``, in fold order, read once; refuses a
    run whose fusion predates fusing several models before any case is read."""
    folds = []
    for folder in fold_directories(models_dir, FUSION, "fusion.json"):
        stored = io.read_json(folder / "fusion.json")
        if "models" not in stored:
            raise HepredError("fusion.json predates fusing several models: rerun the fusion rule", path=folder / "fusion.json")
        folds.append((folder, stored))
    return folds


def fusion_probabilities(
    folds: list[tuple[Path, dict]],
    features: pd.DataFrame,
    image_by_fold: dict[int, pd.Series],
    rule_column: str,
    patient_models: dict[str, dict[Path, dict]],
) -> list[pd.Series]:
    """Per fold of ``folds`` (from ``fused_folds``), the fusion of its patient-level models
    (``patient_models``, from ``fold_models``) with its image model's ``rule_column``
    probabilities (``image_by_fold``: fold -> per-case probability), as the run fused its test
    patients."""
    columns = []
    for folder, stored in folds:
        fold = int(stored["fold"])
        if fold not in image_by_fold:
            raise HepredError(f"no {stored['image_scenario']} model of fold {fold} to fuse with", path=folder)
        cases = list(features.index)
        logits = {}
        for name in stored["models"]:
            if folder.parent / name not in patient_models[name]:
                raise HepredError(f"no {name} model of fold {fold} to fuse with", path=folder.parent / name / "model.pkl")
            logits[name] = baseline_logits(patient_models[name][folder.parent / name], features, cases)
        logits[stored["image_scenario"]] = _logits(image_by_fold[fold].loc[cases].to_numpy())
        fused = fuse_logits(logits, stored["scale"][rule_column], stored["anchor"])
        columns.append(pd.Series(expit(fused), index=cases, name=str(folder)))
    return columns
