"""Synthesis fidelity: synthetic versions that keep their label's marker score high; versions
that flatten the difference between labels score near chance and show it in the markers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hepred.markers import array_markers
from hepred.report import fidelity_table
from hepred.synth.fidelity import fidelity_features, write_fidelity

S, Z = 48, 4
SPACING = [1.8, 1.8, 5.0]
RADIOMICS = {"bin_width": 5.0, "force_2d": True, "log_sigma_mm": [], "inner_folds": 3}


def lesion_volume(rng: np.random.Generator, heterogeneous: bool) -> tuple[np.ndarray, np.ndarray]:
    """A head of brain (35 HU) with a round hematoma (65 HU); an expanding one (label 1) has a
    coarse heterogeneous density, the other a smooth one."""
    hu = np.full((Z, S, S), -1024, np.int16)
    yy, xx = np.mgrid[:S, :S]
    brain = (yy - S / 2) ** 2 + (xx - S / 2) ** 2 < (S / 2 - 2) ** 2
    radius = rng.uniform(7, 10)
    disc = (yy - S / 2) ** 2 + (xx - S / 2) ** 2 < radius**2
    lesion = np.zeros((Z, S, S), np.uint8)
    for z in range(1, Z - 1):
        hu[z][brain] = rng.normal(35, 3, brain.sum())
        spread = 14 if heterogeneous else 2
        hu[z][disc] = 65 + rng.normal(0, spread, disc.sum())
        lesion[z][disc] = 1
    return hu, lesion


def write_case(folder: Path, case: str, hu: np.ndarray, lesion: np.ndarray) -> None:
    (folder / case).mkdir(parents=True)
    np.save(folder / case / "hu.npy", hu)
    np.save(folder / case / "lesion.npy", lesion)
    (folder / case / "info.json").write_text(json.dumps({"spacing_mm": SPACING}))


@pytest.fixture
def fold_cache(tmp_path):
    rng = np.random.default_rng(0)
    labels = {f"c{i:02d}": i % 2 for i in range(28)}
    cases = sorted(labels)
    fold = {"train": cases[:16], "val": cases[16:22], "test": cases[22:]}
    for case in cases:
        write_case(tmp_path / "preprocess", case, *lesion_volume(rng, bool(labels[case])))
    return tmp_path, labels, fold, rng


def synthetic_set(root: Path, name: str, fold: dict, labels: dict, rng, keep_label: bool) -> Path:
    """Two versions per training case: with its label's density (keep_label) or all smooth."""
    folder = root / name
    folder.mkdir()
    rows = []
    for case in fold["train"]:
        for version in range(2):
            synthetic_id = f"{case}_syn{version}"
            hu, lesion = lesion_volume(rng, heterogeneous=bool(labels[case]) and keep_label)
            np.save(folder / f"{synthetic_id}_hu.npy", hu[1:-1])
            np.save(folder / f"{synthetic_id}_lesion.npy", lesion[1:-1])
            rows.append({"synthetic_id": synthetic_id, "source_case": case, "label": labels[case]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_versions_that_keep_their_label_score_high_and_flattened_ones_near_chance(fold_cache):
    root, labels, fold, rng = fold_cache
    results = {}
    for name, keep in (("faithful", True), ("flattened", False)):
        manifest = synthetic_set(root, name, fold, labels, rng, keep)
        out = root / name / "qc"
        results[name] = write_fidelity(root / "preprocess", manifest, 0, fold, labels, 10, RADIOMICS, "test", out, seed=0)
        assert {p.name for p in out.iterdir()} == {"fidelity.json", "fidelity_logits.csv", "markers.csv",
                                                  "marker_fidelity.csv", "markers.png"}
    faithful, flattened = results["faithful"], results["flattened"]
    assert faithful["class_fidelity_real_reference_auc"] > 0.9
    assert faithful["class_fidelity_auc"] > 0.9 and faithful["tstr_validation_auc"] > 0.9
    # Every flattened version looks like a stable hematoma: the label is not in the images.
    assert flattened["class_fidelity_auc"] < 0.75
    assert flattened["tstr_validation_auc"] < 0.75 or np.isnan(flattened["tstr_validation_auc"])
    markers = pd.read_csv(root / "flattened" / "qc" / "marker_fidelity.csv").set_index(["marker", "group"])
    assert markers.loc[("density_sd_hu", "real"), "label_difference_sd"] > 2
    assert abs(markers.loc[("density_sd_hu", "synthetic"), "label_difference_sd"]) < 1

    qc = root / "faithful" / "qc"
    pooled = fidelity_table([qc / "fidelity.json"], [qc / "fidelity_logits.csv"]).set_index("fold").loc["pooled"]
    assert pooled["class_fidelity_auc"] == pytest.approx(faithful["class_fidelity_auc"])


def test_markers_read_density_spread_hypodense_islands_and_lobulation():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    disc = ((yy - 48) ** 2 + (xx - 48) ** 2 < 30**2)
    hu = np.where(disc, 65.0, 35.0) + rng.normal(0, 2, (96, 96))
    lesion = disc[None].repeat(3, 0).astype(np.uint8)
    plain = array_markers(hu[None].repeat(3, 0), lesion, [0.5, 0.5, 5.0], "plain").iloc[0]
    islands = hu.copy()
    for cy, cx in ((40, 40), (56, 52)):
        islands[(yy - cy) ** 2 + (xx - cx) ** 2 < 5**2] = 35.0  # 30 HU below the hematoma
    with_islands = array_markers(islands[None].repeat(3, 0), lesion, [0.5, 0.5, 5.0], "islands").iloc[0]
    assert plain["hypodense_fraction"] < 0.01 and with_islands["hypodense_fraction"] > 0.03
    assert with_islands["hypodense_regions"] == 2
    lobed = disc | ((yy - 48) ** 2 + (xx - 85) ** 2 < 8**2) | ((yy - 85) ** 2 + (xx - 48) ** 2 < 8**2)
    lobed_markers = array_markers(np.where(lobed, 65.0, 35.0)[None].repeat(3, 0),
                                  lobed[None].repeat(3, 0).astype(np.uint8), [0.5, 0.5, 5.0], "lobed").iloc[0]
    assert lobed_markers["solidity"] < plain["solidity"] - 0.05
    assert plain["solidity"] > 0.9


def test_a_version_without_brain_around_its_lesion_is_left_out_with_a_warning(caplog):
    rng = np.random.default_rng(2)
    hu, lesion = lesion_volume(rng, heterogeneous=False)
    no_brain = np.where(hu > -1024, 65, hu).astype(np.int16)  # clot density wherever the brain was
    volumes = [
        {"group": group, "case_id": case, "source_case": "c00", "label": 0, "hu": image, "lesion": lesion, "spacing": SPACING}
        for group, case, image in (("real", "c00", hu), ("synthetic", "c00_v0", no_brain))
    ]
    with caplog.at_level("WARNING"):
        meta, radiomics, markers = fidelity_features(volumes, RADIOMICS, logging.getLogger("test"))
    assert list(meta.index) == list(radiomics.index) == list(markers.index) == ["c00"]
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("synthetic c00_v0: no brain parenchyma") and line.endswith("not in the fidelity checks")
