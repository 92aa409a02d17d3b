from pathlib import Path

import pytest

from hepred.errors import HepredError
from hepred.samplesheet import demo_case_ids, find_case, read_sample_sheet


def write_sheet(tmp_path: Path, text: str) -> Path:
    sheet = tmp_path / "samples.csv"
    sheet.write_text(text)
    return sheet


def test_paths_resolve_relative_to_the_sheet(tmp_path):
    sheet = write_sheet(tmp_path, "case_id,ct,lesion,followup_lesion,label\np1,dicom/p1,masks/p1.nii.gz,,1\n")
    (case,) = read_sample_sheet(sheet)
    assert case.ct == tmp_path.resolve() / "dicom/p1"
    assert case.lesion == tmp_path.resolve() / "masks/p1.nii.gz"
    assert case.followup_lesion is None
    assert case.label == 1


def test_duplicate_case_id_names_the_case_and_the_sheet(tmp_path):
    sheet = write_sheet(tmp_path, "case_id,ct,lesion\np1,a,b\np2,c,d\np1,e,f\n")
    with pytest.raises(HepredError) as error:
        read_sample_sheet(sheet)
    message = str(error.value)
    assert "case p1" in message and str(sheet) in message and "duplicate" in message
    assert "\n" not in message


@pytest.mark.parametrize("bad_id", ["../evil", "a/b", "with space", "", ".hidden"])
def test_unsafe_case_ids_are_refused(tmp_path, bad_id):
    sheet = write_sheet(tmp_path, f"case_id,ct,lesion\n{bad_id},a,b\n")
    with pytest.raises(HepredError, match="not safe as a file name|empty"):
        read_sample_sheet(sheet)


@pytest.mark.parametrize("label", ["2", "yes", "0.5", "-1"])
def test_label_other_than_0_1_is_refused(tmp_path, label):
    sheet = write_sheet(tmp_path, f"case_id,ct,lesion,label\np7,a,b,{label}\n")
    with pytest.raises(HepredError, match="case p7.*label must be 0 or 1"):
        read_sample_sheet(sheet)


def test_unknown_and_missing_columns(tmp_path):
    with pytest.raises(HepredError, match="lacks column"):
        read_sample_sheet(write_sheet(tmp_path, "case_id,ct\np1,a\n"))
    with pytest.raises(HepredError, match="unknown column.*age"):
        read_sample_sheet(write_sheet(tmp_path, "case_id,ct,lesion,age\np1,a,b,70\n"))


def test_find_case_and_demo_ids(tmp_path):
    sheet = write_sheet(tmp_path, "case_id,ct,lesion\np1,a,b\n")
    cases = read_sample_sheet(sheet)
    assert find_case(cases, "p1", sheet).case_id == "p1"
    with pytest.raises(HepredError, match="case p9"):
        find_case(cases, "p9", sheet)
    assert demo_case_ids(3) == ["sim001", "sim002", "sim003"]
