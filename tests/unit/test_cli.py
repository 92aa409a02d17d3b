"""The `hepred` command line: version, help texts with defaults, one-line errors."""

import pytest

from hepred.cli import build_parser, main


def test_version_names_the_installed_package(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("hepred 0.")


@pytest.mark.parametrize("command", ["simulate", "dicom2nifti", "predict"])
def test_every_option_with_a_default_says_it(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for action in subparsers.choices[command]._actions:
        if action.option_strings and action.default not in (None, False) and action.dest != "help":
            assert action.help, f"{command} {action.option_strings[0]} has no help"
            assert f"(default: {action.default})" in text, f"{command} {action.option_strings[0]}"


def test_dicom2nifti_refuses_an_output_that_is_not_nifti(tmp_path, capsys):
    assert main(["dicom2nifti", str(tmp_path), str(tmp_path / "out.png")]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"hepred: error: {tmp_path / 'out.png'}: the output must be a NIfTI file (.nii or .nii.gz)"
    assert not (tmp_path / "out.png").exists()
