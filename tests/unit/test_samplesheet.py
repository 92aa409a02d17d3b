from pathlib import Path

import pytest

import pandas as pd

from hepred.errors import HepredError
from hepred.labels import compute_labels
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


def test_missing_columns(tmp_path):
    with pytest.raises(HepredError, match="lacks column"):
        read_sample_sheet(write_sheet(tmp_path, "case_id,ct\np1,a\n"))


def test_find_case_and_demo_ids(tmp_path):
    sheet = write_sheet(tmp_path, "case_id,ct,lesion\np1,a,b\n")
    cases = read_sample_sheet(sheet)
    assert find_case(cases, "p1", sheet).case_id == "p1"
    with pytest.raises(HepredError, match="case p9"):
        find_case(cases, "p9", sheet)
    assert demo_case_ids(3) == ["sim001", "sim002", "sim003"]


def test_excel_csv_with_trailing_empty_rows_and_crlf(tmp_path):
    sheet = tmp_path / "samples.csv"
    sheet.write_bytes(b"\xef\xbb\xbfcase_id,ct,lesion,label,,\r\np1,a,b,1,,\r\np2,c,d,0,,\r\n,,,,,\r\n,,,,,\r\n")
    cases = read_sample_sheet(sheet)
    assert [c.case_id for c in cases] == ["p1", "p2"] and cases[1].lesion.name == "d" and cases[1].label == 0


def test_extra_clinical_columns_are_kept_with_one_warning(tmp_path, caplog):
    sheet = write_sheet(tmp_path, "case_id,ct,lesion,label,age,gcs,onset_to_ct_h\np1,a,b,1,71,14,2.5\n")
    with caplog.at_level("WARNING"):
        (case,) = read_sample_sheet(sheet)
    assert case.clinical == {"age": "71", "gcs": "14", "onset_to_ct_h": "2.5"}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "age, gcs, onset_to_ct_h" in warning and "labels.csv" in warning
    table = compute_labels([case], {"p1": {"lesion_volume_ml": 5.0}}, {"growth_ml": 6, "growth_percent": 33})
    assert list(table.columns)[-3:] == ["age", "gcs", "onset_to_ct_h"] and table.loc[0, "gcs"] == "14"


@pytest.mark.parametrize(
    "header, message",
    [
        ("case_id,ct,lesoin", r"lacks column\(s\) lesion \(misspelt\? 'lesoin' for lesion\?\)"),
        ("Case_ID,ct,lesion", r"lacks column\(s\) case_id \(misspelt\? 'Case_ID' for case_id\?\)"),
        ("case_id,ct,lesion,folowup_lesion", "column 'folowup_lesion' looks like a misspelt 'followup_lesion'"),
    ],
)
def test_misspelt_columns_get_the_closest_known_name(tmp_path, header, message):
    with pytest.raises(HepredError, match=message):
        read_sample_sheet(write_sheet(tmp_path, header + "\np1,a,b,c\n"))


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_separated_sheets(tmp_path, delimiter):
    rows = [["case_id", "ct", "lesion", "label"], ["p1", "dicom/p 1", "m1.nii.gz", "1"], ["p2", "b", "m2.nii.gz", "0"]]
    sheet = write_sheet(tmp_path, "".join(delimiter.join(row) + "\n" for row in rows))
    cases = read_sample_sheet(sheet)
    assert [c.case_id for c in cases] == ["p1", "p2"] and cases[0].ct.name == "p 1" and cases[1].label == 0


def test_utf16_tab_separated_unicode_text_from_excel(tmp_path):
    sheet = tmp_path / "samples.txt"
    sheet.write_bytes("case_id\tct\tlesion\r\np1\tä/ct\tb\r\n".encode("utf-16"))
    (case,) = read_sample_sheet(sheet)
    assert case.ct.parent.name == "ä"


def test_sheet_without_a_known_delimiter_is_one_line(tmp_path):
    with pytest.raises(HepredError, match="no comma, semicolon or tab") as info:
        read_sample_sheet(write_sheet(tmp_path, "case_id|ct|lesion\np1|a|b\n"))
    assert "\n" not in str(info.value)


def test_xlsx_workbook_is_read(tmp_path):
    sheet = tmp_path / "samples.xlsx"
    pd.DataFrame({"case_id": ["p1", "p2"], "ct": ["a", "c"], "lesion": ["b", "d"], "label": [1, 0], "age": [70, 81]}).to_excel(
        sheet, index=False
    )
    cases = read_sample_sheet(sheet)
    assert [(c.case_id, c.label, c.clinical["age"]) for c in cases] == [("p1", 1, "70"), ("p2", 0, "81")]
    renamed = tmp_path / "samples.csv"
    renamed.write_bytes(sheet.read_bytes())
    with pytest.raises(HepredError, match="Excel workbook, not CSV text: name it .xlsx"):
        read_sample_sheet(renamed)
