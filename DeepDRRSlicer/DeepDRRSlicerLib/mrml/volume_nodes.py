"""CT volume node -> engine :class:`~DeepDRRSlicerLib.volume.Volume`.

The engine's ``Volume`` is a copy of the node's voxels (``Volume.from_array``
copies), so simulating never changes the CT node. Its IJK->RAS matrix is the
node's own IJK->RAS composed with the node's parent transforms, i.e. the
voxel -> world mapping that Slicer displays. Non-linear parent transforms
cannot be expressed as one matrix and are refused with a clear message.
"""

from __future__ import annotations

import numpy as np
import vtk

import slicer

from ..errors import InputError
from ..volume import Volume
from .scene_utils import array_from_vtk_matrix, node_label

__all__ = [
    "parent_to_world_matrix",
    "ijk_to_world_matrix",
    "check_ct_node",
    "volume_from_node",
    "voxel_modified_time",
]

# Volume node classes that derive from vtkMRMLScalarVolumeNode but do not hold
# one CT value per voxel.
_NOT_CT_CLASSES = {
    "vtkMRMLLabelMapVolumeNode": ("a label map (segment labels, not Hounsfield units)",
                                  "Pick the CT itself as the input volume."),
    "vtkMRMLVectorVolumeNode": ("a vector volume (several values per voxel, e.g. colour)",
                                "Pick a scalar CT volume (one Hounsfield value per voxel)."),
    "vtkMRMLTensorVolumeNode": ("a tensor volume (e.g. diffusion tensors)",
                                "Pick a scalar CT volume (one Hounsfield value per voxel)."),
    "vtkMRMLDiffusionWeightedVolumeNode": ("a diffusion-weighted MR volume",
                                           "Pick a scalar CT volume (one Hounsfield value per voxel)."),
}


def parent_to_world_matrix(node) -> np.ndarray:
    """4x4 matrix from ``node``'s local coordinates to world (RAS), through its parent transforms.

    Raises InputError when a parent transform is not linear (a grid or B-spline
    transform cannot be written as one matrix).
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(
            f"{node_label(node)} is under the non-linear transform {node_label(parent)}; "
            "the simulation needs a linear voxel-to-world mapping.",
            f"Harden the transform on {node_label(node)} (Transforms module > Apply transform / Harden) "
            "or remove it, then simulate again.")
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return array_from_vtk_matrix(matrix)


def ijk_to_world_matrix(node) -> np.ndarray:
    """The node's voxel (IJK) -> world (RAS) matrix, parent transforms included."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    return parent_to_world_matrix(node) @ array_from_vtk_matrix(ijk_to_ras)


def check_ct_node(node) -> None:
    """Raise InputError unless ``node`` is a scalar volume node with voxels."""
    if node is None:
        raise InputError("No CT volume is selected.",
                         "Load a CT (File > Add Data, or the Sample Data module) and pick it as the CT volume.")
    if not hasattr(node, "IsA") or not node.IsA("vtkMRMLVolumeNode"):
        kind = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        raise InputError(f"{node_label(node)} is a {kind}, not a CT volume.",
                         "Pick a scalar volume node that holds the CT in Hounsfield units.")
    for class_name, (what, fix) in _NOT_CT_CLASSES.items():
        if node.IsA(class_name):
            raise InputError(f"{node_label(node)} is {what}, not a CT.", fix)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{node_label(node)} is a {node.GetClassName()}, not a scalar volume.",
                         "Pick a scalar CT volume (one Hounsfield value per voxel).")
    image = node.GetImageData()
    if image is None:
        raise InputError(f"{node_label(node)} holds no image data.",
                         "Load the CT's voxels (File > Add Data) or pick another volume.")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(f"{node_label(node)} has {components} values per voxel; a CT has one.",
                         "Pick a scalar CT volume (one Hounsfield value per voxel).")
    dims = image.GetDimensions()
    if image.GetPointData() is None or image.GetPointData().GetScalars() is None or min(dims) < 1:
        raise InputError(f"{node_label(node)} is empty (dimensions {tuple(dims)}).",
                         "Load a CT volume that contains voxels.")


def voxel_modified_time(node) -> int:
    """A number that changes whenever the node's voxel values may have changed."""
    image = node.GetImageData()
    if image is None:
        return -1
    scalars = image.GetPointData().GetScalars() if image.GetPointData() is not None else None
    return max(image.GetMTime(), scalars.GetMTime() if scalars is not None else 0)


def volume_from_node(node) -> Volume:
    """Engine ``Volume`` of a CT volume node: copied voxels, IJK -> world (RAS) matrix.

    The node is only read. ``slicer.util.arrayFromVolume`` returns a view of the
    node's voxels in [k, j, i] order; ``Volume.from_array`` copies it to float32.
    """
    check_ct_node(node)
    matrix = ijk_to_world_matrix(node)
    voxels = slicer.util.arrayFromVolume(node)
    return Volume.from_array(voxels, matrix, source=f"volume node {node_label(node)}")
