"""Speed and quality of the synthesis methods.

For each method and device: generator training steps per second and synthetic slices per second
(whole synthesize(): masks, generation, files and QC); for diffusion also the DDIM steps vs
quality table (slices/s and the Wasserstein distance between real and synthetic lesion HU).
Runs on a small self-made cohort unless --preprocess-dir is given. Wall times on a shared machine
are noisy, so CPU seconds of this process are printed too.

    python benchmarks/bench_synthesis.py                      # toy cohort, CPU (+ CUDA if present)
    python benchmarks/bench_synthesis.py --preprocess-dir results/preprocess --labels results/labels.csv

With ``--json FILE`` the summary's speed and quality columns are also saved as figures (how
``run_all.py`` collects them).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import harness
import pandas as pd
import torch
from harness import Figure

from hepred.labels import read_labels
from hepred.synth import synthesis_settings, synthesize, train_generator
from hepred.synth.data import load_slabs
from hepred.synth.toy import write_toy_preprocessed_cohort


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preprocess-dir", type=Path, help="preprocess/ with {case}/hu.npy, lesion.npy, info.json")
    parser.add_argument("--cases", help="comma-separated case ids (default: all in the directory)")
    parser.add_argument("--labels", type=Path, help="labels.csv (case_id, label); default: all 0")
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                        help="all = the CPU, and CUDA when available")
    parser.add_argument("--methods", default="diffusion,gan,morph")
    parser.add_argument("--toy-cases", type=int, default=12)
    parser.add_argument("--toy-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--versions", type=int, default=2)
    parser.add_argument("--ddim-steps", default="10,25,50")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--config", type=json.loads, default={}, help="JSON synthesis section overrides")
    parser.add_argument("--json", type=Path, help="also save the summary's figures to this JSON file")
    return parser.parse_args()


def cohort(args, workdir: Path) -> tuple[Path, list[str], dict[str, int]]:
    if args.preprocess_dir is None:
        root = workdir / "preprocess"
        labels = write_toy_preprocessed_cohort(root, args.toy_cases, size=args.toy_size, n_slices=16, seed=0)
        return root, sorted(labels), labels
    root = args.preprocess_dir
    cases = args.cases.split(",") if args.cases else sorted(p.parent.name for p in root.glob("*/info.json"))
    if args.labels:
        labels = read_labels(args.labels)
    else:
        labels = {case: 0 for case in cases}
    return root, cases, labels


class Clock:
    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bench_method(method, device, root, cases, labels, args, workdir: Path) -> list[dict]:
    cfg = {**args.config, "method": method, "epochs": args.epochs, "versions": args.versions}
    settings = synthesis_settings(cfg)
    slabs, _ = load_slabs(root, cases, labels, settings["min_lesion_pixels"], logging.getLogger("bench"))
    n_slices = sum(len(slab.slices) for slab in slabs)
    out = workdir / f"{method}_{device}"
    model = out / "generator" / "model.pt"
    with Clock(device) as training:
        train_generator(root, cases, labels, cfg, model, out / "generator" / "ckpt.pt", out / "generator" / "loss.csv",
                        seed=0, device=device)
    steps = 0 if method == "morph" else args.epochs * math.ceil(n_slices / settings["batch_size"])
    base = {"method": method, "device": device, "train_slices": n_slices, "train_s": round(training.wall, 1),
            "train_cpu_s": round(training.cpu, 1), "train_steps_per_s": round(steps / training.wall, 2)}
    variants = [None]
    if method == "diffusion":
        variants = [int(v) for v in args.ddim_steps.split(",")]
    rows = []
    for ddim in variants:
        sample_cfg = cfg if ddim is None else {**cfg, "diffusion": {**cfg.get("diffusion", {}), "ddim_steps": ddim}}
        with Clock(device) as sampling:
            manifest = synthesize(root, cases, labels, model, sample_cfg, out / f"synthetic_{ddim}", seed=0,
                                  device=device)
        made = n_slices * args.versions
        qc = json.loads((out / f"synthetic_{ddim}" / "qc" / "wasserstein.json").read_text())
        rows.append({**base, "ddim_steps": ddim if ddim is not None else "", "synthetic_slices": made,
                     "synth_s": round(sampling.wall, 1), "synth_cpu_s": round(sampling.cpu, 1),
                     "slices_per_s": round(made / sampling.wall, 2),
                     "lesion_hu_wasserstein": round(qc["wasserstein_hu"], 2),
                     "lesion_hu_mean_diff": round(qc["mean_hu_difference"], 2), "volumes": len(manifest)})
    return rows


# Summary columns that become figures (none has a target).
FIGURE_COLUMNS = {"slices_per_s": "slices/s", "lesion_hu_wasserstein": "HU", "train_steps_per_s": "steps/s"}


def summary_figures(rows: list[dict]) -> list[Figure]:
    """One figure per method, device (and DDIM step count) and column of ``FIGURE_COLUMNS``."""
    figures, trained = [], set()
    for row in rows:
        name = f"synthesis_{row['method']}_{row['device']}"
        if row["ddim_steps"] != "":
            name += f"_ddim{row['ddim_steps']}"
        note = f"{row['train_slices']} training slices, {row['synthetic_slices']} synthetic"
        for column, unit in FIGURE_COLUMNS.items():
            if column == "train_steps_per_s":
                # morph has no training; one training serves every DDIM step count.
                if row["method"] == "morph" or (row["method"], row["device"]) in trained:
                    continue
                trained.add((row["method"], row["device"]))
            figures.append(Figure(f"{name}_{column}", float(row[column]), "", unit,
                                  note if column == "slices_per_s" else ""))
    return figures


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    for module in ("hepred.synth.diffusion", "hepred.synth.gan"):  # import time is not training time
        importlib.import_module(module)
    logging.basicConfig(level=logging.WARNING)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory(prefix="bench_synthesis_") as tmp:
        workdir = Path(tmp)
        root, cases, labels = cohort(args, workdir)
        names = [torch.cuda.get_device_name() if d == "cuda" else f"{platform.processor() or 'cpu'} "
                 f"({os.cpu_count()} cores)" for d in devices]
        print(f"{len(cases)} cases from {root if args.preprocess_dir else 'a toy cohort'}; torch threads "
              f"{args.threads}; devices {names}; {args.epochs} epochs; {args.versions} versions", flush=True)
        rows = []
        for device in devices:
            for method in args.methods.split(","):
                new = bench_method(method, device, root, cases, labels, args, workdir)
                print(pd.DataFrame(new).to_string(index=False), flush=True)
                rows += new
    print("\nsummary")
    print(pd.DataFrame(rows).to_string(index=False))
    if args.json:
        harness.finish(summary_figures(rows), args.json, "Synthesis figures")


if __name__ == "__main__":
    main()
