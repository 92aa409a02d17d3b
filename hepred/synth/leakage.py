"""The guard that keeps a fold's held-out patients out of its generator and its synthetic set."""
from __future__ import annotations

import pandas as pd

from hepred.errors import HepredError


def check_no_leakage(fold: dict, trained_on: list[str], manifest: pd.DataFrame) -> None:
    """Raise if a validation or test case of ``fold`` trained the generator or is a synthetic source;
    when the fold lists its training cases, every seen or source case must be one of them."""
    seen = set(trained_on)
    sources = set(manifest["source_case"]) if len(manifest) else set()
    held_out = set(fold.get("val", [])) | set(fold.get("test", []))
    for cases, role in ((seen, "trained the generator"), (sources, "are synthetic sources")):
        leaked = sorted(cases & held_out)
        if leaked:
            raise HepredError(f"leakage: held-out cases of this fold {role}: {leaked}", case_id=leaked[0])
        if "train" in fold:
            foreign = sorted(cases - set(fold["train"]))
            if foreign:
                raise HepredError(f"leakage: cases outside this fold's training set {role}: {foreign}",
                                  case_id=foreign[0])
