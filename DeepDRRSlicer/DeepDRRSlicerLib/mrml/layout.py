"""The "Fluoro" slice view and the layout that puts it beside the 3D view.

The Fluoro view is an ordinary slice view reformatted to the detector plane
and oriented like a radiograph on a light box (DESIGN.md, "Display
orientation"): the slice x axis (screen right) runs along the detector rows
(u, increasing column) and the slice y axis (screen up) against the columns
(-v), so image row 0 is at the top and column 0 at the left. At the AP pose
that puts the patient's head at the top and the patient's right on the left.
The view is centred on the detector and its field of view fitted to it.

Everything here works on any scene: inside Slicer the layout manager creates
the view's slice node when the layout is shown; on ``slicer-core`` (no GUI)
the slice and slice-composite nodes are made here with the same names and
singleton tags, and a layout manager that comes later reuses them.
"""

from __future__ import annotations

import numpy as np

from ..geometry import DetectorGeometry
from .output_nodes import fluoro_display_node
from .scene_utils import nodes_by_class, vtk_matrix_from_array

__all__ = [
    "FLUORO_VIEW_NAME",
    "FLUORO_LAYOUT_ID",
    "layout_xml",
    "register_layout",
    "show_layout",
    "fluoro_slice_node",
    "fluoro_composite_node",
    "radiograph_slice_to_ras",
    "orient_slice_to_detector",
    "show_in_fluoro_view",
    "three_d_view_node_ids",
]

FLUORO_VIEW_NAME = "Fluoro"
#: Custom layout ids must be >= 100 and unique; this one is ours ("DRR" on a phone keypad: 377, + 5000).
FLUORO_LAYOUT_ID = 5377

_VIEW_COLOR = "#C8A040"
_VIEW_LABEL = "F"


def layout_xml() -> str:
    """The layout description: the 3D view on the left, the Fluoro slice view on the right."""
    return f"""<layout type="horizontal" split="true">
 <item splitSize="500">
  <view class="vtkMRMLViewNode" singletontag="1">
   <property name="viewlabel" action="default">1</property>
  </view>
 </item>
 <item splitSize="500">
  <view class="vtkMRMLSliceNode" singletontag="{FLUORO_VIEW_NAME}">
   <property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">{_VIEW_LABEL}</property>
   <property name="viewcolor" action="default">{_VIEW_COLOR}</property>
  </view>
 </item>
</layout>"""


def register_layout(layout_node) -> int:
    """Add (or refresh) the Fluoro layout description on ``layout_node``; returns its id."""
    if layout_node.IsLayoutDescription(FLUORO_LAYOUT_ID):
        layout_node.SetLayoutDescription(FLUORO_LAYOUT_ID, layout_xml())
    else:
        layout_node.AddLayoutDescription(FLUORO_LAYOUT_ID, layout_xml())
    return FLUORO_LAYOUT_ID


def show_layout(scene) -> bool:
    """Register the layout and switch to it, if the scene has a layout node (a GUI). Returns whether it did."""
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout_node is None:
        return False
    register_layout(layout_node)
    if layout_node.GetViewArrangement() != FLUORO_LAYOUT_ID:
        layout_node.SetViewArrangement(FLUORO_LAYOUT_ID)
    return True


def _find_by_layout_name(scene, class_name: str):
    for node in nodes_by_class(scene, class_name):
        if node.GetLayoutName() == FLUORO_VIEW_NAME:
            return node
    return None


def _fluoro_node(scene, class_name: str, create: bool, configure=None):
    """The Fluoro view's node of ``class_name``, made here (singleton, layout name Fluoro) if absent."""
    node = _find_by_layout_name(scene, class_name)
    if node is None and create:
        node = scene.CreateNodeByClass(class_name)
        node.SetLayoutName(FLUORO_VIEW_NAME)
        node.SetSingletonTag(FLUORO_VIEW_NAME)
        if configure is not None:
            configure(node)
        scene.AddNode(node)
        node.UnRegister(None)  # CreateNodeByClass returned a reference we own; the scene holds one now
        node = _find_by_layout_name(scene, class_name)
    return node


def fluoro_slice_node(scene, create: bool = True):
    """The Fluoro view's slice node (made here if no layout manager made it yet)."""
    def configure(node):
        node.SetName(FLUORO_VIEW_NAME)
        node.SetLayoutLabel(_VIEW_LABEL)
        node.SetLayoutColor(*(int(_VIEW_COLOR[i:i + 2], 16) / 255.0 for i in (1, 3, 5)))

    return _fluoro_node(scene, "vtkMRMLSliceNode", create, configure)


def fluoro_composite_node(scene, create: bool = True):
    """The Fluoro view's slice-composite node (which volume it shows)."""
    return _fluoro_node(scene, "vtkMRMLSliceCompositeNode", create)


def three_d_view_node_ids(scene) -> list:
    """IDs of the scene's 3D view nodes."""
    return [node.GetID() for node in nodes_by_class(scene, "vtkMRMLViewNode")]


def radiograph_slice_to_ras(geometry: DetectorGeometry) -> np.ndarray:
    """SliceToRAS of a view showing the detector like a radiograph, centred on the detector.

    Columns: x = u/|u| (screen right), y = -v/|v| (screen up), z = x cross y (the beam direction),
    translation = detector centre.
    """
    x = geometry.u / np.linalg.norm(geometry.u)
    y = -geometry.v / np.linalg.norm(geometry.v)
    matrix = np.eye(4)
    matrix[:3, 0] = x
    matrix[:3, 1] = y
    matrix[:3, 2] = np.cross(x, y)
    matrix[:3, 3] = geometry.detector_center
    return matrix


def _fit_field_of_view(slice_node, geometry: DetectorGeometry) -> None:
    """Field of view covering the whole detector, with the view's aspect ratio."""
    width_mm = geometry.width * geometry.pixel_spacing[0]
    height_mm = geometry.height * geometry.pixel_spacing[1]
    dims = slice_node.GetDimensions()
    view_w, view_h = max(1, int(dims[0])), max(1, int(dims[1]))
    if width_mm / height_mm >= view_w / view_h:
        fov_x, fov_y = width_mm, width_mm * view_h / view_w
    else:
        fov_x, fov_y = height_mm * view_w / view_h, height_mm
    slice_node.SetFieldOfView(fov_x, fov_y, slice_node.GetFieldOfView()[2])


def orient_slice_to_detector(slice_node, geometry: DetectorGeometry, fit: bool = True) -> None:
    """Reformat ``slice_node`` to the detector plane, as a radiograph; optionally fit the field of view."""
    wasModifying = slice_node.StartModify()
    try:
        slice_node.GetSliceToRAS().DeepCopy(vtk_matrix_from_array(radiograph_slice_to_ras(geometry)))
        slice_node.SetXYZOrigin(0.0, 0.0, 0.0)
        if fit:
            _fit_field_of_view(slice_node, geometry)
        slice_node.UpdateMatrices()
    finally:
        slice_node.EndModify(wasModifying)


def show_in_fluoro_view(scene, volume_node, geometry: DetectorGeometry, fit: bool = True):
    """Show ``volume_node`` (an output stage) in the Fluoro view, reformatted to ``geometry``'s detector.

    Detector-signal stages are shown through their log companion (``output_nodes.fluoro_display_node``),
    as a C-arm monitor shows them. Returns the Fluoro slice node. The view's image plane is also shown in 3D.
    """
    volume_node = fluoro_display_node(scene, volume_node)
    slice_node = fluoro_slice_node(scene)
    composite = fluoro_composite_node(scene)
    wasModifying = composite.StartModify()
    try:
        composite.SetBackgroundVolumeID(volume_node.GetID() if volume_node is not None else None)
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        composite.SetDoPropagateVolumeSelection(False)
    finally:
        composite.EndModify(wasModifying)
    orient_slice_to_detector(slice_node, geometry, fit=fit)
    if not slice_node.GetSliceVisible():
        slice_node.SetSliceVisible(True)
    return slice_node
