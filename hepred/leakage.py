"""The guard that keeps a fold's held-out patients out of its generator and its training data."""
from __future__ import annotations

from collections.abc import Iterable

from hepred.errors import HepredError


def check_no_leakage(fold: dict, trained_on: Iterable[str], sources: Iterable[str]) -> None:
    """Raise if a validation or test case of ``fold`` trained the generator or is the source of a
    synthetic image; when the fold lists its training cases, every such case must be one of them.

    Checked by synthesize before any synthetic volume is written, and again by the classifier
    on the manifest it reads, so a manifest edited or copied from another fold is refused too.
    """
    seen = set(trained_on)
    sources = set(sources)
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
