"""Projector against closed-form line integrals through analytic bodies.

Smooth (graded) bodies check convergence of every algorithm; the sharp-edged
partial-volume phantoms (test_projector_sharp.py) are the accuracy case that
matters for CT. Here also: the exact rule of each kernel on volumes whose
answer is known, and the numpy fallback against the numba kernel.
"""

import numpy as np
import pytest

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import CArm, DetectorGeometry, geometry_from_pose
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.projector import ALGORITHMS, DEFAULT_ALGORITHM, project
from phantoms import GradedQuadric, exact_voxel_path, oblique_matrix

MATERIALS = ("air", "soft_tissue", "bone")


def _materials(density, ijk_to_ras, label=1):
    labels = np.where(density > 0, label, 0).astype(np.uint8)
    return MaterialVolume(density=density.astype(np.float32), labels=labels, names=MATERIALS, ijk_to_ras=ijk_to_ras)


def _compare(body, ijk_to_ras, shape, geometry, algorithm):
    """Relative error of the projector on rays that cross the body's curved surface only."""
    projection = project(_materials(body.sample(shape, ijk_to_ras), ijk_to_ras), geometry,
                         algorithm=algorithm, device="cpu")
    ends = geometry.pixel_centers()
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0).max()
    expected, crosses_cap = body.line_integral(np.broadcast_to(geometry.source, ends.shape), ends,
                                               cap_margin_mm=4 * spacing)
    expected = expected * 0.1  # g/cm3 * mm -> g/cm2
    measured = projection.line_integrals[1]
    # The smooth profile vanishes at the surface, so only rays through a cap
    # (a hard edge) or barely grazing the body are left out.
    tested = (expected > 0.2 * expected.max()) & ~crosses_cap
    assert tested.sum() > 300
    assert np.all(projection.line_integrals[0] == 0) and np.all(projection.line_integrals[2] == 0)
    return np.abs(measured[tested] - expected[tested]) / expected[tested]


def test_the_default_is_joseph():
    assert DEFAULT_ALGORITHM == "joseph" and set(ALGORITHMS) == {"joseph", "siddon", "trilinear"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ellipsoid_axis_aligned(algorithm):
    matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    matrix[:3, 3] = [-45.0, -40.0, -35.0]
    body = GradedQuadric.ellipsoid(center=(1.3, -2.1, 0.7), semi_axes=(40.0, 36.0, 31.0), peak_density=1.7)
    geometry = CArm(alpha_deg=17.0, beta_deg=-11.0, width=64, height=64, pixel_spacing_mm=2.6).geometry()
    relative = _compare(body, matrix, (70, 80, 90), geometry, algorithm)
    assert relative.max() < 1e-3, relative.max()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rotated_ellipsoid_in_oblique_anisotropic_volume(algorithm):
    matrix = oblique_matrix(spacing=(0.5, 0.6, 0.7), angles_deg=(12.0, -20.0, 33.0), origin=(0, 0, 0))
    shape = (130, 150, 180)
    centre = (matrix @ np.array([89.5, 74.5, 64.5, 1.0]))[:3]
    rotation = oblique_matrix((1, 1, 1), (40.0, 10.0, -25.0), (0, 0, 0))[:3, :3]
    body = GradedQuadric.ellipsoid(center=centre + [2.0, -1.5, 3.0], semi_axes=(40.0, 34.0, 30.0),
                                   rotation=rotation, peak_density=1.1)
    geometry = CArm(alpha_deg=-63.0, beta_deg=24.0, isocenter_ras=tuple(centre), width=64, height=64,
                    pixel_spacing_mm=2.4).geometry()
    relative = _compare(body, matrix, shape, geometry, algorithm)
    assert relative.max() < 1e-3, relative.max()


# Siddon integrates the nearest-voxel (piecewise-constant) model exactly. Against a smooth
# object, a ray running within a voxel of a grid plane for its whole length sees a
# first-order error (measured up to 0.4 % at 0.8-1 mm voxels). Siddon's geometries
# here keep every ray > 5 degrees off the grid planes; the interpolating ones take them all.
CYLINDER_VIEWS = {
    "siddon": [(35.0, 30.0), (-50.0, 22.0)],
    "trilinear": [(90.0, 0.0), (83.0, 6.0), (35.0, 30.0), (-50.0, 22.0)],
    "joseph": [(90.0, 0.0), (83.0, 6.0), (35.0, 30.0), (-50.0, 22.0), (45.0, 0.0)],
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_finite_cylinder_from_several_directions(algorithm):
    matrix = np.diag([0.8, 0.8, 1.0, 1.0])
    matrix[:3, 3] = [-60.0, -60.0, -70.0]
    body = GradedQuadric.cylinder(center=(0.4, -0.3, 0.2), axis=(0.2, 0.1, 1.0), radius=40.0, half_length=55.0,
                                  peak_density=1.9)
    for alpha, beta in CYLINDER_VIEWS[algorithm]:
        geometry = CArm(alpha_deg=alpha, beta_deg=beta, width=48, height=48, pixel_spacing_mm=4.0).geometry()
        relative = _compare(body, matrix, (140, 150, 150), geometry, algorithm)
        assert relative.max() < 1e-3, (alpha, beta, relative.max())


def test_siddon_error_on_grid_parallel_rays_is_bounded():
    """The nearest-voxel model's first-order error, pinned so a regression shows."""
    matrix = np.diag([0.8, 0.8, 1.0, 1.0])
    matrix[:3, 3] = [-60.0, -60.0, -70.0]
    body = GradedQuadric.cylinder(center=(0.4, -0.3, 0.2), axis=(0.2, 0.1, 1.0), radius=40.0, half_length=55.0)
    geometry = CArm(alpha_deg=90.0, beta_deg=0.0, width=48, height=48, pixel_spacing_mm=4.0).geometry()
    relative = _compare(body, matrix, (140, 150, 150), geometry, "siddon")
    assert np.median(relative) < 1e-3
    assert relative.max() < 6e-3


def test_siddon_is_exact_for_voxel_constant_volumes():
    """On a random piecewise-constant volume the kernel equals an all-planes Siddon reference."""
    rng = np.random.default_rng(3)
    shape = (12, 14, 16)
    matrix = oblique_matrix(spacing=(2.0, 1.5, 2.5), angles_deg=(5, 15, -30), origin=(-10, -12, -8))
    density = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    materials = MaterialVolume(density, labels, MATERIALS, matrix)
    geometry = CArm(alpha_deg=30, beta_deg=10, isocenter_ras=(2, 3, 1), width=9, height=7,
                    pixel_spacing_mm=6.0).geometry()
    projection = project(materials, geometry, algorithm="siddon")
    for row in range(7):
        for col in range(9):
            index, lengths = exact_voxel_path(geometry.source, geometry.pixel_center(col, row),
                                              np.linalg.inv(matrix), shape)
            i, j, k = index.T
            for m in range(3):
                chosen = labels[k, j, i] == m
                expected = float((density[k, j, i][chosen] * lengths[chosen]).sum()) * 0.1
                assert projection.line_integrals[m, row, col] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_projection_matrix_predicts_where_the_projector_draws_a_bead():
    """P (geometry) and the rays the kernel casts agree on where a small bead lands."""
    rng = np.random.default_rng(11)
    matrix = oblique_matrix(spacing=(0.8, 0.8, 1.0), angles_deg=(0, 0, 10), origin=(-40, -40, -40))
    shape = (80, 100, 100)
    for _ in range(3):
        bead_index = rng.uniform([30, 30, 25], [70, 70, 55])
        bead = (matrix @ np.append(bead_index, 1.0))[:3]
        body = GradedQuadric.ellipsoid(bead, (4.0, 4.0, 4.0))
        geometry = CArm(alpha_deg=rng.uniform(-40, 40), beta_deg=rng.uniform(-30, 30), width=200, height=160,
                        pixel_spacing_mm=1.0, isocenter_ras=(0, 0, 0)).geometry()
        density = body.sample(shape, matrix)
        image = project(_materials(density, matrix), geometry).line_integrals[1]
        rows, cols = np.indices(image.shape)
        centroid = np.array([(cols * image).sum(), (rows * image).sum()]) / image.sum()
        # the sampled bead's own centre of mass, so voxel aliasing does not enter the comparison
        k, j, i = np.indices(shape)
        centre_of_mass = (np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).T @ density.ravel()) / density.sum()
        uv, depth = geometry.project((matrix @ centre_of_mass)[:3][None])
        assert depth[0] > 0
        assert np.allclose(centroid, uv[0], atol=0.05), (centroid, uv[0])


def test_source_inside_volume_is_an_error():
    matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    matrix[:3, 3] = -50
    geometry = CArm(sod_mm=20.0, sid_mm=100.0, width=8, height=8).geometry()
    with pytest.raises(InputError, match="inside the CT volume"):
        project(_materials(np.zeros((100, 100, 100)), matrix), geometry)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rays_beyond_the_detector_are_not_integrated(algorithm):
    """Material behind the detector plane does not attenuate."""
    matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    matrix[:3, 3] = -50
    geometry = DetectorGeometry(source=(0, -500, 0), detector_origin=(-2, 0, 2), u=(1, 0, 0), v=(0, 0, -1),
                                width=5, height=5)
    line = project(_materials(np.full((100, 100, 100), 1.25), matrix), geometry, algorithm=algorithm).line_integrals[1]
    # the central ray enters at the voxel face y=-50.5 and stops at the detector, y=0
    assert line[2, 2] == pytest.approx(1.25 * 50.5 * 0.1, rel=1e-5)


def _random_volume(seed=5, shape=(40, 50, 45)):
    matrix = oblique_matrix(spacing=(1.5, 1.2, 2.0), angles_deg=(8, -5, 20), origin=(-30, -35, -40))
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    density[rng.uniform(size=shape) < 0.2] = 0.0   # exact zeros take the sign-bit flag
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    labels[:, :25] = 1   # uniform blocks, so the fast path runs too
    fractions = rng.uniform(0.0, 1.0, (3, *shape)).astype(np.float32)
    return (MaterialVolume(density, labels, MATERIALS, matrix),
            MaterialVolume.from_fractions(density, fractions, MATERIALS, matrix))


def _views_with_ties(matrix):
    """Oblique C-arm views, views exactly along each grid axis and along a 45-degree diagonal
    (where two axes tie for dominant)."""
    views = [CArm(alpha_deg=25, beta_deg=-15, width=24, height=20, pixel_spacing_mm=5.0).geometry(),
             CArm(alpha_deg=-70, beta_deg=40, width=24, height=20, pixel_spacing_mm=5.0).geometry()]
    axes = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    for beam in (axes[:, 0], axes[:, 1], axes[:, 2], (axes[:, 0] * 1.5 + axes[:, 1] * 1.2) / np.hypot(1.5, 1.2)):
        across = np.cross(beam, axes[:, 2] if abs(beam @ axes[:, 2]) < 0.9 else axes[:, 0])
        across /= np.linalg.norm(across)
        pose = np.eye(4)
        pose[:3, :3] = np.column_stack([across, beam, np.cross(across, beam)])
        views.append(geometry_from_pose(pose, 1020.0, 530.0, 24, 20, 5.0))
    return views


@pytest.mark.parametrize("composition", ["labels", "fractions"])
def test_numpy_fallback_equals_the_numba_joseph_kernel(composition):
    """Without numba (a stock Slicer), the numpy projector gives the default kernel's numbers."""
    from DeepDRRSlicerLib.primary import PrimaryModel
    from DeepDRRSlicerLib.spectrum import tube_spectrum

    hard, soft = _random_volume()
    materials = hard if composition == "labels" else soft
    model = PrimaryModel.for_spectrum(tube_spectrum(70.0, {"Al": 2.0}), MATERIALS)
    for geometry in _views_with_ties(materials.ijk_to_ras):
        compiled = project(materials, geometry, primary_model=model, cpu_kernel="numba")
        fallback = project(materials, geometry, primary_model=model, cpu_kernel="numpy")
        assert compiled.algorithm == fallback.algorithm == "joseph" and fallback.backend == "cpu-numpy"
        assert (compiled.line_integrals.sum(axis=0) > 0).mean() > 0.5
        assert np.allclose(fallback.line_integrals, compiled.line_integrals, rtol=1e-5, atol=1e-7)
        assert np.allclose(fallback.primary, compiled.primary, rtol=1e-5)


@pytest.mark.parametrize("n_materials", [2, 5, 7, 9, 12])
def test_numba_joseph_matches_numpy_for_any_number_of_density_channels(n_materials):
    """The numba kernel loads a voxel's density channels 4 or 8 at a time (up to 8 materials) and one at
    a time beyond; every width must give the fallback's numbers."""
    from DeepDRRSlicerLib import projector_cpu

    names = ("air", "soft_tissue", "bone", "water", "lung", "adipose", "muscle", "blood", "titanium",
             "aluminium", "copper", "iodine_contrast")[:n_materials]
    hard, _ = _random_volume(seed=11)
    rng = np.random.default_rng(n_materials)
    fractions = rng.dirichlet(np.ones(n_materials), size=hard.density.shape).astype(np.float32)
    materials = MaterialVolume.from_fractions(hard.density, np.moveaxis(fractions, -1, 0), names, hard.ijk_to_ras)
    expected_width = 4 if n_materials <= 4 else 8 if n_materials <= 8 else 0
    assert projector_cpu.vector_width(materials.projector_layout()) == expected_width
    for geometry in _views_with_ties(materials.ijk_to_ras)[:4]:
        compiled = project(materials, geometry, cpu_kernel="numba").line_integrals
        fallback = project(materials, geometry, cpu_kernel="numpy").line_integrals
        assert (compiled.sum(axis=0) > 0).mean() > 0.5
        assert np.allclose(fallback, compiled, rtol=1e-5, atol=1e-7), np.abs(fallback - compiled).max()


def test_layouts_without_slack_are_read_one_channel_at_a_time():
    """A wide load past a voxel's materials needs the layout's slack and contiguous channels; a layout
    without them is read with scalar loads."""
    import dataclasses

    from DeepDRRSlicerLib import projector_cpu

    _, soft = _random_volume()
    layout = soft.projector_layout()
    assert layout.channel_slack >= 8 - layout.n_materials and projector_cpu.vector_width(layout) == 4
    assert projector_cpu.vector_width(dataclasses.replace(layout, channels=layout.channels.copy())) == 0
    strided = np.zeros((layout.channels.shape[0], 2 * layout.n_materials), np.float32)[:, ::2]
    assert projector_cpu.vector_width(dataclasses.replace(layout, channels=strided)) == 0
    hard, _ = _random_volume()
    assert projector_cpu.vector_width(hard.projector_layout()) == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_hot_fractions_equal_hard_labels(algorithm):
    """The packed-label layout and the per-material channel layout describe the same materials."""
    hard, _ = _random_volume(seed=8)
    one_hot = MaterialVolume.from_fractions(hard.density, hard.material_fractions(), MATERIALS, hard.ijk_to_ras)
    assert hard.projector_layout().kind == "labels" and one_hot.projector_layout().kind == "fractions"
    for geometry in _views_with_ties(hard.ijk_to_ras)[:4]:
        a = project(hard, geometry, algorithm=algorithm).line_integrals
        b = project(one_hot, geometry, algorithm=algorithm).line_integrals
        assert np.allclose(a, b, rtol=2e-6, atol=1e-6), np.abs(a - b).max()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_uniform_box_integrates_exactly_on_every_ray(algorithm):
    """A uniform volume: every ray gets density x its chord through the box, including rays that
    enter or leave through a side face (Joseph's partial end cells) and rays ending inside."""
    matrix = oblique_matrix(spacing=(1.1, 0.9, 1.7), angles_deg=(3, -8, 14), origin=(-20, -25, -15))
    shape = (22, 40, 35)
    density = np.full(shape, 1.3, dtype=np.float32)
    materials = MaterialVolume(density, np.ones(shape, np.uint8), MATERIALS, matrix)
    geometry = CArm(alpha_deg=31, beta_deg=12, sid_mm=560, sod_mm=530, isocenter_ras=(8, 0, 5), width=30,
                    height=26, pixel_spacing_mm=2.5).geometry()   # the detector cuts through the volume
    measured = project(materials, geometry, algorithm=algorithm).line_integrals[1]
    ras_to_ijk = np.linalg.inv(matrix)
    expected = np.zeros_like(measured)
    for row in range(geometry.height):
        for col in range(geometry.width):
            _, lengths = exact_voxel_path(geometry.source, geometry.pixel_center(col, row), ras_to_ijk, shape)
            expected[row, col] = lengths.sum() * 1.3 * 0.1
    stored = float(materials.projector_layout().material_densities()[:, 1].max()) / 1.3
    assert 0 < (expected > 0).mean() < 1 and (expected < expected.max() * 0.9).any()
    assert np.allclose(measured, expected * stored, rtol=1e-6, atol=1e-6)


def test_coarse_grid_is_not_visible_in_the_default_image():
    """A smooth body on a coarse 3 mm grid, AP (rays along a grid axis), 0.5 mm pixels at the isocentre.

    Roughness: the RMS difference between the image's and the exact image's pixel-to-pixel steps, relative
    to the exact steps. Siddon's image is a staircase of 3 mm blocks (measured 0.5); Joseph's follows the
    exact image (0.03)."""
    matrix = np.diag([3.0, 3.0, 3.0, 1.0])
    matrix[:3, 3] = -60.0
    body = GradedQuadric.ellipsoid(center=(1.0, 2.0, -1.0), semi_axes=(45.0, 40.0, 42.0), power=1)
    materials = _materials(body.sample((41, 41, 41), matrix), matrix)
    geometry = CArm(width=160, height=160, pixel_spacing_mm=0.5 * 1020 / 530).geometry()
    ends = geometry.pixel_centers()
    exact = body.line_integral(np.broadcast_to(geometry.source, ends.shape), ends)[0] * 0.1
    body_pixels = exact > 0.3 * exact.max()
    roughness = {}
    for algorithm in ("joseph", "siddon"):
        image = project(materials, geometry, algorithm=algorithm).line_integrals[1]
        excess, scale = [], []
        for axis in (0, 1):
            both = np.diff(body_pixels.astype(int), axis=axis) == 0
            both &= np.take(body_pixels, range(1, body_pixels.shape[axis]), axis=axis)
            excess.append((np.diff(image, axis=axis) - np.diff(exact, axis=axis))[both])
            scale.append(np.diff(exact, axis=axis)[both])
        excess, scale = np.concatenate(excess), np.concatenate(scale)
        roughness[algorithm] = np.sqrt(np.mean(excess**2) / np.mean(scale**2))
    assert roughness["joseph"] < 0.08, roughness
    assert roughness["siddon"] > 0.3, roughness


def test_missing_numba_falls_back_and_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "numba", None)  # makes "import numba" fail
    matrix = np.eye(4)
    matrix[:3, 3] = -20
    geometry = CArm(width=6, height=5, pixel_spacing_mm=4.0).geometry()
    projection = project(_materials(np.full((40, 40, 40), 1.0), matrix), geometry)
    assert projection.backend == "cpu-numpy" and projection.algorithm == "joseph"
    assert any("numba is not installed" in note for note in projection.notes)
    # a 40 mm cube of 1 g/cm3 on the central ray (its faces at +-20 mm)
    assert projection.line_integrals[1, 2, 2] == pytest.approx(4.0, rel=1e-5)
    siddon = project(_materials(np.full((40, 40, 40), 1.0), matrix), geometry, algorithm="siddon")
    assert siddon.algorithm == "joseph" and any("no siddon kernel" in note for note in siddon.notes)


@pytest.mark.parametrize("cpu_kernel", ["numba", "numpy"])
def test_progress_reaches_one_and_cancelling_stops(cpu_kernel):
    from DeepDRRSlicerLib.errors import SimulationCancelled

    matrix = np.eye(4)
    matrix[:3, 3] = -15
    materials = _materials(np.full((30, 30, 30), 1.0), matrix)
    geometry = CArm(width=300, height=260, pixel_spacing_mm=0.3).geometry()   # more rays than one launch takes
    fractions = []
    project(materials, geometry, progress=fractions.append, cpu_kernel=cpu_kernel)
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0

    def cancel(fraction):
        raise SimulationCancelled()

    with pytest.raises(SimulationCancelled):
        project(materials, geometry, progress=cancel, cpu_kernel=cpu_kernel)


def test_labels_beyond_the_material_list_are_refused():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 2, 3] = 3
    with pytest.raises(InputError, match="labels go up to 3"):
        MaterialVolume(np.ones((4, 4, 4), np.float32), labels, MATERIALS, np.eye(4))
