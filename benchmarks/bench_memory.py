"""Peak memory of classifier training: 400-case cohort / 50-case cohort.

Each cohort size trains one epoch of `hepred.classifier.train_classifier` (fold 0, scenario
t2, default settings, CPU, one thread) in its own fresh process, and the peak resident set
size of that process (ru_maxrss: torch, the model, the datasets, everything) is compared.
400 simulated 512-matrix cases would take hours to make, so the preprocess caches are
written directly with the shapes preprocess gives (hu.npy int16 [28, 128, 128], skull
stripped; lesion.npy over 3-9 slices; info.json), once, into benchmarks/out/.

    python benchmarks/bench_memory.py [--quick] [--json FILE]
"""
from __future__ import annotations

import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import CACHE, Figure

SIZES = (50, 400)
QUICK_SIZES = (20, 80)


def child(n_cases: int, out_dir: Path) -> None:
    """Runs in a fresh process: train one epoch on the first n_cases stand-in cases."""
    harness.limit_threads(1)
    from cohorts import one_fold, stand_in_cache

    from hepred.classifier.train import train_classifier

    root = CACHE / "stand_in_128"
    labels = stand_in_cache(root, n_cases)
    cases = sorted(labels)
    fold = one_fold(cases)
    log = logging.getLogger("bench_memory")
    started = time.perf_counter()
    train_classifier(0, fold, "t2", labels, root, None, {"max_epochs": 1}, out_dir, seed=0, device="cpu", log=log)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"peak_rss_mb": peak_mb, "seconds": time.perf_counter() - started, "train_cases": len(fold["train"])}))


def imports_child() -> None:
    """Runs in a fresh process: peak RSS after importing what training imports, before any data."""
    harness.limit_threads(1)
    import hepred.classifier  # noqa: F401  (torch, timm, torchvision, sklearn, SimpleITK via hepred.preprocess)

    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(n_cases: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        args = ["--imports"] if n_cases == 0 else ["--child", str(n_cases), tmp]
        done = harness.run_python([__file__, *args], env={v: "1" for v in harness.THREAD_VARIABLES})
    if done.returncode:
        raise RuntimeError(f"training on {n_cases} cases failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(quick: bool) -> list[Figure]:
    from cohorts import stand_in_cache

    small, large = QUICK_SIZES if quick else SIZES
    stand_in_cache(CACHE / "stand_in_128", large)  # build once, outside the measured processes
    low, high, imports = run_child(small), run_child(large), run_child(0)
    note = (f"peak RSS of one t2 epoch, fresh process each; {small} vs {large} cases "
            f"({low['train_cases']} / {high['train_cases']} training)")
    return [
        Figure(f"memory_ratio_{large}_vs_{small}_cases", high["peak_rss_mb"] / low["peak_rss_mb"], "<= 1.3", "", note),
        Figure(f"memory_peak_rss_{small}_cases", low["peak_rss_mb"], "", "MB"),
        Figure(f"memory_peak_rss_{large}_cases", high["peak_rss_mb"], "", "MB"),
        Figure(f"memory_growth_mb_{small}_to_{large}_cases", high["peak_rss_mb"] - low["peak_rss_mb"], "", "MB"),
        Figure("memory_peak_rss_imports_only", imports["peak_rss_mb"], "", "MB",
               "import hepred.classifier, no model, no data: the fixed part of every training job"),
        Figure(f"memory_train_epoch_s_{large}_cases", high["seconds"], "", "s", "1 epoch + validation + test, 1 thread"),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--imports":
        imports_child()
        return
    args = harness.base_parser(__doc__).parse_args()
    harness.finish(measure(args.quick), args.json, "Classifier training memory")


if __name__ == "__main__":
    main()
