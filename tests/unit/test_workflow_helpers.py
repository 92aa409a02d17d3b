"""Helpers the Snakefile calls, tested without Snakemake."""
import pytest

from hepred.workflow import visible_gpus


@pytest.mark.parametrize(
    ("named", "expected"),
    [("0", 1), ("0,1", 2), ("GPU-a,GPU-b", 2), ("", 0), ("-1", 0), ("0,-1,1", 1), ("1, 0", 2)],
)
def test_visible_gpus_read_cuda_visible_devices_as_cuda_does(monkeypatch, tmp_path, named, expected):
    # CUDA shows the devices listed before the first invalid entry and none after it.
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: nothing to cap by
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", named)
    assert visible_gpus() == expected


def test_visible_gpus_never_exceed_the_installed_ones(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "GPU 0: Fake A (UUID: GPU-a)"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert visible_gpus() == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == 1
