"""Run every benchmark and print one table: figure, value, target, met.

Each benchmark runs in its own process (thread limits and peak memory stay its own) and
prints its own table as it goes; the figures are collected into one table at the end.

    python benchmarks/run_all.py                         # everything (tens of minutes on 2 cores)
    python benchmarks/run_all.py --quick                 # a short smoke version of each
    python benchmarks/run_all.py --only dicom,dryrun --out figures.json

Benchmarks: dicom (hepred vs dcm2niix), preprocess (seconds per volume, one core),
classifier_loader (real loop / bare model), memory (peak RSS 400 vs 50 cases), dryrun
(snakemake -n, 2000 cases), synthesis (benchmarks/bench_synthesis.py: DDIM steps vs quality,
slices/s), gpu (skipped without CUDA).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from harness import BENCH_DIR, Figure

BENCHMARKS = ("dicom", "preprocess", "classifier_loader", "memory", "dryrun", "synthesis", "gpu")
# bench_synthesis.py sizes its smoke run with its own options.
SYNTHESIS_QUICK = ["--device", "cpu", "--epochs", "1", "--toy-cases", "4", "--toy-size", "64", "--versions", "1",
                   "--threads", "1"]


def run_one(name: str, quick: bool) -> list[Figure]:
    """Run one benchmark script in its own process; its output goes straight to the console."""
    print(f"\n===== {name} =====", flush=True)
    with tempfile.TemporaryDirectory(prefix="run_all_") as tmp:
        json_path = Path(tmp) / "figures.json"
        size = (SYNTHESIS_QUICK if name == "synthesis" else ["--quick"]) if quick else []
        args = [str(BENCH_DIR / f"bench_{name}.py"), "--json", str(json_path), *size]
        done = subprocess.run([sys.executable, *args], cwd=harness.REPO, check=False)
        if done.returncode:
            raise RuntimeError(f"bench_{name}.py exited with {done.returncode}")
        return [Figure(**{k: v for k, v in item.items() if k != "met"}) for item in json.loads(json_path.read_text())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated benchmarks among {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="a short smoke version of each benchmark")
    parser.add_argument("--out", type=Path, help="save the figures to this JSON file")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    figures, failed = [], []
    for name in chosen:
        try:
            figures += run_one(name, args.quick)
        except RuntimeError as error:
            print(f"{name}: FAILED: {error}", flush=True)
            failed.append(name)
    title = f"All figures{' (quick)' if args.quick else ''}"
    print(f"\n{title} ({harness.machine()})")
    print(harness.figure_table(figures))
    missed = [fig.name for fig in figures if fig.met is False]
    print(f"\n{sum(fig.met is True for fig in figures)} targets met, {len(missed)} missed"
          + (f": {', '.join(missed)}" if missed else "") + (f"; failed to run: {', '.join(failed)}" if failed else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": harness.machine(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "quick": args.quick,
            "benchmarks": chosen,
            "failed": failed,
            "figures": [fig.as_dict() for fig in figures],
        }, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
