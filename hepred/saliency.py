"""Where the network looks: Grad-CAM (MONAI's ``monai.visualize.GradCAM``) of trained fold
models on each patient's most predictive slices.

Per patient: a PNG of those slices (CT in the brain window, the map over it, the lesion
outline) and the map as a NIfTI overlay on the patient's own CT grid (``ingest/{case}/
ct.nii.gz``), so that it opens over the CT in 3D Slicer or ITK-SNAP. The map is taken on
the plain view of each slice at the network's input, scaled to [0, 1] per slice (MONAI's
default), put back where the slice's crop came from in the training cache, and resampled
from the cache grid onto the CT grid. With several fold models (``hepred predict
--explain``) the slices are those of the highest mean probability and the maps are averaged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from hepred import io
from hepred.classifier.calibration import probabilities
from hepred.classifier.data import CaseSource, SliceDataset, index_slices
from hepred.classifier.scoring import to_device, view_logits
from hepred.errors import HepredError
from hepred.preprocess import QC_WINDOW, apply_windows, cache_geometry, on_cache_grid

logger = logging.getLogger(__name__)

# timm's EfficientNet: the last stage at 1/16 of the input. The final feature map (1/32) is
# 2 x 2 cells at the demo's 64 px input, too coarse to point at anything inside a lesion.
TARGET_LAYER = "blocks.4"
# Below this a map holds no positive evidence for expansion (Grad-CAM keeps only that).
EVIDENCE_FLOOR = 0.05
INDEX_COLUMNS = ["case_id", "slices", "probabilities", "png", "nifti"]


def _scale_to_peak(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum: 0 stays 'no evidence', 1 is the strongest.
    (MONAI's default post-processing maps (min, max) to (1, 0), which would invert the map.)"""
    return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _gradcam(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """[B, H, W] Grad-CAM maps in [0, 1] of the single HE logit for a prepared batch."""
    if TARGET_LAYER not in dict(model.named_modules()):
        raise HepredError(f"saliency: the classifier has no layer {TARGET_LAYER!r} (Grad-CAM is set up for EfficientNet)")
    cam = GradCAM(nn_module=model, target_layers=TARGET_LAYER, postprocessing=_scale_to_peak)
    with torch.enable_grad():
        maps = cam(images.float().requires_grad_(True), class_idx=0)
    return maps[:, 0].detach().float().cpu().numpy()


def _paste(heat: np.ndarray, centre: tuple[int, int], crop: int, size: int) -> np.ndarray:
    """A network-input map put back on the S x S cache slice where its crop was cut."""
    side = crop or size
    resized = F.interpolate(torch.from_numpy(heat)[None, None], size=(side, side), mode="bilinear", align_corners=False)
    resized = resized[0, 0].numpy()
    if not crop:
        return resized
    out = np.zeros((size, size), np.float32)
    top, left = centre[0] - crop // 2, centre[1] - crop // 2
    r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + crop, size), min(left + crop, size)
    out[r0:r1, c0:c1] = resized[r0 - top : r1 - top, c0 - left : c1 - left]
    return out


def _on_ct_grid(volume: np.ndarray, info_path: Path, ct_path: Path, case_id: str) -> sitk.Image:
    spacing = io.read_json(info_path)["spacing_mm"]
    cache = on_cache_grid(volume.astype(np.float32), spacing, *cache_geometry(info_path, case_id), case_id, "saliency maps")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ct_path))
    reader.ReadImageInformation()
    reference = sitk.Image([int(v) for v in reader.GetSize()], sitk.sitkFloat32)
    reference.SetSpacing(reader.GetSpacing())
    reference.SetOrigin(reader.GetOrigin())
    reference.SetDirection(reader.GetDirection())
    return sitk.Resample(cache, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _figure(case_id: str, panels: list[tuple[int, float, np.ndarray, np.ndarray, np.ndarray]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6), squeeze=False, layout="constrained")
    for axis, (z, probability, hu, lesion, heat) in zip(axes[0], panels):
        axis.imshow(apply_windows(hu.astype(np.float32), [QC_WINDOW])[0], cmap="gray", vmin=0, vmax=1)
        axis.imshow(heat, cmap="jet", alpha=0.35 * (heat > EVIDENCE_FLOOR), vmin=0, vmax=1)
        if lesion.any():
            axis.contour(lesion.astype(float), levels=[0.5], colors="white", linewidths=0.6)
        note = "" if heat.max() > EVIDENCE_FLOOR else "\nno positive evidence"
        axis.set_title(f"slice {z}, p = {probability:.2f}{note}", fontsize=7)
        axis.axis("off")
    figure.suptitle(f"{case_id}: Grad-CAM on the most predictive slices (lesion outlined)", fontsize=7)
    return figure


def explain_cases(
    models: list[tuple[torch.nn.Module, dict]],
    sources: list[CaseSource],
    windows: list[dict],
    ct_paths: dict[str, Path],
    out_dir: Path,
    n_slices: int,
    device: torch.device,
    scoring_cfg: dict | None = None,
    log: logging.Logger = logger,
    scored_view_logits: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Write ``{case}_gradcam.png`` and ``{case}_gradcam.nii.gz`` per case of ``sources`` into
    ``out_dir``; return the index (case, the slices shown, their probabilities, the files).

    ``models`` are fold models with their meta (``load_classifier``), all of one scenario;
    ``ct_paths`` each case's ingested CT, whose grid the NIfTI takes. A caller that has scored
    these sources already (``predict``) passes each model's [V, N] ``view_logits`` of their
    slices as ``scored_view_logits``, so that they are not computed twice.
    """
    if not models:
        raise HepredError("no model to explain")
    scoring = {"num_workers": 0, **(scoring_cfg or {})}  # speed settings, not in a model's meta
    cfg = {**models[0][1]["classifier"], **scoring}
    out_dir = Path(out_dir)
    items = index_slices(sources, int(cfg["min_lesion_pixels"]), fallback_to_largest=True, log=log)
    dataset = SliceDataset(sources, items, windows, int(cfg["crop"]))
    table = dataset.item_table()
    if scored_view_logits is None:
        scored_view_logits = [
            view_logits(model, dataset, {**meta["classifier"], **scoring}, device, meta["scenario"]) for model, meta in models
        ]
    elif len(scored_view_logits) != len(models) or any(np.shape(logits)[-1] != len(items) for logits in scored_view_logits):
        raise HepredError(
            f"explain: the scored logits ({[np.shape(logits) for logits in scored_view_logits]}) are not "
            f"{len(models)} models x {len(items)} slices (a bug)"
        )
    slice_probability = np.mean(
        [probabilities(logits, meta["logit_offsets"]["mean"]) for logits, (_, meta) in zip(scored_view_logits, models)],
        axis=0,
    )
    table["probability"] = slice_probability
    rows = []
    for case_id, group in table.groupby("case_id", sort=False):
        chosen = group.sort_values(["probability", "slice"], ascending=[False, True]).head(n_slices).sort_values("slice")
        indices = chosen.index.to_list()
        raw = torch.stack([dataset[i][0] for i in indices])
        heat = np.mean(
            [
                _gradcam(model, to_device(raw, dataset.windows, device, int(meta["classifier"]["image_size"])))
                for model, meta in models
            ],
            axis=0,
        )
        source = sources[dataset.items[indices[0]].source]
        hu_volume = np.load(source.hu_path, mmap_mode="r")
        lesion_volume = np.load(source.lesion_path, mmap_mode="r")
        size = hu_volume.shape[1]
        volume = np.zeros(hu_volume.shape, np.float32)
        panels = []
        for index, case_heat in zip(indices, heat):
            item = dataset.items[index]
            on_slice = _paste(case_heat, item.centre, int(cfg["crop"]), size)
            volume[item.slice] = on_slice
            panels.append((item.slice, float(table.loc[index, "probability"]), np.asarray(hu_volume[item.slice]),
                           np.asarray(lesion_volume[item.slice]) > 0, on_slice))
        png, nifti = out_dir / f"{case_id}_gradcam.png", out_dir / f"{case_id}_gradcam.nii.gz"
        io.save_figure(png, _figure(case_id, panels))
        io.save_sitk(nifti, _on_ct_grid(volume, source.hu_path.with_name("info.json"), ct_paths[case_id], case_id))
        rows.append(
            {
                "case_id": case_id,
                "slices": " ".join(str(int(s)) for s in chosen["slice"]),
                "probabilities": " ".join(f"{p:.3f}" for p in chosen["probability"]),
                "png": png.name,
                "nifti": nifti.name,
            }
        )
        log.info("case %s: Grad-CAM of %d model(s) on slice(s) %s", case_id, len(models), rows[-1]["slices"])
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    io.write_csv(out_dir / "index.csv", index)
    return index
