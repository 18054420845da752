"""The truncation mask against rays traced analytically through what the CT cut off."""

import numpy as np
import pytest

from DeepDRRSlicerLib.geometry import CArm
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.pipeline import Simulator
from DeepDRRSlicerLib.truncation import cut_faces, mark_on_preview, truncation_mask
from DeepDRRSlicerLib.volume import Volume

NAMES = ("air", "soft_tissue", "bone")
SPACING = 2.0
SHAPE = (40, 50, 60)          # k, j, i: the CT spans z in [-40, 40], y in [-50, 50], x in [-60, 60] mm
RADIUS = 30.0


def _volume(density):
    matrix = np.diag([SPACING, SPACING, SPACING, 1.0])
    matrix[:3, 3] = -(np.array(SHAPE[::-1]) - 1) / 2 * SPACING
    return MaterialVolume(density=density.astype(np.float32), labels=(density > 0).astype(np.uint8), names=NAMES,
                          ijk_to_ras=matrix)


def _centres():
    k, j, i = np.indices(SHAPE, dtype=float)
    return (np.stack([i, j, k], -1) - (np.array(SHAPE[::-1]) - 1) / 2) * SPACING


def _cylinder_along_z(x_offset=0.0):
    """A tissue cylinder (axis S, radius 30 mm) that the CT's first and last slices cut."""
    c = _centres()
    return np.where((c[..., 0] - x_offset) ** 2 + c[..., 1] ** 2 <= RADIUS**2, 1.0, 0.0)


def _crosses_cylinder_beyond_the_slab(geometry, radius):
    """Per pixel: whether the ray source -> pixel is inside the infinite cylinder (axis S, given radius)
    somewhere above or below the scanned slab z in [-40, 40] mm (the outer faces of the end slices)."""
    d = geometry.pixel_centers() - geometry.source
    p = geometry.source
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (p[0] * d[..., 0] + p[1] * d[..., 1])
    c = p[0] ** 2 + p[1] ** 2 - radius**2
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0))
    t0, t1 = np.clip((-b - root) / (2 * a), 0, 1), np.clip((-b + root) / (2 * a), 0, 1)
    z0, z1 = p[2] + t0 * d[..., 2], p[2] + t1 * d[..., 2]
    return (disc > 0) & (t1 > t0) & ((np.maximum(z0, z1) > 40.0) | (np.minimum(z0, z1) < -40.0))


def test_rays_through_the_body_beyond_the_scan_range_are_marked():
    """An AP view taller than the CT: rays that cross the cylinder above or below the CT are truncated;
    rays that cross it only inside the scanned slab, or miss it, are not."""
    materials = _volume(_cylinder_along_z())
    assert set(cut_faces(materials)) == {(2, 0), (2, 1)}
    geometry = CArm(isocenter_ras=(0, 0, 0), sod_mm=400, sid_mm=800, width=90, height=90,
                    pixel_spacing_mm=3.0).geometry()
    mask = truncation_mask(materials, geometry) > 0.5
    expected = _crosses_cylinder_beyond_the_slab(geometry, RADIUS)
    # the voxelised disk on the cut faces is the circle to within a voxel: judge only the rays whose
    # answer is the same for a cylinder 1.5 voxels thinner and 1.5 voxels thicker
    decided = (_crosses_cylinder_beyond_the_slab(geometry, RADIUS - 1.5 * SPACING)
               == _crosses_cylinder_beyond_the_slab(geometry, RADIUS + 1.5 * SPACING))
    assert expected[decided].sum() > 1000 and (~expected[decided]).sum() > 1000
    assert np.array_equal(mask[decided], expected[decided])


def test_a_body_inside_the_ct_is_never_truncated():
    c = _centres()
    inside = np.where((c ** 2 / np.array([50.0, 40.0, 30.0]) ** 2).sum(-1) <= 1, 1.0, 0.0)
    materials = _volume(inside)
    assert cut_faces(materials) == {}
    geometry = CArm(isocenter_ras=(0, 0, 0), sod_mm=400, sid_mm=800, width=60, height=60,
                    pixel_spacing_mm=4.0, alpha_deg=30, beta_deg=20).geometry()
    assert not truncation_mask(materials, geometry).any()


def test_side_faces_mark_only_rays_through_the_cut():
    """A block of tissue cut by the CT's face at x = -60 mm (its i = 0 layer, the patient's left), seen
    laterally from the right: rays leaving through the cut are truncated; rays that leave through that
    face beside the cut, or pass beside the CT, are not (side faces are not extended)."""
    c = _centres()
    block = (c[..., 0] < -30) & (np.abs(c[..., 1]) < 20) & (np.abs(c[..., 2]) < 30)
    materials = _volume(np.where(block, 1.0, 0.0))
    assert set(cut_faces(materials)) == {(0, 0)}
    # alpha = 90: the source on the patient's right (+x), the beam towards -x
    geometry = CArm(alpha_deg=90, isocenter_ras=(0, 0, 0), sod_mm=400, sid_mm=800, width=80, height=80,
                    pixel_spacing_mm=3.0).geometry()
    mask = truncation_mask(materials, geometry) > 0.5
    ends = geometry.pixel_centers()
    d = ends - geometry.source
    # where each ray crosses the plane x = -61 mm (the cut face's outer side)
    t = (-61.0 - geometry.source[0]) / d[..., 0]
    y = geometry.source[1] + t * d[..., 1]
    z = geometry.source[2] + t * d[..., 2]
    through_cut = (0 < t) & (t < 1) & (np.abs(y) < 20 - SPACING) & (np.abs(z) < 30 - SPACING)
    beside = (0 < t) & (t < 1) & ((np.abs(y) > 20 + SPACING) | (np.abs(z) > 30 + SPACING))
    assert through_cut.sum() > 100 and beside.sum() > 100
    assert mask[through_cut].all()
    assert not mask[beside].any()


def test_simulator_reports_truncation_and_the_overlay_marks_it():
    c = _centres()
    radial = c[..., 0] ** 2 + c[..., 1] ** 2
    hu = np.where(radial <= RADIUS**2, np.where(radial <= 8.0**2, 700.0, 40.0), -1000.0)
    matrix = np.diag([SPACING, SPACING, SPACING, 1.0])
    matrix[:3, 3] = -(np.array(SHAPE[::-1]) - 1) / 2 * SPACING
    result = Simulator(Volume.from_array(hu, matrix)).render(
        CArm(isocenter_ras=(0, 0, 0), sod_mm=400, sid_mm=800, width=64, height=64, pixel_spacing_mm=4.0).geometry())
    mask = result.masks["truncation"]
    assert mask.dtype == np.float32 and mask.shape == (64, 64) and 0.1 < mask.mean() < 0.9
    assert any("truncated" in note for note in result.notes)
    assert result.summary()["masks"]["truncation"]["fraction_of_pixels"] == pytest.approx(float(mask.mean()))
    preview = np.full((64, 64), 200, np.uint8)
    marked = mark_on_preview(preview, mask)
    assert np.all(marked[mask == 0] == 200) and np.any(marked[mask == 1] == 0) and np.any(marked[mask == 1] == 200)
