"""Preprocessing seconds per 512 x 512 x 30 CT on one core.

The core figure is what hepred.preprocess does to an ingested CT: orient, skull strip, resample
the skull-stripped HU and the lesion to the cache size, and window (the classifier's step),
with the CT and mask already in memory. The whole `preprocess_case` (reading the NIfTI files,
QC montage, writing the cache) is reported beside it. torch, numpy and SimpleITK run on one
thread. Volumes: simulated demo cases with 30 slices, ingested once into benchmarks/out/.

    python benchmarks/bench_preprocess.py [--quick] [--json FILE]
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import harness
from harness import Clock, Figure

N_CASES = 3
N_SLICES = 30


def core_steps(ct, lesion, settings: dict) -> dict[str, float]:
    """Seconds of each step preprocess_case runs on an in-memory CT and lesion mask."""
    import SimpleITK as sitk

    from hepred.preprocess import apply_windows, resample_slices, skull_strip, stripped_hu_slices

    seconds = {}
    with Clock() as clock:
        ct = sitk.DICOMOrient(sitk.Cast(ct, sitk.sitkInt16), "LPS")
        lesion = sitk.DICOMOrient(sitk.Cast(sitk.NotEqual(lesion, 0), sitk.sitkUInt8), "LPS")
    seconds["orient"] = clock.cpu
    with Clock() as clock:
        brain = skull_strip(ct, **settings["skull_strip"])
    seconds["skull_strip"] = clock.cpu
    with Clock() as clock:
        hu, _ = stripped_hu_slices(ct, brain, settings["size"])
        resample_slices(lesion, settings["size"], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    seconds["resample"] = clock.cpu
    with Clock() as clock:
        apply_windows(hu, settings["windows"])
    seconds["window"] = clock.cpu
    return seconds


def measure(quick: bool) -> list[Figure]:
    harness.limit_threads(1)
    import SimpleITK as sitk
    from cohorts import pipeline_cohort

    from hepred.preprocess import preprocess_case, preprocess_settings

    root = pipeline_cohort("preprocess_cohort", N_CASES, n_slices=N_SLICES, preprocess=False)
    cases = sorted(p.name for p in (root / "ingest").iterdir())[: 1 if quick else N_CASES]
    repeats = 1 if quick else 3
    sizes = [128] if quick else [128, 512]
    # CPU seconds: with one thread they are the single-core time, and other users of this
    # shared machine do not inflate them; wall seconds are printed beside them.
    core: dict[int, list[dict]] = {size: [] for size in sizes}
    total_cpu, total_wall = [], []
    shapes = set()
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        for case in cases:
            ct_path, lesion_path = root / "ingest" / case / "ct.nii.gz", root / "ingest" / case / "lesion.nii.gz"
            ct, lesion = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(lesion_path))
            shapes.add("x".join(map(str, ct.GetSize())))
            for size in sizes:
                settings = preprocess_settings({"size": size})
                core[size] += [core_steps(ct, lesion, settings) for _ in range(repeats)]
            for repeat in range(repeats):
                with Clock() as clock:
                    preprocess_case(case, ct_path, lesion_path, Path(tmp) / f"{case}_{repeat}", {})
                total_cpu.append(clock.cpu)
                total_wall.append(clock.wall)

    def median_step(size: int, step: str) -> float:
        return statistics.median(run[step] for run in core[size])

    def median_core(size: int) -> float:
        return statistics.median(sum(run.values()) for run in core[size])

    volume = ", ".join(sorted(shapes))
    figures = [
        Figure("preprocess_core_s_per_volume", median_core(128), "<= 2", "s",
               f"orient + skull strip + resample to 128 + window, {volume}, 1 thread, median CPU s of "
               f"{len(core[128])} runs"),
    ]
    figures += [Figure(f"preprocess_{step}_s", median_step(128, step), "", "s") for step in
                ("orient", "skull_strip", "resample", "window")]
    if 512 in core:
        figures.append(Figure("preprocess_core_s_per_volume_size512", median_core(512), "<= 2", "s",
                              "same, resampled to 512 (paper preset)"))
    figures += [
        Figure("preprocess_case_total_cpu_s", statistics.median(total_cpu), "", "s",
               "whole preprocess_case: read NIfTI, core, QC montage PNG, write cache"),
        Figure("preprocess_case_total_wall_s", statistics.median(total_wall), "", "s"),
    ]
    return figures


def main() -> None:
    args = harness.base_parser(__doc__).parse_args()
    harness.finish(measure(args.quick), args.json, "Preprocessing on one core")


if __name__ == "__main__":
    main()
