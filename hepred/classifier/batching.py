"""A dataset held in device memory, batched exactly as the streamed DataLoader batches it.

On a GPU the streamed path (memory-mapped reads, worker processes, pinned copies) cannot
keep EfficientNet-B0 busy at 512 px. A fold's slices fit in device memory many times over
(122 patients x ~10 lesion slices x 512 x 512 x 2 channels of int16 is ~1.3 GB; with five
synthetic versions each a few GB), so they are read once, stacked as the int16 samples the
loader would have produced, and every batch is then an index into that tensor: windowing,
resizing and augmentation already run on the device (``scoring.to_device``).

The batches are the DataLoader's: the same sampler order, the same batch size, the same
dropped last batch, the same samples and indices, so training draws the same augmentation
and gives the same model either way (tested on the CPU). Where the samples exceed the
memory budget, or on the CPU, the streamed path is used and the choice is logged.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Sampler

from hepred.classifier.data import SliceDataset

logger = logging.getLogger(__name__)

# Never more than this share of the device's free memory: training itself needs the rest.
FREE_MEMORY_SHARE = 0.4
GIB = 2**30


def sample_bytes(dataset: SliceDataset) -> int:
    """Bytes of all of ``dataset``'s samples as int16 [2, N, N] (HU and mask)."""
    if not len(dataset):
        return 0
    side = dataset.crop or dataset.slice_arrays(0)[0].shape[-1]
    return len(dataset) * 2 * side * side * 2


def fits_on_device(needed_bytes: int, budget_gb: float, free_bytes: int) -> bool:
    """Whether samples of ``needed_bytes`` are held on the device: within ``budget_gb`` (0
    turns the resident path off) and within ``FREE_MEMORY_SHARE`` of the free memory."""
    return 0 < needed_bytes <= min(budget_gb * GIB, FREE_MEMORY_SHARE * free_bytes)


class ResidentSamples:
    """Every sample of a dataset as one int16 tensor [N, 2, S, S] on ``device``, with its labels.

    Filled a chunk at a time, so host memory holds one chunk, never a second copy of the dataset."""

    CHUNK = 256

    def __init__(self, dataset: SliceDataset, device: torch.device):
        first, _, _ = dataset[0]
        self.raw = torch.empty((len(dataset), *first.shape), dtype=first.dtype, device=device)
        labels = []
        for start in range(0, len(dataset), self.CHUNK):
            chunk = [dataset[index] for index in range(start, min(start + self.CHUNK, len(dataset)))]
            self.raw[start : start + len(chunk)] = torch.stack([sample for sample, _, _ in chunk]).to(device)
            labels += [label for _, label, _ in chunk]
        self.labels = torch.stack(labels)
        self.device = device


class ResidentBatches:
    """Iterates (raw on the device, labels, indices) batches as ``DataLoader(dataset,
    batch_size, sampler=sampler, drop_last=drop_last)`` would, from ``ResidentSamples``."""

    def __init__(
        self,
        dataset: SliceDataset,
        samples: ResidentSamples,
        batch_size: int,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
    ):
        self.dataset = dataset
        self.samples = samples
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = list(self.sampler) if self.sampler is not None else list(range(len(self.dataset)))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = torch.tensor(order[start : start + self.batch_size], dtype=torch.int64)
            yield self.samples.raw[indices.to(self.samples.device)], self.samples.labels[indices], indices


def resident_samples(dataset: SliceDataset, device: torch.device, budget_gb: float, log: logging.Logger = logger):
    """``dataset``'s samples on ``device`` when they fit its budget there (read once, then kept
    with the dataset for every later pass), else None: the streamed path. CUDA devices only:
    on the CPU the memory maps already are the data, and holding a copy would only cost RAM."""
    if device.type != "cuda":
        return None
    cached = dataset.resident.get(str(device))
    if cached is not None:
        return cached
    needed = sample_bytes(dataset)
    free, _ = torch.cuda.mem_get_info(device)
    if not fits_on_device(needed, budget_gb, free):
        log.info(
            "input: %d slices (%.2f GiB) streamed from disk: over the device budget of %.2f GiB "
            "(classifier.resident_memory_gb %g, at most %.0f%% of the %.1f GiB free)",
            len(dataset), needed / GIB, min(budget_gb * GIB, FREE_MEMORY_SHARE * free) / GIB,
            budget_gb, 100 * FREE_MEMORY_SHARE, free / GIB,
        )
        return None
    samples = ResidentSamples(dataset, device)
    dataset.resident[str(device)] = samples
    log.info("input: %d slices (%.2f GiB) held on %s", len(dataset), needed / GIB, device)
    return samples


def make_loader(
    dataset: SliceDataset, cfg: dict, device: torch.device, sampler=None, drop_last: bool = False
) -> DataLoader:
    """The streamed path: a DataLoader reading slices through memory maps, in worker processes
    when ``classifier.num_workers`` asks for them, into pinned memory on a GPU."""
    workers = int(cfg["num_workers"])
    return DataLoader(
        dataset,
        batch_size=int(cfg["batch_size"]),
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def batches(
    dataset: SliceDataset,
    cfg: dict,
    device: torch.device,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    log: logging.Logger = logger,
) -> DataLoader | ResidentBatches:
    """The batches of ``dataset`` for ``device``: from device memory where they fit
    (``classifier.resident_memory_gb``), else streamed by a DataLoader; the same batches either way."""
    samples = resident_samples(dataset, device, float(cfg.get("resident_memory_gb", 0)), log)
    if samples is None:
        return make_loader(dataset, cfg, device, sampler=sampler, drop_last=drop_last)
    return ResidentBatches(dataset, samples, int(cfg["batch_size"]), sampler=sampler, drop_last=drop_last)
