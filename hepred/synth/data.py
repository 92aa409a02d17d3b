"""Reading the preprocess outputs the generators learn from and repaint."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepred.errors import HepredError
from hepred.preprocess import OUTSIDE_HU, cache_geometry  # OUTSIDE_HU: what preprocess writes outside the brain


@dataclass
class CaseSlab:
    """One case's lesion-bearing slices, with the full lesion volume kept for 3D mask growth."""

    case_id: str
    label: int
    slices: np.ndarray  # indices of the used slices in the case volume
    hu: np.ndarray  # int16 [n, S, S]
    lesion: np.ndarray  # bool [n, S, S], restricted to the brain
    full_lesion: np.ndarray  # bool [Z, S, S], restricted to the brain
    spacing_mm: tuple[float, float, float]  # x, y, z of the npy grid
    full_hu: np.ndarray | None = None  # int16 [Z, S, S], the whole cache volume
    # Origin (x, y, z mm) and direction (9 numbers) of the npy grid in patient space (LPS);
    # None for a cache written before preprocess recorded them.
    origin_mm: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None

    @property
    def brain(self) -> np.ndarray:
        return self.hu > OUTSIDE_HU

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


def _load_array(path: Path, case_id: str, dtype) -> np.ndarray:
    if not path.exists():
        raise HepredError("missing preprocess output", case_id=case_id, path=path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise HepredError(f"cannot read array: {exc}".splitlines()[0], case_id=case_id, path=path) from None
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise HepredError(f"expected a [Z, S, S] array, got shape {array.shape}", case_id=case_id, path=path)
    if array.dtype != dtype:
        raise HepredError(f"expected dtype {np.dtype(dtype).name}, got {array.dtype}", case_id=case_id, path=path)
    return array


def _read_spacing(path: Path, case_id: str) -> tuple[float, float, float]:
    if not path.exists():
        raise HepredError("missing preprocess output", case_id=case_id, path=path)
    try:
        spacing = json.loads(path.read_text())["spacing_mm"]
        spacing = tuple(float(v) for v in spacing)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HepredError(f"cannot read spacing_mm: {exc}".splitlines()[0], case_id=case_id, path=path) from None
    if len(spacing) != 3 or min(spacing) <= 0:
        raise HepredError(f"spacing_mm must be three positive numbers, got {spacing}", case_id=case_id, path=path)
    return spacing


def case_label(labels: dict[str, int], case_id: str) -> int:
    if case_id not in labels:
        raise HepredError("no HE label for this case in labels", case_id=case_id)
    label = int(labels[case_id])
    if label not in (0, 1):
        raise HepredError(f"HE label must be 0 or 1, got {labels[case_id]!r}", case_id=case_id)
    return label


def load_case_slab(preprocess_dir: Path, case_id: str, label: int, min_lesion_pixels: int,
                   keep_volume: bool = False) -> CaseSlab | None:
    """The case's slices with at least ``min_lesion_pixels`` lesion pixels inside the brain, or None;
    with ``keep_volume`` also the whole cache volume (to write synthetic volumes on its grid)."""
    case_dir = Path(preprocess_dir) / case_id
    hu = _load_array(case_dir / "hu.npy", case_id, np.int16)
    lesion = _load_array(case_dir / "lesion.npy", case_id, np.uint8)
    if lesion.shape != hu.shape:
        raise HepredError(f"lesion shape {lesion.shape} differs from hu.npy {hu.shape}", case_id=case_id,
                          path=case_dir / "lesion.npy")
    spacing = _read_spacing(case_dir / "info.json", case_id)
    origin, direction = cache_geometry(case_dir / "info.json", case_id)
    full_lesion = (lesion > 0) & (hu > OUTSIDE_HU)
    slices = np.flatnonzero(full_lesion.sum(axis=(1, 2)) >= max(1, min_lesion_pixels))
    if slices.size == 0:
        return None
    return CaseSlab(case_id=case_id, label=label, slices=slices, hu=np.ascontiguousarray(hu[slices]),
                    lesion=full_lesion[slices], full_lesion=full_lesion, spacing_mm=spacing, full_hu=hu if keep_volume else None,
                    origin_mm=origin, direction=direction)


def iter_slabs(preprocess_dir: Path, cases: list[str], labels: dict[str, int], min_lesion_pixels: int,
               log: logging.Logger, keep_volume: bool = False) -> Iterator[tuple[str, CaseSlab | None]]:
    """(case id, slab) one case at a time; None, with a warning, for a case without a lesion-bearing slice."""
    for case_id in cases:
        slab = load_case_slab(preprocess_dir, case_id, case_label(labels, case_id), min_lesion_pixels, keep_volume)
        if slab is None:
            log.warning("case %s: no slice with >= %d lesion pixels inside the brain; skipped by the synthesis",
                        case_id, min_lesion_pixels)
        yield case_id, slab


def load_slabs(preprocess_dir: Path, cases: list[str], labels: dict[str, int], min_lesion_pixels: int,
               log: logging.Logger) -> tuple[list[CaseSlab], list[str]]:
    """Slabs of every case that has a lesion-bearing slice; the others are returned as skipped."""
    loaded = list(iter_slabs(preprocess_dir, cases, labels, min_lesion_pixels, log))
    return [slab for _, slab in loaded if slab is not None], [case for case, slab in loaded if slab is None]
