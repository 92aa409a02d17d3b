"""Patient-level stratified cross-validation folds, written once (nnU-Net style splits.json)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from hepred.errors import HepredError
from hepred.io import read_json


def make_splits(labels: dict[str, int], k: int, val_fraction: float, seed: int) -> dict:
    """k stratified folds by patient; inside each training part a stratified validation split."""
    case_ids = sorted(labels)
    y = np.array([labels[c] for c in case_ids])
    smallest_class = int(min((y == 0).sum(), (y == 1).sum()))
    if smallest_class < k:
        raise HepredError(
            f"{k}-fold stratified splits need at least {k} patients of each class; "
            f"the cohort has {int((y == 1).sum())} with HE and {int((y == 0).sum())} without"
        )
    outer = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for fold_index, (train_val_idx, test_idx) in enumerate(outer.split(case_ids, y)):
        train_val = [case_ids[i] for i in train_val_idx]
        positives = int(y[train_val_idx].sum())
        if min(positives, len(train_val_idx) - positives) < 2:
            raise HepredError(
                f"fold {fold_index}: its training part holds {positives} patients with HE and "
                f"{len(train_val_idx) - positives} without; a stratified validation split needs 2 of each "
                "(use fewer folds or a larger cohort)"
            )
        train, val = train_test_split(
            train_val,
            test_size=val_fraction,
            stratify=y[train_val_idx],
            random_state=seed + fold_index,
        )
        folds.append({"train": sorted(train), "val": sorted(val), "test": sorted(case_ids[i] for i in test_idx)})
    return {"k": k, "seed": seed, "val_fraction": val_fraction, "folds": folds}


def validate_splits(splits: dict, case_ids: list[str], source: str | Path) -> None:
    """A user-given splits file: every case in exactly one test fold, no overlap inside a fold."""
    if not isinstance(splits, dict) or not isinstance(splits.get("folds"), list) or not splits["folds"]:
        raise HepredError('splits file must be {"folds": [{"train": [...], "val": [...], "test": [...]}, ...]}', path=source)
    known = set(case_ids)
    test_count: dict[str, int] = {c: 0 for c in case_ids}
    for index, fold in enumerate(splits["folds"]):
        parts = {}
        for part in ("train", "val", "test"):
            ids = fold.get(part) if isinstance(fold, dict) else None
            if not isinstance(ids, list) or not ids:
                raise HepredError(f"fold {index}: '{part}' must be a non-empty list of case ids", path=source)
            unknown = sorted(set(ids) - known)
            if unknown:
                raise HepredError(f"fold {index}: '{part}' names unknown case(s) {', '.join(unknown[:5])}", path=source)
            parts[part] = set(ids)
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sorted(parts[a] & parts[b])
            if shared:
                raise HepredError(f"fold {index}: case(s) {', '.join(shared[:5])} in both '{a}' and '{b}'", path=source)
        for case in parts["test"]:
            test_count[case] += 1
    wrong = sorted(c for c, n in test_count.items() if n != 1)
    if wrong:
        raise HepredError(
            f"every case must be in exactly one test fold; not so for {', '.join(wrong[:5])}"
            + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""),
            path=source,
        )


def load_user_splits(path: str | Path, case_ids: list[str]) -> dict:
    try:
        splits = read_json(path)
    except (OSError, ValueError) as exc:
        raise HepredError(f"cannot read splits file: {exc}", path=path) from None
    validate_splits(splits, case_ids, path)
    return splits
