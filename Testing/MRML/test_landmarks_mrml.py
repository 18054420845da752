"""Projected landmarks as a markups node on the detector plane, equal to the engine's projection."""

from __future__ import annotations

import numpy as np

from conftest import require_slicer_core

slicer = require_slicer_core()

import vtk  # noqa: E402

from DeepDRRSlicerLib import resources  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm  # noqa: E402
from DeepDRRSlicerLib.landmarks import load_landmarks, project_landmarks  # noqa: E402
from DeepDRRSlicerLib.mrml import layout  # noqa: E402
from DeepDRRSlicerLib.mrml.landmark_nodes import PROJECTED_FROM_ATTRIBUTE, landmarks_from_node  # noqa: E402
from mrml_helpers import carm_at  # noqa: E402


def _positions(node):
    return np.array([node.GetNthControlPointPositionVector(i) for i in range(node.GetNumberOfControlPoints())])


def test_markups_read_by_slicer_equal_the_engine_reader(landmarks_node):
    from_file = load_landmarks(resources.sample_landmarks_path())
    from_node = landmarks_from_node(landmarks_node)
    assert [p.label for p in from_node] == [p.label for p in from_file]
    np.testing.assert_allclose([p.position_ras for p in from_node], [p.position_ras for p in from_file], atol=1e-6)


def test_projected_landmarks_equal_the_engine(logic, scene, ct_node, landmarks_node):
    landmarks = load_landmarks(resources.sample_landmarks_path())
    centroid = np.mean([p.position_ras for p in landmarks], axis=0)
    # A large (480 mm) detector centred on the landmarks, so that most of them are on it.
    carm = CArm(alpha_deg=15.0, beta_deg=10.0, isocenter_ras=tuple(centroid), width=64, height=64,
                pixel_spacing_mm=480.0 / 64)
    output = logic.simulate(ct_node, carm, landmarks_node)
    geometry = output.geometry
    expected = project_landmarks(landmarks, geometry)
    node = output.landmarks_node
    assert node.GetAttribute(PROJECTED_FROM_ATTRIBUTE) == landmarks_node.GetID()
    assert node.GetNumberOfControlPoints() == len(expected)
    assert sum(p.visible for p in expected) >= 5, "most pelvic landmarks should be on a centred detector"
    positions = _positions(node)
    for index, item in enumerate(expected):
        assert node.GetNthControlPointLabel(index) == item.label
        assert bool(node.GetNthControlPointVisibility(index)) == item.visible
        if item.visible:
            np.testing.assert_allclose(positions[index], geometry.pixel_center(item.u, item.v), atol=1e-6)
            # On the detector plane, and projecting back to the same pixel.
            assert abs(np.dot(positions[index] - geometry.detector_origin, geometry.normal)) < 1e-6
            uv, _ = geometry.project(positions[index][None])
            np.testing.assert_allclose(uv[0], [item.u, item.v], atol=1e-6)
        # The same as the engine's own result for this render.
        assert output.result.landmarks[index].visible == item.visible
        if item.visible:
            assert (output.result.landmarks[index].u, output.result.landmarks[index].v) == (item.u, item.v)
    assert node.GetLocked()


def test_projected_landmarks_show_only_in_fluoro_and_3d(logic, scene, ct_node, landmarks_node, ct_center):
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # as Slicer's application logic does
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)  # the views of a GUI: 3D, Red, Green, Yellow (+ Fluoro once shown)
    output = logic.simulate(ct_node, carm_at(ct_center), landmarks_node)
    views = set(output.landmarks_node.GetDisplayNode().GetViewNodeIDs())
    fluoro = layout.fluoro_slice_node(scene, create=False)
    three_d = set(layout.three_d_view_node_ids(scene))
    assert three_d and fluoro is not None
    assert views == three_d | {fluoro.GetID()}
    assert "vtkMRMLSliceNodeRed" not in views


def test_landmarks_under_a_transform_are_projected_in_world_coordinates(logic, scene, ct_node, landmarks_node,
                                                                        ct_center):
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(2, 3, 25.0)  # 25 mm towards the head
    parent = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    parent.SetMatrixTransformToParent(shift)
    landmarks_node.SetAndObserveTransformNodeID(parent.GetID())
    output = logic.simulate(ct_node, carm_at(ct_center), landmarks_node)
    moved = [p.__class__(p.label, p.position_ras + np.array([0.0, 0.0, 25.0]))
             for p in load_landmarks(resources.sample_landmarks_path())]
    expected = project_landmarks(moved, output.geometry)
    positions = _positions(output.landmarks_node)
    for index, item in enumerate(expected):
        if item.visible:
            np.testing.assert_allclose(positions[index], output.geometry.pixel_center(item.u, item.v), atol=1e-6)


def test_moving_a_landmark_reprojects_it_without_rendering(logic, scheduler, scene, ct_node, landmarks_node,
                                                           ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), landmarks_node, live=True)
    renders = logic.stats["renders"]
    old = np.array(landmarks_node.GetNthControlPointPositionVector(0))
    landmarks_node.SetNthControlPointPosition(0, *(old + np.array([-10.0, 0.0, 0.0])))
    assert "landmarks" in scheduler.pending()
    scheduler.run_pending()
    assert logic.stats["renders"] == renders and logic.stats["previews"] == 0
    item = project_landmarks(landmarks_from_node(landmarks_node), output.geometry)[0]
    np.testing.assert_allclose(output.landmarks_node.GetNthControlPointPositionVector(0),
                               output.geometry.pixel_center(item.u, item.v), atol=1e-6)
    # 10 mm towards the patient's left moves the point towards the image's right (increasing column).
    before = project_landmarks([landmarks_from_node(landmarks_node)[0].__class__("x", old)], output.geometry)[0]
    assert item.u > before.u


def test_deleting_every_point_clears_the_projection_and_says_why(logic, scheduler, ct_node, landmarks_node,
                                                                 ct_center):
    errors = []
    logic.error_listeners.append(errors.append)
    output = logic.simulate(ct_node, carm_at(ct_center), landmarks_node, live=True)
    landmarks_node.RemoveAllControlPoints()
    scheduler.run_pending()
    assert output.landmarks_node.GetNumberOfControlPoints() == 0
    assert errors and "has no control points" in str(errors[-1])
