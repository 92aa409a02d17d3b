"""Classifier input pipeline: slices/s of the real training loop / slices/s of the bare model.

The real loop is hepred.classifier's `train_epoch` over the training slices of a demo cohort
that went through the real pipeline (simulate, ingest, preprocess at the default cache size
128; built once in benchmarks/out/): memory-mapped reads, lesion-centred crops, windowing,
batching, on-device resize and (scenario t2) augmentation, then `Learner.step`. The bare
model runs the same `Learner.step` (optimizer, schedule and weight average included) on
random tensors of the same shape and batch size, as many steps as the epoch has. The demo's
classifier settings and windows from config.yaml (40 px crops to 64 px, batch 16, no
workers), one thread. Epochs and bare runs alternate; the ratio of each pair is taken on CPU seconds (one
thread: the single-core time, not inflated by other users of the machine), median over pairs.

For the GPU, where the network is ~100x faster, the same loader at the paper preset (whole
512 px slices, batch 32; stand-in 512 px cache) is timed without a model: milliseconds per
slice for the dataset alone and through the DataLoader (collate of int16 HU + mask; the
windows are applied on the device), i.e. the most slices/s one loader process can feed.

    python benchmarks/bench_classifier_loader.py [--quick] [--json FILE]
"""
from __future__ import annotations

import json
import logging
import statistics

import harness
from harness import Clock, Figure

N_CASES = 32


def measure(quick: bool) -> list[Figure]:
    harness.limit_threads(1)
    import torch
    from cohorts import one_fold, pipeline_cohort

    from hepred.classifier import classifier_settings
    from hepred.classifier.data import EpochShuffle
    from hepred.classifier.model import build_model
    from hepred.classifier.batching import make_loader
    from hepred.classifier.train import Learner, build_datasets, train_epoch
    from hepred.config import load_config

    use = 8 if quick else N_CASES
    root = pipeline_cohort("classifier_cohort", N_CASES, use=use)
    labels = json.loads((root / "labels.json").read_text())
    cases = sorted(p.parent.name for p in (root / "preprocess_128").glob("*/info.json"))[:use]
    fold = one_fold(cases)
    demo = load_config(harness.REPO / "config.yaml")
    cfg = classifier_settings(demo["classifier"])
    device = torch.device("cpu")
    windows = demo["preprocess"]["windows"]
    quiet = logging.getLogger("bench")
    quiet.setLevel(logging.ERROR)
    rounds = 2 if quick else 6
    figures = []
    for scenario in ("t1", "t2"):
        train_set, _, _ = build_datasets(fold, scenario, labels, root / "preprocess_128", None, cfg, windows, quiet)
        torch.manual_seed(0)
        # Laid out as train_classifier lays it out (channels-last, like every batch).
        model = build_model(cfg).to(device, memory_format=torch.channels_last)
        loader = make_loader(train_set, cfg, device, sampler=EpochShuffle(len(train_set), 0), drop_last=True)
        # Many epochs' worth of schedule: the rate never runs out while pairs alternate.
        learner = Learner.build(model, cfg, 4 * len(loader))
        batch = int(cfg["batch_size"])
        size = int(cfg["image_size"])
        images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        targets = (torch.rand(batch) < 0.35).float()
        augment = scenario == "t2"
        train_epoch(learner, loader, cfg, device, 0, 0, augment)  # warm-up: page cache, allocator
        ratios_cpu, ratios_wall, real_rates, bare_rates = [], [], [], []
        for epoch in range(1, rounds + 1):
            with Clock() as real:
                _, seen = train_epoch(learner, loader, cfg, device, 0, epoch, augment)
            with Clock() as bare:
                for _ in range(seen // batch):
                    learner.step(images, targets, cfg, device)
            real_rates.append(seen / real.cpu)
            bare_rates.append(seen / bare.cpu)
            ratios_cpu.append(bare.cpu / real.cpu)
            ratios_wall.append(bare.wall / real.wall)
        figures += [
            Figure(f"classifier_loader_ratio_{scenario}", statistics.median(ratios_cpu), ">= 0.9", "",
                   f"{len(train_set)} training slices of {len(fold['train'])} real preprocessed cases; "
                   f"{'with' if augment else 'no'} augmentation; median of {rounds} epoch/bare pairs, CPU s"),
            Figure(f"classifier_loader_ratio_{scenario}_wall", statistics.median(ratios_wall), "", ""),
            Figure(f"classifier_real_loop_slices_per_s_{scenario}", statistics.median(real_rates), "", "slices/s",
                   f"1 CPU thread, {cfg['crop']} px crops to {cfg['image_size']} px, batch {cfg['batch_size']}"),
            Figure(f"classifier_bare_slices_per_s_{scenario}", statistics.median(bare_rates), "", "slices/s"),
        ]
    return figures + paper_preset_feed(quick)


def paper_preset_feed(quick: bool) -> list[Figure]:
    """Milliseconds per whole 512 px slice spent by one loader process (no model)."""
    import time

    import torch
    from cohorts import one_fold, stand_in_cache
    from harness import CACHE

    from hepred.classifier import classifier_settings
    from hepred.config import paper_preset
    from hepred.classifier.data import EpochShuffle
    from hepred.classifier.batching import make_loader
    from hepred.classifier.train import build_datasets

    root = CACHE / "stand_in_512"
    labels = stand_in_cache(root, 12, size=512, n_slices=30)
    fold = one_fold(sorted(labels), val_fraction=0.1, test_fraction=0.1)
    cfg = classifier_settings({**paper_preset()["classifier"], "batch_size": 32, "num_workers": 0})
    quiet = logging.getLogger("bench")
    quiet.setLevel(logging.ERROR)
    train_set, _, _ = build_datasets(fold, "t2", labels, root, None, cfg, [{"level": 40, "width": 80}], quiet)
    loader = make_loader(train_set, cfg, torch.device("cpu"), sampler=EpochShuffle(len(train_set), 0))
    passes = 1 if quick else 3
    for _ in loader:  # warm-up: page cache
        pass
    started = time.process_time()
    for _ in range(passes):
        for index in range(len(train_set)):
            train_set[index]
    item_ms = (time.process_time() - started) / (passes * len(train_set)) * 1000
    started = time.process_time()
    for _ in range(passes):
        for _batch in loader:
            pass
    loader_ms = (time.process_time() - started) / (passes * len(train_set)) * 1000
    note = f"paper preset, {len(train_set)} whole 512 px slices of stand-in cases, batch 32, CPU ms per slice"
    return [
        Figure("loader512_dataset_ms_per_slice", item_ms, "", "ms", note),
        Figure("loader512_dataloader_ms_per_slice", loader_ms, "", "ms", "dataset + collate of int16 [2, 512, 512]"),
        Figure("loader512_max_feed_slices_per_s_one_process", 1000 / loader_ms, "", "slices/s"),
    ]


def main() -> None:
    args = harness.base_parser(__doc__).parse_args()
    harness.finish(measure(args.quick), args.json, "Classifier loader vs bare model")


if __name__ == "__main__":
    main()
