"""The benchmark harness: figure targets, bench_synthesis.py's figures from its summary rows, and the
AUC-ceiling benchmark's features and fold-wise model."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_ceiling import lesion_features, out_of_fold_auc
from bench_data_efficiency import logged_seconds, subsample_splits
from bench_synthesis import summary_figures
from harness import Figure, figure_table


@pytest.mark.parametrize(
    "value, target, met",
    [(1.2, "<= 1.5", True), (1.6, "<= 1.5", False), (0.95, ">= 0.9", True), (0.5, ">= 0.9", False), (3.0, "", None)],
)
def test_figure_met_follows_its_target(value, target, met):
    assert Figure("x", value, target).met is met


def test_figure_table_marks_missed_targets():
    table = figure_table([Figure("fast", 1.0, "<= 2", "s"), Figure("slow", 3.0, "<= 2", "s"), Figure("info", 5.0)])
    lines = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert lines["fast"][-1] == "yes"
    assert lines["slow"][-1] == "NO"
    assert lines["info"][-1] == "-"


def test_synthesis_summary_rows_become_figures():
    rows = [
        {"method": method, "device": "cpu", "train_slices": 20, "train_steps_per_s": steps, "ddim_steps": ddim,
         "synthetic_slices": 40, "slices_per_s": speed, "lesion_hu_wasserstein": distance}
        for method, steps, ddim, speed, distance in [
            ("diffusion", 4.9, 10, 12.7, 55.8),
            ("diffusion", 4.9, 25, 9.7, 65.7),
            ("gan", 12.1, "", 69.0, 38.1),
            ("morph", 0.0, "", 101.0, 2.1),
        ]
    ]
    figures = {fig.name: fig.value for fig in summary_figures(rows)}
    assert figures["synthesis_diffusion_cpu_ddim25_slices_per_s"] == 9.7
    assert figures["synthesis_gan_cpu_lesion_hu_wasserstein"] == 38.1
    assert figures["synthesis_gan_cpu_train_steps_per_s"] == 12.1
    assert figures["synthesis_diffusion_cpu_ddim10_train_steps_per_s"] == 4.9
    assert "synthesis_diffusion_cpu_ddim25_train_steps_per_s" not in figures  # same training, reported once
    assert "synthesis_morph_cpu_train_steps_per_s" not in figures  # morph does not train


def _disc(size: int, radius: float, centre=(32, 32)) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_lesion_features_see_hypodense_islands_and_lobes():
    plain = np.repeat(_disc(64, 12)[None], 3, axis=0)
    hu = np.where(plain, 65.0, 30.0).astype(np.float32)
    with_island = hu.copy()
    with_island[:, 30:35, 30:35] = 35.0
    lobed = plain | np.repeat(_disc(64, 5, (32, 48))[None], 3, axis=0)

    base = lesion_features(hu, plain, pixel_mm=1.0)
    island = lesion_features(with_island, plain, pixel_mm=1.0)
    assert base["hypodense_fraction"] == 0 and base["hypodense_parts"] == 0
    assert island["hypodense_fraction"] > 0.02 and island["hypodense_parts"] == 1  # one part through the slices
    assert lesion_features(hu, lobed, pixel_mm=1.0)["solidity"] < base["solidity"] - 0.02


def test_out_of_fold_auc_fits_on_training_cases_only():
    cases = [f"c{i}" for i in range(12)]
    labels = pd.Series([i % 2 for i in range(12)], index=cases)
    folds = [
        {"train": cases[4:10], "val": cases[10:], "test": cases[:4]},
        {"train": cases[:4] + cases[8:10], "val": cases[10:], "test": cases[4:8]},
        {"train": cases[:6], "val": cases[6:8], "test": cases[8:]},
    ]
    separating = pd.DataFrame({"x": labels * 2.0 + np.linspace(0, 0.1, 12)}, index=cases)
    assert out_of_fold_auc(separating, labels, folds) == 1.0
    # A feature that only tracks the label on the test cases cannot be learned from the others.
    unrelated = pd.DataFrame({"x": np.r_[np.zeros(8), labels.iloc[8:] * 5.0]}, index=cases)
    assert out_of_fold_auc(unrelated, labels, folds) < 1.0


def test_training_subsample_is_stratified_seeded_and_keeps_validation_and_test():
    labels = {f"c{i:02d}": int(i % 3 == 0) for i in range(60)}
    cases = sorted(labels)
    splits = {"folds": [{"train": cases[:40], "val": cases[40:48], "test": cases[48:]},
                        {"train": cases[20:], "val": cases[:8], "test": cases[8:20]}]}
    quarter = subsample_splits(splits, labels, 0.25, seed=0)
    for fold, cut in zip(splits["folds"], quarter["folds"]):
        assert cut["val"] == fold["val"] and cut["test"] == fold["test"]
        assert set(cut["train"]) <= set(fold["train"])
        for label in (0, 1):
            full = sum(labels[c] == label for c in fold["train"])
            assert sum(labels[c] == label for c in cut["train"]) == max(3, round(0.25 * full))
    assert subsample_splits(splits, labels, 0.25, seed=0) == quarter
    assert subsample_splits(splits, labels, 0.25, seed=1) != quarter
    assert subsample_splits(splits, labels, 1.0, seed=0)["folds"][0]["train"] == sorted(splits["folds"][0]["train"])


def test_a_resumed_runs_time_is_every_invocations_elapsed_time(tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text(
        "Building DAG of jobs...\n5 of 26 steps (19%) done\nElapsed time: 0:20:33.5\n"
        "Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).\n"
        "Building DAG of jobs...\n26 of 26 steps (100%) done\nElapsed time: 1 day, 1:02:03\n"
    )
    assert logged_seconds(log) == pytest.approx(20 * 60 + 33.5 + 86400 + 3723)
