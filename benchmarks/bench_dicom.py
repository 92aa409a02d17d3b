"""DICOM to NIfTI: hepred.dicom.dicom_to_nifti against dcm2niix on the same series.

Ours converts the whole batch in one fresh Python process (a loop; imports counted); dcm2niix
runs once per series folder (`dcm2niix -z y -o OUT -f %s DIR`, as a user would call it; it
also converts the localizer in each folder and compresses with pigz on all cores). The two
batches alternate `repeats` times and the fastest of each is kept. The series are the demo
cohort (512 x 512 x 28, some gantry-tilted), simulated once into benchmarks/out/.

Also measured, in the same run: where our time goes (reading + geometry vs writing the
.nii.gz), and the same batch written with gzip level 1 instead of SimpleITK's compressor
(a proposal for hepred.io.save_sitk).

    python benchmarks/bench_dicom.py [--quick] [--json FILE]
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import CACHE, Clock, Figure

COHORT = CACHE / "dicom_cohort"
N_SERIES = 20


def ensure_cohort(n: int = N_SERIES) -> list[Path]:
    """The demo cohort's CT folders (simulated once, then reused)."""
    sheet = COHORT / "samples.csv"
    if not sheet.is_file():
        from hepred.simulate import simulate_cohort

        print(f"simulating {n} demo cases into {COHORT} (once)", flush=True)
        simulate_cohort(COHORT, n=n, seed=0)
    import pandas as pd

    return [COHORT / ct for ct in pd.read_csv(sheet)["ct"]][:n]


def write_gzip_level1(path: Path, image) -> None:
    """Uncompressed NIfTI from SimpleITK, then gzip level 1 (what save_sitk could do)."""
    import SimpleITK as sitk

    from hepred.io import atomic_path

    with atomic_path(path) as tmp:
        raw = tmp.with_name(tmp.name.removesuffix(".gz"))
        try:
            sitk.WriteImage(image, str(raw), useCompression=False)
            with open(raw, "rb") as source, gzip.open(tmp, "wb", compresslevel=1) as target:
                shutil.copyfileobj(source, target, 1 << 22)
        finally:
            raw.unlink(missing_ok=True)


def batch_child(out_dir: Path, variant: str, dirs: list[str]) -> None:
    """Runs in a fresh process: convert every folder, print seconds as JSON."""
    started = time.perf_counter()
    import SimpleITK as sitk

    from hepred.dicom import convert_series_with_metadata, dicom_to_nifti
    from hepred.io import save_sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    imported = time.perf_counter()
    convert = write = 0.0
    for index, folder in enumerate(dirs):
        target = out_dir / f"case{index:03d}.nii.gz"
        if variant == "default":
            t0 = time.perf_counter()
            dicom_to_nifti(folder, target)
            convert += time.perf_counter() - t0
            continue
        t0 = time.perf_counter()
        image, _ = convert_series_with_metadata(folder)
        t1 = time.perf_counter()
        (save_sitk if variant == "split" else write_gzip_level1)(target, image)
        convert += t1 - t0
        write += time.perf_counter() - t1
    print(json.dumps({"import_s": imported - started, "convert_s": convert, "write_s": write}))


def run_ours(dirs: list[Path], out_dir: Path, variant: str) -> tuple[Clock, dict]:
    env = {name: "1" for name in harness.THREAD_VARIABLES}
    with Clock() as clock:
        done = harness.run_python([__file__, "--batch-child", str(out_dir), variant, *map(str, dirs)], env=env)
    if done.returncode:
        raise RuntimeError(f"our batch conversion failed:\n{done.stderr[-2000:]}")
    return clock, json.loads(done.stdout.strip().splitlines()[-1])


def run_dcm2niix(dirs: list[Path], out_dir: Path) -> Clock:
    with Clock() as clock:
        for index, folder in enumerate(dirs):
            target = out_dir / f"case{index:03d}"
            target.mkdir()
            subprocess.run(
                ["dcm2niix", "-z", "y", "-o", str(target), "-f", "%s", str(folder)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    return clock


def ensure_dcm2niix() -> str:
    path = shutil.which("dcm2niix")
    if path is None:
        sys.exit("dcm2niix not found: apt-get install -y dcm2niix (Debian/Ubuntu) or pip install dcm2niix")
    return path


def measure(quick: bool) -> list[Figure]:
    ensure_dcm2niix()
    dirs = ensure_cohort()
    if quick:
        dirs = dirs[:4]
    repeats = 1 if quick else 3
    best: dict[str, Clock] = {}
    details: dict[str, dict] = {}

    def keep(name: str, clock: Clock, info: dict | None = None) -> None:
        if name not in best or clock.wall < best[name].wall:
            best[name] = clock
            if info is not None:
                details[name] = info

    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        for repeat in range(repeats):
            # Alternate the order so that neither side always runs on a warmer page cache.
            order = ["ours", "dcm2niix", "split", "gzip1"]
            if repeat % 2:
                order.reverse()
            for name in order:
                out = Path(tmp) / f"{name}_{repeat}"
                out.mkdir()
                if name == "dcm2niix":
                    keep(name, run_dcm2niix(dirs, out))
                else:
                    variant = {"ours": "default", "split": "split", "gzip1": "gzip1"}[name]
                    clock, info = run_ours(dirs, out, variant)
                    keep(name, clock, info)
                shutil.rmtree(out)
    n = len(dirs)
    ours, ref = best["ours"], best["dcm2niix"]
    split, gzip1 = details["split"], details["gzip1"]
    note = f"{n} series 512x512x28 ({repeats} alternating repeats, fastest kept); dcm2niix -z y uses pigz"
    return [
        Figure("dicom_wall_ratio_ours_vs_dcm2niix", ours.wall / ref.wall, "<= 1.5", "", note),
        Figure("dicom_cpu_ratio_ours_vs_dcm2niix", ours.cpu / ref.cpu, "", "", "CPU seconds incl. pigz threads"),
        Figure("dicom_ours_s_per_series", ours.wall / n, "", "s", "whole process incl. imports / series"),
        Figure("dicom_dcm2niix_s_per_series", ref.wall / n, "", "s"),
        Figure("dicom_ours_import_s", details["ours"]["import_s"], "", "s", "pydicom + SimpleITK + hepred, once per batch"),
        Figure("dicom_ours_read_resample_s_per_series", split["convert_s"] / n, "", "s", "convert_series_with_metadata"),
        Figure("dicom_ours_write_nii_gz_s_per_series", split["write_s"] / n, "", "s", "hepred.io.save_sitk (SimpleITK gzip)"),
        Figure("dicom_gzip1_write_s_per_series", gzip1["write_s"] / n, "", "s", "raw .nii + gzip level 1 (proposal)"),
        Figure("dicom_wall_ratio_with_gzip1", best["gzip1"].wall / ref.wall, "<= 1.5", "", "ours with gzip level 1 writing"),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--batch-child":
        batch_child(Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
        return
    args = harness.base_parser(__doc__).parse_args()
    harness.finish(measure(args.quick), args.json, "DICOM conversion: hepred vs dcm2niix")


if __name__ == "__main__":
    main()
