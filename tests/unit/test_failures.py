import pandas as pd

from hepred.errors import HepredError
from hepred.failures import clear_failure, failure_report, record_failure, write_failed_cases


def test_records_become_the_failed_cases_table_and_a_success_clears_its_own(tmp_path):
    record_failure(tmp_path, "ingest", {"case": "a"}, HepredError("lesion mask is empty", "a", "a_mask.nii.gz"), "a.log")
    record_failure(tmp_path, "train_classifier", {"fold": 1, "scenario": "t2"}, ValueError("bad\nsecond"), "t.log")
    record_failure(tmp_path, "preprocess", {"case": "gone"}, KeyboardInterrupt(), None)
    frame = write_failed_cases(tmp_path, cases={"a", "b"})  # "gone" left the sample sheet
    written = pd.read_csv(tmp_path / "failed_cases.csv", keep_default_na=False)
    assert written.to_dict("records") == frame.to_dict("records")
    assert list(frame["stage"]) == ["train_classifier", "ingest"]
    assert frame.loc[1, "file"] == "a_mask.nii.gz" and frame.loc[1, "error"] == "lesion mask is empty"
    assert frame.loc[0, "job"] == "fold=1 scenario=t2" and frame.loc[0, "error"].startswith("unexpected ValueError: bad (")
    report = failure_report(frame, tmp_path)
    assert report.splitlines()[1:] == [
        "  train_classifier fold=1 scenario=t2: unexpected ValueError: bad (a bug: see the log)",
        "  ingest case a: a_mask.nii.gz: lesion mask is empty",
    ]

    clear_failure(tmp_path, "ingest", {"case": "a"})
    clear_failure(tmp_path, "train_classifier", {"scenario": "t2", "fold": 1})
    assert write_failed_cases(tmp_path, cases={"a"}).empty
    assert pd.read_csv(tmp_path / "failed_cases.csv").empty
    assert "no job failed" in failure_report(pd.DataFrame(), tmp_path)
    assert "no job recorded an error" in failure_report(pd.DataFrame(), tmp_path, run_failed=True, snakemake_log="x.log")
