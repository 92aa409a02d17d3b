import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hepred.io import atomic_path, save_sitk, write_json
from hepred import training
from hepred.training import Checkpoint


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed halfway")
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_are_readable_by_others(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert os.stat(tmp_path / "a.json").st_mode & 0o044  # not the 0600 of mkstemp


def test_save_sitk_roundtrip_keeps_geometry(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 1024
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.45, 0.5, 5.0))
    image.SetOrigin((-10.0, 20.0, -30.0))
    image.SetDirection((1, 0, 0, 0, 0.96, -0.28, 0, 0.28, 0.96))
    save_sitk(tmp_path / "ct.nii.gz", image)
    back = sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(back.GetDirection(), image.GetDirection(), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]


def test_the_same_image_gives_the_same_bytes(tmp_path, monkeypatch):
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    save_sitk(tmp_path / "a.nii.gz", image)
    monkeypatch.setattr("time.time", lambda: 1e9)  # a later write: gzip must not stamp the time
    save_sitk(tmp_path / "b.nii.gz", image)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


def test_checkpoint_resumes_only_its_own_run(tmp_path, caplog):
    log = logging.getLogger("test")
    checkpoint = Checkpoint(tmp_path / "checkpoint_latest.pt")
    assert checkpoint.resume("run-a", log) is None  # nothing saved yet
    checkpoint.save({"fingerprint": "run-a", "epoch": 3})
    assert checkpoint.resume("run-a", log)["epoch"] == 3
    with caplog.at_level(logging.WARNING):
        assert checkpoint.resume("run-b", log) is None
    assert "different setup" in caplog.text

    checkpoint.path.write_bytes(b"not a checkpoint")  # e.g. a disk that filled up under another tool
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert checkpoint.resume("run-a", log) is None
    assert "cannot be read" in caplog.text


def test_the_run_environment_names_the_cpu_and_the_instruction_set_its_kernels_use(monkeypatch, tmp_path):
    # platform.processor() is empty on Linux: the CPU's name comes from /proc/cpuinfo.
    monkeypatch.setattr(training.platform, "processor", lambda: "")
    environment = training.run_environment(torch.device("cpu"))
    cpuinfo = Path("/proc/cpuinfo")
    named = cpuinfo.exists() and any(line.startswith("model name") for line in cpuinfo.read_text().splitlines())
    if named:  # x86 Linux; ARM's cpuinfo has no model name
        assert environment["cpu_name"] and environment["device_name"] == environment["cpu_name"]
    assert isinstance(environment["cpu_capability"], str) and environment["cpu_capability"]
    training.write_trained_with(tmp_path / "model.pt", {"lr": 0.1}, environment)
    recorded = json.loads((tmp_path / "trained_with.json").read_text())["environment"]
    assert (recorded["cpu_name"], recorded["cpu_capability"]) == (environment["cpu_name"], environment["cpu_capability"])
