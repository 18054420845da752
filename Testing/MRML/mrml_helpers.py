"""Helpers shared by the MRML tests (import ``slicer`` only after the test module checked it)."""

from __future__ import annotations

import hashlib

import numpy as np
import vtk

import slicer

from DeepDRRSlicerLib import resources
from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm

#: Small detectors keep the layer fast (a 64 x 64 render of the 3 mm CT takes a few ms).
PIXELS = 64


def read_ct(scene, name="pelvis"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(resources.sample_ct_path()))
    assert storage.ReadData(node), "Slicer's volume reader could not read the bundled CT"
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def read_landmarks(scene, name="pelvis landmarks"):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()  # not registered in a bare scene: add it by hand
    scene.AddNode(storage)
    storage.SetFileName(str(resources.sample_landmarks_path()))
    assert storage.ReadData(node), "Slicer's markups reader could not read the bundled landmarks"
    return node


def carm_at(volume_center, alpha=0.0, beta=0.0, pixels=PIXELS, offset=(0.0, 0.0, 0.0)):
    """A C-arm centred on the CT (plus ``offset`` mm) with a small square detector."""
    iso = tuple(float(c + o) for c, o in zip(volume_center, offset))
    return CArm(alpha_deg=alpha, beta_deg=beta, isocenter_ras=iso, width=pixels, height=pixels,
                pixel_spacing_mm=DETECTOR_SIDE_MM / pixels)


def node_checksum(node) -> str:
    """SHA-256 of a volume node's voxels, scalar type and IJK->RAS matrix."""
    digest = hashlib.sha256()
    voxels = slicer.util.arrayFromVolume(node)
    digest.update(str(voxels.dtype).encode())
    digest.update(str(voxels.shape).encode())
    digest.update(np.ascontiguousarray(voxels).tobytes())
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    digest.update(np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]).tobytes())
    return digest.hexdigest()


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def save_scene(scene, path) -> None:
    """Write ``scene`` as a .mrb, giving storable nodes storage first (what Slicer's Save dialog does)."""
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.IsA("vtkMRMLStorableNode") and node.GetSaveWithScene() and node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    scene.WriteToMRB(str(path))


def scene_for_reading(cache_folder):
    """A new scene that can read .mrb files (data cache in ``cache_folder``)."""
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cache_folder))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    scene.SetCacheManager(cache)
    return scene

