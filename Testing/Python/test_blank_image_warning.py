"""A blank image gets a true warning: 'no ray crosses the CT' only when no ray does.

Oracle for rays_cross_box: the projector itself, on a volume of density 1 everywhere: a ray that
crosses the box collects a positive line integral.
"""

from __future__ import annotations

import numpy as np
import pytest

from DeepDRRSlicerLib.geometry import CArm, rays_cross_box
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator
from DeepDRRSlicerLib.projector import project
from DeepDRRSlicerLib.volume import Volume


def _box(shape, spacing, origin):
    matrix = np.diag([*spacing, 1.0])
    matrix[:3, 3] = origin
    return matrix


def test_rays_cross_box_agrees_with_the_projector_on_random_poses():
    rng = np.random.default_rng(7)
    agreed = {True: 0, False: 0}
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 6, 3))
        spacing = rng.uniform(0.5, 30.0, 3)
        origin = rng.uniform(-150.0, 150.0, 3)
        matrix = _box(shape, spacing, origin)
        geometry = CArm(alpha_deg=float(rng.uniform(-90, 90)), beta_deg=float(rng.uniform(-40, 40)),
                        isocenter_ras=tuple(rng.uniform(-60, 60, 3)), width=int(rng.integers(1, 24)),
                        height=int(rng.integers(1, 24)), pixel_spacing_mm=float(rng.uniform(2, 30))).geometry()
        ones = MaterialVolume(density=np.ones(shape, np.float32), labels=np.zeros(shape, np.uint8),
                              names=("soft_tissue",), ijk_to_ras=matrix)
        try:
            crossing = bool(np.any(project(ones, geometry, device="cpu").line_integrals > 1e-9))
        except Exception:  # the source inside the box: the projector refuses; skip the pose
            continue
        assert rays_cross_box(geometry, matrix, shape) == crossing
        agreed[crossing] += 1
    assert agreed[True] >= 10 and agreed[False] >= 10, agreed


def test_a_box_between_pixel_centres_is_crossed_by_no_ray():
    geometry = CArm(width=4, height=4, pixel_spacing_mm=40.0, isocenter_ras=(0.0, 0.0, 0.0)).geometry()
    # a 1 mm cube at the isocentre: the central ray passes between the four middle pixels' rays
    assert not rays_cross_box(geometry, _box((2, 2, 2), (0.5, 0.5, 0.5), (-0.25, -0.25, -0.25)), (2, 2, 2))
    assert rays_cross_box(geometry, _box((2, 2, 2), (20.0, 20.0, 20.0), (-10.0, -10.0, -10.0)), (2, 2, 2))


@pytest.mark.parametrize("isocenter, expected", [((0.0, 0.0, 0.0), "the rays cross only air"),
                                                 ((5000.0, 0.0, 0.0), "no ray crosses the CT")])
def test_blank_image_warning_says_what_happened(isocenter, expected):
    with pytest.warns(UserWarning, match="implausible for a CT"):  # all air is not a plausible CT range
        air = Volume.from_array(np.full((6, 6, 6), -1024.0, np.float32), spacing=(2.0, 2.0, 2.0),
                                origin=(-5.0, -5.0, -5.0))
    simulator = Simulator(air, SimulationSettings())
    result = simulator.render(CArm(width=8, height=8, pixel_spacing_mm=4.0, isocenter_ras=isocenter).geometry())
    blank = [text for text in result.warnings if "implausible for a CT" not in text]
    assert len(blank) == 1 and blank[0].startswith(expected)
    assert len(result.warnings) == 2   # the implausible range is repeated in every result (a GUI shows results)


def test_every_result_of_a_ct_not_in_hu_says_so_with_the_fix():
    """Python's warning reaches only a console; the message must travel with each result too."""
    rng = np.random.default_rng(3)
    hu = np.full((12, 12, 12), -1000.0, np.float32)
    hu[2:10, 2:10, 2:10] = rng.uniform(-100.0, 1200.0, (8, 8, 8))
    geometry = CArm(width=8, height=8, pixel_spacing_mm=4.0, isocenter_ras=(11.0, 11.0, 11.0)).geometry()
    settings = SimulationSettings(materials="threshold", stages=("primary",))
    plausible = Simulator(Volume.from_array(hu, spacing=(2.0, 2.0, 2.0)), settings).render(geometry)
    assert not any("implausible" in text for text in plausible.warnings)
    with pytest.warns(UserWarning, match="shifted by"):
        shifted = Volume.from_array(hu + 1024.0, spacing=(2.0, 2.0, 2.0))
    result = Simulator(shifted, settings).render(geometry)
    assert any("shifted by +1024" in text and "subtract 1024" in text for text in result.warnings)
    assert result.summary()["warnings"] == result.warnings   # written beside the images
