"""Apply the fold ensemble of one scenario to new cases.

New cases go through the same ingest and preprocess functions as the training cohort, with
the preprocess settings stored inside the models, so only the models directory is needed.
The patient probability is the mean over the fold models; their spread is reported too.
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
from hepred.classifier.data import CaseSource, SliceDataset, index_slices
from hepred.classifier.model import load_classifier
from hepred.classifier.train import (
    SCENARIOS,
    classifier_settings,
    patient_table,
    view_logits,
)
from hepred.errors import HepredError
from hepred.ingest import ingest_case
from hepred.preprocess import preprocess_case
from hepred.samplesheet import SAFE_CASE_ID, Case, read_sample_sheet
from hepred.stats import resolve_config
from hepred.training import select_device

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "case_id",
    "probability",
    "probability_sd",
    "probability_min",
    "probability_max",
    "n_models",
    "prediction",
]


def find_models(models_dir: Path, scenario: str) -> list[Path]:
    """``fold_*/classifier/{scenario}/model.pt`` under a results directory, in fold order."""
    if scenario not in SCENARIOS:
        raise HepredError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
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
    if input_path.suffix.lower() == ".csv":
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


def predict(
    models_dir: Path,
    input_path: Path,
    out_csv: Path,
    scenario: str = "t5",
    lesion: Path | None = None,
    config: dict | None = None,
    work_dir: Path | None = None,
) -> pd.DataFrame:
    """Mean HE probability over the fold models of ``scenario`` for each input case, written to ``out_csv``.

    ``config`` (the workflow config, optional) supplies ``device``,
    ``classifier.threshold`` / ``batch_size`` / ``num_workers`` and ``statistics.aggregation``
    (how a patient's slice probabilities combine, as in the run's statistics); the image
    settings always come from the models. Ingest and preprocess outputs go to ``work_dir`` (a temporary
    directory, removed afterwards, when not given).
    """
    config = config or {}
    run_settings = classifier_settings(config.get("classifier"))
    patient_column = resolve_config(config.get("statistics") or {})["probability_column"]
    device = select_device(config.get("device", "auto"))
    model_paths = find_models(Path(models_dir), scenario)
    cases = input_cases(Path(input_path), lesion)

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hepred_predict_")))
        work_dir = Path(work_dir)
        models = [load_classifier(path, device) for path in model_paths]
        for (_, meta), path in zip(models, model_paths):
            if "logit_offsets" not in meta:
                raise HepredError("model predates the per-rule calibration offsets: rerun train_classifier", path=path)
        preprocess_cfg = _shared_preprocess_settings([meta for _, meta in models], model_paths)
        sources = []
        for case in cases:
            ingest_dir, preprocess_dir = work_dir / "ingest" / case.case_id, work_dir / "preprocess" / case.case_id
            ingest_case(case.case_id, case.ct, case.lesion, None, case.series_uid, ingest_dir)
            preprocess_case(
                case.case_id, ingest_dir / "ct.nii.gz", ingest_dir / "lesion.nii.gz", preprocess_dir, preprocess_cfg
            )
            # The label is unknown for new cases; -1 marks it.
            sources.append(
                CaseSource(case.case_id, preprocess_dir / "hu.npy", preprocess_dir / "lesion.npy", -1, case.case_id)
            )

        per_model = []
        for (model, meta), path in zip(models, model_paths):
            cfg = {
                **meta["classifier"],
                "batch_size": run_settings["batch_size"],
                "num_workers": run_settings["num_workers"],
            }
            items = index_slices(sources, int(cfg["min_lesion_pixels"]), fallback_to_largest=True)
            dataset = SliceDataset(sources, items, preprocess_cfg["windows"], int(cfg["crop"]))
            # Scored as the fold's own test cases were: same test-time views, same offsets.
            logits = view_logits(model, dataset, cfg, device, meta["scenario"])
            patients = patient_table(dataset.item_table(), logits, meta["logit_offsets"])
            per_model.append(patients.set_index("case_id")[patient_column].rename(str(path)))
            logger.info("%s: %d slices of %d cases scored", path, len(items), len(cases))

    table = pd.concat(per_model, axis=1)
    values = table.to_numpy(dtype=np.float64)
    result = pd.DataFrame(
        {
            "case_id": table.index,
            "probability": values.mean(axis=1),
            # Population SD over the fold models (0 for a single model).
            "probability_sd": values.std(axis=1, ddof=0),
            "probability_min": values.min(axis=1),
            "probability_max": values.max(axis=1),
            "n_models": values.shape[1],
        }
    )
    result["prediction"] = (result["probability"] >= float(run_settings["threshold"])).astype(int)
    result = result.set_index("case_id").loc[[case.case_id for case in cases]].reset_index()[OUTPUT_COLUMNS]
    io.write_csv(out_csv, result)
    return result
