"""Generator training and synthesis end to end on a tiny toy cohort: outputs, determinism,
leakage, skipped cases, atomicity and exact resume after SIGKILL."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from hepred.errors import HepredError
from hepred.synth import synthesize, train_generator
from hepred.synth.data import OUTSIDE_HU
from hepred.synth.generate import MANIFEST_COLUMNS
from hepred.synth.toy import write_toy_preprocessed_cohort

METHODS = ["diffusion", "gan", "morph"]
TINY = {
    "patch_size": 16, "min_lesion_pixels": 10, "epochs": 2, "batch_size": 8, "versions": 2,
    "diffusion": {"channels": [8, 16, 16], "norm_num_groups": 4, "num_head_channels": 4, "ddim_steps": 3,
                  "num_train_timesteps": 100},
    "gan": {"channels": [8, 16, 16], "disc_channels": 8},
}
TRAIN = ["toy000", "toy001", "toy002"]
FOLD = {"train": TRAIN, "val": ["toy003"], "test": ["toy004"]}


@pytest.fixture(autouse=True)
def one_thread():
    # The same thread count everywhere, so that runs in this process and in subprocesses agree.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    labels = write_toy_preprocessed_cohort(root, 5, size=48, n_slices=8, lesion_slices=5, seed=11)
    return root, labels


def cfg_for(method, **changes):
    return {**TINY, "method": method, **changes}


def train(cohort, method, out: Path, cases=TRAIN, **changes):
    root, labels = cohort
    gen = out / "generator"
    train_generator(root, cases, labels, cfg_for(method, **changes), gen / "model.pt", gen / "checkpoint_latest.pt",
                    gen / "loss.csv", seed=5, device="cpu")
    return gen / "model.pt"


@pytest.fixture(scope="module")
def models(cohort, tmp_path_factory):
    torch.set_num_threads(1)
    return {method: train(cohort, method, tmp_path_factory.mktemp(method)) for method in METHODS}


def run_synthesis(cohort, model, method, out, seed=9, **changes):
    root, labels = cohort
    return synthesize(root, TRAIN, labels, model, cfg_for(method, **changes), out, seed=seed, device="cpu", fold=FOLD)


@pytest.mark.parametrize("method", METHODS)
def test_training_outputs(models, method):
    gen = models[method].parent
    weights = torch.load(models[method], weights_only=True)
    assert weights["meta"]["method"] == method
    assert json.loads((gen / "trained_on.json").read_text())["cases"] == TRAIN
    assert (gen / "loss.png").stat().st_size > 0
    loss = pd.read_csv(gen / "loss.csv")
    if method == "morph":
        assert weights["state_dict"] == {} and loss.empty
    else:
        assert list(loss["epoch"]) == [1, 2] and np.isfinite(loss["loss"]).all()
        assert len(weights["state_dict"]) > 10


@pytest.mark.parametrize("method", METHODS)
def test_synthesis_outputs_and_determinism(cohort, models, method, tmp_path):
    root, labels = cohort
    first = run_synthesis(cohort, models[method], method, tmp_path / "a")
    run_synthesis(cohort, models[method], method, tmp_path / "b")
    run_synthesis(cohort, models[method], method, tmp_path / "c", seed=10)

    assert list(first.columns) == MANIFEST_COLUMNS
    assert list(first["synthetic_id"]) == [f"{case}_syn{i}" for case in TRAIN for i in range(2)]
    assert (first["label"] == first["source_case"].map(labels)).all()
    assert (first["method"] == method).all() and first["seed"].nunique() == len(first)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "manifest.csv"), first)
    for qc_file in ("montage.png", "hu_stats.csv", "wasserstein.json"):
        assert (tmp_path / "a" / "qc" / qc_file).exists()

    differs = False
    for row in first.itertuples():
        hu = np.load(tmp_path / "a" / f"{row.synthetic_id}_hu.npy")
        lesion = np.load(tmp_path / "a" / f"{row.synthetic_id}_lesion.npy")
        np.testing.assert_array_equal(hu, np.load(tmp_path / "b" / f"{row.synthetic_id}_hu.npy"))
        np.testing.assert_array_equal(lesion, np.load(tmp_path / "b" / f"{row.synthetic_id}_lesion.npy"))
        differs |= not np.array_equal(hu, np.load(tmp_path / "c" / f"{row.synthetic_id}_hu.npy"))
        assert hu.dtype == np.int16 and lesion.dtype == np.uint8 and lesion.any()

        source_hu = np.load(root / row.source_case / "hu.npy")
        source_lesion = np.load(root / row.source_case / "lesion.npy")
        info = json.loads((root / row.source_case / "info.json").read_text())
        used = np.flatnonzero(((source_lesion > 0) & (source_hu > OUTSIDE_HU)).sum(axis=(1, 2)) >= 10)
        # The NIfTI is the source's whole cache volume on its grid, the used slices replaced.
        image = sitk.ReadImage(str(tmp_path / "a" / row.image))
        assert image.GetSpacing() == pytest.approx(info["spacing_mm"]) and image.GetOrigin() == pytest.approx(info["origin_mm"])
        image_hu = sitk.GetArrayFromImage(image)
        image_lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / row.lesion)))
        np.testing.assert_array_equal(image_hu[used], hu)
        np.testing.assert_array_equal(image_lesion[used], lesion)
        others = np.setdiff1d(np.arange(len(source_hu)), used)
        np.testing.assert_array_equal(image_hu[others], source_hu[others])
        source_hu, source_lesion = source_hu[used], source_lesion[used]
        assert hu.shape == source_hu.shape
        # The brain outline is kept; far from both lesions nothing changes.
        np.testing.assert_array_equal(hu == OUTSIDE_HU, source_hu == OUTSIDE_HU)
        if method != "morph":
            from scipy import ndimage

            near = np.stack([ndimage.distance_transform_edt(~plane) <= 3 for plane in (lesion > 0) | (source_lesion > 0)])
            np.testing.assert_array_equal(hu[~near], source_hu[~near])
        assert row.lesion_volume_ml == pytest.approx(lesion.sum() * np.prod(info["spacing_mm"]) / 1000)
    assert differs


@pytest.mark.parametrize("method", ["diffusion", "gan"])
def test_batches_spanning_cases_give_the_versions_of_one_patch_at_a_time(cohort, models, method, tmp_path):
    """sample_batch_size is a speed setting: one patch per call or every case's patches in one call
    (batches span cases) give the same versions; the GAN's float sums round to within 1 HU."""
    narrow = run_synthesis(cohort, models[method], method, tmp_path / "narrow", sample_batch_size=1)
    wide = run_synthesis(cohort, models[method], method, tmp_path / "wide", sample_batch_size=1000)
    pd.testing.assert_frame_equal(narrow, wide)
    for synthetic_id in narrow["synthetic_id"]:
        one = np.load(tmp_path / "narrow" / f"{synthetic_id}_hu.npy").astype(int)
        batched = np.load(tmp_path / "wide" / f"{synthetic_id}_hu.npy").astype(int)
        if method == "diffusion":
            np.testing.assert_array_equal(one, batched)
        else:
            assert np.abs(one - batched).max() <= 1


def test_a_case_without_lesion_slices_is_skipped_with_a_warning(cohort, tmp_path, caplog):
    root, labels = cohort
    pre = tmp_path / "pre"
    write_toy_preprocessed_cohort(pre, 1, size=48, n_slices=8, seed=2)
    (pre / "toy000").rename(pre / "blank")
    np.save(pre / "blank" / "lesion.npy", np.zeros((8, 48, 48), np.uint8))
    for case in TRAIN[1:]:
        (pre / case).symlink_to(root / case, target_is_directory=True)
    cases = ["blank", *TRAIN[1:]]
    all_labels = {**labels, "blank": 1}
    gen = tmp_path / "generator"
    with caplog.at_level(logging.WARNING):
        train_generator(pre, cases, all_labels, cfg_for("gan", epochs=1), gen / "model.pt",
                        gen / "checkpoint_latest.pt", gen / "loss.csv", seed=5, device="cpu")
        manifest = synthesize(pre, cases, all_labels, gen / "model.pt", cfg_for("gan"), tmp_path / "syn", seed=1,
                              device="cpu")
    assert "case blank: no slice" in caplog.text
    assert json.loads((gen / "trained_on.json").read_text()) == {"cases": TRAIN[1:], "skipped": ["blank"]}
    assert set(manifest["source_case"]) == set(TRAIN[1:])


def test_only_lesion_free_cases_is_an_error(tmp_path):
    write_toy_preprocessed_cohort(tmp_path, 1, size=48, seed=2)
    np.save(tmp_path / "toy000" / "lesion.npy", np.zeros((8, 48, 48), np.uint8))
    with pytest.raises(HepredError, match="none of the 1 training cases"):
        train_generator(tmp_path, ["toy000"], {"toy000": 0}, cfg_for("morph"), tmp_path / "g" / "model.pt",
                        tmp_path / "g" / "ckpt.pt", tmp_path / "g" / "loss.csv", seed=1)
    assert not (tmp_path / "g" / "model.pt").exists()


def test_a_generator_that_saw_a_held_out_case_is_refused(cohort, tmp_path):
    root, labels = cohort
    model = train(cohort, "morph", tmp_path, cases=[*TRAIN, "toy004"])
    with pytest.raises(HepredError, match="held-out cases of this fold trained the generator"):
        run_synthesis(cohort, model, "morph", tmp_path / "syn")
    model.with_name("trained_on.json").unlink()  # the model file itself records its training cases
    with pytest.raises(HepredError, match="outside this fold's training set"):
        synthesize(root, TRAIN, labels, model, cfg_for("morph"), tmp_path / "syn", seed=1)
    assert not (tmp_path / "syn" / "manifest.csv").exists()


def test_a_held_out_case_among_the_sources_is_refused_before_anything_is_written(cohort, models, tmp_path):
    root, labels = cohort
    out = tmp_path / "syn"
    with pytest.raises(HepredError, match="held-out cases of this fold are synthetic sources"):
        synthesize(root, [*TRAIN, "toy003"], labels, models["morph"], cfg_for("morph"), out, seed=1,
                   fold={"val": ["toy003"], "test": ["toy004"]})
    assert not out.exists() or not any(out.iterdir())


def test_method_mismatch_between_model_and_config_is_refused(cohort, models, tmp_path):
    with pytest.raises(HepredError, match="trained with method 'gan'"):
        run_synthesis(cohort, models["gan"], "diffusion", tmp_path)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_failed_synthesis_leaves_no_manifest_and_no_partial_files(cohort, models, tmp_path, monkeypatch):
    from hepred.synth import generate

    def broken_qc(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generate, "write_qc", broken_qc)
    with pytest.raises(RuntimeError):
        run_synthesis(cohort, models["morph"], "morph", tmp_path)
    assert not (tmp_path / "manifest.csv").exists()
    assert leftovers(tmp_path) == []


def test_failed_training_leaves_no_model_but_a_checkpoint(cohort, tmp_path, monkeypatch):
    import hepred.synth.train as training

    original = training.run_epoch

    def fails_in_second_epoch(repainter, patches, settings, seed, epoch, device):
        if epoch == 1:
            raise RuntimeError("killed")
        return original(repainter, patches, settings, seed, epoch, device)

    monkeypatch.setattr(training, "run_epoch", fails_in_second_epoch)
    with pytest.raises(RuntimeError):
        train(cohort, "gan", tmp_path)
    gen = tmp_path / "generator"
    assert not (gen / "model.pt").exists()
    assert torch.load(gen / "checkpoint_latest.pt", weights_only=False)["epoch"] == 1
    assert leftovers(tmp_path) == []


TRAIN_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from hepred.synth import train_generator
root, out, cfg, labels = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
train_generator(root, sys.argv[5].split(","), labels, cfg, out / "model.pt", out / "checkpoint_latest.pt",
                out / "loss.csv", seed=5, device="cpu")
"""


@pytest.mark.parametrize("method", ["diffusion", "gan"])
def test_resume_after_sigkill_gives_the_same_weights(cohort, tmp_path, method, caplog):
    root, labels = cohort
    cfg = cfg_for(method, epochs=8, batch_size=4)
    killed = tmp_path / "killed"
    command = [sys.executable, "-c", TRAIN_SCRIPT, str(root), str(killed), json.dumps(cfg), json.dumps(labels),
               ",".join(TRAIN)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        while not (killed / "checkpoint_latest.pt").exists() and process.poll() is None:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (killed / "model.pt").exists()

    with caplog.at_level(logging.INFO, logger="hepred.synth"):
        train_generator(root, TRAIN, labels, cfg, killed / "model.pt", killed / "checkpoint_latest.pt",
                        killed / "loss.csv", seed=5, device="cpu")
    resumed = [int(line.rsplit(" ", 1)[1]) for line in caplog.messages if line.startswith("resuming from epoch")]
    assert resumed and 1 <= resumed[0] < cfg["epochs"]

    whole = tmp_path / "whole"
    train_generator(root, TRAIN, labels, cfg, whole / "model.pt", whole / "checkpoint_latest.pt", whole / "loss.csv",
                    seed=5, device="cpu")
    a = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(whole / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert list(pd.read_csv(killed / "loss.csv")["epoch"]) == list(range(1, cfg["epochs"] + 1))


def test_synthetic_volumes_overlay_their_source_ct(tmp_path):
    # A real preprocess cache of a head stored right-anterior-superior with an offset origin:
    # the synthetic NIfTI must land on the patient's CT, not at the origin of a bare array.
    from hepred.preprocess import preprocess_case
    from tests.unit.test_preprocess import synthetic_head

    ct, _, lesion = synthetic_head()
    lesion_image = sitk.GetImageFromArray(lesion)
    lesion_image.CopyInformation(ct)
    ct, lesion_image = sitk.DICOMOrient(ct, "RAS"), sitk.DICOMOrient(lesion_image, "RAS")
    ct.SetOrigin((12.0, -7.0, 30.0))
    lesion_image.CopyInformation(ct)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(lesion_image, str(tmp_path / "lesion.nii.gz"))
    cases = ["a", "b"]
    for case in cases:
        preprocess_case(case, tmp_path / "ct.nii.gz", tmp_path / "lesion.nii.gz", tmp_path / "pre" / case, {"size": 64})
    labels = {"a": 1, "b": 0}
    cfg = {"method": "morph", "versions": 1, "min_lesion_pixels": 4, "target_mask": {"growth": [0.0, 0.0], "elastic_mm": 0.0}}
    model = tmp_path / "gen" / "model.pt"
    train_generator(tmp_path / "pre", cases, labels, cfg, model, tmp_path / "gen" / "ckpt.pt", tmp_path / "gen" / "loss.csv",
                    seed=1, device="cpu")
    synthesize(tmp_path / "pre", cases, labels, model, cfg, tmp_path / "syn", seed=1, device="cpu")

    synthetic = sitk.ReadImage(str(tmp_path / "syn" / "a_syn0_lesion.nii.gz"))
    on_ct = sitk.Resample(synthetic, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

    def world_centroid(image):
        voxels = np.argwhere(sitk.GetArrayFromImage(image) > 0)[:, ::-1].astype(float)  # x, y, z indices
        return np.array(image.TransformContinuousIndexToPhysicalPoint(voxels.mean(axis=0).tolist()))

    shift = np.linalg.norm(world_centroid(on_ct) - world_centroid(lesion_image))
    assert shift <= max(synthetic.GetSpacing()), shift
    image = sitk.ReadImage(str(tmp_path / "syn" / "a_syn0_image.nii.gz"))
    assert image.GetSize() == synthetic.GetSize() and image.GetOrigin() == synthetic.GetOrigin()
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pre" / "a" / "brain_mask.nii.gz"))) > 0
    resampled = sitk.GetArrayFromImage(sitk.Resample(image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, -1024))
    inside = resampled > OUTSIDE_HU
    assert (inside & brain).sum() / np.sqrt(inside.sum() * brain.sum()) > 0.9
