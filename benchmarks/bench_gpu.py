"""GPU figures: classifier training and generator sampling throughput.

1. The classifier network (EfficientNet-B0, 3 x 512 x 512, batch 32) fed random tensors:
   training steps in fp32, in bf16 autocast, and in bf16 autocast + channels_last (what
   hepred.classifier.train_step does on a GPU), in slices/s.
2. The real training loop (hepred.classifier's train_epoch, paper preset: whole 512 px
   slices) of t2 and of t5 (5 synthetic versions per training case) over a stand-in
   preprocess cache written to a temporary folder, epochs as long as a paper-sized fold's,
   per input path: streamed with 0 and several loader workers, and held in device memory
   (hepred.classifier.batching); against the bare bf16 + channels_last rate (target >= 0.9),
   with the peak device memory of each.
3. Generator sampling: hepred.synth's diffusion repainter (DDIM, default network and
   patch size) and the GAN repainter on batches of patches, in slices/s.

Every timed block is bracketed by torch.cuda.synchronize() after warm-up iterations.
Imports only torch, timm, numpy, pandas, scikit-learn, MONAI and the hepred modules it
measures: SimpleITK, pydicom, nibabel and jsonschema may be absent (see
`tolerate_missing_io_libraries`). Without CUDA it says so and exits 0, unless --device cpu
(with --quick: a smoke test of this script on the CPU).

    python benchmarks/bench_gpu.py [--device auto|cuda|cpu] [--quick] [--json FILE]
"""
from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
import tempfile
import time
import types
from pathlib import Path

import harness
from harness import Figure

# Imported at the top of hepred modules this benchmark reaches (hepred.preprocess for the
# windows, hepred.synth.generate for NIfTI output) but never called by it; a GPU host may
# lack them.
IO_LIBRARIES = ("SimpleITK", "pydicom", "nibabel", "jsonschema")


def tolerate_missing_io_libraries() -> list[str]:
    """Register each missing IO library as a module whose every attribute access fails with a
    clear message, so that importing the hepred modules works; returns the missing names."""
    missing = []
    for name in IO_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)

            def absent(attribute, name=name):
                raise AttributeError(f"{name} is not installed here; {name}.{attribute} is not available")

            module.__getattr__ = absent
            sys.modules[name] = module
            missing.append(name)
    return missing


class Settings:
    """Sizes for the GPU run and for the CPU smoke test."""

    def __init__(self, device: str, quick: bool):
        gpu = device == "cuda"
        self.image = 512 if gpu else 64
        self.batch = 32 if gpu else 4
        self.warmup = (3 if quick else 5) if gpu else 1
        self.iterations = (10 if quick else 20) if gpu else 2
        self.cases = (40 if quick else 80) if gpu else 8
        self.epochs = 2 if gpu else 1
        # Real slices per timed epoch, as in a paper-sized fold (122 training patients x ~10
        # lesion slices); the stand-in cases are passed over as often as that takes.
        self.epoch_slices = (600 if quick else 1200) if gpu else 8
        self.workers = [0, 8] if gpu else [0]
        self.sample_batches = [32, 256] if gpu else [4]
        self.sample_repeats = 3 if gpu else 1
        self.ddim_steps = 20 if gpu else 2

    @staticmethod
    def real_slices(dataset) -> int:
        return sum(not dataset.sources[item.source].synthetic for item in dataset.items)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, function, iterations: int) -> float:
    """Seconds per call of function(), after synchronizing before and after."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / iterations


def training_step(variant: str, cfg: dict, device, s: Settings):
    """A fresh EfficientNet-B0 and a function doing one training step on a fixed random batch:
    fp32; bf16 autocast; or bf16 autocast + channels_last, which is hepred's own train_step."""
    import contextlib

    import torch

    from hepred.classifier import build_model
    from hepred.classifier.train import focal_loss, train_step

    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    images = torch.rand(s.batch, 3, s.image, s.image, device=device)
    targets = (torch.rand(s.batch, device=device) < 0.35).float()
    if variant == "bf16_channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()
    if variant == "bf16_channels_last":
        return lambda: train_step(model, optimizer, images, targets, cfg, device)
    precision = variant

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        context = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
                   else contextlib.nullcontext())
        with context:
            logits = model(images).squeeze(1)
        focal_loss(logits, targets, cfg).backward()
        optimizer.step()

    return step


def model_figures(device, s: Settings) -> tuple[list[Figure], float]:
    """Training-step throughput of the bare network; returns the figures and the bf16+cl rate."""
    import torch

    from hepred.classifier import classifier_settings

    cfg = classifier_settings({"image_size": s.image, "crop": 0, "batch_size": s.batch})
    figures, rates = [], {}
    for variant in ("fp32", "bf16", "bf16_channels_last"):
        step = training_step(variant, cfg, device, s)
        for _ in range(s.warmup):
            step()
        seconds = timed(device, step, s.iterations)
        rates[variant] = s.batch / seconds
        figures.append(Figure(f"gpu_classifier_train_slices_per_s_{variant}", rates[variant], "", "slices/s",
                              f"EfficientNet-B0, {s.image} px, batch {s.batch}, {s.iterations} timed steps"))
    figures.append(Figure("gpu_classifier_speedup_bf16_channels_last_vs_fp32",
                          rates["bf16_channels_last"] / rates["fp32"], "", "x"))
    if device.type == "cuda":
        figures.append(Figure("gpu_classifier_peak_memory_gb", torch.cuda.max_memory_allocated() / 2**30, "", "GB"))
    return figures, rates["bf16_channels_last"]


def repeated_shuffle(n: int, passes: int, seed: int):
    """hepred's EpochShuffle over ``passes`` copies of an ``n``-item dataset."""
    from hepred.classifier.data import EpochShuffle

    class RepeatedShuffle(EpochShuffle):
        def __iter__(self):
            return (index % n for index in super().__iter__())

    return RepeatedShuffle(n * passes, seed)


def stand_in_synthetic(cache: Path, train_cases: list[str], labels: dict[str, int], versions: int) -> Path:
    """A synthetic manifest with ``versions`` copies (hard links) of each training case: the
    t5 input path reads them exactly as it reads a generator's output."""
    import os

    import pandas as pd

    folder = cache / "synthetic"
    folder.mkdir(exist_ok=True)
    rows = []
    for case in train_cases:
        for version in range(versions):
            synthetic_id = f"{case}_syn{version}"
            for kind in ("hu", "lesion"):
                target = folder / f"{synthetic_id}_{kind}.npy"
                if not target.exists():
                    os.link(cache / case / f"{kind}.npy", target)
            rows.append({"synthetic_id": synthetic_id, "source_case": case, "label": labels[case]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def loop_figures(device, s: Settings, bare_rate: float, tmp: Path) -> list[Figure]:
    """The real training loop (train_epoch) of t2 and t5 on a stand-in cache of whole slices,
    per input path: streamed with 0 and several loader workers, and held in device memory."""
    import torch
    from cohorts import one_fold, stand_in_cache

    from hepred.classifier import build_model, classifier_settings
    from hepred.classifier.batching import batches
    from hepred.classifier.train import Learner, build_datasets, train_epoch
    from hepred.config import paper_preset

    paper = paper_preset()
    started = time.perf_counter()
    labels = stand_in_cache(tmp / "cache", s.cases, size=s.image, n_slices=30)
    fold = one_fold(sorted(labels))
    manifest = stand_in_synthetic(tmp / "cache", fold["train"], labels, paper["synthesis"]["versions"])
    cache_seconds = time.perf_counter() - started
    windows = [{"level": 40, "width": 80}]
    quiet = logging.getLogger("bench_gpu")
    quiet.setLevel(logging.ERROR)
    min_pixels = paper["classifier"]["min_lesion_pixels"] * (s.image / 512) ** 2
    paths = [(f"workers{workers}", workers, 0) for workers in s.workers] + [("resident", 0, 1000)]
    figures = []
    for scenario in ("t2", "t5"):
        for path_name, workers, budget_gb in paths:
            cfg = classifier_settings({**paper["classifier"], "image_size": s.image, "batch_size": s.batch,
                                       "min_lesion_pixels": int(min_pixels), "num_workers": workers,
                                       "resident_memory_gb": budget_gb})
            train_set, _, _ = build_datasets(fold, scenario, labels, tmp / "cache", manifest, cfg, windows, quiet)
            # An epoch of a paper-sized fold: ~1200 real slices (122 patients x ~10), times
            # the synthetic versions in t5.
            passes = max(1, round(s.epoch_slices / s.real_slices(train_set)))
            torch.manual_seed(0)
            model = build_model(cfg).to(device, memory_format=torch.channels_last)  # as train_classifier
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sampler = repeated_shuffle(len(train_set), passes, 0)
            loader = batches(train_set, cfg, device, sampler=sampler, drop_last=True)
            learner = Learner.build(model, cfg, len(loader))
            train_epoch(learner, loader, cfg, device, 0, 0, True)  # warm-up: workers, page cache, kernels
            synchronize(device)
            seen, started = 0, time.perf_counter()
            for epoch in range(1, s.epochs + 1):
                seen += train_epoch(learner, loader, cfg, device, 0, epoch, True)[1]
            synchronize(device)
            rate = seen / (time.perf_counter() - started)
            held = "held on the device" if type(loader).__name__ == "ResidentBatches" else "streamed"
            figures += [
                Figure(f"gpu_{scenario}_loop_slices_per_s_{path_name}", rate, "", "slices/s",
                       f"train_epoch, {len(train_set)} slices of {s.image} px ({held}), "
                       f"{s.epochs} epochs of {seen // s.epochs} slices"),
                Figure(f"gpu_{scenario}_loop_ratio_{path_name}", rate / bare_rate,
                       ">= 0.9" if path_name == "resident" else "", "", "real loop / bare bf16 + channels_last"),
            ]
            if device.type == "cuda":
                figures.append(Figure(f"gpu_{scenario}_loop_peak_memory_gb_{path_name}",
                                      torch.cuda.max_memory_allocated() / 2**30, "", "GB"))
            del loader, model, learner, train_set
            if device.type == "cuda":
                torch.cuda.empty_cache()
    figures.append(Figure("gpu_stand_in_cache_write_s", cache_seconds, "", "s"))
    return figures


def sampling_figures(device, s: Settings) -> list[Figure]:
    """Patches repainted per second by the diffusion (DDIM) and GAN generators, untrained weights."""
    import numpy as np
    import torch

    from hepred.synth import synthesis_settings
    from hepred.synth.train import build_repainter

    figures = []
    for method in ("diffusion", "gan"):
        settings = synthesis_settings({"method": method, "diffusion": {"ddim_steps": s.ddim_steps}})
        repainter = build_repainter(settings, device)
        size = settings["patch_size"]
        yy, xx = np.mgrid[0:size, 0:size] - size / 2
        disk = torch.from_numpy((xx**2 + yy**2 <= (size / 4) ** 2).astype(np.float32))[None, None]
        for batch_size in s.sample_batches:
            generator = torch.Generator().manual_seed(0)
            batch = {
                "known": torch.randn(batch_size, 1, size, size, generator=generator).clamp(-2, 2).to(device),
                "region": disk.expand(batch_size, 1, size, size).contiguous().to(device),
                "target": disk.expand(batch_size, 1, size, size).contiguous().to(device),
                "label": torch.randint(0, 2, (batch_size,), generator=generator).to(device),
            }
            noise = torch.randn(batch_size, 1, size, size, generator=generator).to(device)
            repaint = functools.partial(repainter.repaint, batch, noise)
            repaint()  # warm-up
            seconds = timed(device, repaint, s.sample_repeats)
            steps = f", {s.ddim_steps} DDIM steps" if method == "diffusion" else ""
            figures.append(Figure(f"gpu_{method}_sampling_slices_per_s_batch{batch_size}", batch_size / seconds, "",
                                  "slices/s", f"{size} px patches{steps}; network only (no masks, files, QC)"))
    return figures


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = parser.parse_args()
    import torch

    if args.device == "auto":
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device; skipped (use --device cpu --quick for a CPU smoke test)")
            harness.finish([], args.json, "GPU figures (skipped: no CUDA)")
            return
        args.device = "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: --device cuda but torch sees no CUDA device")
    if args.device == "cpu":
        harness.limit_threads(1)
    missing = tolerate_missing_io_libraries()
    device = torch.device(args.device)
    s = Settings(device.type, args.quick)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_classifier does on a GPU
        name = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        name = f"CPU smoke test, torch {torch.__version__}"
    print(f"bench_gpu on {name}; missing IO libraries tolerated: {missing or 'none'}", flush=True)
    started = time.perf_counter()
    figures, bare_rate = model_figures(device, s)
    print(harness.figure_table(figures), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        loop = loop_figures(device, s, bare_rate, Path(tmp))
    print(harness.figure_table(loop), flush=True)
    figures += loop
    figures += sampling_figures(device, s)
    figures.append(Figure("gpu_bench_total_s", time.perf_counter() - started, "", "s"))
    harness.finish(figures, args.json, f"GPU figures ({name})")
    if args.json:
        print(json.dumps([fig.as_dict() for fig in figures]))


if __name__ == "__main__":
    main()
