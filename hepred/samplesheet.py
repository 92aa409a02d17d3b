"""The user's sample sheet: one row per patient, paths relative to the sheet.

Read as spreadsheets save it: CSV separated by commas, semicolons or tabs (UTF-8, with or
without a byte-order mark, or UTF-16 as Excel's "Unicode text"), CRLF line ends, empty
rows and columns left over from Excel, or an .xlsx workbook. Columns hepred does not know
(clinical data such as age) are kept and carried to the labels table; a column that looks
like a misspelt known one is refused, since ignoring it would change what is read.
"""
from __future__ import annotations

import difflib
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hepred.errors import HepredError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("case_id", "ct", "lesion")
OPTIONAL_COLUMNS = ("followup_lesion", "label", "series_uid")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Case ids become directory names on every file system and cluster we run on.
SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
SHEET_SUFFIXES = (".csv", ".tsv", ".txt", *WORKBOOK_SUFFIXES)
# An unknown column this similar to a known one is taken for a misspelling of it.
MISSPELLING_CUTOFF = 0.8
ZIP_MAGIC = b"PK\x03\x04"  # an .xlsx is a zip archive


@dataclass(frozen=True)
class Case:
    case_id: str
    ct: Path
    lesion: Path
    followup_lesion: Path | None = None
    label: int | None = None
    series_uid: str | None = None
    clinical: dict[str, str] = field(default_factory=dict, hash=False)  # extra columns, as written


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


def _read_workbook(sheet: Path) -> pd.DataFrame:
    try:
        workbook = pd.ExcelFile(sheet, engine="openpyxl")
    except ImportError:
        raise HepredError("reading .xlsx needs openpyxl; install it, or save the sheet as CSV", path=sheet) from None
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HepredError(f"cannot read the workbook ({reason}); save the sheet as CSV", path=sheet) from None
    with workbook:
        if len(workbook.sheet_names) > 1:
            names = workbook.sheet_names
            logger.info("%s: read worksheet %r, the first of %d", sheet.name, names[0], len(names))
        return pd.read_excel(workbook, sheet_name=0, dtype=str, keep_default_na=False)


def _decode(data: bytes, sheet: Path) -> str:
    """The sheet's text: UTF-8 (with or without BOM) or UTF-16 with its BOM, else one clear line."""
    if data.startswith(ZIP_MAGIC):
        raise HepredError("this is an Excel workbook, not CSV text: name it .xlsx, or save it as CSV", path=sheet)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HepredError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}): save it as 'CSV UTF-8'",
            path=sheet,
        ) from None


def _delimiter(text: str, sheet: Path) -> str:
    """The separator of the header line: the one of comma, semicolon and tab it holds most of."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {delimiter: header.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise HepredError(
            f"the header line {header.strip()[:60]!r} has no comma, semicolon or tab: columns must be "
            "separated by one of them",
            path=sheet,
        )
    return best


def _read_table(sheet: Path) -> pd.DataFrame:
    if sheet.suffix.lower() == ".xls":
        raise HepredError("an Excel 97-2003 .xls workbook: save it as .xlsx or as CSV", path=sheet)
    if sheet.suffix.lower() in WORKBOOK_SUFFIXES:
        return _read_workbook(sheet)
    try:
        text = _decode(sheet.read_bytes(), sheet)
        delimiter = _delimiter(text, sheet)
        return pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HepredError(f"cannot read sample sheet: {str(exc).splitlines()[0]}", path=sheet) from None


def _tidy(frame: pd.DataFrame, sheet: Path) -> pd.DataFrame:
    """Drop the empty rows and unnamed empty columns spreadsheets leave; strip the header."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    frame = frame.fillna("").astype(str)
    unnamed = [c for c in frame.columns if c == "" or c.startswith("Unnamed:")]
    for column in unnamed:
        if frame[column].str.strip().ne("").any():
            number = list(frame.columns).index(column) + 1
            raise HepredError(f"column {number} has no name in the header but holds values", path=sheet)
    frame = frame.drop(columns=unnamed)
    return frame[frame.apply(lambda row: row.str.strip().ne("").any(), axis=1)]


def _check_columns(columns: list[str], sheet: Path) -> list[str]:
    """Refuse missing or misspelt known columns; return the extra (clinical) ones."""
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        hints = []
        for column in missing:
            close = difflib.get_close_matches(column, unknown, n=1, cutoff=0.6)
            close = close or [c for c in unknown if c.lower() == column]
            if close:
                hints.append(f"'{close[0]}' for {column}?")
        hint = f" (misspelt? {' '.join(hints)})" if hints else ""
        raise HepredError(f"sample sheet lacks column(s) {', '.join(missing)}{hint}", path=sheet)
    for column in unknown:
        absent = [c for c in OPTIONAL_COLUMNS if c not in columns]
        close = difflib.get_close_matches(column.lower(), absent, n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            raise HepredError(f"column '{column}' looks like a misspelt '{close[0]}': rename it", path=sheet)
    return unknown


def read_sample_sheet(sheet: str | Path) -> list[Case]:
    """Parse and check a sample sheet; raise one HepredError line for the first problem.

    File existence is not checked here: a missing file fails only its own case at ingest,
    so the other cases still run with --keep-going.
    """
    sheet = Path(sheet)
    frame = _tidy(_read_table(sheet), sheet)
    extra = _check_columns(list(frame.columns), sheet)
    if frame.empty:
        raise HepredError("sample sheet has no cases", path=sheet)
    if extra:
        logger.warning(
            "%s: extra column(s) %s kept as clinical data: copied to labels.csv, not used by hepred",
            sheet,
            ", ".join(extra),
        )

    sheet_dir = sheet.resolve().parent
    cases: list[Case] = []
    seen: dict[str, int] = {}
    # Row numbers as a spreadsheet shows them: the header is row 1.
    for row_number, row in zip(frame.index + 2, frame.to_dict("records")):
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
                clinical={column: str(row[column]).strip() for column in extra},
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
