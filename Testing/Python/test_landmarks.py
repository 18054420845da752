"""Landmarks: readers (LPS -> RAS at the edge), projection against an independent
ray-plane oracle, visibility rules, exports, overlay PNG, and the bundled file."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import CArm, DetectorGeometry
from DeepDRRSlicerLib.landmarks import (
    CSV_HEADER,
    Landmark,
    draw_overlay,
    load_landmarks,
    project_landmarks,
    read_landmarks_csv,
    read_landmarks_json,
    write_landmarks_csv,
    write_landmarks_json,
)

SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
          "Resources/Schema/markups-schema-v1.0.3.json#")


def _markups(points, system="LPS", **extra):
    markup = {"type": "Fiducial", "coordinateUnits": "mm", "controlPoints": points, **extra}
    if system is not None:
        markup["coordinateSystem"] = system
    return {"@schema": SCHEMA, "markups": [markup]}


def _write(path, text):
    path.write_text(text)
    return path


def _positions(landmarks):
    return {item.label: item.position_ras for item in landmarks}


# ---- readers -------------------------------------------------------------------------------------
def test_mrk_json_lps_is_flipped_to_ras(tmp_path):
    points = [{"id": "1", "label": "tip", "position": [10.5, -20.25, 30.0]},
              {"id": "2", "label": "base", "position": [-1.0, 2.0, -3.0], "positionStatus": "defined"},
              {"id": "3", "label": "unplaced", "position": [0.0, 0.0, 0.0], "positionStatus": "undefined"}]
    path = _write(tmp_path / "a.mrk.json", json.dumps(_markups(points, "LPS")))
    landmarks = load_landmarks(path)
    assert [item.label for item in landmarks] == ["tip", "base"]  # the undefined point is skipped
    assert np.array_equal(landmarks[0].position_ras, [-10.5, 20.25, 30.0])
    assert np.array_equal(landmarks[1].position_ras, [1.0, -2.0, -3.0])


def test_mrk_json_ras_and_default_lps(tmp_path):
    points = [{"label": "p", "position": [10.0, 20.0, 30.0]}]
    ras = load_landmarks(_write(tmp_path / "ras.mrk.json", json.dumps(_markups(points, "RAS"))))
    assert np.array_equal(ras[0].position_ras, [10.0, 20.0, 30.0])
    # Slicer's schema default is LPS when the key is absent
    default = load_landmarks(_write(tmp_path / "d.mrk.json", json.dumps(_markups(points, None))))
    assert np.array_equal(default[0].position_ras, [-10.0, -20.0, 30.0])


def test_mrk_json_several_lists_and_unlabelled_points(tmp_path):
    data = {"markups": [
        {"type": "Fiducial", "coordinateSystem": "RAS", "name": "F",
         "controlPoints": [{"label": "", "position": [1, 2, 3]}]},
        {"type": "Fiducial", "coordinateSystem": "LPS",
         "controlPoints": [{"label": "second", "position": [1, 2, 3]}]},
    ]}
    landmarks = load_landmarks(_write(tmp_path / "two.json", json.dumps(data)))
    assert [item.label for item in landmarks] == ["F-1", "second"]
    assert np.array_equal(landmarks[1].position_ras, [-1, -2, 3])


FCSV_TEMPLATE = """# Markups fiducial file version = 4.11
# CoordinateSystem = {system}
# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
vtkMRMLMarkupsFiducialNode_0,10.5,-20.25,30,0,0,0,1,1,1,0,"tip, left",a description,
vtkMRMLMarkupsFiducialNode_1,-1,2,-3,0,0,0,1,1,1,0,base,,,2,0
"""


@pytest.mark.parametrize("system, flip", [("0", (1, 1, 1)), ("RAS", (1, 1, 1)),
                                          ("1", (-1, -1, 1)), ("LPS", (-1, -1, 1))])
def test_fcsv_coordinate_systems(tmp_path, system, flip):
    landmarks = load_landmarks(_write(tmp_path / "f.fcsv", FCSV_TEMPLATE.format(system=system)))
    assert [item.label for item in landmarks] == ["tip, left", "base"]
    assert np.array_equal(landmarks[0].position_ras, np.multiply([10.5, -20.25, 30.0], flip))
    assert np.array_equal(landmarks[1].position_ras, np.multiply([-1.0, 2.0, -3.0], flip))


def test_fcsv_with_custom_column_order(tmp_path):
    text = "# CoordinateSystem = RAS\n# columns = label,x,y,z\nfirst,1,2,3\n"
    landmarks = load_landmarks(_write(tmp_path / "c.fcsv", text))
    assert landmarks[0].label == "first" and np.array_equal(landmarks[0].position_ras, [1, 2, 3])


def test_plain_csv_ras_and_lps(tmp_path):
    ras = load_landmarks(_write(tmp_path / "r.csv", 'label,R,A,S\n"head, top",1.5,-2,3e1\n\nfoot,0,0,-10\n'))
    assert [item.label for item in ras] == ["head, top", "foot"]
    assert np.array_equal(ras[0].position_ras, [1.5, -2.0, 30.0])
    lps = load_landmarks(_write(tmp_path / "l.csv", "label,L,P,S\nx,1,2,3\n"))
    assert np.array_equal(lps[0].position_ras, [-1.0, -2.0, 3.0])


def test_landmark_validates_its_position():
    with pytest.raises(InputError, match="3"):
        Landmark("a", [1.0, 2.0])
    with pytest.raises(InputError, match="NaN or infinity"):
        Landmark("a", [1.0, np.inf, 2.0])


def _mrk(points, system="LPS"):
    return json.dumps(_markups(points, system))


MALFORMED = [
    # (file name, content or None for "do not create", words expected in the problem)
    ("absent.mrk.json", None, "not found"),
    ("points.txt", "label,R,A,S\na,1,2,3\n", "unknown extension"),
    ("bad.mrk.json", '{"markups": [ {"controlPoints": [ }', "not valid JSON"),
    ("other.json", '{"points": []}', "neither Slicer markups"),
    ("empty.mrk.json", _mrk([]), "no control points"),
    ("allundefined.mrk.json", _mrk([{"label": "a", "position": [0, 0, 0], "positionStatus": "undefined"}]),
     "no control points"),
    ("text.mrk.json", _mrk([{"label": "a", "position": [1, "two", 3]}]), "non-numeric"),
    ("short.mrk.json", _mrk([{"label": "a", "position": [1, 2]}]), "three numbers"),
    ("nopos.mrk.json", _mrk([{"label": "a"}]), "no 'position'"),
    ("nan.mrk.json", '{"markups": [{"controlPoints": [{"label": "a", "position": [1, NaN, 3]}]}]}',
     "NaN or infinity"),
    ("ijk.mrk.json", _mrk([{"label": "a", "position": [1, 2, 3]}], "IJK"), "unknown coordinate system"),
    ("um.mrk.json", json.dumps({"markups": [{"coordinateUnits": "um", "controlPoints": []}]}), "units"),
    ("header_only.csv", "label,R,A,S\n", "no control points"),
    ("blank.csv", "\n\n", "no control points"),
    ("noheader.csv", "a,1,2,3\n", "missing header"),
    ("word.csv", "label,R,A,S\na,1,two,3\n", "not a number"),
    ("inf.csv", "label,R,A,S\na,1,inf,3\n", "not finite"),
    ("nanvalue.csv", "label,R,A,S\na,nan,2,3\n", "not finite"),
    ("columns.csv", "label,R,A,S\na,1,2\n", "3 columns, expected 4"),
    ("toomany.csv", "label,R,A,S\na,1,2,3,4\n", "5 columns, expected 4"),
    ("projected.csv", "label,u,v,depth_mm,visible\na,1,2,3,true\n", "projected 2D landmarks"),
    ("nosystem.fcsv", "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                      "1,1,2,3,0,0,0,1,1,1,0,a,,\n", "CoordinateSystem"),
    ("ijk.fcsv", "# CoordinateSystem = 2\n1,1,2,3,0,0,0,1,1,1,0,a,,\n", "unknown coordinate system"),
    ("fewcols.fcsv", "# CoordinateSystem = LPS\n1,1,2,3,0\n", "5 columns, expected at least 12"),
    ("word.fcsv", "# CoordinateSystem = LPS\n1,1,x,3,0,0,0,1,1,1,0,a,,\n", "not a number"),
    ("nopoints.fcsv", "# CoordinateSystem = LPS\n", "no control points"),
]


@pytest.mark.parametrize("name, content, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_name_the_problem_and_the_fix(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as caught:
        load_landmarks(path)
    assert words.lower() in caught.value.problem.lower()
    assert caught.value.fix and "Fix:" in str(caught.value)


def test_binary_file_is_an_input_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="UTF-8"):
        load_landmarks(path)


# ---- projection ----------------------------------------------------------------------------------
def _oracle(point, geometry):
    """Intersect the line source->point with the detector plane; express the hit in (u, v)."""
    s = np.asarray(geometry.source, dtype=float)
    d0 = np.asarray(geometry.detector_origin, dtype=float)
    u = np.asarray(geometry.u, dtype=float)
    v = np.asarray(geometry.v, dtype=float)
    normal = np.cross(u, v)
    direction = np.asarray(point, dtype=float) - s
    t = np.dot(normal, d0 - s) / np.dot(normal, direction)   # plane: normal . (x - d0) = 0
    hit = s + t * direction
    (col, row), *_ = np.linalg.lstsq(np.column_stack([u, v]), hit - d0, rcond=None)
    axis = normal / np.linalg.norm(normal)
    axis = axis if np.dot(axis, d0 - s) > 0 else -axis          # principal axis, source -> detector
    return col, row, float(np.dot(direction, axis)), t


POSES = [dict(alpha_deg=0.0, beta_deg=0.0), dict(alpha_deg=30.0, beta_deg=-12.0),
         dict(alpha_deg=-75.0, beta_deg=20.0), dict(alpha_deg=90.0, beta_deg=0.0)]


@pytest.mark.parametrize("pose", POSES)
def test_projection_agrees_with_ray_plane_oracle(pose):
    geometry = CArm(isocenter_ras=(12.0, -40.0, 85.0), width=320, height=240, pixel_spacing_mm=0.9,
                    **pose).geometry()
    rng = np.random.default_rng(7)
    points = np.array([12.0, -40.0, 85.0]) + rng.uniform(-150, 150, size=(40, 3))
    projected = project_landmarks([Landmark(f"p{n}", p) for n, p in enumerate(points)], geometry)
    for item, point in zip(projected, points):
        col, row, depth, t = _oracle(point, geometry)
        assert item.depth_mm == pytest.approx(depth, abs=1e-6)
        assert depth > 0 and t > 0
        assert item.u == pytest.approx(col, abs=1e-6)
        assert item.v == pytest.approx(row, abs=1e-6)
        inside = -0.5 <= col <= geometry.width - 0.5 and -0.5 <= row <= geometry.height - 0.5
        assert item.visible == inside
        assert np.array_equal(item.position_ras, point)


def test_projection_oracle_on_a_hand_built_oblique_detector():
    # tilted detector, rectangular pixels, source off the central ray
    u = np.array([0.8, 0.1, 0.0])
    u = u / np.linalg.norm(u) * 0.7
    v0 = np.array([0.0, 0.3, -1.0])
    v = v0 - np.dot(v0, u) / np.dot(u, u) * u
    v = v / np.linalg.norm(v) * 1.1
    geometry = DetectorGeometry(source=[30.0, -600.0, 20.0], detector_origin=[-90.0, 450.0, 120.0],
                                u=u, v=v, width=300, height=200)
    points = [[0.0, 0.0, 0.0], [40.0, 100.0, -30.0], [-80.0, -200.0, 60.0]]
    for item, point in zip(project_landmarks([Landmark(str(n), p) for n, p in enumerate(points)], geometry),
                           points):
        col, row, depth, _ = _oracle(point, geometry)
        assert (item.u, item.v, item.depth_mm) == pytest.approx((col, row, depth), abs=1e-6)


@pytest.mark.parametrize("size", [(512, 512), (321, 200), (1, 1)])
@pytest.mark.parametrize("pose", POSES[:3])
def test_isocentre_projects_to_the_detector_centre(size, pose):
    width, height = size
    carm = CArm(isocenter_ras=(5.0, 6.0, -7.0), width=width, height=height, pixel_spacing_mm=0.5, **pose)
    (item,) = project_landmarks([Landmark("iso", carm.isocenter_ras)], carm.geometry())
    assert item.u == pytest.approx((width - 1) / 2, abs=1e-9)
    assert item.v == pytest.approx((height - 1) / 2, abs=1e-9)
    assert item.depth_mm == pytest.approx(carm.sod_mm, abs=1e-9)
    assert item.visible


def test_ap_orientation_patient_right_on_image_left_head_up():
    geometry = CArm(width=200, height=200, pixel_spacing_mm=1.0).geometry()
    right, left, head, feet = project_landmarks(
        [Landmark("R", [40, 0, 0]), Landmark("L", [-40, 0, 0]), Landmark("H", [0, 0, 40]),
         Landmark("F", [0, 0, -40])], geometry)
    assert right.u < left.u and head.v < feet.v
    assert right.v == pytest.approx(left.v) and head.u == pytest.approx(feet.u)


def test_points_behind_the_source_are_not_visible_and_not_an_error():
    carm = CArm(width=64, height=64, pixel_spacing_mm=4.0)
    geometry = carm.geometry()
    source = geometry.source
    behind = source - np.array([0.0, 200.0, 0.0])        # AP: the beam runs +A, so -A is behind
    beside_source = source + np.array([50.0, 0.0, 0.0])   # in the source's own plane: depth 0
    projected = project_landmarks([Landmark("behind", behind), Landmark("at source plane", beside_source),
                                   Landmark("at source", source), Landmark("iso", [0, 0, 0])], geometry)
    for item in projected[:3]:
        assert not item.visible
        assert math.isnan(item.u) and math.isnan(item.v)
        assert item.depth_mm <= 0
    assert projected[0].depth_mm == pytest.approx(-200.0)
    assert projected[3].visible


def test_off_detector_points_are_not_visible_but_keep_their_pixel():
    geometry = CArm(width=100, height=80, pixel_spacing_mm=1.0).geometry()
    # at the isocentre plane the magnification is SID/SOD; go far to the patient's left
    projected = project_landmarks([Landmark("far left", [-400.0, 0.0, 0.0]),
                                   Landmark("far up", [0.0, 0.0, 400.0])], geometry)
    assert not projected[0].visible and projected[0].u > geometry.width
    assert not projected[1].visible and projected[1].v < 0
    assert all(math.isfinite(p.u) and math.isfinite(p.v) and p.depth_mm > 0 for p in projected)


def test_detector_edge_counts_as_inside():
    geometry = CArm(width=10, height=10, pixel_spacing_mm=1.0).geometry()
    # points halfway along rays to just inside the outer edges of the corner pixels, and just outside
    def halfway(column, row):
        return geometry.source + 0.5 * (geometry.pixel_center(column, row) - geometry.source)

    edge_low, edge_high, outside = halfway(-0.499, -0.499), halfway(9.499, 9.499), halfway(9.501, 4.0)
    a, b, c = project_landmarks([Landmark("a", edge_low), Landmark("b", edge_high), Landmark("c", outside)],
                                geometry)
    assert a.visible and b.visible and not c.visible


def test_empty_list_projects_to_empty_list():
    assert project_landmarks([], CArm().geometry()) == []


def test_project_rejects_non_landmarks():
    with pytest.raises(InputError, match="Landmark"):
        project_landmarks([[1.0, 2.0, 3.0]], CArm().geometry())


# ---- exports -------------------------------------------------------------------------------------
def _sample_projection():
    geometry = CArm(alpha_deg=20.0, width=128, height=96, pixel_spacing_mm=2.0).geometry()
    landmarks = [Landmark("centre", [0.0, 0.0, 0.0]), Landmark("label, with comma", [10.0, -5.0, 20.0]),
                 Landmark("behind", geometry.source * 2.0), Landmark("aside", [0.0, 0.0, 900.0])]
    return geometry, project_landmarks(landmarks, geometry)


def test_csv_export_round_trip(tmp_path):
    geometry, projected = _sample_projection()
    path = tmp_path / "landmarks.csv"
    write_landmarks_csv(projected, path)
    assert path.read_text().splitlines()[0] == "label,u,v,depth_mm,visible"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["visible"] for row in rows] == ["true", "true", "false", "false"]
    assert rows[2]["u"] == "nan"
    back = read_landmarks_csv(path)
    assert [b.label for b in back] == [p.label for p in projected]
    for b, p in zip(back, projected):
        assert b.visible == p.visible
        assert b.depth_mm == pytest.approx(p.depth_mm, abs=1e-5)
        if p.depth_mm > 0:
            assert (b.u, b.v) == pytest.approx((p.u, p.v), abs=1e-5)
        else:
            assert math.isnan(b.u) and math.isnan(b.v)
        assert np.all(np.isnan(b.position_ras))
    assert tuple(CSV_HEADER) == ("label", "u", "v", "depth_mm", "visible")


def test_json_export_round_trip(tmp_path):
    geometry, projected = _sample_projection()
    path = tmp_path / "landmarks.json"
    write_landmarks_json(projected, geometry, path)

    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    data = json.loads(path.read_text(), parse_constant=reject)  # strict JSON: NaN written as null
    assert np.allclose(data["projection_matrix"], geometry.projection_matrix(), rtol=0, atol=1e-12)
    assert np.allclose(DetectorGeometry.from_dict(data["geometry"]).projection_matrix(),
                       geometry.projection_matrix())
    assert set(data["landmarks"][0]) == {"label", "position_ras", "u", "v", "depth_mm", "visible"}
    assert data["landmarks"][2]["u"] is None and data["landmarks"][2]["visible"] is False
    back = read_landmarks_json(path)
    for b, p in zip(back, projected, strict=True):
        assert b.label == p.label and b.visible == p.visible
        assert np.array_equal(b.position_ras, p.position_ras)
        assert b.depth_mm == p.depth_mm
        assert (math.isnan(b.u) and math.isnan(p.u)) or (b.u, b.v) == (p.u, p.v)
    # the 3D positions load back as landmarks and re-project identically
    again = project_landmarks(load_landmarks(path), geometry)
    assert [a.uv.tolist() for a in again[:2]] == [p.uv.tolist() for p in projected[:2]]


def test_export_into_a_missing_folder_is_an_input_error(tmp_path):
    geometry, projected = _sample_projection()
    with pytest.raises(InputError, match="does not exist"):
        write_landmarks_csv(projected, tmp_path / "nope" / "x.csv")


# ---- overlay -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, factor", [(256, 2), (1024, 1), (100, 6)])
def test_overlay_png_marks_visible_landmarks(tmp_path, size, factor):
    geometry = CArm(width=size, height=size, pixel_spacing_mm=300.0 / size).geometry()
    rows, cols = np.mgrid[0:size, 0:size]
    image = np.hypot(rows - size / 2, cols - size / 3).astype(np.float32)  # smooth grey ramp
    projected = project_landmarks([Landmark("iso", [0, 0, 0]), Landmark("right", [40, 0, 30]),
                                   Landmark("far", [0, 0, 2000]), Landmark("behind", [0, -2000, 0])], geometry)
    path = tmp_path / "overlay.png"
    draw_overlay(image, projected, path, title="test")
    with Image.open(path) as png:
        picture = np.asarray(png.convert("RGB")).astype(int)
    assert picture.shape == (size * factor, size * factor, 3)
    amber = (picture[..., 0] > 200) & (picture[..., 1] > 150) & (picture[..., 2] < 80)
    for item in projected[:2]:
        x, y = (item.u + 0.5) * factor - 0.5, (item.v + 0.5) * factor - 0.5
        window = amber[int(y) - 8 * factor:int(y) + 8 * factor, int(x) - 8 * factor:int(x) + 8 * factor]
        assert window.sum() > 10, f"no marker drawn at {item.label}"
    # the note about invisible landmarks sits at the bottom-left, in its own colour
    note = (picture[..., 0] > 200) & (picture[..., 1] < 160) & (picture[..., 2] < 160)
    assert note[int(0.8 * picture.shape[0]):, : picture.shape[1] // 2].sum() > 20


def test_overlay_handles_flat_and_nan_images_and_rejects_3d(tmp_path):
    geometry = CArm(width=64, height=48, pixel_spacing_mm=4.0).geometry()
    projected = project_landmarks([Landmark("iso", [0, 0, 0])], geometry)
    draw_overlay(np.zeros((48, 64)), projected, tmp_path / "flat.png")
    image = np.ones((48, 64))
    image[:5] = np.nan
    draw_overlay(image, projected, tmp_path / "nan.png")
    with Image.open(tmp_path / "nan.png") as picture:
        assert picture.size == (64 * 8, 48 * 8)
    with pytest.raises(InputError, match="2D image"):
        draw_overlay(np.zeros((2, 48, 64)), projected, tmp_path / "cube.png")


# ---- the bundled landmarks -----------------------------------------------------------------------
def _bundled():
    resources = pytest.importorskip("DeepDRRSlicerLib.resources")
    try:
        return resources.sample_landmarks_path(), resources.sample_ct_path()
    except FileNotFoundError as error:  # pragma: no cover - a broken checkout
        pytest.fail(str(error))


def test_bundled_landmarks_file_is_slicer_markups_in_lps_with_provenance():
    landmarks_path, _ = _bundled()
    data = json.loads(landmarks_path.read_text())
    assert data["@schema"] == SCHEMA
    (markup,) = data["markups"]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    labels = [p["label"] for p in markup["controlPoints"]]
    for needed in ("R femoral head centre", "L femoral head centre", "Pubic symphysis (superior)"):
        assert needed in labels
    for point in markup["controlPoints"]:
        assert "not expert annotations" in point["description"]
        assert "tools/place_pelvis_landmarks.py" in point["description"]


def test_bundled_landmarks_lie_in_the_ct_and_project_where_anatomy_says():
    sitk = pytest.importorskip("SimpleITK")
    landmarks_path, ct_path = _bundled()
    landmarks = load_landmarks(landmarks_path)
    assert len(landmarks) >= 5
    image = sitk.ReadImage(str(ct_path))
    size = np.array(image.GetSize())
    to_ras = np.array([-1.0, -1.0, 1.0])
    for item in landmarks:  # inside the CT grid
        index = np.array(image.TransformPhysicalPointToContinuousIndex((item.position_ras * to_ras).tolist()))
        assert np.all(index >= 0) and np.all(index <= size - 1), item.label
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())) * to_ras

    # AP, default SID/SOD and angles, isocentre at the CT centre. The default 298 mm detector
    # sees only ~155 mm at the isocentre, less than the pelvis is wide, so the detector here is
    # widened to take in the whole CT.
    probe = CArm(isocenter_ras=tuple(centre), width=2, height=2, pixel_spacing_mm=1.0).geometry()
    corners = np.array([image.TransformIndexToPhysicalPoint([int(c) for c in np.array(corner) * (size - 1)])
                        for corner in np.ndindex(2, 2, 2)]) * to_ras
    corner_uv, _ = probe.project(corners)
    spacing = 2.1 * np.abs(corner_uv - 0.5).max() / 512
    geometry = CArm(isocenter_ras=tuple(centre), width=512, height=512, pixel_spacing_mm=spacing).geometry()
    projected = {p.label: p for p in project_landmarks(landmarks, geometry)}
    assert all(p.visible for p in projected.values()), [p.label for p in projected.values() if not p.visible]

    right, left = projected["R femoral head centre"], projected["L femoral head centre"]
    symphysis = projected["Pubic symphysis (superior)"]
    assert right.u < symphysis.u < left.u            # patient's right on the image's left
    assert abs(right.v - left.v) < 0.1 * (left.u - right.u)  # heads level
    if "R ASIS" in projected and "L ASIS" in projected:
        assert projected["R ASIS"].u < right.u and left.u < projected["L ASIS"].u  # ASIS lateral of heads
        assert projected["R ASIS"].v < right.v        # and above them
    if "L5 body centre" in projected and "Sacral promontory" in projected:
        assert projected["L5 body centre"].v < projected["Sacral promontory"].v < symphysis.v
    # femoral heads 140-200 mm apart, ASIS 200-280 mm apart (adult pelvis)
    positions = _positions(landmarks)
    assert 140 < np.linalg.norm(positions["R femoral head centre"] - positions["L femoral head centre"]) < 200
    if "R ASIS" in positions:
        assert 200 < np.linalg.norm(positions["R ASIS"] - positions["L ASIS"]) < 280
    assert positions["R femoral head centre"][0] > 0 > positions["L femoral head centre"][0]  # +R is right


def test_bundled_landmarks_agree_with_slicers_own_reader():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLMarkupsJsonStorageNode"):
        pytest.skip("slicer-core without the markups storage node")
    landmarks_path, _ = _bundled()
    scene = slicer.vtkMRMLScene()
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    node = storage.AddNewMarkupsNodeFromFile(str(landmarks_path))
    ours = load_landmarks(landmarks_path)
    assert node.GetNumberOfControlPoints() == len(ours)
    for n, item in enumerate(ours):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(n, position)
        assert node.GetNthControlPointLabel(n) == item.label
        assert np.allclose(position, item.position_ras, atol=1e-9)


@pytest.mark.parametrize("storage_class, suffix", [("vtkMRMLMarkupsJsonStorageNode", ".mrk.json"),
                                                    ("vtkMRMLMarkupsFiducialStorageNode", ".fcsv")])
@pytest.mark.parametrize("system", [0, 1])  # Slicer: 0 = RAS, 1 = LPS
def test_files_written_by_slicer_read_back_in_ras(tmp_path, storage_class, suffix, system):
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, storage_class):
        pytest.skip(f"slicer-core without {storage_class}")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    expected = {"tip, left": [10.5, -20.25, 30.0], "base": [-1.0, 2.0, -3.0]}
    for label, position in expected.items():
        node.AddControlPoint(position, label)
    storage = getattr(slicer, storage_class)()
    scene.AddNode(storage)
    storage.SetCoordinateSystem(system)
    path = tmp_path / f"written{suffix}"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    got = _positions(load_landmarks(path))
    assert set(got) == set(expected)
    for label, position in expected.items():
        assert np.allclose(got[label], position, atol=1e-6)
