"""What every benchmark shares: figures with their targets, clocks, thread limits, the cache dir.

Each ``bench_*.py`` measures its figures in one run and prints them as a table; with
``--json FILE`` it also saves them, which is how ``run_all.py`` collects them. Wall times on
a shared machine are noisy, so where a figure is a ratio both sides are measured in the same
run, interleaved, and the CPU seconds are printed beside the wall seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import operator
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# Scripts run as `python benchmarks/bench_x.py` from anywhere, also without an installed hepred.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Cached inputs (simulated cohorts, preprocess caches) reused across runs; git-ignored.
CACHE = BENCH_DIR / "out"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass
class Figure:
    """One measured number; ``target`` is e.g. "<= 1.5" (empty: reported, no target)."""

    name: str
    value: float
    target: str = ""
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        op, bound = self.target.split()
        return bool(COMPARE[op](self.value, float(bound)))

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


@dataclass
class Clock:
    """Wall and CPU seconds of a block (CPU: this process, plus waited-for children)."""

    wall: float = 0.0
    cpu: float = 0.0
    _start: tuple = field(default=(), repr=False)

    def __enter__(self) -> Self:
        self._start = (time.perf_counter(), _cpu_seconds())
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._start[0]
        self.cpu = _cpu_seconds() - self._start[1]


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def limit_threads(n: int = 1) -> None:
    """n threads for BLAS/OpenMP (effective for libraries not yet loaded), torch and SimpleITK."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        import SimpleITK as sitk
    except ImportError:  # the GPU benchmark's host may lack it
        return
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(n)


def machine() -> str:
    """A short description of where the figures were measured."""
    try:
        load = f"load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return f"{platform.machine()} CPU, {os.cpu_count()} cores {load}".strip()


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke version (smaller inputs, fewer repeats)")
    parser.add_argument("--json", type=Path, help="also save the figures to this JSON file")
    return parser


def format_value(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def figure_table(figures: list[Figure]) -> str:
    """Columns figure, value, target, met (yes/no/-)."""
    rows = [("figure", "value", "target", "met")]
    for fig in figures:
        met = "-" if fig.met is None else ("yes" if fig.met else "NO")
        value = format_value(fig.value) + (f" {fig.unit}" if fig.unit else "")
        rows.append((fig.name, value, fig.target or "-", met))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {fig.name}: {fig.note}" for fig in figures if fig.note]
    return "\n".join(lines + (["notes:"] + notes if notes else []))


def finish(figures: list[Figure], json_path: Path | None, title: str) -> None:
    """Print the figures and save them when asked."""
    print(f"\n{title} ({machine()})")
    print(figure_table(figures), flush=True)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([fig.as_dict() for fig in figures], indent=2) + "\n")


def run_python(code_or_args: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the venv's Python (this interpreter) with the repo on the path; output captured."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *code_or_args], env=full_env, capture_output=True, text=True, check=False, **kwargs
    )
