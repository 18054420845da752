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

Display: each node's window is the automatic window of the stage's PNG. Detector
signals (I/I0) span decades, which a viewer's linear 8-bit window cannot show, so
the Fluoro view shows them through a hidden companion node holding log(I/I0)
(``fluoro_display_node``), as a C-arm monitor and the PNG do.
"""

from __future__ import annotations

import numpy as np

import slicer

from ..geometry import DetectorGeometry
from ..output import auto_window, is_detector_signal
from .scene_utils import first_node_from, link_to_source, nodes_by_class, source_id, vtk_matrix_from_array
from .stages import stage_title

__all__ = [
    "STAGE_ATTRIBUTE",
    "CT_ATTRIBUTE",
    "find_stage_node",
    "stage_nodes",
    "update_stage_node",
    "window_level_range",
    "fluoro_display_node",
    "stage_title",
]

#: Attribute naming the stage an output node shows ("primary", "line_integral_bone", ...).
STAGE_ATTRIBUTE = "DeepDRR.Stage"
#: Attribute holding the ID of the CT volume node an output node was simulated from (with the reference below).
CT_ATTRIBUTE = "DeepDRR.CTNodeID"
#: Node reference role from an output node to its CT: MRML keeps it right when a scene is imported.
CT_REFERENCE = "DeepDRRCT"
#: Attribute on a log display companion: the ID of the (detector-signal) output node it shows.
DISPLAY_OF_ATTRIBUTE = "DeepDRR.DisplayOf"
DISPLAY_OF_REFERENCE = "DeepDRRDisplayOf"

def find_stage_node(scene, ct_node_id: str, stage: str):
    """The output node of ``stage`` simulated from the CT node ``ct_node_id``, or None."""
    return first_node_from(scene, "vtkMRMLScalarVolumeNode", CT_REFERENCE, CT_ATTRIBUTE, ct_node_id,
                           {STAGE_ATTRIBUTE: stage})


def stage_nodes(scene, ct_node_id: str) -> dict:
    """All output nodes simulated from ``ct_node_id``: stage name -> node."""
    found = {}
    for node in nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        stage = node.GetAttribute(STAGE_ATTRIBUTE)
        if stage and source_id(node, CT_REFERENCE, CT_ATTRIBUTE) == ct_node_id:
            found.setdefault(stage, node)
    return found


def window_level_range(image, stage: str = "line_integral") -> tuple[float, float]:
    """The display range of a stage image, in its own units: the automatic window of its PNG
    (``output.auto_window``): over the pixels whose rays crossed the patient, so that unattenuated air
    does not take the window. For detector signals the PNG maps this range logarithmically, which the
    Fluoro view shows through ``fluoro_display_node``.
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


def fluoro_display_node(scene, stage_node):
    """The node the Fluoro view shows for ``stage_node``: itself, or its log companion (detector signals).

    A viewer maps voxel values to 256 gray levels linearly, so an I/I0 image, which spans several
    decades, shows nearly black with a bright patch of air (or, through a logarithmic colour table, in
    bands). A C-arm monitor shows the log of the detector signal; so does the stage's PNG. The
    companion holds log(I/I0) at the same place, windowed like the PNG; it is hidden from the node
    selectors, updated at every render and saved with the scene (a reopened scene's Fluoro view shows it).
    """
    if stage_node is None:
        return None
    companion = first_node_from(scene, "vtkMRMLScalarVolumeNode", DISPLAY_OF_REFERENCE, DISPLAY_OF_ATTRIBUTE,
                                stage_node.GetID())
    return companion if companion is not None else stage_node


def _update_log_display_node(scene, stage_node, image, matrix, window_level: bool):
    node = first_node_from(scene, "vtkMRMLScalarVolumeNode", DISPLAY_OF_REFERENCE, DISPLAY_OF_ATTRIBUTE,
                           stage_node.GetID())
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                       scene.GenerateUniqueName(f"{stage_node.GetName()} (log display)"))
        link_to_source(node, DISPLAY_OF_REFERENCE, DISPLAY_OF_ATTRIBUTE, stage_node.GetID())
        node.SetHideFromEditors(True)   # saved with the scene: the Fluoro view shows it after reopening
    was_modifying = node.StartModify()
    try:
        log_image = np.log(np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64), nan=1.0), 1e-12, None))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(log_image, dtype=np.float32)[np.newaxis])
        node.SetIJKToRASMatrix(matrix)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            window_level = True
        display = node.GetDisplayNode()
        if display is not None and window_level:
            low, high = stage_node.GetDisplayNode().GetWindowLevelMin(), stage_node.GetDisplayNode().GetWindowLevelMax()
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(float(np.log(max(low, 1e-12))), float(np.log(max(high, 2e-12))))
    finally:
        node.EndModify(was_modifying)
    return node


def _create_stage_node(scene, ct_node, stage: str):
    base = f"{ct_node.GetName() or 'CT'} DRR {stage_title(stage)}"
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(base))
    node.SetAttribute(STAGE_ATTRIBUTE, stage)   # update_stage_node links it to its CT
    return node


def update_stage_node(scene, ct_node, stage: str, image, geometry: DetectorGeometry, *,
                      window_level: bool = True):
    """Create or update the output node of ``stage`` with ``image`` at ``geometry``'s detector.

    ``image`` is the engine's (rows, columns) float array. With ``window_level``
    the display range is reset (``window_level_range``); without it (fast previews)
    the previous range is kept. Detector-signal stages also get their log companion
    (``fluoro_display_node``).
    """
    image = np.asarray(image)
    if image.shape != geometry.shape:
        raise ValueError(f"stage {stage!r}: image shape {image.shape} does not match the detector {geometry.shape}")
    node = find_stage_node(scene, ct_node.GetID(), stage) or _create_stage_node(scene, ct_node, stage)
    # new, or from a scene saved before the reference: record which CT it comes from
    link_to_source(node, CT_REFERENCE, CT_ATTRIBUTE, ct_node.GetID())
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
    finally:
        node.EndModify(wasModifying)
    if is_detector_signal(stage):
        _update_log_display_node(scene, node, image, vtk_matrix_from_array(geometry.image_to_ras_matrix()),
                                 window_level)
    return node

