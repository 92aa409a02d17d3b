"""Which jobs of a run failed and why: ``results/failed_cases.csv`` and the list printed last.

Every workflow job that fails records its one-line error under ``logs/failed/`` (see
``hepred.workflow.run_script``) and a job that succeeds removes its own record, so after a
``--keep-going`` run the records are exactly the jobs that are still failing, however
many runs it took to get there. At the end of every run the records become
``failed_cases.csv`` (empty, with its header, when nothing failed).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from hepred import io
from hepred.errors import HepredError

FAILED_DIR = Path("logs") / "failed"
FAILED_CASES = "failed_cases.csv"
COLUMNS = ["case", "stage", "job", "file", "error", "log"]


def _record_path(results: Path, rule: str, wildcards: dict[str, Any]) -> Path:
    name = "_".join([rule, *(f"{key}-{value}" for key, value in sorted(wildcards.items()))])
    return Path(results) / FAILED_DIR / f"{name}.json"


def record_failure(results: Path, rule: str, wildcards: dict[str, Any], error: BaseException, log: str | None) -> None:
    """Keep the failed job's case, file and one-line error for the end-of-run list."""
    if isinstance(error, HepredError):
        case, path, message = error.case_id, error.path, error.message
    elif not isinstance(error, Exception):  # Ctrl-C, a termination signal
        case, path, message = None, None, f"interrupted ({type(error).__name__})"
    else:
        case, path = None, None
        detail = str(error).splitlines()[0] if str(error) else ""
        message = f"unexpected {type(error).__name__}{': ' + detail if detail else ''} (a bug: see the log)"
    record = {
        "case": wildcards.get("case") or case or "",
        "stage": rule,
        "job": " ".join(f"{key}={value}" for key, value in sorted(wildcards.items())),
        "file": path or "",
        "error": message,
        "log": log or "",
    }
    io.write_json(_record_path(results, rule, wildcards), record)


def clear_failure(results: Path, rule: str, wildcards: dict[str, Any]) -> None:
    """A job that succeeded is no longer failing."""
    with contextlib.suppress(FileNotFoundError):
        _record_path(results, rule, wildcards).unlink()


def failed_jobs(results: Path, cases: set[str] | None = None) -> pd.DataFrame:
    """The recorded failures, sorted by case and stage; with ``cases``, only those of the
    current cohort and the cohort-level jobs (a case taken out of the sheet is no failure)."""
    rows = [json.loads(path.read_text()) for path in sorted((Path(results) / FAILED_DIR).glob("*.json"))]
    frame = pd.DataFrame(rows, columns=COLUMNS).fillna("")
    if cases is not None:
        frame = frame[(frame["case"] == "") | frame["case"].isin(cases)]
    return frame.sort_values(["case", "stage", "job"], kind="stable").reset_index(drop=True)


def write_failed_cases(results: Path, cases: set[str] | None = None) -> pd.DataFrame:
    """``failed_cases.csv`` in ``results`` from the records; returns its rows."""
    frame = failed_jobs(results, cases)
    io.write_csv(Path(results) / FAILED_CASES, frame)
    return frame


def failure_report(frame: pd.DataFrame, results: Path, run_failed: bool = False, snakemake_log: str = "") -> str:
    """The lines printed last on the console: every failed job with its one-line error."""
    where = Path(results) / FAILED_CASES
    if frame.empty and run_failed:
        return (
            "hepred: the run failed, but no job recorded an error (a job killed for time or "
            f"memory, or a workflow error): see {snakemake_log or 'the Snakemake log above'}"
        )
    if frame.empty:
        return f"hepred: no job failed ({where} is empty)"
    lines = [f"hepred: {len(frame)} job(s) failed; the other cases' results are kept ({where}):"]
    for row in frame.itertuples(index=False):
        subject = f"case {row.case}" if row.case else row.job or "cohort"
        detail = ": ".join(part for part in (row.file, row.error) if part)
        lines.append(f"  {row.stage} {subject}: {detail}")
    return "\n".join(lines)
