"""Bad input through the real workflow: one clear line, the other cases finish."""
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from tests.workflow.conftest import run_snakemake


def write_ct_and_mask(folder: Path, name: str, lesion: bool = True, origin=(0.0, 0.0, 0.0)) -> tuple[Path, Path]:
    ct = np.full((8, 40, 40), -1000, dtype=np.int16)
    ct[1:7, 5:35, 5:35] = 30
    mask = np.zeros_like(ct, dtype=np.uint8)
    if lesion:
        mask[3:5, 15:22, 15:22] = 1
    paths = []
    for array, suffix in ((ct, "ct"), (mask, "lesion")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 5.0))
        image.SetOrigin(origin if suffix == "lesion" else (0.0, 0.0, 0.0))
        path = folder / f"{name}_{suffix}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths[0], paths[1]


def test_bad_cases_fail_alone_with_one_line_each(workdir):
    data = workdir / "data"
    data.mkdir()
    write_ct_and_mask(data, "good1")
    write_ct_and_mask(data, "good2")
    write_ct_and_mask(data, "empty", lesion=False)
    write_ct_and_mask(data, "shifted", origin=(300.0, 0.0, 0.0))
    write_ct_and_mask(data, "corrupt")  # its CT is overwritten with garbage below
    (data / "corrupt_ct.nii.gz").write_bytes(b"not a nifti file at all")
    rows = ["case_id,ct,lesion,label"]
    for case in ("good1", "good2", "empty", "shifted", "corrupt"):
        rows.append(f"{case},data/{case}_ct.nii.gz,data/{case}_lesion.nii.gz,0")
    rows.append("missing,data/nowhere_ct.nii.gz,data/nowhere_lesion.nii.gz,1")
    (workdir / "samples.csv").write_text("\n".join(rows) + "\n")

    cases = ["good1", "good2", "empty", "shifted", "corrupt", "missing"]
    targets = [f"results/ingest/{case}/meta.json" for case in cases]
    result = run_snakemake(workdir, {"samples": "samples.csv"}, "--keep-going", *targets, check=False)
    assert result.returncode != 0

    for case in ("good1", "good2"):
        assert (workdir / f"results/ingest/{case}/meta.json").exists()
    expectations = {
        "empty": ("empty_lesion.nii.gz", "empty"),
        "shifted": ("shifted_lesion.nii.gz", "does not match its CT"),
        "corrupt": ("corrupt_ct.nii.gz", ""),
        "missing": ("nowhere_ct.nii.gz", ""),
    }
    for case, (file_name, words) in expectations.items():
        assert not (workdir / f"results/ingest/{case}").exists() or not any(
            (workdir / f"results/ingest/{case}").iterdir()
        ), f"{case} left files behind"
        errors = [
            line
            for line in (workdir / f"results/logs/ingest/{case}.log").read_text().splitlines()
            if " ERROR " in line
        ]
        assert len(errors) == 1, errors
        assert f"case {case}" in errors[0] and file_name in errors[0] and words in errors[0]

    # The run ends with the list of exactly the failed cases, in a file and printed last.
    failed = pd.read_csv(workdir / "results/failed_cases.csv", keep_default_na=False)
    assert list(failed.columns) == ["case", "stage", "job", "file", "error", "log"]
    assert sorted(failed["case"]) == sorted(expectations) and set(failed["stage"]) == {"ingest"}
    for row in failed.itertuples():
        file_name, words = expectations[row.case]
        assert row.file.endswith(file_name) and words in row.error and row.log.endswith(f"{row.case}.log")
    # After the last job, followed only by Snakemake's closing lines (log path, elapsed time).
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("hepred: 4 job(s) failed"))
    assert "Exiting because a job execution failed" in lines[start - 1]
    listed = lines[start + 1 : start + 1 + len(expectations)]
    assert sorted(line.split()[2].rstrip(":") for line in listed) == sorted(expectations)

    # Fixed input: the rerun succeeds and the list empties.
    for case in expectations:
        write_ct_and_mask(data, case)
    rows = [row.replace("nowhere", "missing") for row in rows]
    (workdir / "samples.csv").write_text("\n".join(rows) + "\n")
    result = run_snakemake(workdir, {"samples": "samples.csv"}, *targets)
    assert pd.read_csv(workdir / "results/failed_cases.csv").empty
    assert "hepred: no job failed" in result.stderr


def test_sheet_and_config_errors_stop_before_anything_runs(workdir):
    (workdir / "samples.csv").write_text("case_id,ct,lesion\np1,a.nii.gz,b.nii.gz\np1,c.nii.gz,d.nii.gz\n")
    result = run_snakemake(workdir, {"samples": "samples.csv"}, "-n", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("hepred:")]
    assert lines == ["hepred: case p1: samples.csv: duplicate case id (rows 2 and 3)"]

    result = run_snakemake(workdir, {"folds": {"k": 5, "nfolds": 3}}, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "hepred: config folds: Additional properties are not allowed ('nfolds' was unexpected)" in output
    assert not (workdir / "results").exists()
