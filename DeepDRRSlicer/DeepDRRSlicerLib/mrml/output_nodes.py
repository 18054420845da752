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
from ..output import auto_window, is_detector_signal
from .scene_utils import first_node_with_attributes, nodes_by_class, vtk_matrix_from_array
from .stages import stage_title

__all__ = [
    "STAGE_ATTRIBUTE",
    "CT_ATTRIBUTE",
    "find_stage_node",
    "stage_nodes",
    "update_stage_node",
    "window_level_range",
    "log_gray_color_node",
    "stage_title",
]

#: Attribute naming the stage an output node shows ("primary", "line_integral_bone", ...).
STAGE_ATTRIBUTE = "DeepDRR.Stage"
#: Attribute holding the ID of the CT volume node an output node was simulated from.
CT_ATTRIBUTE = "DeepDRR.CTNodeID"
#: Attribute on a colour table: the ID of the output node it displays.
COLORS_FOR_ATTRIBUTE = "DeepDRR.ColorsFor"
_TABLE_SIZE = 256

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


def window_level_range(image, stage: str = "line_integral") -> tuple[float, float]:
    """The display range of a stage image: the automatic window of its PNG (``output.auto_window``).

    Detector-signal stages (I/I0) are windowed like a C-arm monitor (over the pixels whose rays crossed
    the patient, so that unattenuated air does not take the window) and shown through a logarithmic
    gray ramp (``log_gray_color_node``); line integrals linearly, more material brighter.
    """
    values = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        values = np.where(np.isfinite(values), values, np.nanmedian(values[np.isfinite(values)])
                          if np.isfinite(values).any() else 0.0)
    low, high = auto_window(stage, values)
    if not high > low:
        spread = max(abs(high), 1e-6) * 1e-3
        low, high = low - spread, high + spread
    return low, high


def log_gray_color_node(scene, volume_node, low: float, high: float):
    """A gray colour table for ``volume_node`` that is logarithmic between ``low`` and ``high``.

    Slicer windows linearly (the window maps [low, high] onto the table); with this table the screen
    shows log(value) between log(low) and log(high), as the stage's PNG does. One table per output node,
    reshaped at every full render; hidden from the node selectors.
    """
    node = first_node_with_attributes(scene, "vtkMRMLColorTableNode", {COLORS_FOR_ATTRIBUTE: volume_node.GetID()})
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode",
                                       scene.GenerateUniqueName(f"{volume_node.GetName()} log gray"))
        node.SetAttribute(COLORS_FOR_ATTRIBUTE, volume_node.GetID())
        node.SetTypeToUser()
        node.SetHideFromEditors(True)
        node.SetNumberOfColors(_TABLE_SIZE)
    ratio = high / low if low > 0 else 1.0
    t = np.linspace(0.0, 1.0, _TABLE_SIZE)
    gray = np.log1p(t * (ratio - 1.0)) / np.log(ratio) if ratio > 1.0 + 1e-9 else t
    was_modifying = node.StartModify()
    try:
        for index, value in enumerate(gray):
            node.SetColor(index, "", float(value), float(value), float(value), 1.0)
    finally:
        node.EndModify(was_modifying)
    return node


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
            low, high = window_level_range(image, stage)
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(low, high)
            if is_detector_signal(stage):
                display.SetAndObserveColorNodeID(log_gray_color_node(scene, node, low, high).GetID())
    finally:
        node.EndModify(wasModifying)
    return node

