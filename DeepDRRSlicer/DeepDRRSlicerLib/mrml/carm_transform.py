"""The C-arm pose as a linear transform node, and the detector set-up around it.

The transform's matrix to world *is* the C-arm pose of the engine
(``CArm.pose_matrix()``): it maps the C-arm frame (isocentre at the origin, AP
axes) to RAS. Its translation is the isocentre; its rotation is
``Rz(alpha) @ Rx(beta)`` when set from the angle sliders, or any rotation
(roll included) when the user drags the transform's interaction handles.
Either way the engine's ``geometry_from_pose`` turns it into the detector
geometry, so the sliders and the handles drive the same thing.

Handles are shown with ``SetEditorVisibility`` and scaling is disabled with
``SetEditorScalingEnabled(False)``: a C-arm pose is rigid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import vtk

from ..errors import InputError
from ..geometry import (AP_BEAM_DIRECTION, AP_COLUMN_DIRECTION, DETECTOR_SIDE_MM, DEFAULT_SID_MM, DEFAULT_SOD_MM, CArm,
                        DetectorGeometry, geometry_from_pose)
from .scene_utils import array_from_vtk_matrix, node_label, vtk_matrix_from_array
from .volume_nodes import parent_to_world_matrix

__all__ = [
    "CARM_TRANSFORM_NAME",
    "CArmSetup",
    "create_carm_transform",
    "show_handles",
    "pose_of",
    "set_pose",
    "pose_from_angles",
    "angles_from_pose",
]

CARM_TRANSFORM_NAME = "DeepDRR C-arm"
CARM_TRANSFORM_ATTRIBUTE = "DeepDRR.CArmTransform"

#: Preview images (while dragging) have at most this many pixels per side.
DEFAULT_PREVIEW_PIXELS = 96


@dataclass(frozen=True)
class CArmSetup:
    """What the transform does not hold: distances and the detector's pixel grid.

    The detector is square, ``detector_size_mm`` on a side, sampled by
    ``detector_pixels`` x ``detector_pixels`` pixels (binning the native
    1536 x 0.194 mm panel keeps its size and changes the pixel spacing).
    """

    sid_mm: float = DEFAULT_SID_MM
    sod_mm: float = DEFAULT_SOD_MM
    detector_pixels: int = 256
    detector_size_mm: float = DETECTOR_SIDE_MM
    preview_pixels: int = DEFAULT_PREVIEW_PIXELS

    def __post_init__(self):
        if not isinstance(self.detector_size_mm, (int, float)) or not math.isfinite(self.detector_size_mm) \
                or self.detector_size_mm <= 0:
            raise InputError(f"Detector size {self.detector_size_mm!r} mm is not a positive number.",
                             f"Give a detector size in mm (the mobile C-arm's is {DETECTOR_SIDE_MM:.0f} mm).")
        if isinstance(self.preview_pixels, bool) or not isinstance(self.preview_pixels, int) or self.preview_pixels < 8:
            raise InputError(f"Preview size {self.preview_pixels!r} pixels is too small.",
                             "Give at least 8 pixels for the preview.")
        self.carm()  # validates distances and pixels with the engine's rules

    @property
    def pixel_spacing_mm(self) -> float:
        return float(self.detector_size_mm) / int(self.detector_pixels)

    def carm(self, alpha_deg: float = 0.0, beta_deg: float = 0.0, isocenter_ras=(0.0, 0.0, 0.0)) -> CArm:
        """The engine's ``CArm`` with these distances and this detector."""
        return CArm(alpha_deg=float(alpha_deg), beta_deg=float(beta_deg), sid_mm=float(self.sid_mm),
                    sod_mm=float(self.sod_mm), isocenter_ras=tuple(float(x) for x in isocenter_ras),
                    width=self.detector_pixels, height=self.detector_pixels,
                    pixel_spacing_mm=self.pixel_spacing_mm)

    def geometry(self, pose, preview: bool = False) -> DetectorGeometry:
        """Detector geometry for a C-arm pose (4x4, C-arm frame -> RAS).

        With ``preview=True`` the same detector is sampled by fewer pixels
        (``DetectorGeometry.resized``), for fast renders while the pose moves.
        """
        geometry = geometry_from_pose(pose, float(self.sid_mm), float(self.sod_mm), self.detector_pixels,
                                      self.detector_pixels, self.pixel_spacing_mm)
        if preview and self.preview_pixels < self.detector_pixels:
            geometry = geometry.resized(self.preview_pixels, self.preview_pixels)
        return geometry

    @classmethod
    def from_carm(cls, carm: CArm, preview_pixels: int = DEFAULT_PREVIEW_PIXELS) -> "CArmSetup":
        """Set-up of an engine ``CArm`` (a square detector is assumed; see ``carm_models`` for others)."""
        if carm.width != carm.height:
            raise InputError(f"The live C-arm view needs a square detector, got {carm.width} x {carm.height}.",
                             "Use width == height, or pass a DetectorGeometry to simulate().")
        return cls(sid_mm=carm.sid_mm, sod_mm=carm.sod_mm, detector_pixels=carm.width,
                   detector_size_mm=carm.width * carm.pixel_spacing_mm,
                   preview_pixels=min(preview_pixels, carm.width) if carm.width >= 8 else 8)


def create_carm_transform(scene, name: str = CARM_TRANSFORM_NAME, pose=None):
    """A new linear transform node for the C-arm, with its handles shown."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", scene.GenerateUniqueName(name))
    node.SetAttribute(CARM_TRANSFORM_ATTRIBUTE, "1")
    if pose is not None:
        set_pose(node, pose)
    show_handles(node)
    return node


def show_handles(node, visible: bool = True) -> None:
    """Show (or hide) the transform's interaction handles in 3D; rotation and translation only."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetEditorVisibility(bool(visible))
    display.SetEditorScalingEnabled(False)
    display.SetEditorTranslationEnabled(True)
    display.SetEditorRotationEnabled(True)


def pose_of(node) -> np.ndarray:
    """The C-arm pose held by a transform node: its matrix to world (parents included), 4x4."""
    if node is None:
        raise InputError("No C-arm transform is selected.", "Pick or create a linear transform for the C-arm.")
    if not node.IsA("vtkMRMLTransformNode") or not node.IsTransformToWorldLinear():
        raise InputError(f"The C-arm transform {node_label(node)} is not linear.",
                         "Use a linear transform node for the C-arm.")
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToWorld(matrix)
    pose = array_from_vtk_matrix(matrix)
    rotation = pose[:3, :3]
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4):
        raise InputError(f"The C-arm transform {node_label(node)} scales or shears.",
                         "Reset its scaling (Transforms module); a C-arm pose is a rotation plus a translation.")
    return pose


def set_pose(node, pose) -> None:
    """Make ``node``'s matrix to world equal ``pose`` (its parent transforms are taken into account)."""
    pose = np.asarray(pose, dtype=np.float64)
    local = np.linalg.inv(parent_to_world_matrix(node)) @ pose
    node.SetMatrixTransformToParent(vtk_matrix_from_array(local))


def pose_from_angles(alpha_deg: float, beta_deg: float, isocenter_ras) -> np.ndarray:
    """The roll-free pose of the sliders: ``Rz(alpha) @ Rx(beta)`` about the isocentre."""
    return CArm(alpha_deg=float(alpha_deg), beta_deg=float(beta_deg),
                isocenter_ras=tuple(float(x) for x in isocenter_ras)).pose_matrix()


def angles_from_pose(pose) -> tuple[float, float, float]:
    """(alpha, beta, roll) in degrees of any rigid pose.

    alpha and beta give the same beam direction as the pose (``CArm.from_pose``);
    roll is the remaining rotation of the detector about the beam, 0 for a pose
    made by ``pose_from_angles``.
    """
    pose = np.asarray(pose, dtype=np.float64)
    carm = CArm.from_pose(pose)
    rollfree = carm.pose_matrix()[:3, :3]
    # Both rotations send the AP beam (+A) to the same direction; compare where they send the columns' axis.
    column_actual = pose[:3, :3] @ AP_COLUMN_DIRECTION
    column_rollfree = rollfree @ AP_COLUMN_DIRECTION
    beam = rollfree @ AP_BEAM_DIRECTION
    roll = math.degrees(math.atan2(float(np.dot(np.cross(column_rollfree, column_actual), beam)),
                                   float(np.dot(column_rollfree, column_actual))))
    return float(carm.alpha_deg), float(carm.beta_deg), roll
