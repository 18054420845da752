"""The geometry contract of DESIGN.md: orientation, angles, P, JSON interchange."""

import json

import numpy as np
import pytest

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import CArm, DetectorGeometry, geometry_from_pose
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.projector import project
from phantoms import GradedQuadric


def _blob_centre(image):
    rows, cols = np.indices(image.shape)
    return np.array([(cols * image).sum(), (rows * image).sum()]) / image.sum()


def _render_beads(beads_ras, geometry):
    """Line-integral image of small beads in an empty 1 mm volume around the origin."""
    matrix = np.eye(4)
    matrix[:3, 3] = -80
    shape = (160, 160, 160)
    density = sum(GradedQuadric.ellipsoid(b, (5.0, 5.0, 5.0)).sample(shape, matrix) for b in beads_ras)
    materials = MaterialVolume(density.astype(np.float32), (density > 0).astype(np.uint8),
                               ("air", "soft_tissue", "bone"), matrix)
    return project(materials, geometry).line_integrals[1]


def test_ap_view_reads_like_a_radiograph():
    """AP: the patient's right shows on the image's left, the head at the top (DeepDRR issue #99)."""
    geometry = CArm(width=128, height=128, pixel_spacing_mm=2.0).geometry()
    right = _render_beads([(50.0, 0.0, 0.0)], geometry)
    head = _render_beads([(0.0, 0.0, 50.0)], geometry)
    centre = (128 - 1) / 2
    col, row = _blob_centre(right)
    assert col < centre - 20 and abs(row - centre) < 1
    col, row = _blob_centre(head)
    assert row < centre - 20 and abs(col - centre) < 1


def test_ap_source_is_posterior_and_detector_anterior():
    geometry = CArm(isocenter_ras=(10, 20, 30)).geometry()
    assert geometry.source[1] == pytest.approx(20 - 530)
    assert geometry.detector_center[1] == pytest.approx(20 + 1020 - 530)
    assert np.allclose(geometry.source[[0, 2]], [10, 30])
    assert np.allclose(geometry.detector_center[[0, 2]], [10, 30])


def test_lao_is_positive_alpha_and_cranial_is_positive_beta():
    iso = np.array([5.0, -3.0, 12.0])
    lao = CArm(alpha_deg=30, isocenter_ras=tuple(iso)).geometry()
    # LAO: the detector swings to the patient's left (-R in RAS), the source to the right
    assert lao.detector_center[0] < iso[0] - 100 and lao.source[0] > iso[0] + 100
    rao = CArm(alpha_deg=-30, isocenter_ras=tuple(iso)).geometry()
    assert rao.detector_center[0] > iso[0] + 100
    cranial = CArm(beta_deg=20, isocenter_ras=tuple(iso)).geometry()
    assert cranial.detector_center[2] > iso[2] + 100 and cranial.source[2] < iso[2] - 100
    caudal = CArm(beta_deg=-20, isocenter_ras=tuple(iso)).geometry()
    assert caudal.detector_center[2] < iso[2] - 100
    # pure rotations about the isocentre keep both distances
    for geometry in (lao, rao, cranial, caudal):
        assert np.linalg.norm(geometry.source - iso) == pytest.approx(530)
        assert np.linalg.norm(geometry.detector_center - iso) == pytest.approx(490)


def test_lateral_views_in_images():
    """LAO 90: source on the patient's right, beam right -> left, and the C-arm's rotation carries the
    image columns from 'toward the patient's left' (AP) to 'toward posterior', so anterior shows on the
    image's left. RAO 90 mirrors it. The head stays at the top in both."""
    for alpha, anterior_side in ((90.0, "left"), (-90.0, "right")):
        geometry = CArm(alpha_deg=alpha, width=128, height=128, pixel_spacing_mm=2.0).geometry()
        assert np.allclose(geometry.source / np.linalg.norm(geometry.source), [np.sign(alpha), 0, 0], atol=1e-9)
        anterior = _blob_centre(_render_beads([(0.0, 50.0, 0.0)], geometry))
        head = _blob_centre(_render_beads([(0.0, 0.0, 50.0)], geometry))
        assert head[1] < 63.5 - 20 and abs(head[0] - 63.5) < 1
        if anterior_side == "left":
            assert anterior[0] < 63.5 - 20
        else:
            assert anterior[0] > 63.5 + 20


def test_projection_matrix_maps_pixel_centres_and_rays():
    geometry = CArm(alpha_deg=-37, beta_deg=21, isocenter_ras=(4, -8, 15), width=31, height=17,
                    pixel_spacing_mm=1.7).geometry()
    rng = np.random.default_rng(0)
    for _ in range(20):
        col, row = rng.uniform(-5, 40), rng.uniform(-5, 25)
        pixel = geometry.pixel_center(col, row)
        for fraction in (0.2, 0.5, 1.0, 1.7):
            point = geometry.source + fraction * (pixel - geometry.source)
            uv, depth = geometry.project(point[None])
            assert np.allclose(uv[0], [col, row], atol=1e-9)
            # depth is the distance along the principal axis, in mm
            assert depth[0] == pytest.approx(fraction * geometry.source_to_detector_mm, rel=1e-9)
    behind = geometry.source - (geometry.detector_center - geometry.source)
    assert geometry.project(behind[None])[1][0] < 0


def test_isocentre_projects_to_the_detector_centre():
    geometry = CArm(alpha_deg=12, beta_deg=-7, isocenter_ras=(1, 2, 3), width=100, height=60).geometry()
    uv, depth = geometry.project(np.array([[1.0, 2.0, 3.0]]))
    assert np.allclose(uv[0], [49.5, 29.5])
    assert depth[0] == pytest.approx(530)


def test_from_pose_recovers_angles():
    for alpha, beta in [(0, 0), (35, 0), (-60, 25), (100, -40)]:
        carm = CArm(alpha_deg=alpha, beta_deg=beta, isocenter_ras=(3, 4, 5))
        back = CArm.from_pose(carm.pose_matrix())
        assert back.alpha_deg == pytest.approx(alpha) and back.beta_deg == pytest.approx(beta)
        assert np.allclose(back.isocenter_ras, (3, 4, 5))
        assert np.allclose(back.geometry().source, carm.geometry().source)


def test_non_rigid_pose_is_refused():
    pose = np.diag([1.2, 1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="not rigid"):
        geometry_from_pose(pose, 1020, 530, 8, 8, 1.0)


def test_json_round_trip_and_projection_matrix(tmp_path):
    geometry = CArm(alpha_deg=25, beta_deg=-15, width=40, height=30, isocenter_ras=(1, 2, 3)).geometry()
    path = tmp_path / "geometry.json"
    geometry.save(path)
    data = json.loads(path.read_text())
    assert set(data) >= {"source", "detector_origin", "u", "v", "width", "height", "projection_matrix"}
    assert np.allclose(data["projection_matrix"], geometry.projection_matrix())
    again = DetectorGeometry.load(path)
    for name in ("source", "detector_origin", "u", "v"):
        assert np.allclose(getattr(again, name), getattr(geometry, name))
    assert (again.width, again.height) == (40, 30)


def test_lps_geometry_is_converted():
    ras = CArm(alpha_deg=10, width=8, height=8).geometry()
    data = ras.to_dict()
    del data["projection_matrix"]
    lps = {k: ([-v[0], -v[1], v[2]] if k in ("source", "detector_origin", "u", "v") else v) for k, v in data.items()}
    lps["coordinate_system"] = "LPS"
    back = DetectorGeometry.from_dict(lps)
    assert np.allclose(back.source, ras.source) and np.allclose(back.u, ras.u)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("u"), "missing field"),
    (lambda d: d.update(source=[1, 2]), "has 2 values"),
    (lambda d: d.update(source=[1, "x", 3]), "not a list of numbers"),
    (lambda d: d.update(detector_origin=[float("nan"), 0, 0]), "NaN"),
    (lambda d: d.update(width=0), "zero size"),
    (lambda d: d.update(height=-3), "zero size"),
    (lambda d: d.update(width=2.5), "whole number"),
    (lambda d: d.update(width=float("nan")), "whole number"),
    (lambda d: d.update(height=float("inf")), "whole number"),
    (lambda d: d.update(width=100000), "larger than"),
    (lambda d: d.update(u=[0, 0, 0]), "spacing is zero"),
    (lambda d: d.update(v=d["u"]), "parallel"),
    (lambda d: d["projection_matrix"][0].__setitem__(0, 123.0), "disagrees"),
    (lambda d: d.update(coordinate_system="XYZ"), "not supported"),
    (lambda d: d.update(units="cm"), "units 'cm'"),
])
def test_malformed_geometry_is_refused(tmp_path, edit, message):
    data = CArm(width=8, height=8).geometry().to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        DetectorGeometry.load(path)


def test_invalid_json_file_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON"):
        DetectorGeometry.load(path)
    with pytest.raises(InputError, match="not found"):
        DetectorGeometry.load(tmp_path / "missing.json")


def test_carm_parameters_are_checked():
    with pytest.raises(InputError, match="SOD < SID"):
        CArm(sid_mm=500, sod_mm=600)
    with pytest.raises(InputError, match="zero size"):
        CArm(width=0)
    with pytest.raises(InputError, match="Pixel spacing"):
        CArm(pixel_spacing_mm=0.0)


def test_resized_keeps_the_detector_area():
    geometry = CArm(alpha_deg=20, width=300, height=200, pixel_spacing_mm=1.0).geometry()
    small = geometry.resized(75, 50)
    assert np.allclose(small.detector_center, geometry.detector_center)
    assert small.pixel_spacing == pytest.approx((4.0, 4.0))
    corner = geometry.detector_origin - 0.5 * geometry.u - 0.5 * geometry.v
    assert np.allclose(small.detector_origin - 0.5 * small.u - 0.5 * small.v, corner)


def test_image_to_ras_matrix_places_pixels_on_the_detector():
    geometry = CArm(alpha_deg=33, beta_deg=-12, width=20, height=10).geometry()
    matrix = geometry.image_to_ras_matrix()
    for col, row in [(0, 0), (19, 0), (0, 9), (7, 3)]:
        assert np.allclose((matrix @ [col, row, 0, 1])[:3], geometry.pixel_center(col, row))
    assert np.linalg.det(matrix[:3, :3]) != 0
