"""Helpers the Snakefile calls, tested without Snakemake."""
import pytest

from hepred.workflow import visible_gpus


@pytest.mark.parametrize(
    ("named", "expected"),
    [("0", 1), ("0,1", 2), ("GPU-a,GPU-b", 2), ("", 0), ("-1", 0), ("0,-1,1", 1), ("1, 0", 2)],
)
def test_visible_gpus_read_cuda_visible_devices_as_cuda_does(monkeypatch, named, expected):
    # CUDA shows the devices listed before the first invalid entry and none after it.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", named)
    assert visible_gpus() == expected
