"""Landmarks as markups: input fiducials -> engine landmarks; projections -> fiducials on the detector.

Input: the control points of a markups node, in world RAS (parent transforms
applied), with their labels. Points whose position is undefined or missing are
skipped.

Output: one markups fiducial node per input node whose control points lie on
the detector plane, at the projected pixel positions, with the same labels.
Landmarks that project off the detector or lie behind the source are kept but
hidden, so the output lists every placed input point in order (points whose
position is undefined are skipped: match points by label). The output node is
locked (its points follow the projection, not the mouse) and shown only in the
views given, normally the Fluoro slice view and the 3D views.
"""

from __future__ import annotations

import numpy as np
import vtk

from ..errors import InputError
from ..geometry import DetectorGeometry
from ..landmarks import Landmark
from .scene_utils import first_node_from, link_to_source, node_label

__all__ = [
    "PROJECTED_FROM_ATTRIBUTE",
    "landmarks_from_node",
    "find_projected_node",
    "update_projected_landmarks_node",
]

#: Attribute on a projected-landmarks node: the ID of the markups node it was projected from.
PROJECTED_FROM_ATTRIBUTE = "DeepDRR.ProjectedFrom"
PROJECTED_FROM_REFERENCE = "DeepDRRProjectedFrom"   # the same link as a node reference (survives scene import)

_POSITION_DEFINED = 2  # vtkMRMLMarkupsNode::PositionDefined (PositionUndefined=0, Preview=1, Defined=2, Missing=3)


def landmarks_from_node(node) -> list:
    """Engine ``Landmark`` list (label, RAS mm) from a markups node's defined control points.

    Raises InputError for a node that is not a markups node or has no defined points.
    """
    if node is None:
        raise InputError("No landmarks node is given.", "Pick a markups point list, or none.")
    if not hasattr(node, "IsA") or not node.IsA("vtkMRMLMarkupsNode"):
        kind = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        raise InputError(f"{node_label(node)} is a {kind}, not a markups point list.",
                         "Pick a markups point list (vtkMRMLMarkupsFiducialNode) as landmarks, or none.")
    landmarks = []
    position = [0.0, 0.0, 0.0]
    count = node.GetNumberOfControlPoints()
    for index in range(count):
        status = node.GetNthControlPointPositionStatus(index)
        if status != _POSITION_DEFINED:
            continue
        node.GetNthControlPointPositionWorld(index, position)
        label = node.GetNthControlPointLabel(index) or f"{node.GetName() or 'P'}-{index + 1}"
        landmarks.append(Landmark(label, tuple(float(x) for x in position)))
    if not landmarks:
        detail = "has no control points" if count == 0 else f"has {count} control point(s) but none is placed"
        raise InputError(f"The landmarks node {node_label(node)} {detail}.",
                         "Place points in it (Markups module), or choose no landmarks.")
    return landmarks


def find_projected_node(scene, source_node):
    """The projected-landmarks node made earlier from ``source_node``, or None."""
    if source_node is None:
        return None
    return first_node_from(scene, "vtkMRMLMarkupsFiducialNode", PROJECTED_FROM_REFERENCE, PROJECTED_FROM_ATTRIBUTE,
                           source_node.GetID())


def _create_projected_node(scene, source_node):
    name = f"{source_node.GetName() or 'Landmarks'} (projected)"
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    node.SetLocked(True)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(1.0, 0.85, 0.1)
        display.SetColor(1.0, 0.85, 0.1)
        display.SetTextScale(3.0)
        display.SetGlyphScale(2.0)
    return node


def _detector_position(projected, geometry: DetectorGeometry) -> tuple[np.ndarray, bool]:
    """Point on the detector plane where a landmark projects, and whether to show it."""
    u, v = float(projected.u), float(projected.v)
    if not (np.isfinite(u) and np.isfinite(v)):
        return geometry.detector_center, False
    return geometry.pixel_center(u, v), bool(projected.visible)


def update_projected_landmarks_node(scene, source_node, projected, geometry: DetectorGeometry,
                                    view_node_ids=None):
    """Create or update the projected-landmarks node of ``source_node``.

    ``projected`` is the engine's list of ``ProjectedLandmark`` for ``geometry``.
    Returns the node. ``view_node_ids`` restricts the views it is shown in.
    """
    node = find_projected_node(scene, source_node) or _create_projected_node(scene, source_node)
    # new, or from a scene saved before the reference: record where it comes from
    link_to_source(node, PROJECTED_FROM_REFERENCE, PROJECTED_FROM_ATTRIBUTE, source_node.GetID())
    wasModifying = node.StartModify()
    try:
        labels = [p.label for p in projected]
        same_points = node.GetNumberOfControlPoints() == len(labels) and all(
            node.GetNthControlPointLabel(i) == label for i, label in enumerate(labels))
        if not same_points:
            node.RemoveAllControlPoints()
        for index, item in enumerate(projected):
            position, visible = _detector_position(item, geometry)
            point = vtk.vtkVector3d(*(float(x) for x in position))
            if same_points:
                node.SetNthControlPointPosition(index, point[0], point[1], point[2])
            else:
                node.AddControlPoint(point, item.label)
            node.SetNthControlPointVisibility(index, visible)
            node.SetNthControlPointLocked(index, True)
        display = node.GetDisplayNode()
        if display is not None and view_node_ids is not None:
            display.SetViewNodeIDs(list(view_node_ids))
    finally:
        node.EndModify(wasModifying)
    return node
