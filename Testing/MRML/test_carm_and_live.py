"""The C-arm transform drives the pose; models follow it; the live loop coalesces and caches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

import vtk  # noqa: E402

from DeepDRRSlicerLib.geometry import geometry_from_pose  # noqa: E402
from DeepDRRSlicerLib.mrml.carm_models import PARTS  # noqa: E402
from DeepDRRSlicerLib.mrml.carm_transform import CArmSetup, angles_from_pose, pose_of  # noqa: E402
from DeepDRRSlicerLib.mrml.scene_utils import array_from_vtk_matrix, vtk_matrix_from_array  # noqa: E402
from mrml_helpers import PIXELS, carm_at, ijk_to_ras  # noqa: E402


def _local_matrix(transform):
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToParent(matrix)
    return array_from_vtk_matrix(matrix)


def _move(transform, local):
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(local))


def _best_column_shift(before, after, max_shift=20):
    """The integer s minimising |after[:, c] - before[:, c + s]| over the overlap."""
    errors = {}
    width = before.shape[1]
    for s in range(-max_shift, max_shift + 1):
        lo, hi = max(0, -s), min(width, width - s)
        errors[s] = float(np.mean((after[:, lo:hi] - before[:, lo + s:hi + s]) ** 2))
    return min(errors, key=errors.get)


def test_handles_are_shown_without_scaling(logic, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center))
    display = output.transform_node.GetDisplayNode()
    assert display.GetEditorVisibility()
    assert not display.GetEditorScalingEnabled()
    assert display.GetEditorRotationEnabled() and display.GetEditorTranslationEnabled()


def test_simulate_puts_the_carm_pose_in_the_transform(logic, ct_node, ct_center):
    carm = carm_at(ct_center, alpha=30.0, beta=-15.0)
    output = logic.simulate(ct_node, carm)
    np.testing.assert_allclose(pose_of(output.transform_node), carm.pose_matrix(), atol=1e-9)
    alpha, beta, roll = angles_from_pose(pose_of(output.transform_node))
    assert (alpha, beta) == (pytest.approx(30.0), pytest.approx(-15.0)) and roll == pytest.approx(0.0, abs=1e-9)
    # A second call reuses the scene's C-arm transform.
    again = logic.simulate(ct_node, carm_at(ct_center, alpha=-10.0))
    assert again.transform_node.GetID() == output.transform_node.GetID()


def test_pure_translation_towards_patient_left_shifts_the_image_left(logic, scheduler, ct_node, ct_center):
    """Moving the C-arm 20 mm to the patient's left moves the anatomy towards the image's left."""
    output = logic.simulate(ct_node, carm_at(ct_center, pixels=PIXELS), stages="line_integral_bone", live=True)
    node = output.node()
    before = slicer.util.arrayFromVolume(node)[0].copy()
    origin_before = ijk_to_ras(node)[:3, 3].copy()
    local = _local_matrix(output.transform_node)
    local[0, 3] -= 20.0  # -R is the patient's left
    _move(output.transform_node, local)
    scheduler.run_pending()
    after = slicer.util.arrayFromVolume(node)[0]
    np.testing.assert_allclose(ijk_to_ras(node)[:3, 3] - origin_before, [-20.0, 0.0, 0.0], atol=1e-9)
    spacing = output.geometry.pixel_spacing[0]
    expected = 20.0 * (1020.0 / 530.0) / spacing  # magnification at the isocentre
    shift = _best_column_shift(before, after)
    assert shift > 0, "content moved the wrong way"
    assert abs(shift - expected) <= 1.5


def test_slider_angles_write_the_transform_and_rotate_the_beam(logic, scheduler, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    transform = output.transform_node
    assert logic.set_carm_angles(transform, 90.0, 0.0)
    assert not logic.set_carm_angles(transform, 90.0, 0.0)  # already there: no event, no render
    scheduler.run_pending()
    geometry = logic.render_now().geometry
    iso = np.asarray(ct_center)
    # LAO 90 = left lateral: the detector on the patient's left (-R), the source on the right.
    assert geometry.source[0] - iso[0] == pytest.approx(530.0)
    assert geometry.detector_center[0] - iso[0] == pytest.approx(-490.0)
    np.testing.assert_allclose(pose_of(transform)[:3, 3], iso, atol=1e-9)  # the isocentre stays


def test_dragged_transform_with_roll_becomes_the_pose(logic, scheduler, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), stages="primary", live=True)
    transform = output.transform_node
    roll = np.eye(4)
    angle = math.radians(30.0)
    roll[[0, 0, 2, 2], [0, 2, 0, 2]] = [math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)]
    # Rotate about the beam axis (A) through the isocentre: what the rotation handle does.
    pose = pose_of(transform)
    to_iso, from_iso = np.eye(4), np.eye(4)
    to_iso[:3, 3], from_iso[:3, 3] = -pose[:3, 3], pose[:3, 3]
    about_beam = from_iso @ np.block([[np.array([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                                 [-math.sin(angle), 0, math.cos(angle)]]), np.zeros((3, 1))],
                                      [np.zeros((1, 3)), np.ones((1, 1))]]) @ to_iso
    _move(transform, about_beam @ _local_matrix(transform))
    scheduler.run_pending()
    new_pose = pose_of(transform)
    alpha, beta, rolled = angles_from_pose(new_pose)
    assert abs(alpha) < 1e-6 and abs(beta) < 1e-6 and abs(abs(rolled) - 30.0) < 1e-6
    setup = CArmSetup(detector_pixels=PIXELS)
    expected = geometry_from_pose(new_pose, 1020.0, 530.0, PIXELS, PIXELS, setup.pixel_spacing_mm)
    matrix = ijk_to_ras(output.node("primary"))
    np.testing.assert_allclose(matrix[:3, 0], expected.u, atol=1e-9)
    np.testing.assert_allclose(matrix[:3, 1], expected.v, atol=1e-9)
    np.testing.assert_allclose(matrix[:3, 3], expected.detector_origin, atol=1e-6)


def test_models_are_parented_to_the_transform_and_match_the_geometry(logic, scheduler, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center, alpha=40.0, beta=20.0), live=True)
    transform = output.transform_node
    assert set(output.model_nodes) == set(PARTS)
    for node in output.model_nodes.values():
        assert node.GetTransformNodeID() == transform.GetID()
    pose = pose_of(transform)
    geometry = output.geometry

    def world(points):
        return (np.c_[points, np.ones(len(points))] @ pose.T)[:, :3]

    detector = slicer.util.arrayFromModelPoints(output.model_nodes["detector"])
    edge = geometry.detector_origin - 0.5 * geometry.u - 0.5 * geometry.v
    corners = np.array([edge, edge + PIXELS * geometry.u, edge + PIXELS * (geometry.u + geometry.v),
                        edge + PIXELS * geometry.v])
    np.testing.assert_allclose(world(detector[:4]), corners, atol=1e-6)
    source = slicer.util.arrayFromModelPoints(output.model_nodes["source"])
    np.testing.assert_allclose(world(source).mean(axis=0), geometry.source, atol=1e-3)
    beam = slicer.util.arrayFromModelPoints(output.model_nodes["beam"])
    np.testing.assert_allclose(world(beam[:1])[0], geometry.source, atol=1e-6)
    # Changing the SID rebuilds the models (the live set-up).
    logic.update_live(setup=CArmSetup(sid_mm=900.0, detector_pixels=PIXELS))
    scheduler.run_pending()
    detector = slicer.util.arrayFromModelPoints(output.model_nodes["detector"])
    centre = world(detector[:4]).mean(axis=0)
    assert np.linalg.norm(centre - geometry.source) == pytest.approx(900.0)


def test_a_drag_is_coalesced_into_previews_and_one_full_render(logic, scheduler, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center, pixels=256), stages="primary", live=True)
    assert logic.stats["decompositions"] == 1 and logic.stats["renders"] == 1
    transform = output.transform_node
    local = _local_matrix(transform)
    for step in range(10):  # ten mouse moves within one frame
        local[2, 3] += 1.0
        _move(transform, local)
    assert scheduler.pending() == ["preview", "full"]
    scheduler.advance(logic.preview_delay_s)
    assert logic.stats["previews"] == 1 and logic.stats["renders"] == 1
    preview = slicer.util.arrayFromVolume(output.node("primary"))
    assert preview.shape == (1, 96, 96)  # low resolution while moving
    # Same physical detector at both resolutions: the outer corner of pixel (0, 0) is where it would be at full size.
    full_size = CArmSetup.from_carm(carm_at(ct_center, pixels=256)).geometry(pose_of(transform))
    corner = ijk_to_ras(output.node("primary")) @ np.array([-0.5, -0.5, 0.0, 1.0])
    np.testing.assert_allclose(corner[:3], full_size.detector_origin - 0.5 * full_size.u - 0.5 * full_size.v,
                               atol=1e-6)
    local[2, 3] += 1.0
    _move(transform, local)
    scheduler.advance(logic.full_delay_s + 0.01)
    assert logic.stats["previews"] == 2 and logic.stats["renders"] == 2
    assert slicer.util.arrayFromVolume(output.node("primary")).shape == (1, 256, 256)
    # Only the pose changed: the CT was read and decomposed once, the simulator built once.
    assert logic.stats["volume_reads"] == 1
    assert logic.stats["decompositions"] == 1
    assert logic.stats["simulators"] == 1


def test_pose_listeners_hear_drags_but_not_their_own_requests(logic, scheduler, ct_node, ct_center):
    heard = []
    logic.pose_listeners.append(lambda alpha, beta, roll, pose: heard.append((alpha, beta)))
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    heard.clear()
    logic.set_carm_angles(output.transform_node, 25.0, 5.0)  # from the sliders
    assert heard == []
    pose = pose_of(output.transform_node)
    rotation = np.eye(4)
    rotation[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # +90 degrees about S
    to_iso, from_iso = np.eye(4), np.eye(4)
    to_iso[:3, 3], from_iso[:3, 3] = -pose[:3, 3], pose[:3, 3]
    _move(output.transform_node, from_iso @ rotation @ to_iso @ _local_matrix(output.transform_node))
    assert heard and heard[-1][0] == pytest.approx(115.0) and heard[-1][1] == pytest.approx(5.0)


def test_live_view_can_be_paused(logic, scheduler, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    logic.update_live(enabled=False)
    local = _local_matrix(output.transform_node)
    local[0, 3] += 5.0
    _move(output.transform_node, local)
    assert scheduler.pending() == []
    logic.update_live(enabled=True)  # resuming renders the current pose
    scheduler.run_pending()
    assert logic.stats["renders"] == 2


def test_changing_the_displayed_stage_does_not_render(logic, scheduler, scene, ct_node, ct_center):
    from DeepDRRSlicerLib.mrml import layout

    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    logic.update_live(display_stage="line_integral_bone")
    assert scheduler.pending() == []
    composite = layout.fluoro_composite_node(scene, create=False)
    assert composite.GetBackgroundVolumeID() == output.node("line_integral_bone").GetID()


def test_live_errors_are_reported_not_raised(logic, scheduler, ct_node, ct_center):
    errors = []
    logic.error_listeners.append(errors.append)
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    local = _local_matrix(output.transform_node)
    local[1, 3] += 500.0  # isocentre 500 mm anterior: the source (530 mm behind it) is inside the CT
    _move(output.transform_node, local)
    scheduler.run_pending()
    assert errors and "lies inside the CT volume" in str(errors[-1])


def test_script_moves_render_at_once_without_a_timer(scene, ct_node):
    """With the default scheduler (no timers: scripts), each move renders synchronously."""
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic

    from DeepDRRSlicerLib.pipeline import SimulationSettings

    logic = DeepDRRLogic(scene, settings=SimulationSettings(stages=("primary",)))
    center = logic.volume_for(ct_node).center_ras()
    output = logic.simulate(ct_node, carm_at(center), stages="primary", live=True)
    local = _local_matrix(output.transform_node)
    local[2, 3] += 10.0
    _move(output.transform_node, local)
    assert logic.stats["renders"] == 2 and logic.stats["previews"] == 0
    logic.stop_live()


def test_a_carm_given_as_a_dict_with_unknown_fields_is_refused_with_the_fields(logic, ct_node):
    from DeepDRRSlicerLib.errors import InputError

    with pytest.raises(InputError) as error:
        logic.simulate(ct_node, {"alpha": 3.0})
    assert "alpha" in str(error.value) and "alpha_deg" in str(error.value)


def test_live_view_follows_the_ct_moving_and_its_voxels_changing(logic, scheduler, scene, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), stages="primary", live=True)
    node = output.node()
    before = slicer.util.arrayFromVolume(node)[0].copy()
    renders = logic.stats["renders"]
    patient = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "patient moved")
    ct_node.SetAndObserveTransformNodeID(patient.GetID())
    shift = np.eye(4)
    shift[0, 3] = -20.0   # the patient 20 mm to its left: the opposite of the C-arm moving left
    patient.SetMatrixTransformToParent(vtk_matrix_from_array(shift))
    scheduler.run_pending()
    moved = slicer.util.arrayFromVolume(node)[0].copy()
    expected = -20.0 * (1020.0 / 530.0) / output.geometry.pixel_spacing[0]
    assert logic.stats["renders"] > renders and abs(_best_column_shift(before, moved) - expected) <= 1.5
    voxels = slicer.util.arrayFromVolume(ct_node)
    voxels[:] = -1000
    slicer.util.arrayFromVolumeModified(ct_node)
    scheduler.run_pending()
    assert slicer.util.arrayFromVolume(node)[0].min() > 0.99   # only air left: the image is open field


def test_a_carm_moved_without_a_live_view_reaches_the_panel_and_simulate_keeps_it(logic, ct_node, ct_center):
    """Handles dragged before the first Simulate (or after the live view stopped): the pose listeners (the
    panel's sliders) hear it, so the panel's next set_carm_angles is a no-op instead of snapping back."""
    heard = []
    logic.pose_listeners.append(lambda alpha, beta, roll, pose: heard.append((alpha, beta)))
    transform = logic.carm_transform(ct_node=ct_node)
    assert not logic.set_carm_angles(transform, 0.0, 0.0) and not logic.live
    local = _local_matrix(transform)
    turn = np.eye(4)
    angle = math.radians(35.0)
    turn[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]  # about S
    iso = pose_of(transform)[:3, 3]
    to_iso, from_iso = np.eye(4), np.eye(4)
    to_iso[:3, 3], from_iso[:3, 3] = -iso, iso
    _move(transform, from_iso @ turn @ to_iso @ local)
    assert len(heard) == 1
    alpha, beta = heard[0]
    assert abs(abs(alpha) - 35.0) < 1e-6 and abs(beta) < 1e-6
    assert not logic.set_carm_angles(transform, alpha, beta)   # what the panel sends next: nothing moves
    assert angles_from_pose(pose_of(transform))[0] == pytest.approx(alpha)
    output = logic.simulate(ct_node, None, transformNode=transform, stages="primary")
    assert output.geometry.source == pytest.approx(logic.simulate(ct_node, None, transformNode=transform,
                                                                  stages="primary").geometry.source)
    logic.set_carm_angles(transform, 10.0, 5.0)   # the panel's own moves are not echoed back to it
    assert len(heard) == 1


def test_choosing_a_stage_these_settings_do_not_compute_says_so_without_rendering(logic, ct_node, ct_center):
    errors = []
    logic.error_listeners.append(errors.append)
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    assert "line_integral_cobalt_chromium" not in output.stages   # the default metal is titanium
    renders = logic.stats["renders"]
    logic.update_live(display_stage="line_integral_cobalt_chromium")
    assert logic.stats["renders"] == renders
    assert len(errors) == 1 and "not computed with these settings" in str(errors[0])
    logic.update_live(display_stage="line_integral_bone")    # computed: shown from its node, no render either
    assert logic.stats["renders"] == renders and len(errors) == 1
