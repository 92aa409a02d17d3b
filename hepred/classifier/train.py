"""Stage 6: train one fold x scenario, resumable per epoch, and score the fold's test cases."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from timm.utils import ModelEmaV3
from torchvision.ops import sigmoid_focal_loss

from hepred import io
from hepred.classifier.augment import augmentation_rng, draw_affines
from hepred.classifier.calibration import prevalence_offsets
from hepred.classifier.data import (
    EpochShuffle,
    SliceDataset,
    index_slices,
    original_sources,
    synthetic_sources,
)
from hepred.classifier.model import build_model
from hepred.classifier.batching import ResidentBatches, batches
from hepred.classifier.scoring import (
    score_test_cases,
    scored_patients,
    slice_logits,
    to_device,
    view_logits,
)
from hepred.classifier.settings import (
    SCENARIOS,
    classifier_settings,
    image_scenario,
    result_settings,
)
from hepred.errors import HepredError
from hepred.patient_rules import PATIENT_RULES
from hepred.preprocess import preprocess_settings
from hepred.training import (
    Checkpoint,
    autocast,
    run_environment,
    save_weights,
    seed_everything,
    select_device,
    write_trained_with,
)

logger = logging.getLogger(__name__)


def permuted_labels(labels: dict[str, int], fold: dict, seed: int) -> dict[str, int]:
    """``labels`` with those of the fold's training and validation patients shuffled among
    them (seeded); the test patients keep their true labels, against which the null is scored."""
    permuted = dict(labels)
    cases = sorted(set(fold["train"]) | set(fold["val"]))
    missing = [case for case in cases if case not in labels]
    if missing:
        raise HepredError("no label for this case in labels.csv", case_id=missing[0])
    shuffled = np.random.default_rng([seed, 11]).permutation([labels[case] for case in cases])
    permuted.update(zip(cases, (int(label) for label in shuffled)))
    return permuted


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: dict, reduction: str = "mean") -> torch.Tensor:
    return sigmoid_focal_loss(
        logits.float(),
        targets.float(),
        alpha=float(cfg["focal_alpha"]),
        gamma=float(cfg["focal_gamma"]),
        reduction=reduction,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: dict,
    device: torch.device,
) -> torch.Tensor:
    """One optimisation step on a prepared batch already on ``device``; returns the batch loss.

    The loss stays a device tensor: reading it every step would make the CPU wait for the GPU.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        logits = model(images).squeeze(1)
    loss = focal_loss(logits, targets.to(device, non_blocking=True), cfg)
    loss.backward()
    optimizer.step()
    return loss.detach()


def evaluate(
    model: torch.nn.Module, dataset: SliceDataset, cfg: dict, device: torch.device
) -> tuple[float, float, np.ndarray]:
    """Mean focal loss, slice-level AUC (NaN with one class only) and probabilities."""
    logits = torch.from_numpy(slice_logits(model, dataset, cfg, device))
    targets = torch.tensor([dataset.sources[item.source].label for item in dataset.items], dtype=torch.float32)
    loss = float(focal_loss(logits, targets, cfg, reduction="mean"))
    slice_probabilities = torch.sigmoid(logits).numpy()
    auc = float(roc_auc_score(targets.numpy(), slice_probabilities)) if len(set(targets.tolist())) == 2 else math.nan
    return loss, auc, slice_probabilities


def _fingerprint(**parts) -> str:
    """Hash of everything that defines a run: a checkpoint from another setup is not resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 3]).generate_state(1)[0])


def build_datasets(
    fold: dict,
    scenario: str,
    labels: dict[str, int],
    preprocess_dir: Path,
    synthetic_manifest: Path | None,
    cfg: dict,
    windows: list[dict],
    log: logging.Logger = logger,
) -> tuple[SliceDataset, SliceDataset, SliceDataset]:
    """Train (original, plus synthetic for t3/t5), validation and test slice datasets of a fold."""
    recipe = image_scenario(scenario)
    train_cases, val_cases, test_cases = list(fold["train"]), list(fold["val"]), list(fold["test"])
    overlap = (set(train_cases) & set(val_cases + test_cases)) | (set(val_cases) & set(test_cases))
    if overlap:
        raise HepredError(f"fold lists case(s) in more than one of train/val/test: {', '.join(sorted(overlap))}")
    train_sources = original_sources(train_cases, labels, preprocess_dir)
    if SCENARIOS[recipe][1]:
        if synthetic_manifest is None:
            raise HepredError(f"scenario {scenario} needs the fold's synthetic manifest")
        synthetic = synthetic_sources(Path(synthetic_manifest), train_cases, val_cases + test_cases)
        # A synthetic version carries its source's label from ``labels``: the permuted one for a null.
        train_sources += [replace(source, label=int(labels[source.source_case])) for source in synthetic]
    threshold, crop = int(cfg["min_lesion_pixels"]), int(cfg["crop"])
    datasets = []
    for sources, is_training in (
        (train_sources, True),
        (original_sources(val_cases, labels, preprocess_dir), False),
        (original_sources(test_cases, labels, preprocess_dir), False),
    ):
        items = index_slices(sources, threshold, fallback_to_largest=not is_training, log=log)
        datasets.append(SliceDataset(sources, items, windows, crop))
    train, val, test = datasets
    if len(train) < 2:
        raise HepredError(f"only {len(train)} training slice(s) with more than {threshold} lesion pixels")
    if len(val) == 0:
        raise HepredError("the fold has no validation cases: early stopping needs them")
    return train, val, test


def save_curve(out_dir: Path, curve: list[dict], best_epoch: int) -> None:
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(curve, columns=["epoch", "train_loss", "val_loss", "val_auc", "lr"])
    io.write_csv(out_dir / "curve.csv", frame)
    figure, (loss_axis, auc_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(frame["epoch"], frame["train_loss"], marker="o", label="train")
    loss_axis.plot(frame["epoch"], frame["val_loss"], marker="o", label="validation")
    loss_axis.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    loss_axis.set(xlabel="epoch", ylabel="focal loss", title="loss")
    loss_axis.legend()
    auc_axis.plot(frame["epoch"], frame["val_auc"], marker="o", color="tab:green")
    auc_axis.set(xlabel="epoch", ylabel="slice AUC", title="validation AUC", ylim=(0, 1))
    io.save_figure(out_dir / "curve.png", figure)


@dataclass
class Learner:
    """The network and what updates it: optimizer, learning-rate schedule and, with
    ``weight_ema`` > 0, an exponential moving average of the weights (timm ``ModelEmaV3``).

    The averaged copy is what is validated, kept and scored: on a few dozen patients the raw
    weights swing from step to step, and their average generalises and calibrates better.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    ema: ModelEmaV3 | None

    @classmethod
    def build(cls, model: torch.nn.Module, cfg: dict, steps_per_epoch: int) -> Learner:
        optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        scheduler = None
        if cfg["lr_schedule"] == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=float(cfg["lr"]), total_steps=int(cfg["max_epochs"]) * steps_per_epoch
            )
        ema = ModelEmaV3(model, decay=float(cfg["weight_ema"])) if cfg["weight_ema"] > 0 else None
        return cls(model, optimizer, scheduler, ema)

    @property
    def scored(self) -> torch.nn.Module:
        """The weights that are validated, kept and used for prediction."""
        return self.model if self.ema is None else self.ema.module

    def step(self, images: torch.Tensor, targets: torch.Tensor, cfg: dict, device: torch.device) -> torch.Tensor:
        loss = train_step(self.model, self.optimizer, images, targets, cfg, device)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.module.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])


def train_epoch(
    learner: Learner,
    loader: torch.utils.data.DataLoader | ResidentBatches,
    cfg: dict,
    device: torch.device,
    seed: int,
    epoch: int,
    augment: bool,
) -> tuple[float, int]:
    """One pass over ``loader``; returns the mean training loss and the number of slices seen.

    Shuffle (the loader's ``EpochShuffle``), augmentation and dropout draw from generators
    seeded by (seed, epoch), never from state carried over from earlier epochs.
    """
    torch.manual_seed(_epoch_seed(seed, epoch))
    loader.sampler.set_epoch(epoch)
    aug_rng = augmentation_rng(seed, epoch)
    learner.model.train()
    loss_sum, seen = torch.zeros((), device=device), 0
    for raw, targets, _ in loader:
        theta = draw_affines(aug_rng, len(raw), cfg) if augment else None
        batch = to_device(raw, loader.dataset.windows, device, int(cfg["image_size"]), theta)
        loss_sum += learner.step(batch, targets, cfg, device) * len(raw)
        seen += len(raw)
    return float(loss_sum) / seen, seen


def new_or_resumed_state(checkpoint: Checkpoint, fingerprint: str, learner: Learner, log: logging.Logger) -> dict:
    """Training state from ``checkpoint_latest`` when it belongs to this run, else a fresh one."""
    state = checkpoint.resume(fingerprint, log)
    if state is None:
        return {
            "fingerprint": fingerprint,
            "epoch": 0,
            "best_epoch": 0,
            "best_val_loss": math.inf,
            "best_state": None,
            "wait": 0,
            "curve": [],
            "finished": False,
        }
    learner.load_state_dict(state.pop("learner"))
    log.info("resuming from epoch %d (%s)", state["epoch"], checkpoint.path)
    return state


def selection_score(row: dict, monitor: str) -> float:
    """Lower is better: validation loss, or minus validation AUC (NaN counts as worst)."""
    value = row["val_loss"] if monitor == "val_loss" else -row["val_auc"]
    return math.inf if math.isnan(value) else value


def record_epoch(state: dict, model: torch.nn.Module, cfg: dict, row: dict) -> None:
    """Book-keeping after an epoch: best weights (by cfg monitor), patience, curve.

    Epochs before ``min_epochs`` are neither kept nor counted for patience: on a small
    cohort the first epoch often has the lowest validation loss while its batch-norm
    statistics are still those of an untrained network, so eval-mode outputs are constant.
    """
    epoch = row["epoch"]
    score = selection_score(row, cfg["monitor"])
    if epoch < int(cfg["min_epochs"]):
        pass
    elif score < state["best_val_loss"]:
        state.update(best_epoch=epoch, best_val_loss=score, wait=0)
        state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state["wait"] += 1
    state["curve"].append(row)
    state["epoch"] = epoch
    state["finished"] = epoch >= int(cfg["max_epochs"]) or state["wait"] >= int(cfg["patience"])


def train_classifier(
    fold_index: int,
    fold: dict,
    scenario: str,
    labels: dict[str, int],
    preprocess_dir: Path,
    synthetic_manifest: Path | None,
    cfg: dict,
    out_dir: Path,
    seed: int,
    device: str = "auto",
    log: logging.Logger = logger,
    preprocess_cfg: dict | None = None,
) -> None:
    """Train fold ``fold_index`` x ``scenario`` into ``out_dir`` (see docs/architecture.md, stage 6).

    ``checkpoint_latest.pt`` is written after every epoch and a rerun resumes from it; every
    epoch's shuffle, augmentation and dropout are seeded from (seed, epoch), so a resumed run
    ends with the same weights as an uninterrupted one. The predictions of the fold's test
    cases are written last, then the checkpoint is removed; ``trained_with.json`` records the
    settings and the environment (threads, device, versions). ``preprocess_cfg`` gives the intensity windows and is stored with
    the model so that ``hepred.predict`` can preprocess new cases the same way.
    """
    cfg = classifier_settings(cfg)
    preprocess_cfg = preprocess_settings(preprocess_cfg)
    windows = preprocess_cfg["windows"]
    out_dir = Path(out_dir)
    torch_device = select_device(device)
    seed_everything(seed)
    if torch_device.type == "cuda":
        # Bit-exact repeatability is promised on the CPU only; on the GPU take the fastest kernels.
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True

    recipe = image_scenario(scenario)
    true_labels = labels
    if recipe != scenario:
        labels = permuted_labels(labels, fold, seed)
        log.info("null control: %s's training on labels permuted within the training and validation patients", recipe)
    train_set, val_set, test_set = build_datasets(
        fold, scenario, labels, Path(preprocess_dir), synthetic_manifest, cfg, windows, log
    )
    log.info(
        "fold %d %s: %d training slices (%d synthetic), %d validation, %d test; device %s",
        fold_index,
        scenario,
        len(train_set),
        sum(train_set.sources[item.source].synthetic for item in train_set.items),
        len(val_set),
        len(test_set),
        torch_device,
    )

    # Channels-last on every device, like the batches (scoring.to_device).
    model = build_model(cfg, log).to(torch_device, memory_format=torch.channels_last)
    # Full batches only: a batch of one breaks batch norm, and the reshuffle uses every slice over the epochs.
    train_loader = batches(
        train_set,
        cfg,
        torch_device,
        sampler=EpochShuffle(len(train_set), seed),
        drop_last=len(train_set) > int(cfg["batch_size"]),
        log=log,
    )
    fingerprint = _fingerprint(
        fold=fold_index,
        scenario=scenario,
        seed=seed,
        cfg=result_settings(cfg),
        windows=windows,
        train=[(train_set.sources[i.source].case_id, i.slice) for i in train_set.items],
        val=[(val_set.sources[i.source].case_id, i.slice) for i in val_set.items],
    )
    checkpoint = Checkpoint(out_dir / "checkpoint_latest.pt")
    learner = Learner.build(model, cfg, len(train_loader))
    state = new_or_resumed_state(checkpoint, fingerprint, learner, log)

    while not state["finished"]:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        train_loss, seen = train_epoch(
            learner, train_loader, cfg, torch_device, seed, epoch, augment=SCENARIOS[recipe][0]
        )
        train_seconds = time.perf_counter() - started
        val_loss, val_auc, _ = evaluate(learner.scored, val_set, cfg, torch_device)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_auc": val_auc}
        record_epoch(state, learner.scored, cfg, {**row, "lr": learner.optimizer.param_groups[0]["lr"]})
        checkpoint.save({**state, "learner": learner.state_dict()})
        log.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val AUC %.3f, %.0f slices/s (%.1f s)%s",
            epoch,
            int(cfg["max_epochs"]),
            train_loss,
            val_loss,
            val_auc,
            seen / train_seconds,
            time.perf_counter() - started,
            " *best" if state["best_epoch"] == epoch else "",
        )
        if state["wait"] >= int(cfg["patience"]):
            log.info("early stopping: no validation improvement for %d epochs", state["wait"])

    if state["best_state"] is None:
        raise HepredError(f"fold {fold_index} {scenario}: validation loss was never finite (training diverged)")
    model.load_state_dict(state["best_state"])
    offsets = dict.fromkeys(PATIENT_RULES.values(), 0.0)
    val_logits = view_logits(model, val_set, cfg, torch_device, scenario)
    if cfg["calibration"] == "prevalence":
        trained_on = {item.source for item in train_set.items}
        prevalence = float(np.mean([train_set.sources[source].label for source in trained_on]))
        offsets = prevalence_offsets(val_set.item_table(), val_logits, prevalence)
        log.info(
            "calibration: logit offsets %s bring the validation patients to the training prevalence %.3f",
            ", ".join(f"{rule} {offset:+.3f}" for rule, offset in offsets.items()),
            prevalence,
        )
    save_weights(
        out_dir / "model.pt",
        state["best_state"],
        extra={
            "classifier": result_settings(cfg),
            "preprocess": copy.deepcopy(preprocess_cfg),
            "fold": fold_index,
            "scenario": scenario,
            "seed": seed,
            "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_val_loss"],
            "logit_offsets": offsets,
            "epochs_run": state["epoch"],
            "train_cases": sorted(fold["train"]),
        },
    )
    write_trained_with(
        out_dir / "model.pt",
        {"classifier": result_settings(cfg), "windows": windows, "seed": seed, "fold": fold_index, "scenario": scenario},
        run_environment(torch_device, num_workers=int(cfg["num_workers"])),
    )
    save_curve(out_dir, state["curve"], state["best_epoch"])
    slices, patients = score_test_cases(model, test_set, cfg, torch_device, fold_index, scenario, offsets)
    # The validation patients' calibrated scores: what a fusion may learn the image model's scale
    # from. Their label column holds the true labels, also for a null control (never the permuted).
    validation = scored_patients(val_set, val_logits, offsets, fold_index, scenario)
    validation["label"] = validation["case_id"].map(true_labels).astype(int)
    io.write_csv(out_dir / "predictions_validation.csv", validation)
    io.write_csv(out_dir / "predictions_slices.csv", slices)
    io.write_csv(out_dir / "predictions_patients.csv", patients)
    # The final model and predictions are written: nothing is left to resume.
    checkpoint.remove()
    log.info(
        "fold %d %s: best epoch %d (%s score %.4f); %d test slices of %d patients scored",
        fold_index,
        scenario,
        state["best_epoch"],
        cfg["monitor"],
        state["best_val_loss"],
        len(slices),
        len(patients),
    )
