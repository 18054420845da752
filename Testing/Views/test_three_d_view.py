"""The 3D view (Slicer's 3D displayable managers): the CT, and the C-arm at its transform's pose."""

from __future__ import annotations

import numpy as np
import pytest

from views_helpers import require_views

slicer = require_views()

from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm, carm_frame_outline  # noqa: E402
from DeepDRRSlicerLib.mrml.carm_transform import pose_of, set_pose  # noqa: E402
from views_helpers import blobs, changed  # noqa: E402


def _toggle_render(view, display_node):
    """Pictures with and without ``display_node`` shown; returns the mask of what it draws."""
    shown = view.render()
    display_node.SetVisibility(False)
    hidden = view.render()
    display_node.SetVisibility(True)
    return changed(shown, hidden, threshold=12)


def _polygon_mask(shape, corners):
    """Boolean mask of the screen pixels inside the convex polygon ``corners`` ((N, 2) column, row)."""
    from scipy.spatial import Delaunay

    rows, columns = shape
    grid = np.stack(np.meshgrid(np.arange(columns), np.arange(rows)), axis=-1).reshape(-1, 2)
    return (Delaunay(corners).find_simplex(grid) >= 0).reshape(rows, columns)


def _outline_points(corners, per_edge=40):
    closed = np.vstack([corners, corners[:1]])
    return np.vstack([np.linspace(a, b, per_edge, endpoint=False) for a, b in zip(closed[:-1], closed[1:])])


def _check_carm(view, output, pose, sid, sod, side_mm):
    """The source, the detector outline and the beam are drawn where the pose puts them."""
    source_frame, corners_frame = carm_frame_outline(sid, sod, side_mm, side_mm)
    to_world = lambda points: (pose @ np.c_[np.atleast_2d(points), np.ones(len(np.atleast_2d(points)))].T).T[:, :3]
    models = output.model_nodes
    view.render()
    source_screen = view.world_to_screen(to_world(source_frame))[0]
    corners_screen = view.world_to_screen(to_world(corners_frame))

    source_mask = _toggle_render(view, models["source"].GetDisplayNode())
    (centroid, size), = blobs(source_mask, min_pixels=4)[:1]
    assert np.linalg.norm(centroid - source_screen) <= 2.0, f"source drawn at {centroid}, expected {source_screen}"

    outline_mask = _toggle_render(view, models["detector"].GetDisplayNode())
    from scipy import ndimage

    near_outline = ndimage.binary_dilation(outline_mask, iterations=2)
    samples = _outline_points(corners_screen).round().astype(int)
    on_screen = (samples[:, 0] >= 0) & (samples[:, 0] < view.size[0]) & (samples[:, 1] >= 0) & \
        (samples[:, 1] < view.size[1])
    assert on_screen.mean() > 0.95
    hits = near_outline[samples[on_screen, 1], samples[on_screen, 0]]
    assert hits.mean() > 0.9, f"only {hits.mean():.0%} of the detector's outline is drawn where expected"
    drawn_rows, drawn_columns = np.nonzero(outline_mask)
    expected_region = ndimage.binary_dilation(_polygon_mask(outline_mask.shape, corners_screen), iterations=3)
    assert expected_region[drawn_rows, drawn_columns].mean() > 0.95, "detector model drawn outside its outline"

    beam_mask = _toggle_render(view, models["beam"].GetDisplayNode())
    frustum = ndimage.binary_dilation(_polygon_mask(beam_mask.shape, np.vstack([source_screen, corners_screen])),
                                      iterations=2)
    assert beam_mask.sum() > 200 and frustum[beam_mask].mean() > 0.97, "the beam is drawn outside its frustum"
    return source_screen, corners_screen


def test_ct_and_carm_are_drawn_at_the_transform_pose_and_follow_it(views, logic, ct_node):
    center = logic.volume_for(ct_node).center_ras()
    carm = CArm(alpha_deg=0.0, isocenter_ras=tuple(center), width=64, height=64, pixel_spacing_mm=DETECTOR_SIDE_MM / 64)
    output = logic.simulate(ct_node, carm)  # not live: only the models follow the transform
    vr_display = views.app.show_volume_rendering(ct_node)
    views.fit()
    # A fixed camera (left, anterior, above; 2.6 m away) that sees the whole C-arm at both poses below.
    views.three_d.look_from((-0.8, 0.9, 0.8), focal_point_ras=center, distance_mm=2600.0)

    # The CT (volume rendering) inside its bounding box on screen.
    ct_mask = _toggle_render(views.three_d, vr_display)
    bounds = [0.0] * 6
    ct_node.GetRASBounds(bounds)
    box = np.array([[bounds[i], bounds[2 + j], bounds[4 + k]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    box_screen = views.three_d.world_to_screen(box)
    assert ct_mask.sum() > 300, "the CT is not drawn in 3D"
    from scipy.spatial import Delaunay

    rows, columns = np.nonzero(ct_mask)
    inside = Delaunay(box_screen).find_simplex(np.c_[columns, rows]) >= 0
    assert inside.mean() > 0.97, "volume rendering drawn outside the CT's box"
    vr_display.SetVisibility(False)  # the C-arm checks below need no volume rendering (and run faster)

    transform = output.transform_node
    side = carm.width * carm.pixel_spacing_mm
    source_before, corners_before = _check_carm(views.three_d, output, pose_of(transform), carm.sid_mm, carm.sod_mm,
                                                side)

    # Move the transform as a drag of its handles would: rotate 60 degrees about S, shift 40 mm.
    moved = CArm(alpha_deg=60.0, beta_deg=15.0, isocenter_ras=tuple(np.asarray(center) + [0.0, 0.0, 40.0])).pose_matrix()
    set_pose(transform, moved)
    source_after, corners_after = _check_carm(views.three_d, output, moved, carm.sid_mm, carm.sod_mm, side)
    assert np.linalg.norm(source_after - source_before) > 30, "the source should move on screen"
    assert np.linalg.norm(corners_after - corners_before, axis=1).min() > 10, "the detector should move on screen"


def test_image_is_drawn_on_the_detector_plane_in_3d(views, logic, ct_node):
    """The Fluoro view's slice is shown in 3D, inside the detector outline (SlicerRT-style placement)."""
    center = logic.volume_for(ct_node).center_ras()
    carm = CArm(alpha_deg=30.0, isocenter_ras=tuple(center), width=64, height=64, pixel_spacing_mm=DETECTOR_SIDE_MM / 64)
    output = logic.simulate(ct_node, carm)
    views.fit()
    views.fluoro.render()   # the slice view updates its slice model's texture when it renders
    views.three_d.look_from(output.geometry.normal * -1.0 + np.array([0.0, 0.0, 0.3]), focal_point_ras=center)
    slice_model = views.fluoro.logic.GetSliceModelNode()
    mask = _toggle_render(views.three_d, slice_model.GetDisplayNode())
    corners = np.array([output.geometry.pixel_center(u, v) for u, v in ((-0.5, -0.5), (63.5, -0.5), (63.5, 63.5),
                                                                         (-0.5, 63.5))])
    quad = _polygon_mask(mask.shape, views.three_d.world_to_screen(corners))
    assert mask.sum() > 0.5 * quad.sum(), "the image should cover the detector quad in 3D"
    from scipy import ndimage

    assert ndimage.binary_dilation(quad, iterations=3)[mask].mean() > 0.97


@pytest.fixture(autouse=True)
def _no_box(views):
    """Hide the 3D view's box and axis labels (they would overlap the C-arm in the masks)."""
    views.three_d.view_node.SetBoxVisible(False)
    views.three_d.view_node.SetAxisLabelsVisible(False)
