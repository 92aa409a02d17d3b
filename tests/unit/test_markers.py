"""The clinical NCCT markers (hepred.markers) on lesions whose markers are known by construction."""
import numpy as np
import pytest

from hepred.errors import HepredError
from hepred.markers import array_markers

SPACING = [0.5, 0.5, 5.0]  # x, y, z mm: thin pixels, thick slices, as in a clinical head CT
BRAIN_HU, CLOT_HU = 35.0, 65.0


def _scene(inside_hu, shape_mask, noise_sd=2.0, seed=0):
    """Three identical slices: brain parenchyma around a hematoma painted with ``inside_hu``."""
    rng = np.random.default_rng(seed)
    hu = np.where(shape_mask, inside_hu, BRAIN_HU) + rng.normal(0, noise_sd, shape_mask.shape)
    return hu[None].repeat(3, 0), shape_mask[None].repeat(3, 0).astype(np.uint8)


yy, xx = np.mgrid[:128, :128]
DISC = (yy - 64) ** 2 + (xx - 64) ** 2 < 30**2


def test_isodense_volume_counts_islands_as_dense_as_brain_and_not_merely_less_dense_parts():
    plain = array_markers(*_scene(CLOT_HU, DISC), SPACING, "plain").iloc[0]
    islands = np.full(DISC.shape, CLOT_HU)
    island_mask = np.zeros(DISC.shape, bool)
    for cy, cx in ((54, 54), (72, 70)):
        island_mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 6**2
    iso = array_markers(*_scene(np.where(island_mask, BRAIN_HU, islands), DISC), SPACING, "iso").iloc[0]
    # 20 HU above the brain: less dense than the clot, but not iso- or hypodense to brain.
    faint = array_markers(*_scene(np.where(island_mask, BRAIN_HU + 20, islands), DISC), SPACING, "faint").iloc[0]
    island_ml = island_mask.sum() * 3 * 0.5 * 0.5 * 5.0 / 1000
    assert plain["isodense_ml"] == 0
    # The 1-mm smoothing blurs each island's edge: most, not all, of its pixels count.
    assert 0.6 * island_ml < iso["isodense_ml"] <= island_ml
    assert iso["isodense_fraction"] > 0.05
    assert faint["isodense_ml"] < 0.1 * island_ml


def test_dense_swirl_counts_islands_in_a_blend_signs_dense_part_and_not_its_hypodense_part():
    # Blend sign: the left third of the clot at 45 HU (near the brain's 35), the rest at 80 HU
    # with two brain-dense islands in it.
    island_mask = np.zeros(DISC.shape, bool)
    for cy, cx in ((54, 72), (74, 74)):
        island_mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 6**2
    blend = np.where(xx < 54, 45.0, 80.0)
    plain = array_markers(*_scene(blend, DISC), SPACING, "blend").iloc[0]
    swirled = array_markers(*_scene(np.where(island_mask, BRAIN_HU, blend), DISC), SPACING, "swirled").iloc[0]
    island_ml = island_mask.sum() * 3 * 0.5 * 0.5 * 5.0 / 1000
    # The hypodense part alone counts as isodense, not as swirl in the dense part.
    assert plain["isodense_ml"] > island_ml and plain["dense_swirl_ml"] < 0.1 * island_ml
    assert 0.6 * island_ml < swirled["dense_swirl_ml"] <= island_ml
    assert swirled["dense_swirl_fraction"] > 0.05
    # The dense part's spread is that of the 80 HU part, not of the two parts together.
    assert plain["dense_part_sd_hu"] < 5 < plain["density_sd_hu"]


def test_a_ct_without_brain_around_the_lesion_is_refused_naming_the_case():
    # The swirl sign is relative to the brain: a CT cropped to its lesion has none to compare with.
    hu, lesion = _scene(CLOT_HU, np.ones((40, 40), bool))
    with pytest.raises(HepredError, match="no brain parenchyma") as raised:
        array_markers(hu, lesion, SPACING, "crop")
    assert raised.value.case_id == "crop"


# A 3D grid of 5-mm slices, 80 x 80 mm in-plane, and mm coordinates about its centre.
_z, _y, _x = np.mgrid[:12, :160, :160]
Z_MM, Y_MM, X_MM = (_z - 5.5) * 5.0, (_y - 80) * 0.5, (_x - 80) * 0.5


def _ellipsoid(a, b, c, angle=0.0, centre_z=0.0):
    u = X_MM * np.cos(angle) + Y_MM * np.sin(angle)
    v = -X_MM * np.sin(angle) + Y_MM * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 + ((Z_MM - centre_z) / c) ** 2 < 1


def _ball(x, y, z, radius):
    return (X_MM - x) ** 2 + (Y_MM - y) ** 2 + (Z_MM - z) ** 2 < radius**2


def _lobe_excess(mask):
    hu = np.where(mask, CLOT_HU, BRAIN_HU) + np.random.default_rng(0).normal(0, 2.0, mask.shape)
    return array_markers(hu, mask.astype(np.uint8), SPACING, "lobes").iloc[0]


def test_lobe_excess_tells_a_lobulated_hematoma_from_any_ellipsoid():
    ellipsoids = [_ellipsoid(15, 15, 15), _ellipsoid(25, 12, 18, 0.5), _ellipsoid(12, 16, 25, 1.2, 2.0)]
    lobed = _ellipsoid(15, 15, 15) | _ball(15, 0, 0, 7) | _ball(-9, 9, 9, 7) | _ball(0, -12, -8, 7)
    for mask in ellipsoids:
        assert _lobe_excess(mask)["lobe_excess"] < 0.02
    assert _lobe_excess(lobed)["lobe_excess"] > 0.06


def test_lobe_excess_of_a_thin_ellipsoid_does_not_depend_on_where_the_slices_cut_it():
    # Two to four 5-mm slices: the end slices' outlines lie inside the caps they cut and are not lobes.
    for a, c in ((20, 6), (6, 6), (12, 8)):
        for centre_z in (0.0, 1.25, 2.5, 3.75):
            assert _lobe_excess(_ellipsoid(a, a, c, centre_z=centre_z))["lobe_excess"] < 0.03, (a, c, centre_z)


def test_a_lesion_too_small_to_show_lobes_reads_none():
    speck = _ball(0, 0, 2.5, 1.0)  # nine pixels on one slice
    assert 0 < speck.sum() and _lobe_excess(speck)["lobe_excess"] == 0.0


def test_lobe_excess_reads_the_main_part_and_leaves_a_separate_one_to_be_counted():
    # A small clot beyond the hematoma: an island sign, not a lobe.
    alone, with_satellite = _lobe_excess(_ellipsoid(15, 15, 15)), _lobe_excess(_ellipsoid(15, 15, 15) | _ball(32, 0, 0, 4))
    assert with_satellite["lobe_excess"] == pytest.approx(alone["lobe_excess"], abs=1e-9)
    assert with_satellite["separate_hematomas"] == 1 and alone["separate_hematomas"] == 0


def test_dense_gradient_follows_the_texture_and_not_the_step_between_a_blend_signs_parts():
    blend = array_markers(*_scene(np.where(xx < 54, 45.0, 80.0), DISC), SPACING, "blend").iloc[0]
    ripples = {
        amplitude: array_markers(
            *_scene(CLOT_HU + amplitude * np.sqrt(2) * np.sin(2 * np.pi * xx * 0.5 / 10.0), DISC), SPACING, "ripples"
        ).iloc[0]["dense_gradient_hu_mm"]
        for amplitude in (3.0, 10.0)
    }
    # A flat part's slope is the smoothed noise's; a ripple's median slope grows with its amplitude.
    assert blend["dense_gradient_hu_mm"] < 0.5 * ripples[3.0]
    assert ripples[10.0] > 2 * ripples[3.0]
    assert blend["density_sd_hu"] > 10


def test_the_extrapolated_swirl_volume_carries_the_dense_parts_rate_over_the_whole_clot():
    # The islands of the dense part (two thirds of the clot) stand for the whole clot's.
    island_mask = np.zeros(DISC.shape, bool)
    for cy, cx in ((54, 72), (74, 74)):
        island_mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 6**2
    blend = np.where(xx < 54, 45.0, 80.0)
    row = array_markers(*_scene(np.where(island_mask, BRAIN_HU, blend), DISC), SPACING, "swirled").iloc[0]
    assert row["extrapolated_swirl_ml"] > 1.2 * row["dense_swirl_ml"]
    plain = array_markers(*_scene(np.where(island_mask, BRAIN_HU, CLOT_HU), DISC), SPACING, "plain").iloc[0]
    # Without a blend sign the dense part is most of the clot: little to carry over.
    assert plain["extrapolated_swirl_ml"] < 1.3 * plain["dense_swirl_ml"]


@pytest.mark.parametrize("amplitude", [3.0, 10.0])
def test_texture_sd_follows_a_smooth_density_texture_and_not_the_pixel_noise(amplitude):
    texture = CLOT_HU + amplitude * np.sqrt(2) * np.sin(2 * np.pi * xx * 0.5 / 10.0)  # 10 mm wavelength
    sd = array_markers(*_scene(texture, DISC, noise_sd=6.0), SPACING, "texture").iloc[0]["texture_sd_hu"]
    assert sd == pytest.approx(amplitude, rel=0.3)


def test_an_empty_lesion_is_one_line_naming_the_case_and_the_users_file(tmp_path):
    import SimpleITK as sitk

    from hepred.errors import HepredError
    from hepred.markers import marker_features

    paths = {}
    for name, array in (("ct", np.full((3, 16, 16), 40, np.int16)), ("lesion", np.zeros((3, 16, 16), np.uint8))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    user_files = {paths["ct"]: "/data/ich007/ct", paths["lesion"]: "/data/ich007/mask.nii.gz"}
    with pytest.raises(HepredError, match=r"^case ich007: /data/ich007/mask.nii.gz: lesion mask is empty"):
        marker_features(paths["ct"], paths["lesion"], "ich007", user_files)
