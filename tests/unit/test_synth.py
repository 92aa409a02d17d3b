"""Synthesis building blocks: config, target masks, patches, morph warping, leakage guard, input errors."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hepred.errors import HepredError
from hepred.leakage import check_no_leakage
from hepred.synth import synthesis_settings
from hepred.synth.data import load_case_slab, load_slabs
from hepred.synth.masks import lesion_distance, repaint_region, vary_target_mask
from hepred.synth.morph import morph_slab
from hepred.synth.patches import Box, crop, paste, patch_box
from hepred.synth.toy import write_toy_preprocessed_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    labels = write_toy_preprocessed_cohort(root, 3, size=64, n_slices=8, lesion_slices=5, seed=3)
    return root, labels


def slab_of(cohort, index=0):
    root, labels = cohort
    case_id = sorted(labels)[index]
    return load_case_slab(root, case_id, labels[case_id], min_lesion_pixels=10)


# ---- config -------------------------------------------------------------------------------

def test_settings_fill_nested_defaults_and_keep_given_values():
    settings = synthesis_settings({"method": "gan", "target_mask": {"elastic_mm": 1.5}})
    assert settings["method"] == "gan"
    assert settings["target_mask"]["elastic_mm"] == 1.5
    assert settings["target_mask"]["growth"] == [-0.3, 1.0]
    assert settings["diffusion"]["ddim_steps"] == 20


@pytest.mark.parametrize("cfg, fragment", [
    ({"methd": "gan"}, r"config synthesis: .*'methd' was unexpected"),
    ({"diffusion": {"chanels": [8]}}, r"config synthesis.diffusion: .*'chanels' was unexpected"),
    ({"method": "vae"}, "config synthesis.method: 'vae' is not one of"),
    ({"patch_size": 20}, "config synthesis.patch_size: 20 is not a multiple of 8"),
    ({"target_mask": {"growth": [0.5, 0.1]}}, "growth"),
])
def test_settings_refuse_bad_values(cfg, fragment):
    with pytest.raises(HepredError, match=fragment):
        synthesis_settings(cfg)


# ---- target masks -------------------------------------------------------------------------

@pytest.mark.parametrize("growth", [-0.3, 0.0, 0.5, 1.0])
def test_target_volume_follows_the_drawn_growth_and_stays_in_the_brain(cohort, growth):
    slab = slab_of(cohort)
    target = vary_target_mask(slab, lesion_distance(slab), (growth, growth), 0.0, 12.0, np.random.default_rng(0))
    assert target.sum() / slab.lesion.sum() == pytest.approx(1.0 + growth, rel=0.03)
    assert not (target & ~slab.brain).any()
    assert target.any(axis=(1, 2)).all()


def test_zero_change_reproduces_the_lesion(cohort):
    slab = slab_of(cohort)
    target = vary_target_mask(slab, lesion_distance(slab), (0.0, 0.0), 0.0, 12.0, np.random.default_rng(0))
    np.testing.assert_array_equal(target, slab.lesion)


def test_elastic_deformation_changes_shape_not_volume(cohort):
    slab = slab_of(cohort)
    distance = lesion_distance(slab)
    target = vary_target_mask(slab, distance, (0.0, 0.0), 6.0, 12.0, np.random.default_rng(1))
    assert target.sum() == pytest.approx(slab.lesion.sum(), rel=0.03)
    assert (target != slab.lesion).sum() > 0
    again = vary_target_mask(slab, distance, (0.0, 0.0), 6.0, 12.0, np.random.default_rng(1))
    np.testing.assert_array_equal(target, again)


def test_repaint_region_covers_old_and_new_lesion_with_a_ring_inside_the_brain(cohort):
    slab = slab_of(cohort)
    target = np.roll(slab.lesion, 3, axis=2) & slab.brain
    region = repaint_region(slab.lesion, target, slab.brain, 2)
    assert region[slab.lesion | target].all()
    assert region.sum() > (slab.lesion | target).sum()
    assert not (region & ~slab.brain).any()


# ---- patches ------------------------------------------------------------------------------

def test_patch_box_is_at_least_the_patch_and_holds_the_padded_mask():
    mask = np.zeros((64, 64), bool)
    mask[10:40, 50:60] = True
    box = patch_box(mask, 16, 4)
    assert box.side == 30 + 8
    assert box.y0 <= 10 - 4 and box.y0 + box.side >= 40 + 4
    small = np.zeros((64, 64), bool)
    small[30:33, 30:33] = True
    assert patch_box(small, 16, 4).side == 16


def test_crop_pads_past_the_image_edge():
    plane = np.arange(16, dtype=np.int16).reshape(4, 4)
    out = crop(plane, Box(-1, 2, 3), -1024)
    assert out.tolist() == [[-1024, -1024, -1024], [2, 3, -1024], [6, 7, -1024]]


def test_paste_changes_the_region_only():
    rng = np.random.default_rng(0)
    plane = rng.integers(20, 50, (32, 32)).astype(np.int16)
    region = np.zeros((32, 32), bool)
    region[10:20, 12:22] = True
    out = paste(plane, np.full((16, 16), 70.0, np.float32), Box(7, 9, 16), region, feather_px=2.0)
    np.testing.assert_array_equal(out[~region], plane[~region])
    assert (out[13:17, 15:19] == 70).all()  # deep inside the region: fully generated
    assert out.dtype == plane.dtype


# ---- morph --------------------------------------------------------------------------------

def test_morph_follows_a_grown_target_and_keeps_the_outside(cohort):
    slab = slab_of(cohort, 1)
    target = vary_target_mask(slab, lesion_distance(slab), (0.8, 0.8), 0.0, 12.0, np.random.default_rng(0))
    image, lesion = morph_slab(slab, target, falloff_mm=10.0, smooth_px=1.0)
    dice = 2 * (lesion & target).sum() / (lesion.sum() + target.sum())
    assert dice > 0.85
    assert lesion.sum() > 1.4 * slab.lesion.sum()
    outside = ~slab.brain
    np.testing.assert_array_equal(image[outside], slab.hu[outside])
    # The grown lesion is filled with hematoma density, not brain.
    assert abs(image[lesion].mean() - slab.hu[slab.lesion].mean()) < 10


# ---- leakage ------------------------------------------------------------------------------

FOLD = {"train": ["a", "b", "c"], "val": ["v"], "test": ["t"]}


def test_leakage_check_passes_a_clean_fold():
    check_no_leakage(FOLD, ["a", "b"], ["a", "b", "c"])


@pytest.mark.parametrize("trained_on, sources, fragment", [
    (["a", "t"], ["a"], "trained the generator"),
    (["a", "v"], ["a"], "trained the generator"),
    (["a"], ["a", "v"], "synthetic sources"),
    (["a", "x"], ["a"], "outside this fold's training set"),
])
def test_leakage_check_raises_on_a_planted_leak(trained_on, sources, fragment):
    with pytest.raises(HepredError, match=fragment):
        check_no_leakage(FOLD, trained_on, sources)


def test_leakage_check_without_train_list_still_catches_held_out_cases():
    check_no_leakage({"val": ["v"], "test": ["t"]}, ["a", "zz"], ["a"])
    with pytest.raises(HepredError, match="case t"):
        check_no_leakage({"val": ["v"], "test": ["t"]}, ["a"], ["t"])


# ---- input errors -------------------------------------------------------------------------

def test_missing_array_names_case_and_file(tmp_path):
    (tmp_path / "x1").mkdir()
    with pytest.raises(HepredError) as error:
        load_case_slab(tmp_path, "x1", 0, 10)
    assert "case x1" in str(error.value) and "hu.npy" in str(error.value)


def test_mismatched_shapes_are_refused(tmp_path):
    case = tmp_path / "x2"
    case.mkdir()
    np.save(case / "hu.npy", np.zeros((4, 8, 8), np.int16))
    np.save(case / "lesion.npy", np.zeros((3, 8, 8), np.uint8))
    (case / "info.json").write_text('{"spacing_mm": [1, 1, 5]}')
    with pytest.raises(HepredError, match="lesion shape"):
        load_case_slab(tmp_path, "x2", 0, 10)


def test_missing_label_is_refused(cohort):
    root, _ = cohort
    with pytest.raises(HepredError, match="no HE label"):
        load_slabs(root, ["toy000"], {}, 10, logging.getLogger("t"))
