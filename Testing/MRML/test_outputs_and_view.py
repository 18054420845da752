"""Output nodes at the detector plane, the Fluoro view and its layout."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.mrml import layout  # noqa: E402
from DeepDRRSlicerLib.mrml.output_nodes import CT_ATTRIBUTE, STAGE_ATTRIBUTE  # noqa: E402
from mrml_helpers import PIXELS, carm_at, ijk_to_ras  # noqa: E402


def _ras(matrix, i, j, k=0.0):
    return (matrix @ np.array([i, j, k, 1.0]))[:3]


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.0), (35.0, -20.0), (-120.0, 60.0)])
def test_every_stage_node_lies_on_the_detector_plane(logic, ct_node, ct_center, alpha, beta):
    output = logic.simulate(ct_node, carm_at(ct_center, alpha=alpha, beta=beta))
    geometry = output.geometry
    assert set(output.stages) >= {"primary", "line_integral_bone"}
    for stage, node in output.stage_nodes.items():
        matrix = ijk_to_ras(node)
        # Corner pixels: voxel (i, j, 0) is centred on pixel (column i, row j) of the detector.
        np.testing.assert_allclose(_ras(matrix, 0, 0), geometry.pixel_center(0, 0), atol=1e-6)
        np.testing.assert_allclose(_ras(matrix, PIXELS - 1, 0), geometry.pixel_center(PIXELS - 1, 0), atol=1e-6)
        np.testing.assert_allclose(_ras(matrix, PIXELS - 1, PIXELS - 1),
                                   geometry.pixel_center(PIXELS - 1, PIXELS - 1), atol=1e-6)
        # The slice axis is the beam: one step in K moves 1 mm away from the source.
        np.testing.assert_allclose(_ras(matrix, 0, 0, 1.0) - _ras(matrix, 0, 0), -geometry.normal, atol=1e-9)
        np.testing.assert_allclose(node.GetSpacing(), [*geometry.pixel_spacing, 1.0], rtol=1e-9)
        # The source is off the plane by the SID.
        plane_distance = np.dot(geometry.source - _ras(matrix, 0, 0), geometry.normal)
        assert plane_distance == pytest.approx(1020.0)
        assert node.GetAttribute(STAGE_ATTRIBUTE) == stage
        assert node.GetAttribute(CT_ATTRIBUTE) == ct_node.GetID()
        image = slicer.util.arrayFromVolume(node)[0]
        np.testing.assert_array_equal(image, output.result.stages[stage])
        display = node.GetDisplayNode()
        assert not display.GetAutoWindowLevel()
        low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
        # A material few or no rays cross (e.g. metal out of view) gives a flat or nearly flat image, whose
        # window is widened around it.
        if image.max() > image.min():
            assert image.min() - 1e-6 <= low < high <= image.max() + 1e-6
        else:
            assert low < high


def test_nodes_are_reused_between_renders(logic, scene, ct_node, ct_center):
    first = logic.simulate(ct_node, carm_at(ct_center))
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    second = logic.simulate(ct_node, carm_at(ct_center, alpha=45.0))
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    assert {s: n.GetID() for s, n in first.stage_nodes.items()} == {s: n.GetID() for s, n in second.stage_nodes.items()}


def test_stage_selection(logic, scene, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), stages=["line_integral_bone"])
    assert output.stages == ("line_integral_bone",)
    assert output.display_stage == "line_integral_bone"
    from DeepDRRSlicerLib.pipeline import SimulationSettings

    with pytest.raises(InputError, match="'scatter'.*were not computed.*primary"):
        logic.simulate(ct_node, carm_at(ct_center), stages=["primary", "scatter"],
                       settings=SimulationSettings(stages=("primary",)))


def test_fluoro_view_shows_the_image_like_a_radiograph(logic, scene, ct_node, ct_center):
    output = logic.simulate(ct_node, carm_at(ct_center), display_stage="line_integral_bone")
    slice_node = layout.fluoro_slice_node(scene, create=False)
    composite = layout.fluoro_composite_node(scene, create=False)
    assert slice_node is not None and composite is not None
    assert composite.GetBackgroundVolumeID() == output.node("line_integral_bone").GetID()
    slice_to_ras = np.array([[slice_node.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    # AP pose: screen right = detector u = the patient's left (-R); screen up = -v = superior.
    np.testing.assert_allclose(slice_to_ras[:3, 0], [-1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(slice_to_ras[:3, 1], [0.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(slice_to_ras[:3, 3], output.geometry.detector_center, atol=1e-6)
    side = PIXELS * output.geometry.pixel_spacing[0]
    fov = slice_node.GetFieldOfView()
    assert min(fov[0], fov[1]) == pytest.approx(side)
    assert slice_node.GetSliceVisible()


def test_image_content_reads_like_an_ap_radiograph(logic, scene, ct_node, ct_center):
    """A dense marker on the patient's right shows on the image's left; one towards the head, at the top."""
    from DeepDRRSlicerLib.pipeline import SimulationSettings

    logic.settings = SimulationSettings(materials="threshold", metal="none")   # 3000 HU markers stay bone
    carm = carm_at(ct_center, pixels=96)
    before = slicer.util.arrayFromVolume(logic.simulate(ct_node, carm, stages="line_integral_bone").node())[0].copy()
    voxels = slicer.util.arrayFromVolume(ct_node)
    ras_to_ijk = np.linalg.inv(logic.volume_for(ct_node).ijk_to_ras)
    markers = {"right": np.array([60.0, 0.0, 0.0]), "head": np.array([0.0, 0.0, 70.0])}
    for offset in markers.values():
        i, j, k = np.round((ras_to_ijk @ np.array([*(ct_center + offset), 1.0]))[:3]).astype(int)
        voxels[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 3000
    slicer.util.arrayFromVolumeModified(ct_node)
    after = slicer.util.arrayFromVolume(logic.simulate(ct_node, carm, stages="line_integral_bone").node())[0]
    added = after - before
    rows, cols = np.nonzero(added > 0.5 * added.max())
    left = cols < 30      # the right-hand marker: far left of the centre column (47.5)
    top = rows < 20       # the head marker: far above the centre row
    assert left.any() and top.any()
    assert np.all(left | top), "every added blob is either on the image's left or at its top"
    assert np.all(np.abs(rows[left] - 47.5) < 6) and np.all(np.abs(cols[top] - 47.5) < 6)


def test_layout_is_registered_and_its_slice_node_reused(scene):
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # as Slicer's application logic does
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    made_before = layout.fluoro_slice_node(scene)  # e.g. the console API ran before any layout switch
    assert layout.show_layout(scene)
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout_node.GetViewArrangement() == layout.FLUORO_LAYOUT_ID
    description = layout_node.GetLayoutDescription(layout.FLUORO_LAYOUT_ID)
    assert 'singletontag="Fluoro"' in description and "vtkMRMLViewNode" in description
    fluoro_nodes = [n for n in (scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
                                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")))
                    if n.GetLayoutName() == "Fluoro"]
    assert [n.GetID() for n in fluoro_nodes] == [made_before.GetID()]
    assert layout.show_layout(scene)  # registering twice is harmless
    assert layout_node.GetViewArrangement() == layout.FLUORO_LAYOUT_ID


def test_without_a_layout_node_nothing_is_switched(scene):
    assert not layout.show_layout(scene)


def test_live_renders_leave_the_users_layout_alone(logic, scene, scheduler, ct_node, ct_center):
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    output = logic.simulate(ct_node, carm_at(ct_center), live=True)
    assert layout_node.GetViewArrangement() == layout.FLUORO_LAYOUT_ID
    layout_node.SetViewArrangement(layout_node.SlicerLayoutFourUpView)  # the user switches away
    import vtk

    local = vtk.vtkMatrix4x4()
    output.transform_node.GetMatrixTransformToParent(local)
    local.SetElement(0, 3, local.GetElement(0, 3) + 5.0)
    output.transform_node.SetMatrixTransformToParent(local)
    scheduler.run_pending()
    assert logic.stats["renders"] == 2
    assert layout_node.GetViewArrangement() == layout_node.SlicerLayoutFourUpView


def test_detector_signals_are_shown_through_a_log_companion(logic, scene, ct_node, ct_center):
    """The Fluoro view shows log(I/I0) windowed like the PNG; the stage node keeps I/I0; line integrals direct."""
    from DeepDRRSlicerLib.mrml.output_nodes import fluoro_display_node
    from DeepDRRSlicerLib.output import auto_window

    output = logic.simulate(ct_node, carm_at(ct_center, alpha=20.0), display_stage="primary")
    primary = output.node("primary")
    shown = fluoro_display_node(scene, primary)
    assert shown is not primary
    composite = layout.fluoro_composite_node(scene, create=False)
    assert composite.GetBackgroundVolumeID() == shown.GetID()
    image = output.result.stages["primary"]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(primary)[0], image)       # I/I0 kept
    np.testing.assert_allclose(slicer.util.arrayFromVolume(shown)[0], np.log(image), rtol=1e-6)
    np.testing.assert_allclose(ijk_to_ras(shown), ijk_to_ras(primary), atol=1e-9)
    assert shown.GetHideFromEditors() and shown.GetSaveWithScene()   # a reopened scene shows it
    low, high = auto_window("primary", image)
    display = shown.GetDisplayNode()
    np.testing.assert_allclose([display.GetWindowLevelMin(), display.GetWindowLevelMax()], np.log([low, high]),
                               rtol=1e-6)
    # The stage node's own window ignores unattenuated air too.
    assert primary.GetDisplayNode().GetWindowLevelMax() == pytest.approx(high)
    # Line integrals are shown as they are; the companions are found again, not duplicated.
    assert fluoro_display_node(scene, output.node("line_integral_bone")) is output.node("line_integral_bone")
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    logic.simulate(ct_node, carm_at(ct_center, alpha=-20.0))
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count


def test_a_saved_and_reopened_scene_shows_the_image_in_the_fluoro_view(logic, scene, ct_node, ct_center, tmp_path):
    """The Fluoro view shows a detector signal through its log companion: that node must be saved too."""
    from mrml_helpers import save_scene, scene_for_reading

    output = logic.simulate(ct_node, carm_at(ct_center, alpha=20.0), stages=("primary",), display_stage="primary")
    shown_id = layout.fluoro_composite_node(scene, create=False).GetBackgroundVolumeID()
    expected = slicer.util.arrayFromVolume(scene.GetNodeByID(shown_id)).copy()
    path = tmp_path / "scene.mrb"
    save_scene(scene, path)
    reopened = scene_for_reading(tmp_path / "cache")
    reopened.ReadFromMRB(str(path), False)   # slicer-core reports False (a slice preset it lacks); the data load
    composite = layout.fluoro_composite_node(reopened, create=False)
    shown = reopened.GetNodeByID(composite.GetBackgroundVolumeID() or "")
    assert shown is not None and output.node("primary").GetName() in shown.GetName()
    np.testing.assert_allclose(slicer.util.arrayFromVolume(shown), expected, rtol=1e-6)
    reopened.Clear(1)


def test_outputs_imported_with_a_scene_stay_linked_to_their_own_ct(logic, scene, ct_node, ct_center,
                                                                   landmarks_node, tmp_path):
    """Importing a saved scene into one that has data renumbers node IDs: a later simulation of another CT
    must make its own nodes, not write into the imported patient's (the links are node references)."""
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic
    from mrml_helpers import read_ct, read_landmarks, save_scene, scene_for_reading

    logic.simulate(ct_node, carm_at(ct_center), landmarks_node, stages=("primary",))
    path = tmp_path / "scene.mrb"
    save_scene(scene, path)
    other = scene_for_reading(tmp_path / "cache")
    other_ct, other_points = read_ct(other), read_landmarks(other)   # takes the IDs the saved nodes had
    other_ct.SetName("other patient")
    other.ReadFromMRB(str(path), False)   # merged: the imported nodes get new IDs
    imported = [other.GetNthNode(i) for i in range(other.GetNumberOfNodes())]
    imported_primary = [n for n in imported if n.GetAttribute("DeepDRR.Stage") == "primary"]
    assert len(imported_primary) == 1
    before = slicer.util.arrayFromVolume(imported_primary[0]).copy()
    second = DeepDRRLogic(other).simulate(other_ct, carm_at(ct_center, alpha=40.0), other_points, stages=("primary",))
    assert second.node("primary") is not imported_primary[0]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(imported_primary[0]), before)
    assert "other patient" in second.node("primary").GetName()
    imported_projected = [n for n in imported if n.GetAttribute("DeepDRR.ProjectedFrom") and n is not second.landmarks_node]
    assert imported_projected and second.landmarks_node not in imported_projected
    other.Clear(1)
