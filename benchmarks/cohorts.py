"""Inputs of the benchmarks: real pipeline caches (simulate, ingest, preprocess) and stand-in
preprocess caches written directly with realistic shapes, for cohorts too large to simulate.

Only numpy, json and hepred.io are imported at the top: the GPU benchmark runs this on a
machine without SimpleITK or pydicom.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from harness import CACHE

OUTSIDE_HU = -1024  # hepred.preprocess.OUTSIDE_HU (not imported: that module needs SimpleITK)
PIXEL_MM_AT_128 = 1.8  # a 230 mm field of view over 128 pixels


def pipeline_cohort(
    name: str, n: int, n_slices: int = 28, preprocess: bool = True, size: int = 128, use: int | None = None
) -> Path:
    """Simulate ``n`` demo cases once, ingest and (optionally) preprocess the first ``use`` (all)
    of them into CACHE/name/; what is there already is kept.

    Returns CACHE/name, holding demo/ (samples.csv, truth.csv), ingest/{case}/,
    preprocess_{size}/{case}/ (as the workflow lays them out) and labels.json (case -> label).
    """
    import pandas as pd

    from hepred.ingest import ingest_case
    from hepred.samplesheet import read_sample_sheet
    from hepred.simulate import simulate_cohort

    root = CACHE / name
    demo = root / "demo"
    if not (demo / "samples.csv").is_file():
        print(f"simulating {n} cases ({n_slices} slices) into {demo} (once)", flush=True)
        simulate_cohort(demo, n=n, seed=0, n_slices=n_slices)
    cases = read_sample_sheet(demo / "samples.csv")[: use or n]
    for case in cases:
        out = root / "ingest" / case.case_id
        if not (out / "meta.json").is_file():
            ingest_case(case.case_id, case.ct, case.lesion, case.followup_lesion, case.series_uid, out)
    if preprocess:
        from hepred.preprocess import preprocess_case

        for case in cases:
            ingested = root / "ingest" / case.case_id
            out = root / f"preprocess_{size}" / case.case_id
            if not (out / "info.json").is_file():
                preprocess_case(case.case_id, ingested / "ct.nii.gz", ingested / "lesion.nii.gz", out, {"size": size})
    truth = pd.read_csv(demo / "truth.csv", dtype={"case_id": str})
    wanted = {case.case_id for case in cases}
    labels = {row.case_id: int(row.label) for row in truth.itertuples() if row.case_id in wanted}
    (root / "labels.json").write_text(json.dumps(labels, indent=1))
    return root


def _stand_in_case(rng: np.random.Generator, size: int, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """One case as preprocess writes it: skull-stripped HU (-1024 outside an elliptic brain
    that narrows towards the top and bottom slices) and a lesion ellipsoid over several slices."""
    z = np.linspace(-1.0, 1.0, n_slices)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2.0 - 1.0
    semi_x, semi_y = rng.uniform(0.55, 0.7), rng.uniform(0.7, 0.85)
    scale = np.sqrt(np.clip(1.0 - (z / 1.1) ** 2, 0.05, None))
    brain = (xx / (semi_x * scale)) ** 2 + (yy / (semi_y * scale)) ** 2 <= 1.0
    hu = rng.normal(32.0, 6.0, size=(n_slices, size, size)).astype(np.float32)
    # Lesion: 3-9 slices thick, 6-18 % of the field of view across, somewhere inside the brain.
    thickness = int(rng.integers(3, 10))
    centre_z = int(rng.integers(n_slices // 3, max(n_slices // 3 + 1, 2 * n_slices // 3)))
    cz, cy, cx = centre_z, rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.2)
    radius = rng.uniform(0.06, 0.18)
    zz = (np.arange(n_slices)[:, None, None] - cz) / (thickness / 2.0)
    lesion = ((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2 + zz**2 <= 1.0
    lesion &= brain
    hu[lesion] += rng.uniform(30.0, 50.0)
    hu = np.where(brain, np.rint(hu), OUTSIDE_HU).astype(np.int16)
    return hu, lesion.astype(np.uint8)


def stand_in_cache(root: Path, n: int, size: int = 128, n_slices: int = 28, seed: int = 0) -> dict[str, int]:
    """The first ``n`` stand-in cases in root/{case}/ (hu.npy, lesion.npy, info.json), written once;
    returns their labels. A case depends on its index alone, so a larger cache serves a smaller
    request and a smaller one is extended.

    Labels are drawn with the demo's prevalence (about 35 %); a case's content does not depend on it.
    """
    from hepred import io

    root = Path(root)
    labels_path = root / "labels.json"
    labels = json.loads(labels_path.read_text()) if labels_path.is_file() else {}
    if len(labels) >= n:
        return dict(list(labels.items())[:n])
    pixel = PIXEL_MM_AT_128 * 128 / size
    for index in range(len(labels), n):
        case = f"bench{index + 1:04d}"
        rng = np.random.default_rng([seed, index])
        hu, lesion = _stand_in_case(rng, size, n_slices)
        labels[case] = int(rng.random() < 0.35)
        voxel_ml = pixel * pixel * 5.0 / 1000.0
        info = {
            "spacing_mm": [pixel, pixel, 5.0],
            "lesion_pixels": [int(v) for v in lesion.sum(axis=(1, 2))],
            "brain_volume_ml": float((hu > OUTSIDE_HU).sum()) * voxel_ml,
            "lesion_volume_ml": float(lesion.sum()) * voxel_ml,
            "size": size,
        }
        io.save_npy(root / case / "hu.npy", hu)
        io.save_npy(root / case / "lesion.npy", lesion)
        io.write_json(root / case / "info.json", info)
    io.write_json(labels_path, labels)
    return labels


def one_fold(cases: list[str], seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2) -> dict:
    """A train/val/test split of ``cases`` in the layout of one entry of splits.json."""
    order = list(np.random.default_rng(seed).permutation(sorted(cases)))
    n_test = max(1, math.floor(test_fraction * len(order)))
    n_val = max(1, math.floor(val_fraction * len(order)))
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
