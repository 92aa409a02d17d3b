import json

import pytest

from hepred.errors import HepredError
from hepred.folds import load_user_splits, make_splits, validate_splits
from hepred.labels import compute_labels, expansion_from_volumes
from hepred.samplesheet import Case

RULE = {"growth_ml": 6.0, "growth_percent": 33.0}


@pytest.mark.parametrize(
    "baseline, followup, expected",
    [
        (10.0, 16.5, 1),  # +6.5 mL (and +65 %)
        (30.0, 35.0, 0),  # +5 mL, +16.7 %
        (30.0, 36.5, 1),  # +6.5 mL although only +21.7 %
        (3.0, 4.2, 1),  # +1.2 mL but +40 %
        (9.0, 11.9, 0),  # +2.9 mL, +32.2 %
        (20.0, 15.0, 0),  # shrinkage
    ],
)
def test_expansion_rule(baseline, followup, expected):
    assert expansion_from_volumes(baseline, followup, **RULE) == expected


def _case(case_id, label=None):
    return Case(case_id=case_id, ct=None, lesion=None, label=label)


def test_labels_from_volumes_else_sheet_else_error():
    volumes = {
        "a": {"lesion_volume_ml": 10.0, "followup_lesion_volume_ml": 20.0},
        "b": {"lesion_volume_ml": 10.0, "followup_lesion_volume_ml": None},
        "c": {"lesion_volume_ml": 10.0, "followup_lesion_volume_ml": None},
    }
    frame = compute_labels([_case("a", label=0), _case("b", label=1)], volumes, RULE)
    assert frame.set_index("case_id")["label"].to_dict() == {"a": 1, "b": 1}
    assert frame.set_index("case_id")["label_source"].to_dict() == {"a": "volumes", "b": "sheet"}
    assert frame.loc[0, "growth_percent"] == pytest.approx(100.0)
    with pytest.raises(HepredError, match="case c"):
        compute_labels([_case("c")], volumes, RULE)


def _labels(n_pos=12, n_neg=28):
    ids = [f"p{i:02d}" for i in range(n_pos + n_neg)]
    return {case: int(i < n_pos) for i, case in enumerate(ids)}


def test_splits_are_stratified_disjoint_and_seeded():
    labels = _labels()
    splits = make_splits(labels, k=5, val_fraction=0.2, seed=3)
    validate_splits(splits, sorted(labels), "made")
    for fold in splits["folds"]:
        assert set(fold["train"]).isdisjoint(fold["val"]) and set(fold["train"]).isdisjoint(fold["test"])
        assert set(fold["train"]) | set(fold["val"]) | set(fold["test"]) == set(labels)
        positives = sum(labels[c] for c in fold["test"])
        assert positives in (2, 3)  # 12 positives over 5 folds
        assert any(labels[c] for c in fold["val"])
    assert make_splits(labels, 5, 0.2, seed=3) == splits
    assert make_splits(labels, 5, 0.2, seed=4) != splits


def test_too_few_of_a_class_is_a_clear_error():
    with pytest.raises(HepredError, match="at least 5 patients of each class"):
        make_splits(_labels(n_pos=3, n_neg=20), k=5, val_fraction=0.2, seed=0)


def test_user_splits_are_validated(tmp_path):
    labels = _labels()
    good = make_splits(labels, k=5, val_fraction=0.2, seed=0)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(good))
    assert load_user_splits(path, sorted(labels)) == good

    bad = json.loads(json.dumps(good))
    twice = bad["folds"][0]["test"][0]  # also put into fold 1's test part
    for part in ("train", "val"):
        bad["folds"][1][part] = [c for c in bad["folds"][1][part] if c != twice]
    bad["folds"][1]["test"].append(twice)
    path.write_text(json.dumps(bad))
    with pytest.raises(HepredError, match=f"exactly one test fold.*{twice}"):
        load_user_splits(path, sorted(labels))

    leak = json.loads(json.dumps(good))
    leak["folds"][0]["train"].append(leak["folds"][0]["test"][0])
    path.write_text(json.dumps(leak))
    with pytest.raises(HepredError, match="both 'train' and 'test'"):
        load_user_splits(path, sorted(labels))
