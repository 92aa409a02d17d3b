"""What the learned generators share: patches around the lesion, their conditioning, and the
repaint of one slab (crop, generate, paste back)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy import ndimage

from hepred.synth.data import OUTSIDE_HU, CaseSlab
from hepred.synth.masks import repaint_region
from hepred.synth.patches import Box, crop, denormalise, normalise, paste, patch_box, resize


class Repainter(Protocol):
    """A learned generator that fills the removed region of a patch, given its surroundings."""

    def train_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]: ...

    def training_state(self) -> dict[str, Any]: ...

    def load_training_state(self, state: dict[str, Any]) -> None: ...

    def weights(self) -> dict[str, torch.Tensor]: ...

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None: ...

    def repaint(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor: ...


CONDITION_CHANNELS = 4  # the channels of ``conditioning``


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1: generator losses count the repainted region only."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def conditioning(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Channels: the patch with the region removed, the region, the target lesion, the HE label (+-1)."""
    region = batch["region"]
    label_map = (2.0 * batch["label"].float() - 1.0).view(-1, 1, 1, 1).expand_as(region)
    return torch.cat([batch["known"] * (1.0 - region), region, batch["target"], label_map], dim=1)


def _normalised_patch(plane: np.ndarray, box: Box, lesion_mean: float, settings: dict) -> np.ndarray:
    cropped = crop(plane, box, OUTSIDE_HU)
    return resize(normalise(cropped, lesion_mean, settings["hu_scale"], settings["hu_clip"]), settings["patch_size"])


def _mask_patch(plane: np.ndarray, box: Box, size: int) -> np.ndarray:
    return resize(crop(plane.astype(np.float32), box, 0.0), size) >= 0.5


@dataclass
class PatchSet:
    """Training patches around every real lesion slice, in network size."""

    known: np.ndarray  # float32 [N, P, P], normalised HU
    lesion: np.ndarray  # bool [N, P, P]
    brain: np.ndarray  # bool [N, P, P]
    distance: np.ndarray  # float32 [N, P, P], distance to the lesion in slice pixels
    label: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.label)


def training_patches(slabs: list[CaseSlab], settings: dict) -> PatchSet:
    size = settings["patch_size"]
    # Room for the widest removed ring plus some untouched context around it.
    pad = int(np.ceil(settings["train_margin_px"][1])) + size // 8
    known, lesion, brain, distance, label = [], [], [], [], []
    for slab in slabs:
        for plane_hu, plane_lesion, plane_brain in zip(slab.hu, slab.lesion, slab.brain):
            box = patch_box(plane_lesion, size, pad)
            lesion_mean = float(plane_hu[plane_lesion].mean())
            known.append(_normalised_patch(plane_hu, box, lesion_mean, settings))
            lesion_patch = _mask_patch(plane_lesion, box, size)
            lesion.append(lesion_patch)
            brain.append(_mask_patch(plane_brain, box, size))
            distance.append(ndimage.distance_transform_edt(~lesion_patch).astype(np.float32) * box.side / size)
            label.append(slab.label)
    return PatchSet(np.stack(known), np.stack(lesion), np.stack(brain), np.stack(distance),
                    np.asarray(label, dtype=np.int64))


def training_batches(patches: PatchSet, batch_size: int, margin_range, rng: np.random.Generator
                     ) -> Iterator[dict[str, np.ndarray]]:
    """One epoch in the order, flips and removed-ring widths drawn from ``rng``."""
    order = rng.permutation(len(patches))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        flip = rng.random(index.size) < 0.5
        margin = rng.uniform(margin_range[0], margin_range[1], index.size).astype(np.float32)
        region = (patches.distance[index] <= margin[:, None, None]) & patches.brain[index]
        batch = {"known": patches.known[index], "region": region.astype(np.float32),
                 "target": patches.lesion[index].astype(np.float32)}
        for key, value in batch.items():
            value[flip] = value[flip][:, :, ::-1]
            batch[key] = value[:, None]
        batch["label"] = patches.label[index]
        yield batch


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.ascontiguousarray(value)).to(device) for key, value in batch.items()}


@dataclass
class SlabRepaint:
    """The patches of one synthetic version before generation, and where they go back."""

    boxes: list[Box]
    lesion_means: list[float]
    region: np.ndarray  # bool [n, S, S] in slice pixels
    batch: dict[str, np.ndarray]  # network-size known / region / target [n, 1, P, P], label [n]


def prepare_repaint(slab: CaseSlab, target: np.ndarray, settings: dict) -> SlabRepaint:
    size = settings["patch_size"]
    margin = settings["sample_margin_px"]
    region = repaint_region(slab.lesion, target, slab.brain, margin)
    boxes, means, known, region_patches, target_patches = [], [], [], [], []
    for k in range(len(slab.slices)):
        box = patch_box(slab.lesion[k] | target[k], size, int(np.ceil(margin)) + size // 8)
        lesion_mean = float(slab.hu[k][slab.lesion[k]].mean())
        boxes.append(box)
        means.append(lesion_mean)
        known.append(_normalised_patch(slab.hu[k], box, lesion_mean, settings))
        region_patches.append(_mask_patch(region[k], box, size))
        target_patches.append(_mask_patch(target[k], box, size))
    batch = {"known": np.stack(known)[:, None], "region": np.stack(region_patches)[:, None].astype(np.float32),
             "target": np.stack(target_patches)[:, None].astype(np.float32),
             "label": np.full(len(boxes), slab.label, dtype=np.int64)}
    return SlabRepaint(boxes, means, region, batch)


def finish_repaint(slab: CaseSlab, plan: SlabRepaint, generated: np.ndarray, settings: dict) -> np.ndarray:
    """Paste the generated patches (normalised, [n, P, P]) back into copies of the slab's slices."""
    out = np.empty_like(slab.hu)
    for k, (box, lesion_mean) in enumerate(zip(plan.boxes, plan.lesion_means)):
        generated_hu = denormalise(generated[k], lesion_mean, settings["hu_scale"])
        out[k] = paste(slab.hu[k], generated_hu, box, plan.region[k], settings["feather_px"])
    return out
