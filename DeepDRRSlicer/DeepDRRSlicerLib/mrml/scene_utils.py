"""Small helpers shared by the MRML adapters (no Qt)."""

from __future__ import annotations

import numpy as np
import vtk

__all__ = [
    "node_label",
    "nodes_by_class",
    "array_from_vtk_matrix",
    "vtk_matrix_from_array",
    "first_node_with_attributes",
]


def node_label(node) -> str:
    """How a node is named in messages: its name in quotes, or its class."""
    if node is None:
        return "(none)"
    name = node.GetName() if hasattr(node, "GetName") else None
    return f"'{name}'" if name else f"the {node.GetClassName()}"


def nodes_by_class(scene, class_name: str) -> list:
    """All nodes of ``class_name`` (subclasses included) in ``scene``, as a list.

    ``vtkMRMLScene.GetNodesByClass`` hands its collection to the caller with one
    reference too many (slicer.util.getNodesByClass releases it the same way).
    """
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def link_to_source(node, role: str, attribute: str, source_id: str) -> None:
    """Record which node ``node`` was made from: as a node reference (MRML renames it when a scene is
    imported into another and IDs change) and, for readers of older scenes, as an attribute."""
    node.SetAttribute(attribute, source_id)
    if node.GetNodeReferenceID(role) != source_id:
        node.SetNodeReferenceID(role, source_id)


def source_id(node, role: str, attribute: str):
    """The ID recorded by ``link_to_source``: the reference, else (scenes saved before it) the attribute."""
    return node.GetNodeReferenceID(role) or node.GetAttribute(attribute)


def first_node_from(scene, class_name: str, role: str, attribute: str, source: str, attributes: dict | None = None):
    """The first node of ``class_name`` made from the node with ID ``source`` (see ``link_to_source``) whose
    attributes include ``attributes``, or None."""
    for node in nodes_by_class(scene, class_name):
        if source_id(node, role, attribute) == source and all(
                node.GetAttribute(key) == value for key, value in (attributes or {}).items()):
            return node
    return None


def first_node_with_attributes(scene, class_name: str, attributes: dict):
    """The first node of ``class_name`` whose attributes include all of ``attributes``, or None."""
    for node in nodes_by_class(scene, class_name):
        if all(node.GetAttribute(key) == value for key, value in attributes.items()):
            return node
    return None


def array_from_vtk_matrix(matrix) -> np.ndarray:
    """4x4 numpy array (float64) from a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def vtk_matrix_from_array(array) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4 from a 4x4 array-like."""
    array = np.asarray(array, dtype=np.float64)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix
