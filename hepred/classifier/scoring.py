"""Scoring slices with a trained classifier: batches on the device, test-time views, and
the slice and patient tables of out-of-fold predictions. Used by training and by predict,
without the training loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hepred.classifier.augment import dihedral_affines, prepare_batch
from hepred.classifier.batching import batches
from hepred.classifier.calibration import patient_table, probabilities
from hepred.classifier.data import SliceDataset, window_batch
from hepred.classifier.settings import SCENARIOS, image_scenario
from hepred.patient_rules import PATIENT_COLUMNS
from hepred.training import autocast

SLICE_COLUMNS = ["case_id", "fold", "scenario", "slice", "probability", "label"]


def to_device(
    raw: torch.Tensor, windows: list[dict], device: torch.device, image_size: int, theta: torch.Tensor | None = None
) -> torch.Tensor:
    """A loader batch (int16 HU + mask) as network input on ``device``: windowed, resized, warped."""
    images = prepare_batch(window_batch(raw.to(device, non_blocking=True), windows), image_size, theta)
    # Channels-last on every device: the GPU's fast convolutions, and 1.5x on the CPU (oneDNN).
    return images.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def logits_through_views(
    model: torch.nn.Module, dataset: SliceDataset, cfg: dict, device: torch.device, views: list[torch.Tensor | None]
) -> np.ndarray:
    """[V, N] logits of every item of ``dataset`` through each view (a [2, 3] matrix, see
    ``augment``, or None for the slice as it is); the last, partial batch is scored too.

    Each batch is read once (from disk, or from device memory, see ``batching``) and scored
    through every view.
    """
    model.eval()
    logits = np.full((len(views), len(dataset)), np.nan, dtype=np.float32)
    for raw, _, indices in batches(dataset, cfg, device):
        for row, theta in enumerate(views):
            view = None if theta is None else theta.expand(len(raw), 2, 3)
            with autocast(device):
                out = model(to_device(raw, dataset.windows, device, int(cfg["image_size"]), view)).squeeze(1)
            logits[row, indices.numpy()] = out.float().cpu().numpy()
    return logits


def slice_logits(
    model: torch.nn.Module, dataset: SliceDataset, cfg: dict, device: torch.device, theta: torch.Tensor | None = None
) -> np.ndarray:
    """Logits of every item of ``dataset`` in order, through one view (``theta``) or none."""
    return logits_through_views(model, dataset, cfg, device, [theta])[0]


def view_logits(
    model: torch.nn.Module, dataset: SliceDataset, cfg: dict, device: torch.device, scenario: str
) -> np.ndarray:
    """[V, N] logits of every item of ``dataset`` through each test-time view.

    For a scenario trained with augmentation and ``test_time_augmentation`` on, the views
    are the flips (and quarter turns, with ``rotate90``) it was trained on, whose mean
    steadies a model trained on few patients; otherwise the one plain view.
    """
    if not (SCENARIOS[image_scenario(scenario)][0] and cfg["test_time_augmentation"]):
        return logits_through_views(model, dataset, cfg, device, [None])
    views = [theta[0] for theta in dihedral_affines(1, bool(cfg["rotate90"]))]
    return logits_through_views(model, dataset, cfg, device, views)


def score_test_cases(
    model: torch.nn.Module,
    test_set: SliceDataset,
    cfg: dict,
    device: torch.device,
    fold_index: int,
    scenario: str,
    offsets: dict[str, float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slice and patient tables of the fold's test cases (out-of-fold predictions). The slice
    probabilities carry the mean rule's offset, so their mean per case is its ``probability``."""
    slices = test_set.item_table()
    logits = view_logits(model, test_set, cfg, device, scenario)
    slices["probability"] = probabilities(logits, offsets["mean"]).astype(np.float32)
    slices["fold"], slices["scenario"] = fold_index, scenario
    return slices[SLICE_COLUMNS], scored_patients(test_set, logits, offsets, fold_index, scenario)


def scored_patients(
    dataset: SliceDataset, logits: np.ndarray, offsets: dict[str, float], fold_index: int, scenario: str
) -> pd.DataFrame:
    """The patient table (``PATIENT_COLUMNS``) of ``dataset``'s cases from their [V, N] slice logits."""
    items = dataset.item_table()
    patients = patient_table(items, logits, offsets).merge(
        items.groupby("case_id", as_index=False)["label"].first(), on="case_id"
    )
    patients["fold"], patients["scenario"] = fold_index, scenario
    return patients[PATIENT_COLUMNS]
