"""The Fluoro slice view, rendered by Slicer's slice logic and displayable managers, pixel by pixel."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from views_helpers import require_views

slicer = require_views()

from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm  # noqa: E402
from DeepDRRSlicerLib.landmarks import project_landmarks  # noqa: E402
from DeepDRRSlicerLib.mrml import panel_parameters  # noqa: E402
from DeepDRRSlicerLib.mrml.landmark_nodes import landmarks_from_node  # noqa: E402
from DeepDRRSlicerLib.mrml.output_nodes import fluoro_display_node  # noqa: E402
from views_helpers import BEADS, bead_phantom, blobs, changed, expected_slice_picture, gray, sample  # noqa: E402

#: Rendered gray levels may differ from the exact windowed value by rounding (8-bit display pipeline).
GRAY_TOLERANCE = 2.0


def _carm(center, pixels=96, **angles):
    return CArm(isocenter_ras=tuple(float(c) for c in center), width=pixels, height=pixels,
                pixel_spacing_mm=DETECTOR_SIDE_MM / pixels, **angles)


def _assert_view_shows(view, stage_node, image, picture):
    """The view shows the stage (through its log companion for detector signals) on every screen pixel."""
    shown = fluoro_display_node(view.scene, stage_node)
    assert view.composite_node.GetBackgroundVolumeID() == shown.GetID()
    if shown is not stage_node:
        np.testing.assert_allclose(slicer.util.arrayFromVolume(shown)[0], np.log(np.clip(image, 1e-12, None)),
                                   rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(shown)[0], image)
    expected, inside = expected_slice_picture(view, shown)
    assert inside.mean() > 0.5, "the detector should fill most of the Fluoro view"
    error = np.abs(gray(picture) - expected)[inside]
    assert np.percentile(error, 99.9) <= GRAY_TOLERANCE, (
        f"the view does not show the stage image: 99.9th percentile gray error {np.percentile(error, 99.9):.1f}")
    return expected, inside


@pytest.mark.parametrize("angles", [dict(), dict(alpha_deg=35.0, beta_deg=-20.0), dict(alpha_deg=-90.0)])
def test_view_shows_the_stage_image_on_every_screen_pixel(views, logic, ct_node, angles):
    """Each screen pixel shows the image value at its own point of the detector plane, windowed."""
    center = logic.volume_for(ct_node).center_ras()
    output = logic.simulate(ct_node, _carm(center, **angles))
    views.fit()
    picture = views.fluoro.render()
    node = output.node("primary")
    _assert_view_shows(views.fluoro, node, output.result.stages["primary"], picture)


def test_ap_view_reads_like_a_radiograph_on_a_light_box(views, logic):
    """Beads on the patient's right and toward the head appear on the left and at the top of the view."""
    phantom = bead_phantom(views.scene)
    output = logic.simulate(phantom, _carm((0.0, 0.0, 0.0), pixels=128))
    views.fit()
    picture = gray(views.fluoro.render())
    columns, rows = views.fluoro.size
    geometry = output.geometry
    from scipy import ndimage

    dark = ndimage.grey_closing(picture, size=61) - picture > 15  # darker than their surroundings
    found = blobs(dark, min_pixels=8)
    assert len(found) >= 2, "both beads should show as dark spots"
    for name, center, radius in BEADS:
        (uv,), _ = geometry.project(np.array([center]))
        screen = views.fluoro.ras_to_screen(geometry.pixel_center(*uv))[0]
        nearest = min(found, key=lambda blob: np.linalg.norm(blob[0] - screen))
        assert np.linalg.norm(nearest[0] - screen) < 2.0, f"{name} bead not where P puts it: {nearest[0]} vs {screen}"
        bead, mirrored_lr, mirrored_ud = (sample(picture, p)[0] for p in
                                          (screen, (columns - 1 - screen[0], screen[1]),
                                           (screen[0], rows - 1 - screen[1])))
        if name == "right":
            assert screen[0] < 0.4 * columns and abs(screen[1] - rows / 2) < 0.05 * rows
            assert bead < mirrored_lr - 20, "the patient's right must be on the viewer's left"
        else:
            assert screen[1] < 0.4 * rows and abs(screen[0] - columns / 2) < 0.05 * columns
            assert bead < mirrored_ud - 20, "the head must be at the top"


def _overlay_pose(logic, ct_node, landmarks_node):
    """Pelvic landmarks around the middle of a 96-pixel detector (SOD 800 mm keeps the pelvis on it)."""
    points = np.array([p.position_ras for p in landmarks_from_node(landmarks_node)])
    return CArm(alpha_deg=20.0, beta_deg=10.0, sod_mm=800.0, isocenter_ras=tuple(points.mean(axis=0)), width=96,
                height=96, pixel_spacing_mm=DETECTOR_SIDE_MM / 96)


def test_landmark_glyphs_sit_where_the_projection_matrix_puts_them(views, logic, ct_node, landmarks_node):
    output = logic.simulate(ct_node, _overlay_pose(logic, ct_node, landmarks_node), landmarks_node)
    views.fit()
    projected = output.landmarks_node
    display = projected.GetDisplayNode()
    as_shown = views.fluoro.render()          # as the module leaves it: glyphs and labels
    display.SetPointLabelsVisibility(False)   # glyphs alone
    with_glyphs = views.fluoro.render()
    display.SetVisibility(False)
    without = views.fluoro.render()
    display.SetVisibility(True)
    found = blobs(changed(with_glyphs, without), min_pixels=6)

    geometry = output.geometry
    expected = project_landmarks(landmarks_from_node(landmarks_node), geometry)
    visible = [item for item in expected if item.visible]
    assert len(visible) >= 5, "most landmarks should be on the detector in this pose"
    assert len(found) == len(visible), f"{len(found)} glyphs drawn for {len(visible)} visible landmarks"
    for item in visible:
        screen = views.fluoro.ras_to_screen(geometry.pixel_center(item.u, item.v))[0]
        centroid = min((blob[0] for blob in found), key=lambda c: np.linalg.norm(c - screen))
        assert np.linalg.norm(centroid - screen) <= 1.0, (
            f"{item.label}: glyph centre {centroid.round(2)} vs P's {screen.round(2)} (screen pixels)")

    # Labels: the module shows them, beside each glyph, in the glyphs' colour.
    with_labels = as_shown
    text = changed(with_labels, with_glyphs)
    glyph_color = with_glyphs[changed(with_glyphs, without)].mean(axis=0)
    for item in visible:
        column, row = views.fluoro.ras_to_screen(geometry.pixel_center(item.u, item.v))[0].round().astype(int)
        near = text[max(0, row - 15):row + 15, max(0, column - 5):column + 120]
        assert near.sum() >= 15, f"no label text drawn beside {item.label}"
    text_color = with_labels[text].mean(axis=0)  # antialiased, so darker: compare the hue
    np.testing.assert_allclose(text_color / text_color.sum(), glyph_color / glyph_color.sum(), atol=0.05)


def test_stage_selector_switches_the_rendered_image(views, logic, ct_node):
    """The panel's stage selector (through its parameters) changes the view to that stage's image."""
    transform = logic.carm_transform(ct_node=ct_node)
    parameters = SimpleNamespace(ct=ct_node, landmarks=None, carmTransform=transform, sid=1020.0, sod=530.0,
                                 detectorPixels=64, detectorSize=DETECTOR_SIDE_MM, kvp=90.0,
                                 livePreview=True, mas=0.002,   # visible noise
                                 stage=SimpleNamespace(value="primary"))
    logic.set_carm_angles(transform, 30.0, 0.0)
    output = panel_parameters.simulate_from_parameters(logic, parameters)
    views.fit()
    stages = output.stages
    assert len(stages) >= 3
    pictures = {}
    for stage in (*stages[1:], stages[0]):
        parameters.stage = SimpleNamespace(value=stage)
        panel_parameters.update_live_from_parameters(logic, parameters)
        logic.scheduler.run_pending()
        picture = views.fluoro.render()
        _assert_view_shows(views.fluoro, output.node(stage), output.result.stages[stage], picture)
        pictures[stage] = picture
    # "final" is the noisy frame after -log, windowed like the monitor: by design it shows what "noisy" shows
    same_picture = {frozenset(("noisy", "final"))}
    for first in stages:
        for second in stages:
            if first < second and frozenset((first, second)) not in same_picture:
                assert changed(pictures[first], pictures[second]).mean() > 0.2, f"{first} and {second} look alike"


@pytest.mark.parametrize("stage", ["primary", "line_integral_bone"])
def test_view_shows_what_the_exported_png_shows(views, logic, ct_node, landmarks_node, stage):
    """At every detector pixel the Fluoro view has the gray level of the stage's PNG (``display_image``):
    the same automatic window, logarithmic for detector signals (dense matter dark), also with air in view."""
    from DeepDRRSlicerLib.output import display_image

    output = logic.simulate(ct_node, _overlay_pose(logic, ct_node, landmarks_node), display_stage=stage)
    views.fit()
    image = output.result.stages[stage]
    assert (image >= 0.95).mean() > 0.05 if stage == "primary" else True, "this pose should show some air"
    picture = gray(views.fluoro.render())
    geometry = output.geometry
    centres = np.array([geometry.pixel_center(u, v) for v in range(geometry.height) for u in range(geometry.width)])
    shown = sample(picture, views.fluoro.ras_to_screen(centres)).reshape(image.shape)
    png = display_image(stage, image).astype(float)
    # Sampling the screen between its pixels blurs sharp edges a little; the outermost pixels blend with
    # the view's background.
    difference = np.abs(shown - png)[2:-2, 2:-2]
    print(f"{stage}: gray difference median {np.median(difference):.1f}, 95th percentile "
          f"{np.percentile(difference, 95):.1f}, r = {np.corrcoef(shown.ravel(), png.ravel())[0, 1]:.4f}")
    assert np.median(difference) <= 1.0 and np.percentile(difference, 95) <= 10.0
    assert np.corrcoef(shown.ravel(), png.ravel())[0, 1] > 0.99
