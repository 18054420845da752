"""How the network's probabilities are cleaned before they become material fractions
(``materials.clean_probabilities``): regions without cortex are not bone, bone edges are sharpened,
air partial volume is not bone. Synthetic probabilities with known answers; no torch needed."""

from __future__ import annotations

import numpy as np
import pytest

from DeepDRRSlicerLib import materials
from DeepDRRSlicerLib.materials import (BONE_SHARPNESS, CORTEX_CHECK_CM3, CORTEX_HU, clean_probabilities,
                                        drop_bone_without_cortex)

SPACING_MM = 1.0
AFFINE = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])


def _ball(shape, centre, radius):
    k, j, i = np.indices(shape)
    return (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= radius ** 2


def _scene():
    """Three blobs the network half-calls bone (p = 0.6) in 60 HU soft tissue:
    a kidney-like ball of 200 HU (about 14 cm3, no cortex), the same ball with a 1 mm shell
    of 900 HU (bone with cortex), and a small 200 HU ball (about 0.5 cm3: too small to judge)."""
    shape = (48, 48, 160)
    hu = np.full(shape, 60.0, np.float32)
    bone_p = np.zeros(shape, np.float32)
    kidney = _ball(shape, (24, 24, 25), 15)
    vertebra = _ball(shape, (24, 24, 80), 15)
    shell = vertebra & ~_ball(shape, (24, 24, 80), 14)
    small = _ball(shape, (24, 24, 135), 5)
    for blob in (kidney, vertebra, small):
        hu[blob] = 200.0
        bone_p[blob] = 0.6
    hu[shell] = 900.0
    fringe = _ball(shape, (24, 24, 25), 17) & ~kidney      # the soft edge a network draws around a blob
    bone_p[fringe] = 0.1
    probabilities = np.stack([np.zeros(shape, np.float32), 1.0 - bone_p, bone_p])
    return probabilities, hu, dict(kidney=kidney, vertebra=vertebra, small=small, fringe=fringe)


def test_a_large_region_without_cortex_is_soft_tissue_and_bone_with_cortex_is_kept():
    probabilities, hu, regions = _scene()
    assert regions["kidney"].sum() * SPACING_MM ** 3 / 1000 >= CORTEX_CHECK_CM3
    assert regions["small"].sum() * SPACING_MM ** 3 / 1000 < CORTEX_CHECK_CM3
    notes = []
    dropped = drop_bone_without_cortex(probabilities, hu, AFFINE, notes)
    assert dropped == 1
    assert probabilities[2][regions["kidney"] | regions["fringe"]].max() == 0.0
    np.testing.assert_allclose(probabilities[1][regions["kidney"]], 1.0)
    assert np.all(probabilities[2][regions["vertebra"]] == np.float32(0.6))
    assert np.all(probabilities[2][regions["small"]] == np.float32(0.6))
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    assert len(notes) == 1 and f"{CORTEX_HU:g} HU" in notes[0] and "1 region" in notes[0]


def test_one_cortical_voxel_is_enough_and_a_dark_region_is_judged_by_its_voxels_not_its_mean():
    probabilities, hu, regions = _scene()
    k, j, i = np.argwhere(regions["kidney"])[0]
    hu[k, j, i] = CORTEX_HU               # exactly at the level counts as cortex
    assert drop_bone_without_cortex(probabilities, hu, AFFINE) == 0
    hu[k, j, i] = CORTEX_HU - 1.0
    assert drop_bone_without_cortex(probabilities, hu, AFFINE) == 1


def test_region_size_uses_the_voxel_volume_from_the_matrix():
    probabilities, hu, regions = _scene()
    finer = np.diag([0.5, 0.5, 0.5, 1.0])   # the same kidney voxels now hold 1/8 of the volume: too small
    assert drop_bone_without_cortex(probabilities, hu, finer) == 0


def test_sharpening_stretches_bone_about_one_half_and_keeps_the_other_classes_in_proportion():
    p_bone = np.array([0.0, 0.1, 0.3, 0.5, 0.6, 0.75, 0.9, 1.0], np.float32)
    air = (1 - p_bone) * 0.25
    probabilities = np.stack([air, 1 - p_bone - air, p_bone])[:, None, None, :].copy()
    hu = np.full((1, 1, p_bone.size), 100.0, np.float32)   # no air partial volume: the gate is open
    clean_probabilities(probabilities, hu)
    expected = np.clip((p_bone - 0.5) * BONE_SHARPNESS + 0.5, 0, 1)
    expected[expected < 1e-3] = 0
    np.testing.assert_allclose(probabilities[2, 0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    rest = probabilities[0, 0, 0] + probabilities[1, 0, 0]
    has_rest = rest > 0
    np.testing.assert_allclose(probabilities[0, 0, 0][has_rest] / rest[has_rest], 0.25, atol=1e-6)


def test_bone_probability_in_air_partial_volume_moves_to_soft_tissue_before_sharpening():
    probabilities = np.array([0.1, 0.1, 0.8], np.float32)[:, None, None, None].repeat(3, axis=3)
    hu = np.array([[[-600.0, -350.0, 0.0]]], np.float32)
    clean_probabilities(probabilities, hu)
    assert probabilities[2, 0, 0, 0] == 0.0        # below the gate: no bone at all
    assert 0.0 < probabilities[2, 0, 0, 1] < 1.0     # half-way through the gate: 0.4 bone -> sharpened to 0.3
    np.testing.assert_allclose(probabilities[2, 0, 0, 1], (0.4 - 0.5) * BONE_SHARPNESS + 0.5, atol=1e-6)
    assert probabilities[2, 0, 0, 2] == 1.0


def test_the_decomposition_applies_the_cortex_rule():
    """Through decompose(): a network output that calls a cortex-free blob bone leaves no bone there."""
    pytest.importorskip("torch", reason="the network path needs PyTorch (pip install '.[network]')")
    from DeepDRRSlicerLib.volume import Volume

    probabilities, hu, regions = _scene()

    class Output:
        info = {}

        def to_native(self):
            return probabilities.copy()

    hu[0] = -1000.0                         # air and bone levels, so that the CT looks like HU
    hu[1, 0, 0] = 1200.0
    volume = Volume.from_array(hu, AFFINE)
    notes = []
    materials_out = materials.decompose(volume, "network", network_output=Output(), metal="none", notes=notes)
    bone = materials_out.fractions[materials_out.names.index("bone")]
    assert bone[regions["kidney"]].max() == 0.0
    assert bone[regions["vertebra"]].min() > 0.0
    assert any("no cortex" in n for n in notes)
