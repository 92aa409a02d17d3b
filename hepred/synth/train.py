"""Training one fold's generator: resumable per epoch, final weights written last."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hepred import io
from hepred.errors import HepredError
from hepred.synth.config import model_settings, synthesis_settings
from hepred.synth.data import load_slabs
from hepred.synth.repaint import Repainter, to_tensors, training_batches, training_patches
from hepred.training import Checkpoint, run_environment, save_weights, seed_everything, select_device, write_trained_with

LOG = logging.getLogger("hepred.synth")

TRAINED_ON = "trained_on.json"


def derived_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def build_repainter(settings: dict, device: torch.device) -> Repainter:
    if settings["method"] == "diffusion":
        from hepred.synth.diffusion import DiffusionRepainter

        return DiffusionRepainter(settings, device)
    from hepred.synth.gan import GanRepainter

    return GanRepainter(settings, device)


def run_epoch(repainter: Repainter, patches, settings: dict, seed: int, epoch: int,
              device: torch.device) -> dict[str, float]:
    """One pass in an order and with noise drawn from (seed, epoch) alone, so a resumed run repeats
    exactly what an uninterrupted one would have done."""
    rng = np.random.default_rng([seed, epoch])
    generator = torch.Generator().manual_seed(derived_seed(seed, "epoch", epoch))
    sums: dict[str, float] = {}
    count = 0
    for batch in training_batches(patches, settings["batch_size"], settings["train_margin_px"], rng):
        losses = repainter.train_batch(to_tensors(batch, device), generator)
        size = len(batch["label"])
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + value * size
        count += size
    return {key: value / count for key, value in sums.items()}


def write_loss_curve(loss_csv: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = [key for key in ("loss_l1", "loss_d") if any(key in row for row in history)]
    frame = pd.DataFrame(history, columns=["epoch", "loss", *extra, "seconds"])
    io.write_csv(loss_csv, frame)
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for column in [c for c in ("loss", "loss_l1", "loss_d") if c in frame]:
        axis.plot(frame["epoch"], frame[column], marker=".", label=column)
    if frame.empty:
        axis.text(0.5, 0.5, "no learned parameters", ha="center", va="center", transform=axis.transAxes)
    else:
        axis.legend(loc="upper right")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss")
    io.save_figure(Path(loss_csv).with_name("loss.png"), figure)


def train_generator(preprocess_dir: Path, train_cases: list[str], labels: dict[str, int], cfg: dict,
                    model_path: Path, checkpoint_path: Path, loss_csv: Path, seed: int, device: str = "auto",
                    log: logging.Logger = LOG) -> None:
    """Train the fold's generator on ``train_cases`` only and write ``model_path`` last, atomically.

    ``checkpoint_path`` is rewritten after every epoch; a rerun resumes from it. ``trained_on.json``
    beside the model lists the cases the generator saw (cases without a lesion-bearing slice are
    skipped with a warning).
    """
    settings = synthesis_settings(cfg)
    model_path, loss_csv = Path(model_path), Path(loss_csv)
    slabs, skipped = load_slabs(Path(preprocess_dir), train_cases, labels, settings["min_lesion_pixels"], log)
    if not slabs:
        raise HepredError(f"none of the {len(train_cases)} training cases has a slice with >= "
                          f"{settings['min_lesion_pixels']} lesion pixels", path=preprocess_dir)
    trained_on = [slab.case_id for slab in slabs]
    meta = {"method": settings["method"], "settings": model_settings(settings), "trained_on": trained_on,
            "seed": int(seed)}

    history: list[dict] = []
    if settings["method"] == "morph":
        # Nothing to learn: the model file records the parameters the synthesis will use.
        meta["settings"]["morph"] = settings["morph"]
        weights: dict[str, torch.Tensor] = {}
    else:
        torch_device = select_device(device)
        seed_everything(seed)
        patches = training_patches(slabs, settings)
        repainter = build_repainter(settings, torch_device)
        checkpoint = Checkpoint(checkpoint_path)
        fingerprint = json.dumps(meta, sort_keys=True)
        state = checkpoint.resume(fingerprint, log)
        start = 0
        if state is not None:
            repainter.load_training_state(state["training"])
            history, start = state["history"], state["epoch"]
            log.info("resuming from epoch %d", start)
        log.info("training the %s generator on %d slices of %d cases (%s)", settings["method"], len(patches),
                 len(slabs), torch_device)
        for epoch in range(start, settings["epochs"]):
            began = time.perf_counter()
            losses = run_epoch(repainter, patches, settings, seed, epoch, torch_device)
            history.append({"epoch": epoch + 1, **losses, "seconds": time.perf_counter() - began})
            checkpoint.save({"epoch": epoch + 1, "fingerprint": fingerprint,
                             "training": repainter.training_state(), "history": history})
            log.info("epoch %d/%d loss %.4f", epoch + 1, settings["epochs"], losses["loss"])
        weights = repainter.weights()

    write_loss_curve(loss_csv, history)
    io.write_json(model_path.with_name(TRAINED_ON), {"cases": trained_on, "skipped": skipped})
    environment = run_environment(select_device(device))
    write_trained_with(model_path, meta["settings"] | {"seed": int(seed)}, environment)
    save_weights(model_path, weights, extra=meta)
    # The model is written: nothing is left to resume.
    Checkpoint(checkpoint_path).remove()
