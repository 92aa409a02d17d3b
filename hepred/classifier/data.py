"""Slice datasets streamed from the per-case ``hu.npy`` / ``lesion.npy`` files.

A dataset is a list of (case file, slice) pairs; every ``__getitem__`` reads one slice
through a memory map, so memory does not grow with the cohort. A sample is the slice's raw
HU and lesion mask as int16; ``window_batch`` turns a batch of them into the paper's
prior-guided input (window 1, window 2 or window 1 again, lesion mask) on the device, so the
loader stacks, pins and copies a third of the bytes it would as float32 images.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from hepred.errors import HepredError
from hepred.leakage import check_no_leakage
from hepred.preprocess import OUTSIDE_HU, apply_windows

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("synthetic_id", "source_case", "label")
# Open memory maps kept per process; bounded so that a large cohort never exhausts file handles.
OPEN_FILES_PER_PROCESS = 64


@dataclass(frozen=True)
class CaseSource:
    """One image volume to draw slices from: a real case or a synthetic version of one."""

    case_id: str
    hu_path: Path
    lesion_path: Path
    label: int
    source_case: str  # the real case a synthetic volume was made from (itself for a real case)

    @property
    def synthetic(self) -> bool:
        return self.case_id != self.source_case


@dataclass(frozen=True)
class SliceItem:
    source: int  # index into the dataset's sources
    slice: int
    centre: tuple[int, int]  # lesion centroid (row, column) of this slice, the crop centre


def original_sources(case_ids: list[str], labels: dict[str, int], preprocess_dir: Path) -> list[CaseSource]:
    """Real cases read from ``preprocess/{case}/``; a missing label or file is a one-line error."""
    sources = []
    for case_id in case_ids:
        if case_id not in labels:
            raise HepredError("no label for this case in labels.csv", case_id=case_id)
        case_dir = Path(preprocess_dir) / case_id
        sources.append(CaseSource(case_id, case_dir / "hu.npy", case_dir / "lesion.npy", int(labels[case_id]), case_id))
    return sources


def synthetic_sources(manifest_path: Path, train_cases: list[str], held_out_cases: list[str]) -> list[CaseSource]:
    """Synthetic volumes of a fold's manifest, refusing any made from a validation or test case.

    A synthetic image made from a held-out patient would leak that patient into training, so
    this is an error, not a warning; unknown source cases are refused for the same reason.
    """
    manifest_path = Path(manifest_path)
    try:
        manifest = pd.read_csv(manifest_path, dtype={"synthetic_id": str, "source_case": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HepredError(f"cannot read synthetic manifest: {str(exc).splitlines()[0]}", path=manifest_path) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise HepredError(f"synthetic manifest lacks column(s) {', '.join(missing)}", path=manifest_path)
    try:
        check_no_leakage({"train": list(train_cases), "test": list(held_out_cases)}, [], manifest["source_case"])
    except HepredError as error:
        raise error.with_context(path=manifest_path) from None
    clash = sorted(set(manifest["synthetic_id"]) & (set(train_cases) | set(held_out_cases)))
    if clash:
        raise HepredError("synthetic id equals a real case id", case_id=clash[0], path=manifest_path)
    folder = manifest_path.parent
    return [
        CaseSource(
            row.synthetic_id,
            folder / f"{row.synthetic_id}_hu.npy",
            folder / f"{row.synthetic_id}_lesion.npy",
            int(row.label),
            row.source_case,
        )
        for row in manifest.itertuples(index=False)
    ]


def _open_array(path: Path, case_id: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise HepredError("file not found", case_id=case_id, path=path) from None
    except (OSError, ValueError) as exc:
        raise HepredError(f"cannot read array: {exc}", case_id=case_id, path=path) from None


def _lesion_centroids(lesion: np.ndarray, slices: list[int]) -> list[tuple[int, int]]:
    centres = []
    for z in slices:
        rows, cols = np.nonzero(np.asarray(lesion[z]))
        centres.append((round(float(rows.mean())), round(float(cols.mean()))))
    return centres


def index_slices(
    sources: list[CaseSource], min_lesion_pixels: int, fallback_to_largest: bool, log: logging.Logger = logger
) -> list[SliceItem]:
    """(source, slice) pairs whose lesion has more than ``min_lesion_pixels`` pixels.

    With ``fallback_to_largest`` (validation, test, prediction) a case whose lesion is small
    on every slice is still scored on its largest lesion slice, so every patient gets a
    prediction; training cases without a usable slice are left out with a warning.
    """
    items: list[SliceItem] = []
    shape = None
    for index, source in enumerate(sources):
        hu = _open_array(source.hu_path, source.case_id)
        lesion = _open_array(source.lesion_path, source.case_id)
        if hu.ndim != 3 or hu.shape[1] != hu.shape[2]:
            raise HepredError(
                f"hu.npy must be [Z, S, S], got shape {hu.shape}", case_id=source.case_id, path=source.hu_path
            )
        if lesion.shape != hu.shape:
            raise HepredError(
                f"lesion shape {lesion.shape} differs from hu shape {hu.shape}",
                case_id=source.case_id,
                path=source.lesion_path,
            )
        if shape is not None and hu.shape[1:] != shape:
            raise HepredError(
                f"slice size {hu.shape[1:]} differs from the other cases' {shape}",
                case_id=source.case_id,
                path=source.hu_path,
            )
        shape = hu.shape[1:]
        pixels = (np.asarray(lesion) > 0).sum(axis=(1, 2))
        slices = [int(z) for z in np.flatnonzero(pixels > min_lesion_pixels)]
        if not slices:
            if not fallback_to_largest:
                log.warning(
                    "case %s: no slice with more than %d lesion pixels; not used", source.case_id, min_lesion_pixels
                )
                continue
            if pixels.max() == 0:
                raise HepredError(
                    "lesion mask is empty: nothing to classify", case_id=source.case_id, path=source.lesion_path
                )
            slices = [int(np.argmax(pixels))]
            log.warning(
                "case %s: no slice with more than %d lesion pixels; scoring its largest lesion slice %d",
                source.case_id,
                min_lesion_pixels,
                slices[0],
            )
        items.extend(SliceItem(index, z, c) for z, c in zip(slices, _lesion_centroids(lesion, slices)))
    return items


def crop_centred(array: np.ndarray, centre: tuple[int, int], size: int, fill) -> np.ndarray:
    """A ``size`` x ``size`` window of a 2D array centred on ``centre``, padded with ``fill`` outside."""
    out = np.full((size, size), fill, dtype=array.dtype)
    top, left = centre[0] - size // 2, centre[1] - size // 2
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, array.shape[0]), min(left + size, array.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = array[r0:r1, c0:c1]
    return out


class SliceDataset(Dataset):
    """Samples ([2, N, N] int16: HU, lesion mask; label; index) of indexed slices, read on demand.

    N is ``crop`` when cropping around the lesion, else the stored slice size. Windowing
    (``window_batch``) and resizing to the network's input size happen on the device,
    batched (see ``augment.prepare_batch``).
    """

    def __init__(self, sources: list[CaseSource], items: list[SliceItem], windows: list[dict], crop: int):
        if not 1 <= len(windows) <= 2:
            raise HepredError(f"the classifier takes 1 or 2 intensity windows, got {len(windows)}")
        apply_windows(np.zeros(1, np.float32), windows)  # validates the windows
        self.sources = sources
        self.items = items
        # Two image channels and the mask: window 1 is repeated when only one is given (paper).
        self.windows = list(windows) if len(windows) == 2 else [windows[0], windows[0]]
        self.crop = int(crop)
        self._open: OrderedDict[Path, np.ndarray] = OrderedDict()
        # Samples held in device memory, per device (``batching.resident_samples``).
        self.resident: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self):
        # Worker processes get an empty cache: pickling a memory map would copy its data.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["resident"] = {}
        return state

    def _array(self, path: Path, case_id: str) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        array = _open_array(path, case_id)
        self._open[path] = array
        if len(self._open) > OPEN_FILES_PER_PROCESS:
            self._open.popitem(last=False)
        return array

    def slice_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """HU (int16) and lesion (uint8) of one indexed slice, cropped when configured; uncropped,
        they are read-only views of the memory maps, which ``__getitem__`` copies once."""
        item = self.items[index]
        source = self.sources[item.source]
        hu = self._array(source.hu_path, source.case_id)[item.slice]
        lesion = self._array(source.lesion_path, source.case_id)[item.slice]
        if self.crop:
            return crop_centred(hu, item.centre, self.crop, OUTSIDE_HU), crop_centred(lesion, item.centre, self.crop, 0)
        return hu, lesion

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        hu, lesion = self.slice_arrays(index)
        raw = np.empty((2,) + hu.shape, dtype=np.int16)
        raw[0] = hu
        raw[1] = lesion > 0
        label = self.sources[self.items[index].source].label
        return torch.from_numpy(raw), torch.tensor(float(label)), index

    def item_table(self, indices: list[int] | None = None) -> pd.DataFrame:
        """case_id, slice and label of the given items (all by default), in that order."""
        indices = range(len(self.items)) if indices is None else indices
        rows = []
        for index in indices:
            item = self.items[index]
            source = self.sources[item.source]
            rows.append((source.case_id, item.slice, source.label))
        return pd.DataFrame(rows, columns=["case_id", "slice", "label"])


def window_batch(raw: torch.Tensor, windows: list[dict]) -> torch.Tensor:
    """The network's [B, 3, N, N] float32 input from a [B, 2, N, N] batch of ``SliceDataset``
    samples: each of the two windows maps HU to [0, 1] with the same float32 operations as
    ``preprocess.apply_windows`` (so the same bits on the CPU), then the lesion mask."""
    hu = raw[:, 0].float()
    channels = []
    for window in windows:
        level, width = float(window["level"]), float(window["width"])
        channels.append(((hu - (level - width / 2.0)) / width).clamp_(0.0, 1.0))
    channels.append(raw[:, 1].float())
    return torch.stack(channels, dim=1)


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): an epoch's order does not depend on earlier epochs,
    so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n
