"""One output volume node per stage, placed physically at the detector plane.

Each stage image (H, W) becomes a single-slice scalar volume node whose
IJK->RAS is ``DetectorGeometry.image_to_ras_matrix()``: I runs along a
detector row (u), J down a column (v), K along the beam, and voxel (i, j, 0)
is centred on pixel (column i, row j) of the detector. This is how SlicerRT's
DRR module places its images: the image sits where the detector is, so it
shows in 3D at the right place, and points projected onto the detector plane
(landmarks) land on the right pixels in any view reformatted to that plane.

A lower-resolution preview of the same detector changes the pixel count and
spacing but not the physical placement, so views do not jump.
"""

from __future__ import annotations

import numpy as np

import slicer

from ..geometry import DetectorGeometry
from .scene_utils import first_node_with_attributes, nodes_by_class, vtk_matrix_from_array
from .stages import stage_title

__all__ = [
    "STAGE_ATTRIBUTE",
    "CT_ATTRIBUTE",
    "find_stage_node",
    "stage_nodes",
    "update_stage_node",
    "window_level_range",
    "stage_title",
]

#: Attribute naming the stage an output node shows ("primary", "line_integral_bone", ...).
STAGE_ATTRIBUTE = "DeepDRR.Stage"
#: Attribute holding the ID of the CT volume node an output node was simulated from.
CT_ATTRIBUTE = "DeepDRR.CTNodeID"

def find_stage_node(scene, ct_node_id: str, stage: str):
    """The output node of ``stage`` simulated from the CT node ``ct_node_id``, or None."""
    return first_node_with_attributes(scene, "vtkMRMLScalarVolumeNode",
                                      {STAGE_ATTRIBUTE: stage, CT_ATTRIBUTE: ct_node_id})


def stage_nodes(scene, ct_node_id: str) -> dict:
    """All output nodes simulated from ``ct_node_id``: stage name -> node."""
    found = {}
    for node in nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        stage = node.GetAttribute(STAGE_ATTRIBUTE)
        if stage and node.GetAttribute(CT_ATTRIBUTE) == ct_node_id:
            found.setdefault(stage, node)
    return found


def window_level_range(image) -> tuple[float, float]:
    """A display range for an image: its 0.5 and 99.5 percentiles (never empty)."""
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(x) for x in np.percentile(values, [0.5, 99.5]))
    if not high > low:
        spread = max(abs(high), 1e-6) * 1e-3
        low, high = low - spread, high + spread
    return low, high


def _create_stage_node(scene, ct_node, stage: str):
    base = f"{ct_node.GetName() or 'CT'} DRR {stage_title(stage)}"
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(base))
    node.SetAttribute(STAGE_ATTRIBUTE, stage)
    node.SetAttribute(CT_ATTRIBUTE, ct_node.GetID())
    return node


def update_stage_node(scene, ct_node, stage: str, image, geometry: DetectorGeometry, *,
                      window_level: bool = True):
    """Create or update the output node of ``stage`` with ``image`` at ``geometry``'s detector.

    ``image`` is the engine's (rows, columns) float array. With ``window_level``
    the display range is reset to the image's 0.5-99.5 percentiles; without it
    (fast previews) the previous range is kept.
    """
    image = np.asarray(image)
    if image.shape != geometry.shape:
        raise ValueError(f"stage {stage!r}: image shape {image.shape} does not match the detector {geometry.shape}")
    node = find_stage_node(scene, ct_node.GetID(), stage) or _create_stage_node(scene, ct_node, stage)
    wasModifying = node.StartModify()
    try:
        # A (1, rows, cols) float32 array keeps the voxels float32 (a 2D array would be widened to float64).
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(image, dtype=np.float32)[np.newaxis])
        node.SetIJKToRASMatrix(vtk_matrix_from_array(geometry.image_to_ras_matrix()))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            window_level = True
        display = node.GetDisplayNode()
        if display is not None and window_level:
            low, high = window_level_range(image)
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(low, high)
    finally:
        node.EndModify(wasModifying)
    return node

