"""C-arm models: the source, the detector outline and the beam frustum.

The models are built in the C-arm frame (isocentre at the origin, the AP
pose: beam along +A, detector columns along -R, rows along -S) and parented
to the C-arm transform, so moving the transform moves them exactly as
``geometry_from_pose`` moves the detector. A small triangle marks the corner
of pixel (row 0, column 0), i.e. the top-left of the displayed image.
"""

from __future__ import annotations

import numpy as np
import vtk

from ..geometry import AP_COLUMN_DIRECTION, AP_ROW_DIRECTION, carm_frame_outline
from .scene_utils import first_node_with_attributes

__all__ = [
    "PART_ATTRIBUTE",
    "TRANSFORM_ATTRIBUTE",
    "PARTS",
    "detector_corners_carm_frame",
    "carm_polydata",
    "update_carm_models",
    "find_carm_models",
]

PART_ATTRIBUTE = "DeepDRR.CArmPart"
TRANSFORM_ATTRIBUTE = "DeepDRR.CArmTransformID"
PARTS = ("source", "detector", "beam")


_STYLE = {
    # part: (name suffix, colour, opacity)
    "source": ("source", (1.0, 0.35, 0.2), 1.0),
    "detector": ("detector", (0.3, 0.7, 1.0), 1.0),
    "beam": ("beam", (1.0, 0.9, 0.3), 0.15),
}


def detector_corners_carm_frame(sid_mm: float, sod_mm: float, width_mm: float, height_mm: float) -> np.ndarray:
    """(4, 3) detector corners in the C-arm frame: (row 0, col 0), (row 0, col last), (last, last), (last, 0)."""
    return carm_frame_outline(sid_mm, sod_mm, width_mm, height_mm)[1]


def _points(array) -> vtk.vtkPoints:
    points = vtk.vtkPoints()
    for p in np.asarray(array, dtype=np.float64):
        points.InsertNextPoint(float(p[0]), float(p[1]), float(p[2]))
    return points


def _source_polydata(sod_mm: float, radius_mm: float) -> vtk.vtkPolyData:
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*carm_frame_outline(0.0, sod_mm, 0.0, 0.0)[0])
    sphere.SetRadius(radius_mm)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(16)
    sphere.Update()
    return sphere.GetOutput()


def _detector_polydata(corners: np.ndarray, width_mm: float, height_mm: float) -> vtk.vtkPolyData:
    marker = 0.12 * min(width_mm, height_mm)
    top_left = corners[0]
    triangle = [top_left, top_left + marker * AP_COLUMN_DIRECTION, top_left + marker * AP_ROW_DIRECTION]
    poly = vtk.vtkPolyData()
    poly.SetPoints(_points(np.vstack([corners, triangle])))
    lines = vtk.vtkCellArray()
    outline = vtk.vtkPolyLine()
    outline.GetPointIds().SetNumberOfIds(5)
    for i, point_id in enumerate((0, 1, 2, 3, 0)):
        outline.GetPointIds().SetId(i, point_id)
    lines.InsertNextCell(outline)
    poly.SetLines(lines)
    polys = vtk.vtkCellArray()
    polys.InsertNextCell(3)
    for point_id in (4, 5, 6):
        polys.InsertCellPoint(point_id)
    poly.SetPolys(polys)
    return poly


def _beam_polydata(source: np.ndarray, corners: np.ndarray) -> vtk.vtkPolyData:
    poly = vtk.vtkPolyData()
    poly.SetPoints(_points(np.vstack([source, corners])))
    polys = vtk.vtkCellArray()
    for i in range(4):
        polys.InsertNextCell(3)
        for point_id in (0, 1 + i, 1 + (i + 1) % 4):
            polys.InsertCellPoint(point_id)
    poly.SetPolys(polys)
    return poly


def carm_polydata(sid_mm: float, sod_mm: float, width_mm: float, height_mm: float) -> dict:
    """The three parts as vtkPolyData in the C-arm frame: {"source", "detector", "beam"}."""
    source, corners = carm_frame_outline(sid_mm, sod_mm, width_mm, height_mm)
    return {
        "source": _source_polydata(sod_mm, radius_mm=max(5.0, 0.015 * sid_mm)),
        "detector": _detector_polydata(corners, width_mm, height_mm),
        "beam": _beam_polydata(source, corners),
    }


def find_carm_models(scene, transform_node) -> dict:
    """Existing C-arm models parented to ``transform_node``: part -> model node."""
    found = {}
    for part in PARTS:
        node = first_node_with_attributes(scene, "vtkMRMLModelNode",
                                          {PART_ATTRIBUTE: part, TRANSFORM_ATTRIBUTE: transform_node.GetID()})
        if node is not None:
            found[part] = node
    return found


def update_carm_models(scene, transform_node, sid_mm: float, sod_mm: float, width_mm: float, height_mm: float,
                       view_node_ids=None) -> dict:
    """Create or update the C-arm models (distances and detector size in mm), parented to ``transform_node``."""
    shapes = carm_polydata(float(sid_mm), float(sod_mm), float(width_mm), float(height_mm))
    models = find_carm_models(scene, transform_node)
    for part, polydata in shapes.items():
        node = models.get(part)
        if node is None:
            suffix, color, opacity = _STYLE[part]
            name = scene.GenerateUniqueName(f"{transform_node.GetName()} {suffix}")
            node = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
            node.SetAttribute(PART_ATTRIBUTE, part)
            node.SetAttribute(TRANSFORM_ATTRIBUTE, transform_node.GetID())
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            display.SetColor(*color)
            display.SetOpacity(opacity)
            if part == "detector":
                display.SetLineWidth(3.0)
            if part == "beam":
                display.SetBackfaceCulling(False)
            models[part] = node
        node.SetAndObservePolyData(polydata)
        if node.GetTransformNodeID() != transform_node.GetID():
            node.SetAndObserveTransformNodeID(transform_node.GetID())
        if view_node_ids is not None and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetViewNodeIDs(list(view_node_ids))
    return models
