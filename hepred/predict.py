"""Apply the fold ensemble of one scenario to new cases.

New cases go through the same ingest and preprocess functions as the training cohort, with
the preprocess settings stored inside the models, so only the models directory is needed.
The patient probability is the mean over the fold models; their spread is reported too.
Without a config, the patient rule and threshold are the run's own, read from its
statistics (statistics/metrics.json). A case that cannot be read gets one error line and
a row saying why; the others are scored. A case of the run's own cohort is scored with a
warning: some fold model has seen it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hepred import io
from hepred.config import validate_config
from hepred.classifier.data import CaseSource, SliceDataset, index_slices
from hepred.classifier.model import load_classifier
from hepred.baselines import (
    BASELINE_MODELS,
    FUSION,
    baseline_probabilities,
    fold_models,
    fused_folds,
    fusion_probabilities,
)
from hepred.classifier.calibration import patient_table
from hepred.classifier.scoring import view_logits
from hepred.classifier.settings import SPEED_KEYS, classifier_settings, image_scenario
from hepred.errors import HepredError
from hepred.ingest import ingest_case
from hepred.preprocess import preprocess_case
from hepred.markers import marker_features
from hepred.radiomics import radiomics_features
from hepred.patient_rules import RULE_COLUMNS
from hepred.saliency import explain_cases
from hepred.samplesheet import SAFE_CASE_ID, SHEET_SUFFIXES, Case, read_sample_sheet
from hepred.training import select_device

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "case_id",
    "probability",
    "fold_models_sd",
    "fold_models_min",
    "fold_models_max",
    "n_models",
    "prediction",
    "threshold",
    "patient_rule",
    "scenario",
    "models_dir",
    "in_run_cohort",
    "error",
]
RUN_METRICS = Path("statistics") / "metrics.json"
RUN_SPLITS = Path("folds") / "splits.json"


def find_models(models_dir: Path, scenario: str) -> list[Path]:
    """``fold_*/classifier/{scenario}/model.pt`` under a results directory, in fold order."""
    image_scenario(scenario)  # refuses an unknown name
    paths = sorted(
        Path(models_dir).glob(f"fold_*/classifier/{scenario}/model.pt"),
        key=lambda p: int(re.sub(r"\D", "", p.parents[2].name) or 0),
    )
    if not paths:
        raise HepredError(f"no fold_*/classifier/{scenario}/model.pt found", path=models_dir)
    return paths


def input_cases(input_path: Path, lesion: Path | None) -> list[Case]:
    """Cases of a sample sheet (.csv), or one case from a DICOM folder / NIfTI CT plus ``lesion``."""
    input_path = Path(input_path)
    if input_path.is_file() and input_path.suffix.lower() in SHEET_SUFFIXES:
        return read_sample_sheet(input_path)
    if not input_path.exists():
        raise HepredError("input not found", path=input_path)
    if lesion is None:
        raise HepredError("a single CT input needs its lesion mask (--lesion)", path=input_path)
    # The case id is the user's folder or file name, never anything read from DICOM tags.
    name = input_path.name.split(".")[0]
    case_id = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-") or "case"
    if not SAFE_CASE_ID.match(case_id):
        case_id = "case"
    return [Case(case_id=case_id, ct=input_path.resolve(), lesion=Path(lesion).resolve())]


def _shared_preprocess_settings(metas: list[dict], paths: list[Path]) -> dict:
    settings = metas[0].get("preprocess")
    if settings is None:
        raise HepredError("model has no preprocess settings in its meta", path=paths[0])
    for meta, path in zip(metas[1:], paths[1:]):
        if meta.get("preprocess") != settings:
            raise HepredError(f"preprocess settings differ from those of {paths[0]}", path=path)
    return settings


def run_rule_and_threshold(models_dir: Path, settings: dict | None) -> tuple[str, float]:
    """The patient rule and decision threshold: from the config ``settings`` when given, else the run's own.

    The run's are those its statistics used (statistics.aggregation and threshold, kept in
    statistics/metrics.json); a config that disagrees with them is warned about.
    """
    metrics_path = Path(models_dir) / RUN_METRICS
    run = io.read_json(metrics_path)["config"] if metrics_path.is_file() else None
    if settings is None:
        if run is None:
            raise HepredError(
                f"no {RUN_METRICS} here, so the run's patient rule and threshold are unknown: "
                "finish the run's statistics, or pass the run's config (--config)",
                path=models_dir,
            )
        return str(run["aggregation"]), float(run["threshold"])
    rule, threshold = settings["statistics"]["aggregation"], float(settings["statistics"]["threshold"])
    if run is not None and (run["aggregation"], float(run["threshold"])) != (rule, threshold):
        logger.warning(
            "the run used patient rule %s and threshold %g (%s); the config given says %s and %g, which are applied",
            run["aggregation"],
            float(run["threshold"]),
            metrics_path,
            rule,
            threshold,
        )
    return rule, threshold


def run_cohort(models_dir: Path, metas: list[dict]) -> set[str]:
    """Every case some fold model of the run trained on, was validated or tested on."""
    cohort = {case for meta in metas for case in meta.get("train_cases", [])}
    splits_path = Path(models_dir) / RUN_SPLITS
    if splits_path.is_file():
        for fold in io.read_json(splits_path)["folds"]:
            cohort.update(fold["train"], fold["val"], fold["test"])
    return cohort


def image_models_for(scenario: str, fusion: list[tuple[Path, dict]] | None) -> str | None:
    """The image scenario whose fold models ``scenario`` needs: itself, the one the fusion
    fused (``fusion``: its folds, from ``fused_folds``), or none for a baseline."""
    if scenario in BASELINE_MODELS:
        return None
    if scenario == FUSION:
        return fusion[0][1]["image_scenario"]
    return scenario


def patient_level_models_for(scenario: str, fusion: list[tuple[Path, dict]] | None) -> list[str]:
    """The patient-level models (volume, radiomics, markers) that ``scenario`` scores with."""
    if scenario in BASELINE_MODELS:
        return [scenario]
    if scenario == FUSION:
        return list(fusion[0][1]["models"])
    return []


def radiomics_settings_for(patient_models: dict[str, dict[Path, dict]]) -> dict | None:
    """The radiomics settings the run's fold models (``fold_models``) were fitted with, when one
    of them reads radiomics features (volume reads the radiomics voxel volume)."""
    reader = next((model for model in patient_models if model in ("volume", "radiomics")), None)
    if reader is None:
        return None
    return next(iter(patient_models[reader].values()))["settings"]


def predict(
    models_dir: Path,
    input_path: Path,
    out_csv: Path,
    scenario: str = "t5",
    lesion: Path | None = None,
    config: dict | None = None,
    work_dir: Path | None = None,
    explain_dir: Path | None = None,
) -> pd.DataFrame:
    """Mean HE probability over the fold models of ``scenario`` for each input case, written to ``out_csv``.

    ``config`` (the workflow config, optional) supplies ``device``, ``ingest.lesion_labels``,
    ``classifier.batch_size`` and its speed settings (``num_workers``, ``resident_memory_gb``) and ``statistics.aggregation`` / ``threshold``
    (how a patient's slice probabilities combine); without it the run's own rule and
    threshold apply (see ``run_rule_and_threshold``). The image settings always come from the
    models. Ingest and preprocess outputs go to ``work_dir`` (a temporary directory, removed
    afterwards, when not given). A case that fails gets its error in the ``error`` column; when
    none can be scored, a HepredError is raised and nothing is written. ``explain_dir`` gets
    the Grad-CAM maps of the image models for every scored case (``hepred.saliency``).
    """
    models_dir = Path(models_dir)
    fusion = fused_folds(models_dir) if scenario == FUSION else None
    image = image_models_for(scenario, fusion)
    model_paths = find_models(models_dir, image) if image else []
    if explain_dir is not None and not model_paths:
        raise HepredError(f"--explain shows where an image model looks; scenario {scenario} has none")
    # Read once, before any case is: a fold model this hepred cannot feed is refused up front.
    patient_models = fold_models(models_dir, patient_level_models_for(scenario, fusion))
    radiomics_settings = radiomics_settings_for(patient_models)
    cases = input_cases(Path(input_path), lesion)
    settings = validate_config(config or {})
    rule, threshold = run_rule_and_threshold(models_dir, settings if config is not None else None)
    run_settings = classifier_settings(settings["classifier"])
    # How this machine scores, never what: the run's batch size and speed settings, not the models'.
    scoring_settings = {key: run_settings[key] for key in ("batch_size", *SPEED_KEYS)}
    patient_column = RULE_COLUMNS[rule]
    device = select_device(settings["device"])

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hepred_predict_")))
        work_dir = Path(work_dir)
        models = [load_classifier(path, device) for path in model_paths]
        for (_, meta), path in zip(models, model_paths):
            if "logit_offsets" not in meta:
                raise HepredError("model predates the per-rule calibration offsets: rerun train_classifier", path=path)
        preprocess_cfg = _shared_preprocess_settings([meta for _, meta in models], model_paths) if models else None
        cohort = run_cohort(models_dir, [meta for _, meta in models])
        sources, feature_rows, errors = [], [], {}
        for case in cases:
            if case.case_id in cohort:
                logger.warning(
                    "case %s: a case of this id is in the run's own cohort: fold models trained or were "
                    "validated on it, so its probability is no prediction on new data",
                    case.case_id,
                )
            ingest_dir, preprocess_dir = work_dir / "ingest" / case.case_id, work_dir / "preprocess" / case.case_id
            try:
                ingest_case(
                    case.case_id,
                    case.ct,
                    case.lesion,
                    None,
                    case.series_uid,
                    ingest_dir,
                    settings["ingest"]["lesion_labels"],
                )
                user_files = {ingest_dir / "ct.nii.gz": case.ct, ingest_dir / "lesion.nii.gz": case.lesion}
                if preprocess_cfg is not None:
                    preprocess_case(
                        case.case_id,
                        ingest_dir / "ct.nii.gz",
                        ingest_dir / "lesion.nii.gz",
                        preprocess_dir,
                        preprocess_cfg,
                        user_files=user_files,
                    )
                # Each patient-level model reads only its own kind of features.
                rows = []
                if radiomics_settings is not None:
                    rows.append(radiomics_features(
                        ingest_dir / "ct.nii.gz", ingest_dir / "lesion.nii.gz", case.case_id, radiomics_settings, user_files
                    ))
                if "markers" in patient_models:
                    rows.append(marker_features(ingest_dir / "ct.nii.gz", ingest_dir / "lesion.nii.gz", case.case_id, user_files))
                if rows:
                    feature_rows.append(pd.concat([row.set_index("case_id") for row in rows], axis=1))
            except HepredError as error:
                logger.error("%s", error)
                errors[case.case_id] = str(error)
                continue
            # The label is unknown for new cases; -1 marks it.
            sources.append(
                CaseSource(case.case_id, preprocess_dir / "hu.npy", preprocess_dir / "lesion.npy", -1, case.case_id)
            )
        if not sources:
            raise HepredError(f"none of the {len(cases)} case(s) could be scored (see the errors above)")

        image_by_fold, scored_view_logits = {}, []
        for (model, meta), path in zip(models, model_paths):
            cfg = {
                **meta["classifier"],
                **scoring_settings,
            }
            items = index_slices(sources, int(cfg["min_lesion_pixels"]), fallback_to_largest=True)
            dataset = SliceDataset(sources, items, preprocess_cfg["windows"], int(cfg["crop"]))
            # Scored as the fold's own test cases were: same test-time views, same offsets.
            logits = view_logits(model, dataset, cfg, device, meta["scenario"])
            scored_view_logits.append(logits)
            patients = patient_table(dataset.item_table(), logits, meta["logit_offsets"])
            image_by_fold[int(meta["fold"])] = patients.set_index("case_id")[patient_column].rename(str(path))
            logger.info("%s: %d slices of %d cases scored", path, len(items), len(sources))
        if explain_dir is not None:
            min_lesion_pixels = {int(meta["classifier"]["min_lesion_pixels"]) for _, meta in models}
            explain_cases(
                models,
                sources,
                preprocess_cfg["windows"],
                {source.case_id: work_dir / "ingest" / source.case_id / "ct.nii.gz" for source in sources},
                Path(explain_dir),
                settings["report"]["saliency_slices"],
                device,
                scoring_settings,
                # The fold models of one run pick the same slices; else explain scores its own.
                scored_view_logits=scored_view_logits if len(min_lesion_pixels) == 1 else None,
            )

    features = pd.concat(feature_rows) if feature_rows else None
    if scenario in BASELINE_MODELS:
        per_model = baseline_probabilities(patient_models[scenario], features)
    elif scenario == FUSION:
        per_model = fusion_probabilities(fusion, features, image_by_fold, patient_column, patient_models)
    else:
        per_model = list(image_by_fold.values())

    table = pd.concat(per_model, axis=1)
    values = table.to_numpy(dtype=np.float64)
    result = pd.DataFrame(
        {
            "probability": values.mean(axis=1),
            # Spread over the fold models (population SD: 0 for a single model); not a patient rule.
            "fold_models_sd": values.std(axis=1, ddof=0),
            "fold_models_min": values.min(axis=1),
            "fold_models_max": values.max(axis=1),
            "n_models": values.shape[1],
        },
        index=table.index,
    )
    result["prediction"] = (result["probability"] >= threshold).astype(int)
    result = result.reindex([case.case_id for case in cases]).rename_axis("case_id").reset_index()
    if errors:  # failed cases keep their row, without numbers
        result["n_models"] = result["n_models"].fillna(0).astype(int)
        result["prediction"] = result["prediction"].astype("Int64")
    result["threshold"] = threshold
    result["patient_rule"] = rule
    result["scenario"] = scenario
    result["models_dir"] = str(models_dir.resolve())
    result["in_run_cohort"] = result["case_id"].isin(cohort)
    result["error"] = result["case_id"].map(errors)
    result = result[OUTPUT_COLUMNS]
    io.write_csv(out_csv, result)
    return result
