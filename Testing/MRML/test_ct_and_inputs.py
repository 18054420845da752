"""CT volume node -> engine, checked against the engine run on the file; bad inputs give clear messages."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

import vtk  # noqa: E402

from DeepDRRSlicerLib import resources  # noqa: E402
from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.mrml.volume_nodes import ijk_to_world_matrix, volume_from_node  # noqa: E402
from DeepDRRSlicerLib.pipeline import Simulator  # noqa: E402
from DeepDRRSlicerLib.volume import load_volume  # noqa: E402
from mrml_helpers import carm_at, ijk_to_ras, node_checksum  # noqa: E402


def _rigid(rotation_deg_z=0.0, translation=(0.0, 0.0, 0.0)):
    angle = np.radians(rotation_deg_z)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = translation
    return matrix


def _vtk(matrix):
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r][c]))
    return out


def test_ct_node_gives_the_same_image_as_the_engine_on_the_file(logic, ct_node):
    """Slicer's reader + the adapter give the engine exactly what the engine reads from the NIfTI itself."""
    from_file = load_volume(resources.sample_ct_path())
    from_node = volume_from_node(ct_node)
    np.testing.assert_allclose(from_node.ijk_to_ras, from_file.ijk_to_ras, atol=1e-9)
    np.testing.assert_array_equal(from_node.hu, from_file.hu)

    carm = carm_at(from_file.center_ras(), alpha=20.0, beta=-10.0)
    direct = Simulator(from_file, logic.settings).render(carm.geometry())
    output = logic.simulate(ct_node, carm)
    assert set(output.stage_nodes) == set(direct.stages)
    for stage, image in direct.stages.items():
        in_node = slicer.util.arrayFromVolume(output.node(stage))
        assert in_node.shape == (1, *image.shape)
        assert in_node.dtype == np.float32
        np.testing.assert_array_equal(in_node[0], image)


def test_ct_node_is_not_modified(logic, ct_node, landmarks_node, scheduler, ct_center):
    before = node_checksum(ct_node)
    output = logic.simulate(ct_node, carm_at(ct_center), landmarks_node, live=True)
    transform = output.transform_node
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToParent(matrix)
    matrix.SetElement(1, 3, matrix.GetElement(1, 3) + 15.0)
    transform.SetMatrixTransformToParent(matrix)
    scheduler.run_pending()
    assert node_checksum(ct_node) == before
    assert ct_node.GetParentTransformNode() is None


def test_parent_transform_of_the_ct_is_honoured(logic, scene, ct_node, ct_center):
    """Moving the CT by T and the C-arm by T gives the same image: the adapter applies the CT's transform."""
    T = _rigid(25.0, (30.0, -12.0, 7.0))
    reference = logic.simulate(ct_node, carm_at(ct_center, alpha=10.0), stages="primary", show=False)
    reference_image = slicer.util.arrayFromVolume(reference.node("primary")).copy()

    parent = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moves the CT")
    parent.SetMatrixTransformToParent(_vtk(T))
    ct_node.SetAndObserveTransformNodeID(parent.GetID())
    np.testing.assert_allclose(ijk_to_world_matrix(ct_node), T @ ijk_to_ras(ct_node), atol=1e-9)

    moved_pose = T @ carm_at(ct_center, alpha=10.0).pose_matrix()
    from DeepDRRSlicerLib.geometry import geometry_from_pose

    carm = carm_at(ct_center)
    geometry = geometry_from_pose(moved_pose, carm.sid_mm, carm.sod_mm, carm.width, carm.height,
                                  carm.pixel_spacing_mm)
    moved = logic.simulate(ct_node, geometry, stages="primary", show=False)
    image = slicer.util.arrayFromVolume(moved.node("primary"))
    np.testing.assert_allclose(image, reference_image, rtol=2e-4, atol=1e-7)
    # Only the CT's placement changed: its voxels were not decomposed again.
    assert logic.stats["decompositions"] == 1


def test_non_linear_parent_transform_is_refused(logic, scene, ct_node):
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    ct_node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'.*Harden"):
        logic.simulate(ct_node, carm_at((0.0, 0.0, 0.0)))


def test_no_ct_selected(logic):
    with pytest.raises(InputError, match="No CT volume is selected") as error:
        logic.simulate(None)
    assert "Fix:" in str(error.value)


@pytest.mark.parametrize("node_class, message", [
    ("vtkMRMLLabelMapVolumeNode", "is a label map"),
    ("vtkMRMLVectorVolumeNode", "is a vector volume"),
    ("vtkMRMLModelNode", "is a vtkMRMLModelNode, not a CT volume"),
])
def test_non_scalar_inputs_are_refused(logic, scene, node_class, message):
    node = scene.AddNewNodeByClass(node_class, "not a CT")
    if node.IsA("vtkMRMLVolumeNode"):
        image = vtk.vtkImageData()
        image.SetDimensions(8, 8, 8)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3 if node_class == "vtkMRMLVectorVolumeNode" else 1)
        node.SetAndObserveImageData(image)
    with pytest.raises(InputError, match=f"'not a CT' {message}"):
        logic.simulate(node, carm_at((0.0, 0.0, 0.0)))


def test_volume_without_voxels_is_refused(logic, scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' holds no image data"):
        logic.simulate(node, carm_at((0.0, 0.0, 0.0)))


def test_scalar_node_with_several_components_is_refused(logic, scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "rgb")
    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="'rgb' has 3 values per voxel"):
        logic.simulate(node, carm_at((0.0, 0.0, 0.0)))


def test_empty_markups_node_is_refused(logic, scene, ct_node, ct_center):
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "no points")
    with pytest.raises(InputError, match="The landmarks node 'no points' has no control points") as error:
        logic.simulate(ct_node, carm_at(ct_center), empty)
    assert "Fix:" in str(error.value)


def test_markups_with_only_unplaced_points_is_refused(logic, scene, ct_node, ct_center):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "unplaced")
    points.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), "A")
    points.UnsetNthControlPointPosition(0)
    with pytest.raises(InputError, match="none is placed"):
        logic.simulate(ct_node, carm_at(ct_center), points)


def test_wrong_node_type_as_landmarks_is_refused(logic, ct_node, ct_center, scene):
    not_points = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "a transform")
    with pytest.raises(InputError, match="not a markups point list"):
        logic.simulate(ct_node, carm_at(ct_center), not_points)


def test_edited_ct_is_decomposed_again(logic, ct_node, ct_center):
    carm = carm_at(ct_center)
    first = slicer.util.arrayFromVolume(logic.simulate(ct_node, carm, stages="primary").node()).copy()
    logic.simulate(ct_node, carm, stages="primary")
    assert logic.stats["decompositions"] == 1
    voxels = slicer.util.arrayFromVolume(ct_node)
    voxels[voxels > 350] = 200  # no bone left: everything above 350 HU becomes soft tissue
    slicer.util.arrayFromVolumeModified(ct_node)
    second = slicer.util.arrayFromVolume(logic.simulate(ct_node, carm, stages="primary").node())
    assert logic.stats["decompositions"] == 2
    assert second.mean() > first.mean()  # less attenuation without bone: brighter primary image


def test_a_ct_not_in_hu_is_flagged_in_the_output(logic, ct_node, ct_center):
    """Stored without its rescale intercept (+1024): the panel shows the output's warnings."""
    assert not any("implausible" in text for text in logic.simulate(ct_node, carm_at(ct_center), stages="primary").warnings)
    voxels = slicer.util.arrayFromVolume(ct_node)
    voxels += 1024
    slicer.util.arrayFromVolumeModified(ct_node)
    with pytest.warns(UserWarning, match="implausible"):
        output = logic.simulate(ct_node, carm_at(ct_center), stages="primary")
    assert any("implausible for a CT in Hounsfield units" in text for text in output.warnings)
