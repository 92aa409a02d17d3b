"""Hematoma-expansion labels: from baseline/follow-up lesion volumes, else from the sheet."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from hepred.errors import HepredError
from hepred.samplesheet import Case

log = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "case_id",
    "label",
    "label_source",
    "baseline_volume_ml",
    "followup_volume_ml",
    "growth_ml",
    "growth_percent",
]


def expansion_from_volumes(baseline_ml: float, followup_ml: float, growth_ml: float, growth_percent: float) -> int:
    """HE = absolute growth above growth_ml OR relative growth above growth_percent (defaults 6 mL, 33 %)."""
    absolute = followup_ml - baseline_ml
    relative = 100.0 * absolute / baseline_ml
    return int(absolute > growth_ml or relative > growth_percent)


def compute_labels(cases: list[Case], volumes: dict[str, dict], cfg: dict, sheet: str | Path = "sample sheet") -> pd.DataFrame:
    """One row per case. ``volumes[case_id]`` holds the ingest meta (lesion volumes in mL).

    The sheet's extra (clinical) columns follow the label columns, as the user wrote them.
    """
    clinical = list(cases[0].clinical) if cases else []
    clash = [column for column in clinical if column in LABEL_COLUMNS]
    if clash:
        raise HepredError(f"column(s) {', '.join(clash)} would overwrite the labels table's own: rename them", path=sheet)
    rows = []
    for case in cases:
        meta = volumes[case.case_id]
        baseline = meta.get("lesion_volume_ml")
        followup = meta.get("followup_lesion_volume_ml")
        if baseline is not None and followup is not None:
            label = expansion_from_volumes(baseline, followup, cfg["growth_ml"], cfg["growth_percent"])
            source = "volumes"
            if case.label is not None and case.label != label:
                log.warning(
                    "case %s: sheet label %d disagrees with the volume rule (%d); using the volume rule",
                    case.case_id, case.label, label,
                )
        elif case.label is not None:
            label, source = case.label, "sheet"
        else:
            raise HepredError("no follow-up lesion and no label: cannot tell whether it expanded", case_id=case.case_id, path=sheet)
        growth = None if followup is None else followup - baseline
        rows.append(
            {
                "case_id": case.case_id,
                "label": label,
                "label_source": source,
                "baseline_volume_ml": baseline,
                "followup_volume_ml": followup,
                "growth_ml": growth,
                "growth_percent": None if growth is None else 100.0 * growth / baseline,
                **case.clinical,
            }
        )
    return pd.DataFrame(rows, columns=LABEL_COLUMNS + clinical)


def read_labels(path: str | Path) -> dict[str, int]:
    # keep_default_na: a case id such as NA or null is an id, not a missing value.
    frame = pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False, na_values=[""])
    return dict(zip(frame["case_id"], frame["label"].astype(int)))
