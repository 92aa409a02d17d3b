"""Synthetic versions of a fold's training cases, their manifest and QC."""
from __future__ import annotations

import logging
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from hepred import io
from hepred.errors import HepredError
from hepred.leakage import check_no_leakage
from hepred.preprocess import on_cache_grid
from hepred.synth.config import synthesis_settings
from hepred.synth.data import OUTSIDE_HU, CaseSlab, iter_slabs
from hepred.synth.masks import lesion_distance, vary_target_mask
from hepred.synth.morph import morph_slab
from hepred.synth.patches import crop, patch_box
from hepred.synth.qc import write_qc
from hepred.synth.repaint import finish_repaint, prepare_repaint, to_tensors
from hepred.synth.train import LOG, build_repainter, derived_seed
from hepred.training import load_weights, seed_everything, select_device

MANIFEST_COLUMNS = ["synthetic_id", "source_case", "label", "method", "seed", "lesion_volume_ml", "image", "lesion"]
MONTAGE_CASES = 6
MONTAGE_VERSIONS = 3
# Settings that shaped the trained model: the model file's values win over the current config.
MODEL_KEYS = ("patch_size", "min_lesion_pixels", "hu_scale", "hu_clip")


def _load_model(model_path: Path) -> dict:
    if not model_path.exists():
        raise HepredError("missing generator model; train the generator first", path=model_path)
    try:
        model = load_weights(model_path)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise HepredError(f"cannot read generator model: {exc}".splitlines()[0], path=model_path) from None
    if not isinstance(model, dict) or not {"method", "trained_on"} <= set(model.get("meta", {})):
        raise HepredError("not a hepred generator model (no meta.method or meta.trained_on)", path=model_path)
    return model


def _sampling_settings(settings: dict, meta: dict) -> dict:
    method = settings["method"]
    if meta["method"] != method:
        raise HepredError(f"the model was trained with method {meta['method']!r}, the config asks for {method!r}")
    sampling = {**settings, **{key: meta["settings"][key] for key in MODEL_KEYS}}
    sampling[method] = {**settings[method], **meta["settings"][method]}
    return sampling


def _on_source_grid(slab: CaseSlab, used_slices: np.ndarray, whole_volume: np.ndarray) -> sitk.Image:
    """A synthetic version's slices placed back in its source case's whole cache volume, with
    the cache's spacing, origin and direction: the NIfTI overlays the source CT in any
    viewer. Slices the synthesis did not use are the source's own."""
    volume = whole_volume.copy()
    volume[slab.slices] = used_slices
    return on_cache_grid(volume, slab.spacing_mm, slab.origin_mm, slab.direction, slab.case_id, "synthetic volumes")


def _repaint_versions(repainter, versions: list[tuple[CaseSlab, int, int, np.ndarray]], settings: dict,
                      device: torch.device) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate the versions' patches in batches; each version's noise comes from its own seed."""
    plans = [prepare_repaint(slab, target, settings) for slab, _, _, target in versions]
    size = settings["patch_size"]
    noise = torch.cat([torch.randn((len(slab.slices), 1, size, size), generator=torch.Generator().manual_seed(seed))
                       for slab, _, seed, _ in versions])
    batch = {key: np.concatenate([plan.batch[key] for plan in plans]) for key in plans[0].batch}
    generated = []
    step = settings["sample_batch_size"]
    for start in range(0, len(noise), step):
        chunk = to_tensors({key: value[start:start + step] for key, value in batch.items()}, device)
        generated.append(repainter.repaint(chunk, noise[start:start + step].to(device)).float().cpu().numpy()[:, 0])
    generated = np.concatenate(generated)
    results, offset = [], 0
    for (slab, _, _, target), plan in zip(versions, plans):
        count = len(slab.slices)
        results.append((finish_repaint(slab, plan, generated[offset:offset + count], settings), target))
        offset += count
    return results


def _write_version(out_dir: Path, slab: CaseSlab, index: int, seed: int, method: str, hu: np.ndarray,
                   lesion: np.ndarray) -> dict:
    synthetic_id = f"{slab.case_id}_syn{index}"
    io.save_sitk(out_dir / f"{synthetic_id}_image.nii.gz", _on_source_grid(slab, hu, slab.full_hu))
    io.save_sitk(out_dir / f"{synthetic_id}_lesion.nii.gz", _on_source_grid(slab, lesion, slab.full_lesion.astype(np.uint8)))
    io.save_npy(out_dir / f"{synthetic_id}_hu.npy", hu)
    io.save_npy(out_dir / f"{synthetic_id}_lesion.npy", lesion)
    return {"synthetic_id": synthetic_id, "source_case": slab.case_id, "label": slab.label, "method": method,
            "seed": seed, "lesion_volume_ml": float(lesion.sum()) * slab.voxel_ml,
            "image": f"{synthetic_id}_image.nii.gz", "lesion": f"{synthetic_id}_lesion.nii.gz"}


class Progress:
    """Cases and synthetic slices done, their rate and the time left, logged after each case."""

    def __init__(self, n_cases: int, log: logging.Logger):
        self.n_cases, self.log = n_cases, log
        self.cases = self.slices = 0
        self.started = time.perf_counter()

    def case_done(self, slices: int) -> None:
        self.cases += 1
        self.slices += slices
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.cases * (self.n_cases - self.cases)
        self.log.info(
            "synthesis: %d/%d cases, %d slices, %.1f slices/s, about %.0f s left",
            self.cases, self.n_cases, self.slices, self.slices / max(elapsed, 1e-9), left,
        )


def _montage_panels(slab: CaseSlab, outputs: list[tuple[np.ndarray, np.ndarray]], size: int):
    k = int(np.argmax(slab.lesion.sum(axis=(1, 2))))
    box = patch_box(slab.lesion[k], min(2 * size, slab.hu.shape[1]), 0)
    panels = [("real", crop(slab.hu[k], box, OUTSIDE_HU), crop(slab.lesion[k], box, False))]
    for i, (hu, lesion) in enumerate(outputs[:MONTAGE_VERSIONS]):
        panels.append((f"syn{i}", crop(hu[k], box, OUTSIDE_HU), crop(lesion[k] > 0, box, False)))
    return slab.case_id, panels


def _copy_generator_loss_curve(generator_dir: Path, qc_dir: Path) -> None:
    """The fold's QC folder holds the generator's training curve beside the image checks."""
    for name in ("loss.csv", "loss.png"):
        source = generator_dir / name
        if source.exists():
            with io.atomic_path(qc_dir / f"generator_{name}") as tmp:
                shutil.copyfile(source, tmp)


def synthesize(preprocess_dir: Path, train_cases: list[str], labels: dict[str, int], model_path: Path, cfg: dict,
               out_dir: Path, seed: int, device: str = "auto", fold: dict | None = None,
               log: logging.Logger = LOG) -> pd.DataFrame:
    """Write ``versions`` synthetic versions of every training case into ``out_dir`` and return the manifest.

    Per version ``{case}_syn{i}``: the case's lesion-bearing slices with the lesion changed to a new
    target mask, as npy (``_hu``, ``_lesion``: those slices only, what training streams) and as
    NIfTI (``_image``, ``_lesion``: the whole cache volume on its grid, those slices replaced);
    ``lesion_volume_ml`` counts the synthetic lesion of the replaced slices; ``qc/`` holds the
    montage and the lesion HU comparison; ``manifest.csv`` is written last. ``fold`` (the splits.json
    entry) adds its val/test cases to the leakage check, which always requires the generator's
    training cases to be among ``train_cases``.
    """
    settings = synthesis_settings(cfg)
    model_path, out_dir = Path(model_path), Path(out_dir)
    model = _load_model(model_path)
    sampling = _sampling_settings(settings, model["meta"])
    method = sampling["method"]
    trained_on = list(model["meta"]["trained_on"])
    fold = {"train": list(train_cases), **(fold or {})}
    # Every source is one of train_cases, so checking them all now refuses a leak before any
    # synthetic volume is written.
    check_no_leakage(fold, trained_on, train_cases)
    seed_everything(seed)

    log.info("synthesising %d versions of %d cases with %s", sampling["versions"], len(train_cases), method)
    if method != "morph":
        torch_device = select_device(device)
        repainter = build_repainter(sampling, torch_device)
        repainter.load_weights(model["state_dict"])
    growth = sampling["target_mask"]
    rows, real, synthetic, examples = [], {}, {}, []
    progress = Progress(len(train_cases), log)

    def write_case(slab: CaseSlab, versions: list, outputs: list) -> None:
        outputs = [(hu, lesion.astype(np.uint8)) for hu, lesion in outputs]
        for (_, i, version_seed, _), (hu, lesion) in zip(versions, outputs):
            rows.append(_write_version(out_dir, slab, i, version_seed, method, hu, lesion))
        real[slab.case_id] = slab.hu[slab.lesion]
        synthetic[slab.case_id] = np.concatenate([hu[lesion > 0] for hu, lesion in outputs])
        if len(examples) < MONTAGE_CASES:
            examples.append(_montage_panels(slab, outputs, sampling["patch_size"]))
        progress.case_done(len(slab.slices) * len(versions))

    def repaint_pending() -> None:
        """Repaint the pending cases' versions in batches of sample_batch_size patches, which
        may span cases (a GPU is fed wide batches), then write each case."""
        if not pending:
            return
        versions = [version for _, case_versions in pending for version in case_versions]
        outputs = iter(_repaint_versions(repainter, versions, sampling, torch_device))
        for slab, case_versions in pending:
            write_case(slab, case_versions, [next(outputs) for _ in case_versions])
        pending.clear()

    # Cases are read one at a time and held only until their versions are repainted.
    pending: list[tuple[CaseSlab, list]] = []
    for _, slab in iter_slabs(Path(preprocess_dir), train_cases, labels, sampling["min_lesion_pixels"], log,
                              keep_volume=True):
        if slab is None:
            progress.case_done(0)
            continue
        distance = lesion_distance(slab)
        versions = []
        for i in range(sampling["versions"]):
            version_seed = derived_seed(seed, slab.case_id, i)
            target = vary_target_mask(slab, distance, growth["growth"], growth["elastic_mm"],
                                      growth["elastic_smooth_mm"], np.random.default_rng(version_seed))
            versions.append((slab, i, version_seed, target))
        if method == "morph":
            write_case(slab, versions, [morph_slab(slab, target, sampling["morph"]["falloff_mm"],
                                                   sampling["morph"]["smooth_px"]) for _, _, _, target in versions])
            continue
        pending.append((slab, versions))
        if sum(len(case_slab.slices) * len(case_versions) for case_slab, case_versions in pending) >= sampling["sample_batch_size"]:
            repaint_pending()
    repaint_pending()
    if not rows:
        raise HepredError("no training case has a lesion-bearing slice to synthesise from", path=preprocess_dir)
    summary = write_qc(out_dir / "qc", real, synthetic, examples)
    _copy_generator_loss_curve(model_path.parent, out_dir / "qc")
    log.info("synthetic lesion HU: mean difference %+.1f, Wasserstein %.1f (real vs synthetic)",
             summary["mean_hu_difference"], summary["wasserstein_hu"])

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    io.write_csv(out_dir / "manifest.csv", manifest)
    return manifest
