"""Glue for the thin scripts in workflow_scripts/: logging, threads, one-line errors, clean failure."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from hepred.errors import HepredError
from hepred.failures import clear_failure, record_failure

log = logging.getLogger("hepred")


def configure_logging(log_file: str | Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def _remove_outputs(outputs: list[str]) -> None:
    """A failed job leaves none of its declared outputs (the atomic writers already keep
    single files whole; this covers a job with several outputs that failed halfway)."""
    for output in outputs:
        path = Path(output)
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def run_script(smk: Any, main: Callable[[Any], None]) -> None:
    """Run a workflow script's ``main(snakemake)`` with the rule's log, threads and error policy."""
    log_file = smk.log[0] if len(smk.log) else None
    configure_logging(log_file)
    # Only scripts that train have imported torch by now; importing it for the others would
    # cost seconds per job.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, int(smk.threads)))
    results, wildcards = smk.config["results"], dict(smk.wildcards.items())
    try:
        main(smk)
    except BaseException as error:
        # Whatever ended the job (bad input, a bug, Ctrl-C), none of its outputs stays.
        _remove_outputs(list(smk.output))
        record_failure(results, smk.rule, wildcards, error, log_file)
        if isinstance(error, HepredError):
            log.error("%s", error)
            print(f"hepred: error: {error}", file=sys.stderr)
            sys.exit(1)
        if isinstance(error, Exception):
            log.exception("unexpected error (a bug, please report it with this log)")
        raise
    clear_failure(results, smk.rule, wildcards)


def visible_gpus() -> int:
    """GPUs a local run may use: those CUDA_VISIBLE_DEVICES names when it is set, at most as many
    as ``nvidia-smi -L`` lists; else those it lists; 0 without either (found without importing
    torch, which the workflow's own process never needs)."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        # As CUDA reads it: the devices before the first invalid entry ("-1", empty), none after it.
        count = 0
        for device in named.split(","):
            if not device.strip() or device.strip().startswith("-"):
                break
            count += 1
        # An ordinal beyond the installed devices is invalid too: never more than there are.
        installed = _listed_gpus() if count else None
        return count if installed is None else min(count, installed)
    return _listed_gpus() or 0


def _listed_gpus() -> int | None:
    """The GPUs ``nvidia-smi -L`` lists; None where it cannot run."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
