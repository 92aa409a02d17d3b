"""Stage 6 classifier: slice indexing and streaming, leakage guard, outputs, determinism, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, logit

from hepred.classifier import batching
from hepred.classifier.augment import dihedral_affines, draw_affines, prepare_batch
from hepred.classifier.batching import (
    GIB,
    ResidentBatches,
    ResidentSamples,
    fits_on_device,
    make_loader,
    resident_samples,
    sample_bytes,
)
from hepred.classifier.calibration import patient_table, prevalence_offsets
from hepred.classifier.data import (
    EpochShuffle,
    SliceDataset,
    crop_centred,
    index_slices,
    original_sources,
    synthetic_sources,
    window_batch,
)
from hepred.classifier.model import load_classifier
from hepred.classifier.scoring import SLICE_COLUMNS, slice_logits, view_logits
from hepred.classifier.settings import classifier_settings, image_scenario
from hepred.classifier.train import (
    build_datasets,
    permuted_labels,
    record_epoch,
    train_classifier,
)
from hepred.errors import HepredError
from hepred.patient_rules import PATIENT_COLUMNS, PATIENT_RULES, combine_slices
from hepred.preprocess import apply_windows
from hepred.training import load_weights

S = 32
Z = 6
# Lesion pixels per slice: slices 2, 3 and 4 are above the threshold of 10 used below.
LESION_PIXELS = [0, 4, 16, 36, 16, 9]
THRESHOLD = 10
CASES = [f"c{i}" for i in range(9)]
LABELS = {case: i % 2 for i, case in enumerate(CASES)}
# 3 test cases x 3 slices = 9 test slices: not a multiple of the batch size 4.
FOLD = {"train": CASES[:4], "val": CASES[4:6], "test": CASES[6:]}
TINY = {
    "model": "test_efficientnet",
    "image_size": 32,
    "crop": 24,
    "batch_size": 4,
    "max_epochs": 2,
    "patience": 5,
    "min_lesion_pixels": THRESHOLD,
    "lr": 1e-3,
}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def square_lesion(pixels: int, row: int, col: int) -> np.ndarray:
    mask = np.zeros((S, S), np.uint8)
    side = round(float(np.sqrt(pixels)))
    mask[row : row + side, col : col + side] = 1
    return mask


def write_volume(hu_path: Path, lesion_path: Path, rng: np.random.Generator, label: int) -> None:
    hu = np.full((Z, S, S), -1024, np.int16)
    hu[:, 4:28, 6:26] = rng.normal(35, 4, (Z, 24, 20)).astype(np.int16)
    lesion = np.stack([square_lesion(p, 10, 12) for p in LESION_PIXELS])
    hu[lesion > 0] = 60 + 20 * label
    hu_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(hu_path, hu)
    np.save(lesion_path, lesion)


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """preprocess/{case}/hu.npy + lesion.npy for CASES, and 2 synthetic versions of each training case."""
    rng = np.random.default_rng(0)
    for case in CASES:
        write_volume(
            tmp_path / "preprocess" / case / "hu.npy", tmp_path / "preprocess" / case / "lesion.npy", rng, LABELS[case]
        )
    synthetic = tmp_path / "synthetic"
    rows = []
    for case in FOLD["train"]:
        for i in range(2):
            sid = f"{case}_syn{i}"
            write_volume(synthetic / f"{sid}_hu.npy", synthetic / f"{sid}_lesion.npy", rng, LABELS[case])
            rows.append(
                {
                    "synthetic_id": sid,
                    "source_case": case,
                    "label": LABELS[case],
                    "method": "test",
                    "seed": i,
                    "lesion_volume_ml": 1.0,
                    "image": f"{sid}_image.nii.gz",
                    "lesion": f"{sid}_lesion.nii.gz",
                }
            )
    pd.DataFrame(rows).to_csv(synthetic / "manifest.csv", index=False)
    return tmp_path


def train(cohort: Path, out: str, scenario: str = "t1", seed: int = 3, **overrides) -> Path:
    out_dir = cohort / out
    train_classifier(
        0,
        FOLD,
        scenario,
        LABELS,
        cohort / "preprocess",
        cohort / "synthetic" / "manifest.csv",
        {**TINY, **overrides},
        out_dir,
        seed=seed,
        device="cpu",
    )
    return out_dir


def test_index_keeps_slices_above_threshold_and_streams_from_memory_maps(cohort):
    sources = original_sources(["c0", "c1"], LABELS, cohort / "preprocess")
    items = index_slices(sources, THRESHOLD, fallback_to_largest=False)
    assert [(sources[i.source].case_id, i.slice) for i in items] == [
        ("c0", 2),
        ("c0", 3),
        ("c0", 4),
        ("c1", 2),
        ("c1", 3),
        ("c1", 4),
    ]
    # 6 x 6 square at row 10, column 12: centroid (12.5, 14.5) rounds to (12, 14).
    assert items[1].centre == (12, 14)

    window = {"level": 40, "width": 80}
    dataset = SliceDataset(sources, items, [window], crop=0)
    raw, label, index = dataset[1]
    # The loader ships int16 HU and mask; the windows are applied on the device.
    assert raw.shape == (2, S, S) and raw.dtype == torch.int16
    hu = np.load(cohort / "preprocess" / "c0" / "hu.npy")[3]
    lesion = np.load(cohort / "preprocess" / "c0" / "lesion.npy")[3]
    assert torch.equal(raw[0], torch.from_numpy(hu.astype(np.int16)))
    image = window_batch(raw[None], dataset.windows)[0]
    assert image.shape == (3, S, S) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1])  # one window: the paper's image, image, mask
    assert torch.equal(image[0], torch.from_numpy(apply_windows(hu, [window])[0]))
    assert torch.equal(image[2], torch.from_numpy((lesion > 0).astype(np.float32)))
    assert float(label) == LABELS["c0"] and index == 1
    assert all(isinstance(array, np.memmap) for array in dataset._open.values()) and dataset._open
    # Worker copies start without open maps: pickling a memmap would copy the whole volume.
    assert pickle.loads(pickle.dumps(dataset))._open == {}


@pytest.mark.parametrize(
    "windows",
    [
        [{"level": 40, "width": 80}, {"level": 60, "width": 60}],
        [{"level": 40.5, "width": 77.3}, {"level": -3, "width": 3.7}],
    ],
)
def test_window_batch_gives_the_bits_of_preprocess_windows(windows):
    # Windowing moved from the loader (numpy) to the device (torch): on the CPU the network
    # must see exactly the values it saw before, over the whole stored HU range.
    hu = np.arange(-1024, 3072, dtype=np.int16).reshape(64, 64)
    lesion = (hu % 7 == 0).astype(np.int16)
    image = window_batch(torch.from_numpy(np.stack([hu, lesion]))[None], windows)[0].numpy()
    np.testing.assert_array_equal(image[:2], apply_windows(hu, windows))
    np.testing.assert_array_equal(image[2], lesion.astype(np.float32))


def test_case_without_usable_slice_falls_back_to_largest_only_for_evaluation(cohort):
    sources = original_sources(["c0"], LABELS, cohort / "preprocess")
    assert index_slices(sources, 100, fallback_to_largest=False) == []
    fallback = index_slices(sources, 100, fallback_to_largest=True)
    assert [item.slice for item in fallback] == [3]


def test_crop_pads_outside_the_slice():
    array = np.arange(36, dtype=np.int16).reshape(6, 6)
    crop = crop_centred(array, (0, 5), 4, -1024)
    assert crop.shape == (4, 4)
    assert (crop[:2] == -1024).all() and (crop[:, 3] == -1024).all()
    np.testing.assert_array_equal(crop[2:, :3], array[0:2, 3:6])


AUGMENT = {"flip_prob": 0.0, "affine_prob": 0.0, "rotate_deg": 10, "scale_range": 0.1, "rotate90": False}


def test_flip_only_augmentation_mirrors_left_right():
    images = torch.rand(2, 3, 8, 8)
    theta = draw_affines(np.random.default_rng(0), 2, {**AUGMENT, "flip_prob": 1.0})
    torch.testing.assert_close(prepare_batch(images, 8, theta), images.flip(-1), atol=1e-5, rtol=0)
    unchanged = draw_affines(np.random.default_rng(0), 2, AUGMENT)
    torch.testing.assert_close(prepare_batch(images, 8, unchanged), images, atol=1e-5, rtol=0)
    assert prepare_batch(images, 16).shape == (2, 3, 16, 16)


def test_quarter_turns_are_exact_and_all_four_are_drawn():
    images = torch.rand(400, 1, 6, 6)
    warped = prepare_batch(images, 6, draw_affines(np.random.default_rng(1), 400, {**AUGMENT, "rotate90": True}))
    rotations = torch.stack([torch.rot90(images, turn, (-2, -1)) for turn in range(4)])
    # Each sample equals exactly one quarter turn of itself (no interpolation blur).
    matches = (warped[None] - rotations).abs().amax(dim=(2, 3, 4)) < 1e-6
    assert matches.sum(0).eq(1).all()
    assert (matches.sum(1) > 60).all(), matches.sum(1)


def test_test_time_views_are_the_eight_distinct_dihedral_transforms():
    images = torch.rand(3, 3, 8, 8)
    views = [prepare_batch(images, 8, theta) for theta in dihedral_affines(3, rotate90=True)]
    expected = [
        torch.rot90(images.flip(-1) if flip else images, turn, (-2, -1)) for turn in range(4) for flip in (0, 1)
    ]
    for view in views:
        assert sum(torch.allclose(view, e, atol=1e-6) for e in expected) == 1
    assert len({tuple(v.flatten()[:20].tolist()) for v in views}) == 8
    assert len(dihedral_affines(3, rotate90=False)) == 2


def test_synthetic_images_of_held_out_cases_are_refused(cohort):
    manifest = pd.read_csv(cohort / "synthetic" / "manifest.csv")
    manifest.loc[0, "source_case"] = FOLD["val"][0]
    leaky = cohort / "synthetic" / "leaky.csv"
    manifest.to_csv(leaky, index=False)
    with pytest.raises(HepredError, match="leaky.csv: leakage: held-out cases of this fold are synthetic sources"):
        synthetic_sources(leaky, FOLD["train"], FOLD["val"] + FOLD["test"])
    with pytest.raises(HepredError, match="leak"):
        train_classifier(
            0, FOLD, "t3", LABELS, cohort / "preprocess", leaky, TINY, cohort / "out", seed=0, device="cpu"
        )
    assert not (cohort / "out" / "model.pt").exists()


def test_synthetic_slices_join_training_only_in_t3_and_t5(cohort):
    windows = [{"level": 40, "width": 80}]
    manifest = cohort / "synthetic" / "manifest.csv"
    sizes = {
        scenario: len(build_datasets(FOLD, scenario, LABELS, cohort / "preprocess", manifest, TINY, windows)[0])
        for scenario in ("t1", "t2", "t3", "t5")
    }
    assert sizes == {"t1": 12, "t2": 12, "t3": 36, "t5": 36}
    with pytest.raises(HepredError, match="synthetic manifest"):
        build_datasets(FOLD, "t3", LABELS, cohort / "preprocess", None, TINY, windows)


def test_outputs_score_every_test_slice_and_model_loads_weights_only(cohort):
    out_dir = train(cohort, "run")
    slices = pd.read_csv(out_dir / "predictions_slices.csv")
    assert list(slices.columns) == SLICE_COLUMNS
    assert sorted(zip(slices["case_id"], slices["slice"])) == [(c, z) for c in FOLD["test"] for z in (2, 3, 4)]
    assert slices["probability"].between(0, 1).all()
    assert (slices["scenario"] == "t1").all() and (slices["fold"] == 0).all()

    patients = pd.read_csv(out_dir / "predictions_patients.csv")
    assert list(patients.columns) == PATIENT_COLUMNS
    assert list(patients["case_id"]) == FOLD["test"] and (patients["n_slices"] == 3).all()
    first = slices[slices["case_id"] == FOLD["test"][0]].sort_values("slice")
    assert patients.loc[0, "probability_mean"] == pytest.approx(first["probability"].mean())
    # t1 is scored through one view, so each rule is its offset on the raw slice logits.
    offsets = torch.load(out_dir / "model.pt", weights_only=True)["meta"]["logit_offsets"]
    raw = logit(first["probability"].to_numpy(np.float64)) - offsets["mean"]
    assert patients.loc[0, "probability_max"] == pytest.approx(expit(raw.max() + offsets["max"]), abs=1e-6)
    assert patients.loc[0, "probability_middle"] == pytest.approx(expit(raw[1] + offsets["middle"]), abs=1e-6)
    assert list(patients["label"]) == [LABELS[c] for c in FOLD["test"]]

    curve = pd.read_csv(out_dir / "curve.csv")
    assert list(curve["epoch"]) == [1, 2] and (out_dir / "curve.png").stat().st_size > 0
    payload = torch.load(out_dir / "model.pt", weights_only=True)
    assert payload["meta"]["classifier"]["model"] == "test_efficientnet"
    assert payload["meta"]["preprocess"]["windows"] == [{"level": 40, "width": 80}]
    assert payload["meta"]["best_epoch"] in (1, 2)
    assert load_weights(out_dir / "model.pt")["state_dict"].keys() == payload["state_dict"].keys()


def test_same_seed_gives_identical_predictions(cohort):
    first = train(cohort, "a", scenario="t5")
    second = train(cohort, "b", scenario="t5")
    assert (first / "predictions_slices.csv").read_text() == (second / "predictions_slices.csv").read_text()
    assert (first / "curve.csv").read_text() == (second / "curve.csv").read_text()
    other = train(cohort, "c", scenario="t5", seed=4)
    assert (first / "predictions_slices.csv").read_text() != (other / "predictions_slices.csv").read_text()


KILLED_RUN = textwrap.dedent("""
    import json, logging, os, signal, sys
    from pathlib import Path
    import torch
    from hepred.classifier.train import train_classifier

    torch.set_num_threads(1)
    args = json.loads(sys.argv[1])

    class KillAfterSecondEpoch(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("epoch 2/"):
                os.kill(os.getpid(), signal.SIGKILL)

    log = logging.getLogger("killed-run")
    log.setLevel(logging.INFO)
    log.addHandler(KillAfterSecondEpoch())
    train_classifier(0, args["fold"], "t2", args["labels"], Path(args["preprocess"]), None, args["cfg"],
                     Path(args["out"]), seed=3, device="cpu", log=log)
    """)


@pytest.mark.parametrize("weight_ema", [0.0, 0.9])
def test_resume_after_sigkill_matches_uninterrupted_run(cohort, caplog, weight_ema):
    # One-cycle schedule (the default) and, with weight_ema, the averaged weights resume too.
    cfg = {**TINY, "max_epochs": 3, "weight_ema": weight_ema}
    reference = train(cohort, "reference", scenario="t2", max_epochs=3, weight_ema=weight_ema)

    out_dir = cohort / "killed"
    args = {"fold": FOLD, "labels": LABELS, "preprocess": str(cohort / "preprocess"), "cfg": cfg, "out": str(out_dir)}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, json.dumps(args)], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == -9, done.stderr
    assert (out_dir / "checkpoint_latest.pt").exists()
    assert not (out_dir / "predictions_slices.csv").exists()

    with caplog.at_level(logging.INFO):
        train_classifier(0, FOLD, "t2", LABELS, cohort / "preprocess", None, cfg, out_dir, seed=3, device="cpu")
    assert "resuming from epoch 2" in caplog.text
    assert "epoch 1/3" not in caplog.text  # finished epochs are not trained again
    for name in ("predictions_slices.csv", "predictions_patients.csv", "curve.csv"):
        assert (out_dir / name).read_text() == (reference / name).read_text()


def test_epochs_before_min_epochs_are_never_kept():
    cfg = classifier_settings({"min_epochs": 3, "patience": 2, "max_epochs": 10, "monitor": "val_auc"})
    model = torch.nn.Linear(1, 1)
    state = {"best_val_loss": math.inf, "best_epoch": 0, "best_state": None, "wait": 0, "curve": [], "epoch": 0}
    for epoch, auc in enumerate([0.9, 0.8, 0.6, 0.7, 0.65, 0.5], start=1):
        record_epoch(state, model, cfg, {"epoch": epoch, "val_loss": 0.1, "val_auc": auc, "lr": 1e-3})
    assert state["best_epoch"] == 4  # epochs 1-2 ignored; AUC 0.7 beats 0.6, then two worse epochs
    assert state["finished"] and state["epoch"] == 6


def test_augmented_scenarios_are_scored_over_their_training_views_with_the_offsets(cohort):
    out_dir = train(cohort, "tta", scenario="t2")
    model, meta = load_classifier(out_dir / "model.pt", torch.device("cpu"))
    cfg = classifier_settings(TINY)
    _, val_set, test_set = build_datasets(
        FOLD, "t2", LABELS, cohort / "preprocess", None, cfg, [{"level": 40, "width": 80}]
    )
    device = torch.device("cpu")
    views = [slice_logits(model, test_set, cfg, device, theta[0]) for theta in dihedral_affines(1, rotate90=True)]
    offsets = meta["logit_offsets"]
    assert sorted(offsets) == ["max", "mean", "middle"] and len(set(offsets.values())) > 1
    expected = torch.sigmoid(torch.from_numpy(np.stack(views)) + offsets["mean"]).mean(0).numpy()
    written = pd.read_csv(out_dir / "predictions_slices.csv")
    np.testing.assert_allclose(written["probability"], expected, rtol=1e-5)
    # Each patient rule carries its own offset; the max rule's is applied before the max is taken.
    patients = pd.read_csv(out_dir / "predictions_patients.csv").set_index("case_id")
    max_rule = torch.sigmoid(torch.from_numpy(np.stack(views)) + offsets["max"]).mean(0).numpy()
    with_max_offset = written.assign(p=max_rule)
    np.testing.assert_allclose(patients["probability_max"], with_max_offset.groupby("case_id")["p"].max(), rtol=1e-5)
    np.testing.assert_allclose(patients["probability_mean"], written.groupby("case_id")["probability"].mean(), rtol=1e-5)
    # Every offset brings the validation patients' mean probability under its rule to the
    # training prevalence (1/2 here).
    val_patients = patient_table(val_set.item_table(), view_logits(model, val_set, cfg, device, "t2"), offsets)
    for column in PATIENT_RULES:
        assert val_patients[column].mean() == pytest.approx(0.5, abs=1e-6), column
    plain = torch.sigmoid(torch.from_numpy(slice_logits(model, test_set, cfg, device)) + offsets["mean"]).numpy()
    assert np.abs(written["probability"].to_numpy() - plain).max() > 1e-5
    # Without augmentation in training (t1), test slices are scored through the plain view only.
    assert view_logits(model, test_set, cfg, device, "t1").shape == (1, len(test_set))


def test_prevalence_offsets_match_each_rule_and_keep_the_ranking():
    # Two patients, a (slices 0-2) and b (slices 0-1); one view.
    items = pd.DataFrame({"case_id": ["a", "a", "a", "b", "b"], "slice": [2, 0, 1, 0, 1]})
    logits = np.array([[-3.0, -1.0, 0.5, 2.0, -2.0]])
    offsets = prevalence_offsets(items, logits, 0.25)
    table = patient_table(items, logits, offsets).set_index("case_id")
    assert table["probability_mean"].mean() == pytest.approx(0.25, abs=1e-9)
    assert table["probability_max"].mean() == pytest.approx(0.25, abs=1e-9)
    assert table["probability_middle"].mean() == pytest.approx(0.25, abs=1e-9)
    assert offsets["max"] < offsets["mean"]  # the max of a patient's slices sits above their mean
    assert list(table["n_slices"]) == [3, 2]
    # Middle slice in slice order: a's slice 1 (logit 0.5), b's slice 0 (logit 2.0).
    middle = combine_slices(items.assign(p=logits[0]), "p", "middle")
    assert middle.to_dict() == {"a": 0.5, "b": 2.0}
    assert table.loc["b", "probability_middle"] > table.loc["a", "probability_middle"]


@pytest.mark.parametrize("spread", [1.0, 107.0, 200.0])
def test_calibration_finds_its_offset_whatever_range_the_logits_span(spread):
    # Validation logits up to +107 once made the search over [-50, 50] fail and no statistics
    # were written for the whole run; +-200 lies well outside any range seen.
    items = pd.DataFrame({"case_id": ["a", "a", "b", "b", "c"], "slice": [0, 1, 0, 1, 0]})
    logits = np.array([[spread, spread * 0.9, spread * 0.8, -spread, spread * 0.5]])
    offsets = prevalence_offsets(items, logits, 0.3)
    table = patient_table(items, logits, offsets)
    for column in PATIENT_RULES:
        assert table[column].mean() == pytest.approx(0.3, abs=1e-6)


def test_null_labels_are_a_seeded_permutation_of_training_and_validation_only():
    labels = {f"p{i}": int(i < 6) for i in range(20)}
    fold = {"train": [f"p{i}" for i in range(12)], "val": [f"p{i}" for i in range(12, 16)],
            "test": [f"p{i}" for i in range(16, 20)]}
    permuted = permuted_labels(labels, fold, seed=5)
    fitted_on = fold["train"] + fold["val"]
    assert sorted(permuted[c] for c in fitted_on) == sorted(labels[c] for c in fitted_on)
    assert any(permuted[c] != labels[c] for c in fitted_on)
    assert all(permuted[c] == labels[c] for c in fold["test"])
    assert permuted == permuted_labels(labels, fold, seed=5)
    assert permuted != permuted_labels(labels, fold, seed=6)
    assert image_scenario("null_t5") == "t5" and image_scenario("t2") == "t2"
    with pytest.raises(HepredError, match="unknown scenario 'null_t4'"):
        image_scenario("null_t4")


def test_null_control_trains_on_permuted_labels_and_is_scored_on_the_true_ones(cohort, caplog):
    caplog.set_level(logging.INFO)
    null = train(cohort, "null", scenario="null_t3")
    real = train(cohort, "real", scenario="t3")
    assert "labels permuted" in caplog.text
    patients = pd.read_csv(null / "predictions_patients.csv")
    assert list(patients["label"]) == [LABELS[c] for c in FOLD["test"]]
    assert (patients["scenario"] == "null_t3").all()
    # Its validation table, too, holds the true labels: no file a later stage may read carries
    # the permuted ones (here a validation patient's label was swapped).
    permuted = permuted_labels(LABELS, FOLD, seed=3)
    assert any(permuted[c] != LABELS[c] for c in FOLD["val"])
    validation = pd.read_csv(null / "predictions_validation.csv")
    assert list(validation.columns) == PATIENT_COLUMNS
    assert dict(zip(validation["case_id"], validation["label"])) == {c: LABELS[c] for c in FOLD["val"]}
    assert (null / "predictions_slices.csv").read_text() != (real / "predictions_slices.csv").read_text()


# --------------------------------------------------------------------------------------------
# the device-resident input path gives the streamed path's batches, draws and model (on the CPU)

CPU = torch.device("cpu")
WINDOWS = [{"level": 40, "width": 80}, {"level": 60, "width": 120}]


def training_set(cohort, scenario="t5", **overrides):
    cfg = classifier_settings({**TINY, **overrides})
    train_set, _, test_set = build_datasets(
        FOLD, scenario, LABELS, cohort / "preprocess", cohort / "synthetic" / "manifest.csv", cfg, WINDOWS
    )
    return cfg, train_set, test_set


def batch_list(source):
    return [(raw.clone(), labels.clone(), indices.clone()) for raw, labels, indices in source]


@pytest.mark.parametrize("drop_last", [True, False])
def test_resident_batches_are_the_loaders_batches_in_every_epoch(cohort, drop_last, monkeypatch):
    monkeypatch.setattr(ResidentSamples, "CHUNK", 7)  # filled over several chunks, the last partial
    cfg, train_set, _ = training_set(cohort, batch_size=5)
    assert len(train_set) % cfg["batch_size"], "the fixture needs a partial last batch to test drop_last"
    streamed_order, resident_order = EpochShuffle(len(train_set), 5), EpochShuffle(len(train_set), 5)
    streamed = make_loader(train_set, cfg, CPU, sampler=streamed_order, drop_last=drop_last)
    resident = ResidentBatches(
        train_set, ResidentSamples(train_set, CPU), cfg["batch_size"], sampler=resident_order, drop_last=drop_last
    )
    assert len(resident) == len(streamed)
    for epoch in (1, 2):
        streamed_order.set_epoch(epoch)
        resident_order.set_epoch(epoch)
        expected, got = batch_list(streamed), batch_list(resident)
        assert len(got) == len(expected)
        for (raw, labels, indices), (raw_r, labels_r, indices_r) in zip(expected, got):
            assert raw_r.dtype == raw.dtype == torch.int16
            assert torch.equal(indices_r, indices)
            assert torch.equal(raw_r, raw)
            assert torch.equal(labels_r, labels)
    # Unshuffled (scoring): every item once, in order, the last partial batch included.
    in_order = batch_list(ResidentBatches(train_set, ResidentSamples(train_set, CPU), cfg["batch_size"]))
    assert torch.cat([indices for _, _, indices in in_order]).tolist() == list(range(len(train_set)))


def test_training_from_device_memory_gives_the_streamed_model_and_predictions(cohort, monkeypatch, caplog):
    """train_classifier end to end, once streamed and once with every dataset held "on the
    device" (the CPU here): same augmentation draws, same weights, same predictions."""
    streamed = train(cohort, "streamed", scenario="t5")

    def on_the_cpu(dataset, device, budget_gb, log=batching.logger):
        if not dataset.resident:
            dataset.resident["cpu"] = ResidentSamples(dataset, device)
        return dataset.resident["cpu"]

    built = []
    monkeypatch.setattr(batching, "resident_samples", on_the_cpu)
    monkeypatch.setattr(batching, "ResidentBatches", lambda *a, **k: built.append(1) or ResidentBatches(*a, **k))
    with caplog.at_level(logging.INFO):
        resident = train(cohort, "resident", scenario="t5")
    assert built, "the resident path was not taken"
    for name in ("predictions_patients.csv", "predictions_slices.csv", "predictions_validation.csv", "curve.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(resident / name), pd.read_csv(streamed / name))
    weights = [torch.load(path / "model.pt", weights_only=True)["state_dict"] for path in (streamed, resident)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_the_resident_path_is_chosen_only_within_budget_and_free_memory():
    assert fits_on_device(GIB, budget_gb=2, free_bytes=10 * GIB)
    assert not fits_on_device(3 * GIB, budget_gb=2, free_bytes=10 * GIB)  # over the budget
    assert not fits_on_device(GIB, budget_gb=8, free_bytes=2 * GIB)  # over 40 % of what is free
    assert not fits_on_device(GIB, budget_gb=0, free_bytes=100 * GIB)  # 0 turns it off


def test_the_cpu_always_streams(cohort):
    cfg, train_set, _ = training_set(cohort, scenario="t1")
    assert resident_samples(train_set, CPU, budget_gb=100) is None
    assert sample_bytes(train_set) == len(train_set) * 2 * TINY["crop"] ** 2 * 2
