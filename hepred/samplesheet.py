"""The user's sample sheet: one row per patient, paths relative to the sheet."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hepred.errors import HepredError

REQUIRED_COLUMNS = ("case_id", "ct", "lesion")
OPTIONAL_COLUMNS = ("followup_lesion", "label", "series_uid")
# Case ids become directory names on every file system and cluster we run on.
SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Case:
    case_id: str
    ct: Path
    lesion: Path
    followup_lesion: Path | None = None
    label: int | None = None
    series_uid: str | None = None


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == ""


def _resolve(sheet_dir: Path, value) -> Path:
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else (sheet_dir / path)


def _parse_label(case_id: str, value, sheet: Path) -> int | None:
    if _blank(value):
        return None
    text = str(value).strip()
    if text in {"0", "1", "0.0", "1.0"}:
        return int(float(text))
    raise HepredError(f"label must be 0 or 1, got {text!r}", case_id=case_id, path=sheet)


def read_sample_sheet(sheet: str | Path) -> list[Case]:
    """Parse and check a sample sheet; raise one HepredError line for the first problem.

    File existence is not checked here: a missing file fails only its own case at ingest,
    so the other cases still run with --keep-going.
    """
    sheet = Path(sheet)
    try:
        frame = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise HepredError(f"cannot read sample sheet: {str(exc).splitlines()[0]}", path=sheet) from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise HepredError(f"sample sheet lacks column(s) {', '.join(missing)}", path=sheet)
    unknown = [c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise HepredError(
            f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}",
            path=sheet,
        )
    if frame.empty:
        raise HepredError("sample sheet has no cases", path=sheet)

    sheet_dir = sheet.resolve().parent
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        case_id = str(row["case_id"]).strip()
        if not SAFE_CASE_ID.match(case_id):
            raise HepredError(
                f"row {row_number}: case id {case_id!r} is not safe as a file name "
                "(letters, digits, '_', '-', '.', starting with a letter or digit)",
                path=sheet,
            )
        if case_id in seen:
            raise HepredError(f"duplicate case id (rows {seen[case_id]} and {row_number})", case_id=case_id, path=sheet)
        seen[case_id] = row_number
        for column in REQUIRED_COLUMNS[1:]:
            if _blank(row[column]):
                raise HepredError(f"empty '{column}' column", case_id=case_id, path=sheet)
        cases.append(
            Case(
                case_id=case_id,
                ct=_resolve(sheet_dir, row["ct"]),
                lesion=_resolve(sheet_dir, row["lesion"]),
                followup_lesion=None if _blank(row.get("followup_lesion")) else _resolve(sheet_dir, row["followup_lesion"]),
                label=_parse_label(case_id, row.get("label"), sheet),
                series_uid=None if _blank(row.get("series_uid")) else str(row["series_uid"]).strip(),
            )
        )
    return cases


def find_case(cases: list[Case], case_id: str, sheet: str | Path) -> Case:
    for case in cases:
        if case.case_id == case_id:
            return case
    raise HepredError("case is not in the sample sheet", case_id=case_id, path=sheet)


def demo_case_ids(n: int) -> list[str]:
    """Case ids of the simulated demo cohort, known before the cohort is written."""
    return [f"sim{i:03d}" for i in range(1, n + 1)]
