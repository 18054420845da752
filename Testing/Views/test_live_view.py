"""The live loop as the user sees it: moving the C-arm transform re-renders the Fluoro view."""

from __future__ import annotations

import numpy as np

from views_helpers import require_views

slicer = require_views()

from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm, geometry_from_pose  # noqa: E402
from DeepDRRSlicerLib.mrml import layout  # noqa: E402
from DeepDRRSlicerLib.mrml.carm_transform import pose_of, set_pose  # noqa: E402
from DeepDRRSlicerLib.mrml.output_nodes import fluoro_display_node  # noqa: E402
from DeepDRRSlicerLib.mrml.volume_nodes import volume_from_node  # noqa: E402
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator  # noqa: E402
from views_helpers import changed, expected_slice_picture, gray  # noqa: E402

PIXELS = 128  # previews are 96 pixels


def test_moving_the_carm_rerenders_the_fluoro_view_with_the_new_pose(views, logic, scheduler, ct_node,
                                                                     landmarks_node):
    center = logic.volume_for(ct_node).center_ras()
    carm = CArm(isocenter_ras=tuple(center), width=PIXELS, height=PIXELS, pixel_spacing_mm=DETECTOR_SIDE_MM / PIXELS)
    output = logic.simulate(ct_node, carm, landmarks_node, live=True)
    views.fit()
    before = views.fluoro.render()
    node = output.node("primary")

    # Drag: rotate the transform 25 degrees about S and shift it 30 mm toward the head (one modified event).
    transform = output.transform_node
    pose = pose_of(transform)
    turn = np.eye(4)
    angle = np.radians(25.0)
    turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    moved = turn @ (pose - np.c_[np.zeros((4, 3)), [*center, 0.0]]) + np.c_[np.zeros((4, 3)), [*center, 0.0]]
    moved[2, 3] += 30.0
    set_pose(transform, moved)

    # First the throttled low-resolution preview...
    scheduler.advance(logic.preview_delay_s)
    assert logic.stats["previews"] == 1
    preview = views.fluoro.render()
    assert changed(preview, before).mean() > 0.2, "the preview did not change the view"
    assert slicer.util.arrayFromVolume(node).shape[1] < PIXELS

    # ...then, once the pose stops moving, the full render: the view equals a fresh simulation of the new pose.
    scheduler.advance(logic.full_delay_s)
    assert logic.stats["renders"] == 2
    output.landmarks_node.GetDisplayNode().SetVisibility(False)  # compare the image alone
    after = views.fluoro.render()
    geometry = geometry_from_pose(moved, carm.sid_mm, carm.sod_mm, PIXELS, PIXELS, carm.pixel_spacing_mm)
    fresh = Simulator(volume_from_node(ct_node), SimulationSettings(stages=("primary",))).render(geometry).stages["primary"]
    np.testing.assert_allclose(slicer.util.arrayFromVolume(node)[0], fresh, rtol=1e-5, atol=1e-7)
    shown = fluoro_display_node(views.scene, node)   # log(I/I0), as a C-arm monitor shows it
    assert views.fluoro.composite_node.GetBackgroundVolumeID() == shown.GetID()
    expected, inside = expected_slice_picture(views.fluoro, shown, np.log(fresh))
    error = np.abs(gray(after) - expected)[inside]
    assert inside.mean() > 0.5 and np.percentile(error, 99.9) <= 2.0
    # The view followed the detector: it is reformatted to the new detector plane, as a radiograph.
    np.testing.assert_allclose(views.fluoro.xy_to_ras()[:3, :3] @ np.eye(3)[:, :2] / np.linalg.norm(
        views.fluoro.xy_to_ras()[:3, 0]), layout.radiograph_slice_to_ras(geometry)[:3, :2], atol=1e-6)
    # And it is not the old picture.
    old_expected, _ = expected_slice_picture(views.fluoro, shown, np.log(output.result.stages["primary"]))
    assert np.abs(gray(after) - old_expected)[inside].mean() > 10 * max(np.abs(gray(after) - expected)[inside].mean(),
                                                                        0.5)

    # The landmarks followed too: their glyphs are drawn where the new projection puts them.
    projected = output.landmarks_node
    for index in range(projected.GetNumberOfControlPoints()):
        if projected.GetNthControlPointVisibility(index):
            uv, _ = geometry.project(np.array([landmarks_node.GetNthControlPointPositionVector(index)]))
            np.testing.assert_allclose(projected.GetNthControlPointPositionVector(index),
                                       geometry.pixel_center(*uv[0]), atol=1e-6)
