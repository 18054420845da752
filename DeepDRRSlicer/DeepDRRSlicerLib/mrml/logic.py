"""``DeepDRRLogic``: simulate fluoroscopy from MRML nodes, once or live.

This is the module's logic without Qt; the Slicer module's Logic class wraps
it and its widget drives it. It works on any ``vtkMRMLScene``, so CI tests it
on the ``slicer-core`` wheel.

Console use (inside Slicer, ``logic = slicer.util.getModuleLogic("DeepDRRSlicer")``
gives the same methods)::

    from DeepDRRSlicerLib.geometry import CArm
    out = logic.simulate(ctNode, CArm(alpha_deg=30, width=256, height=256,
                                      pixel_spacing_mm=298 / 256),
                         landmarksNode=pointsNode)
    out.node("primary")           # a vtkMRMLScalarVolumeNode at the detector plane
    out.landmarks_node            # the landmarks projected onto the detector

Live use: ``simulate(..., live=True)`` keeps watching the C-arm transform and
the landmarks. Moving the transform (by its handles or ``set_carm_angles``)
schedules a low-resolution preview and, once the pose stops moving, a full
render; moving a landmark only re-projects the landmarks. The material
decomposition is cached per CT node and redone only when the CT's voxels
change, never because the pose changed.

Materials: ``settings.materials`` is "network" (default) or "threshold",
``settings.density_model`` "calibrated" (default) or "deepdrr", ``settings.metal``
"titanium" (default), "steel", "cocr" or "none". The network's output is kept
per CT node and its voxels' modified time, so changing the density model, the
metal or the overrides does not rerun it. ``set_material_overrides(ctNode,
segmentationNode, mapping)`` replaces the materials inside segments (e.g. a
segmented screw -> titanium). Without PyTorch the network falls back to
thresholds; ``material_notes(ctNode)`` says so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace

import numpy as np
import vtk

from ..errors import InputError, SimulationCancelled
from ..geometry import CArm, DetectorGeometry
from ..landmarks import project_landmarks
from ..materials import MaterialVolume, decompose, override_materials
from ..pipeline import SimulationResult, SimulationSettings, Simulator
from ..volume import Volume
from . import layout
from .carm_models import update_carm_models
from .carm_transform import (
    CARM_TRANSFORM_ATTRIBUTE,
    CArmSetup,
    angles_from_pose,
    create_carm_transform,
    pose_from_angles,
    pose_of,
    set_pose,
    show_handles,
)
from .landmark_nodes import find_projected_node, landmarks_from_node, update_projected_landmarks_node
from .output_nodes import find_stage_node, update_stage_node
from .scene_utils import first_node_with_attributes
from .scheduler import ImmediateScheduler
from .stages import KNOWN_STAGES
from .volume_nodes import check_ct_node, ijk_to_world_matrix, volume_from_node, voxel_modified_time

__all__ = [
    "KNOWN_STAGES",
    "SimulationOutput",
    "DeepDRRLogic",
]

_LOG = logging.getLogger(__name__)


@dataclass
class SimulationOutput:
    """What one render produced in the scene."""

    stage_nodes: dict                 # stage name -> vtkMRMLScalarVolumeNode
    geometry: DetectorGeometry
    result: SimulationResult
    landmarks_node: object = None     # projected landmarks (vtkMRMLMarkupsFiducialNode) or None
    transform_node: object = None     # the C-arm transform, None for a bare DetectorGeometry
    model_nodes: dict = field(default_factory=dict)
    display_stage: str | None = None
    preview: bool = False
    seconds: float = 0.0

    @property
    def stages(self) -> tuple:
        return tuple(self.stage_nodes)

    @property
    def notes(self) -> list:
        """The render's notes for the user (materials, scatter, truncation, ...), as in ``result.notes``."""
        return list(self.result.notes)

    @property
    def warnings(self) -> list:
        return list(self.result.warnings)

    def node(self, stage: str | None = None):
        """The output volume node of ``stage`` (default: the displayed one)."""
        stage = stage or self.display_stage
        if stage not in self.stage_nodes:
            raise InputError(f"Stage {stage!r} has no output node in this result.",
                             f"Use one of: {', '.join(self.stage_nodes)}.")
        return self.stage_nodes[stage]


@dataclass
class _CTEntry:
    key: tuple
    voxels_time: int
    volume: Volume
    materials: dict = field(default_factory=dict)   # (method, density model, metal, overrides) -> MaterialVolume
    network: object = None                           # material_network.WorkingProbabilities of these voxels
    notes: dict = field(default_factory=dict)        # same keys -> messages for the user


@dataclass
class _LiveSession:
    ct_node: object
    transform_node: object
    setup: CArmSetup
    settings: SimulationSettings
    landmarks_node: object = None
    stages: tuple | None = None
    display_stage: str | None = None
    enabled: bool = True
    observations: list = field(default_factory=list)   # (vtk object, observer tag)
    landmarks: list | None = None
    last_geometry: DetectorGeometry | None = None
    last_output: SimulationOutput | None = None
    fitted_size_mm: tuple | None = None
    voxels_time: int = -1


def _settings_key(settings: SimulationSettings) -> tuple:
    from dataclasses import asdict

    return tuple(sorted((name, repr(value)) for name, value in asdict(settings).items()))


class DeepDRRLogic:
    """Fluoroscopy simulation on MRML nodes; see the module docstring.

    ``scene`` is the ``vtkMRMLScene`` to work in. ``scheduler`` coalesces live
    events (default: :class:`~.scheduler.ImmediateScheduler`, no coalescing).
    ``settings`` are the default physics settings (``SimulationSettings``).
    """

    #: Seconds between preview renders while the pose keeps moving (throttle).
    preview_delay_s = 0.03
    #: Seconds of stillness before the full-resolution render (debounce).
    full_delay_s = 0.3
    #: Seconds to coalesce landmark edits.
    landmarks_delay_s = 0.03

    def __init__(self, scene, scheduler=None, settings: SimulationSettings | None = None):
        if scene is None:
            raise ValueError("DeepDRRLogic needs a vtkMRMLScene")
        self.scene = scene
        self.scheduler = scheduler or ImmediateScheduler()
        self.settings = settings or SimulationSettings()
        self.stats = Counter()          # decompositions, simulators, renders, previews, landmark_updates
        self.pose_listeners = []        # f(alpha_deg, beta_deg, roll_deg, pose_4x4) after the C-arm moved
        self.render_listeners = []      # f(SimulationOutput) after each live render
        self.error_listeners = []       # f(exception) when a live render failed (no exception escapes)
        self._ct_cache: dict = {}
        self._simulators: dict = {}
        self._overrides: dict = {}   # CT node ID -> (segmentation node, mapping or None)
        #: export(segmentationNode, segmentId, ctNode) -> mask array on the CT grid; None: Slicer's own.
        self.segment_exporter = None
        self._live: _LiveSession | None = None
        self._setting_pose = False   # the pose is being set on request: do not echo it to pose listeners
        self._quiet = False          # the pose is being set by simulate(): no live render for it
        self._scatter_job = None     # the scatter Monte Carlo running on a worker thread for a live pose
        self._watched_carm = None    # (transform node, observer tag): its moves reach pose_listeners, live or not

    # ------------------------------------------------------------------ caches
    def volume_for(self, ct_node) -> Volume:
        """The engine ``Volume`` of a CT node, cached until its voxels or matrix change."""
        return self._ct_entry(ct_node).volume

    def materials_for(self, ct_node, settings: SimulationSettings | str | None = None,
                      progress=None) -> MaterialVolume:
        """The material decomposition of a CT node, cached per node, voxel time and material settings.

        ``settings``: a ``SimulationSettings`` (its materials, density_model, metal) or a method
        name ("network" / "threshold"). ``progress(fraction)`` may raise SimulationCancelled.
        """
        if isinstance(settings, str):
            settings = replace(self.settings, materials=settings)
        settings = settings or self.settings
        entry = self._ct_entry(ct_node)
        overrides = self._overrides.get(ct_node.GetID())
        key = self._materials_key(ct_node, settings)
        if key not in entry.materials:
            notes = []
            network_output = None
            network_share = 0.0
            if settings.materials == "network":
                from .. import material_network

                available, _ = material_network.torch_status()
                if available:
                    network_share = 0.0 if entry.network is not None else 0.9
                    if entry.network is None:
                        entry.network = material_network.remembered_segment_working(
                            entry.volume.hu, entry.volume.ijk_to_ras, device=settings.device,
                            progress=_part(progress, 0.0, network_share))
                        self.stats["network_runs"] += 1
                    network_output = entry.network
            materials = decompose(entry.volume, settings.materials, density_model=settings.density_model,
                                  metal=settings.metal, device=settings.device, notes=notes,
                                  network_output=network_output, progress=_part(progress, network_share, 1.0))
            if overrides:
                from .material_overrides import overrides_from_segmentation

                segmentation_node, mapping = overrides
                applied = overrides_from_segmentation(segmentation_node, ct_node, mapping, export=self.segment_exporter)
                materials = override_materials(materials, applied)
                notes.append(f"{len(applied)} segment(s) of {segmentation_node.GetName()} override the materials")
            entry.materials[key] = materials
            entry.notes[key] = notes
            self.stats["decompositions"] += 1
        return entry.materials[key]

    def material_notes(self, ct_node, settings: SimulationSettings | None = None) -> list:
        """Messages of the last decomposition of ``ct_node`` with ``settings`` (e.g. the fallback without torch)."""
        settings = settings or self.settings
        return list(self._ct_entry(ct_node).notes.get(self._materials_key(ct_node, settings), []))

    def set_material_overrides(self, ctNode, segmentationNode=None, mapping: dict | None = None) -> None:
        """Replace the materials of ``ctNode`` inside the segments of ``segmentationNode``.

        ``mapping``: {segment ID or name: material}; None maps segments by their names
        ("titanium screw", "steel", "bone", ...). ``segmentationNode=None`` removes the overrides.
        """
        check_ct_node(ctNode)
        new = None if segmentationNode is None else (segmentationNode, dict(mapping) if mapping is not None else None)
        old = self._overrides.get(ctNode.GetID())
        if (old is None and new is None) or (old is not None and new is not None and old[0] is new[0]
                                              and old[1] == new[1]):
            return
        if new is None:
            self._overrides.pop(ctNode.GetID(), None)
        else:
            self._overrides[ctNode.GetID()] = new
        self._simulators.pop(ctNode.GetID(), None)
        if self._live is not None and self._live.ct_node is ctNode and self._live.enabled:
            self.request_render(preview=False)

    def simulator_for(self, ct_node, settings: SimulationSettings | None = None, progress=None) -> Simulator:
        """An engine ``Simulator`` for a CT node and settings, reusing the cached decomposition."""
        settings = settings or self.settings
        settings.validate()
        entry = self._ct_entry(ct_node)
        materials = self.materials_for(ct_node, settings, progress=progress)
        key = (entry.key, _settings_key(settings), self._materials_key(ct_node, settings))
        cached = self._simulators.get(ct_node.GetID())
        if cached is not None and cached[0] == key and cached[1].materials is materials:
            return cached[1]
        simulator = Simulator(entry.volume, settings, materials=materials)
        simulator.notes.extend(self.material_notes(ct_node, settings))
        self.stats["simulators"] += 1
        self._simulators[ct_node.GetID()] = (key, simulator)
        return simulator

    def _materials_cached(self, ct_node, settings: SimulationSettings | None) -> bool:
        settings = settings or self.settings
        return self._materials_key(ct_node, settings) in self._ct_entry(ct_node).materials

    def _materials_key(self, ct_node, settings: SimulationSettings) -> tuple:
        from .material_overrides import segmentation_key

        overrides = self._overrides.get(ct_node.GetID())
        return (settings.materials, settings.density_model, settings.metal,
                segmentation_key(*overrides) if overrides else ())

    def clear_cache(self, ct_node=None) -> None:
        """Forget cached volumes, decompositions and simulators (of one CT node, or all)."""
        if ct_node is None:
            self._ct_cache.clear()
            self._simulators.clear()
        else:
            self._ct_cache.pop(ct_node.GetID(), None)
            self._simulators.pop(ct_node.GetID(), None)

    def _ct_entry(self, ct_node) -> _CTEntry:
        check_ct_node(ct_node)
        self._forget_removed_nodes()
        node_id = ct_node.GetID()
        voxels_time = voxel_modified_time(ct_node)
        matrix = ijk_to_world_matrix(ct_node)
        key = (node_id, voxels_time, matrix.round(9).tobytes())
        entry = self._ct_cache.get(node_id)
        if entry is not None and entry.key == key:
            return entry
        if entry is not None and entry.voxels_time == voxels_time:
            # Only the placement changed (e.g. a transform on the CT): keep the voxels and materials.
            frozen = matrix.copy()
            frozen.setflags(write=False)
            volume = Volume(hu=entry.volume.hu, ijk_to_ras=frozen)
            materials = {m: replace(mv, ijk_to_ras=frozen) for m, mv in entry.materials.items()}
            entry = _CTEntry(key, voxels_time, volume, materials, entry.network, dict(entry.notes))
        else:
            entry = _CTEntry(key, voxels_time, volume_from_node(ct_node))
            self.stats["volume_reads"] += 1
        self._ct_cache[node_id] = entry
        self._simulators.pop(node_id, None)
        return entry

    def _forget_removed_nodes(self) -> None:
        for node_id in [i for i in self._ct_cache if self.scene.GetNodeByID(i) is None]:
            self._ct_cache.pop(node_id, None)
            self._simulators.pop(node_id, None)
            self._overrides.pop(node_id, None)

    # ------------------------------------------------------------- C-arm helpers
    def carm_transform(self, create: bool = True, ct_node=None):
        """The scene's C-arm transform (marked with an attribute); made at the CT's centre if absent."""
        node = first_node_with_attributes(self.scene, "vtkMRMLLinearTransformNode", {CARM_TRANSFORM_ATTRIBUTE: "1"})
        if node is None and create:
            center = self.volume_for(ct_node).center_ras() if ct_node is not None else (0.0, 0.0, 0.0)
            node = create_carm_transform(self.scene, pose=pose_from_angles(0.0, 0.0, center))
        return node

    def center_carm_on_ct(self, transform_node, ct_node) -> None:
        """Move the C-arm's isocentre to the centre of the CT (keeping its orientation)."""
        pose = pose_of(transform_node)
        pose[:3, 3] = self.volume_for(ct_node).center_ras()
        self._set_pose(transform_node, pose, notify=True)

    def watch_carm_transform(self, transform_node) -> None:
        """Report every move of ``transform_node`` (handles, Transforms module, scripts) to ``pose_listeners``,
        with or without a live view, so a panel's angles never lag behind the transform and overwrite it."""
        if self._watched_carm is not None:
            if self._watched_carm[0] is transform_node:
                return
            self._watched_carm[0].RemoveObserver(self._watched_carm[1])
            self._watched_carm = None
        if transform_node is not None:
            tag = transform_node.AddObserver(transform_node.TransformModifiedEvent, self._on_carm_pose_modified)
            self._watched_carm = (transform_node, tag)

    def set_carm_angles(self, transform_node, alpha_deg: float, beta_deg: float) -> bool:
        """Point the C-arm at (alpha, beta) about its current isocentre. Returns whether it moved.

        Nothing happens when the transform already points that way (so a roll given by
        the handles survives); otherwise the new pose is roll-free, as the sliders set it.
        """
        self.watch_carm_transform(transform_node)
        pose = pose_of(transform_node)
        alpha, beta, _roll = angles_from_pose(pose)
        if abs(_angle_difference(alpha, alpha_deg)) < 1e-6 and abs(beta - beta_deg) < 1e-6:
            return False
        self._set_pose(transform_node, pose_from_angles(alpha_deg, beta_deg, pose[:3, 3]), notify=False)
        return True

    def _set_pose(self, transform_node, pose, *, notify: bool = False, render: bool = True) -> None:
        """Move the transform; ``notify`` pose listeners (not when they asked), ``render`` the live view."""
        self._setting_pose, self._quiet = not notify, not render
        try:
            set_pose(transform_node, pose)
        finally:
            self._setting_pose, self._quiet = False, False

    # ------------------------------------------------------------- one render
    def simulate(self, ctNode, carm=None, landmarksNode=None, stages=None, *, transformNode=None,
                 setup: CArmSetup | None = None, settings: SimulationSettings | None = None,
                 display_stage: str | None = None, show: bool = True, live: bool = False,
                 progress=None) -> SimulationOutput:
        """Simulate fluoroscopy of ``ctNode`` and put every stage in the scene.

        ``carm`` is the pose and detector, one of:

        * a ``CArm`` (or a dict of its fields): the C-arm transform (``transformNode``,
          else the scene's C-arm transform, made if absent) is moved to its pose;
        * a ``DetectorGeometry``: any pose; no transform or models are involved;
        * None: the pose of ``transformNode`` (or of the scene's C-arm transform, made at
          the CT's centre if absent) with the detector of ``setup`` (default ``CArmSetup()``).

        ``landmarksNode``: a markups point list to project (optional).
        ``stages``: names of the stages to output (default: every stage the engine computed).
        ``display_stage``: the stage shown in the Fluoro view (default: "primary" if output).
        ``show``: switch to the Fluoro layout (when there is a GUI) and show the image there.
        ``live``: keep re-rendering when the C-arm transform or the landmarks change.
        ``progress(fraction)``: called during the projection; may raise ``SimulationCancelled``.

        Returns a :class:`SimulationOutput` (``.node(stage)``, ``.landmarks_node``, ...).
        Bad inputs raise ``InputError`` with the problem and the fix.
        """
        started = time.perf_counter()
        check_ct_node(ctNode)
        settings = settings or self.settings
        if isinstance(carm, dict):
            carm = _carm_from_dict(carm)
        transform = None
        detector_mm = None
        if isinstance(carm, DetectorGeometry):
            if live:
                raise InputError("A live view needs a C-arm transform, not a fixed DetectorGeometry.",
                                 "Pass a CArm (or None to use the C-arm transform) with live=True.")
            geometry = carm
        elif isinstance(carm, CArm):
            # The CArm fixes the detector; a square one also gives the live set-up.
            setup = CArmSetup.from_carm(carm) if (live or carm.width == carm.height) else None
            transform = transformNode or self.carm_transform(ct_node=ctNode)
            self._set_pose(transform, carm.pose_matrix(), notify=True, render=False)
            geometry = carm.geometry()
            sid, sod = carm.sid_mm, carm.sod_mm
            detector_mm = (carm.width * carm.pixel_spacing_mm, carm.height * carm.pixel_spacing_mm)
        elif carm is None:
            transform = transformNode or self.carm_transform(ct_node=ctNode)
            setup = setup or CArmSetup()
            geometry = setup.geometry(pose_of(transform))
            sid, sod = setup.sid_mm, setup.sod_mm
            detector_mm = (setup.detector_size_mm, setup.detector_size_mm)
        else:
            raise InputError(f"simulate() got a {type(carm).__name__} as the C-arm.",
                             "Pass a CArm, a dict of CArm fields, a DetectorGeometry, or None.")

        landmarks = landmarks_from_node(landmarksNode) if landmarksNode is not None else None
        materials_needed = not self._materials_cached(ctNode, settings)
        simulator = self.simulator_for(ctNode, settings, progress=_part(progress, 0.0, 0.8 if materials_needed else 0.0))
        result = simulator.render(geometry, landmarks=landmarks,
                                  progress=_part(progress, 0.8 if materials_needed else 0.0, 1.0))
        self.stats["renders"] += 1
        chosen = self._choose_stages(result, stages)
        display = self._choose_display_stage(chosen, display_stage)

        models = {}
        if transform is not None:
            show_handles(transform)
            models = update_carm_models(self.scene, transform, sid, sod, *detector_mm,
                                        view_node_ids=layout.three_d_view_node_ids(self.scene) or None)
        output = self._write_outputs(ctNode, result, geometry, chosen, display, landmarksNode, transform,
                                     models, preview=False, window_level=True, show=show, fit=True,
                                     switch_layout=show)
        output.seconds = time.perf_counter() - started
        if live:
            self.start_live(ctNode, transform, setup, settings=settings, landmarksNode=landmarksNode,
                            stages=stages, display_stage=display, _output=output)
        return output

    @staticmethod
    def _choose_stages(result: SimulationResult, stages) -> tuple:
        available = tuple(result.stages)
        if stages is None:
            return available
        if isinstance(stages, str):
            stages = (stages,)
        stages = tuple(stages)
        unknown = [s for s in stages if s not in available]
        if unknown:
            raise InputError(f"Stage(s) {', '.join(map(repr, unknown))} were not computed.",
                             f"Ask for one of: {', '.join(available)}.")
        if not stages:
            raise InputError("No stage was asked for.", f"Ask for one of: {', '.join(available)}.")
        return stages

    @staticmethod
    def _choose_display_stage(stages: tuple, wanted: str | None) -> str:
        if wanted in stages:
            return wanted
        for fallback in ("primary", "final", "line_integral"):   # the panel's default stage first
            if fallback in stages:
                return fallback
        return stages[0]

    def _write_outputs(self, ct_node, result, geometry, stages, display_stage, landmarks_node, transform,
                       models, *, preview, window_level, show, fit, switch_layout=False) -> SimulationOutput:
        nodes = {}
        for stage in stages:
            nodes[stage] = update_stage_node(self.scene, ct_node, stage, result.stages[stage], geometry,
                                             window_level=window_level)
        projected_node = None
        if show:
            if switch_layout:  # only on request: a live render must not undo the user's choice of layout
                layout.show_layout(self.scene)
            layout.show_in_fluoro_view(self.scene, nodes[display_stage], geometry, fit=fit)
        if landmarks_node is not None and result.landmarks is not None:
            projected_node = update_projected_landmarks_node(
                self.scene, landmarks_node, result.landmarks, geometry, view_node_ids=self._overlay_view_ids())
        return SimulationOutput(stage_nodes=nodes, geometry=geometry, result=result, landmarks_node=projected_node,
                                transform_node=transform, model_nodes=models, display_stage=display_stage,
                                preview=preview)

    def _overlay_view_ids(self) -> list:
        """Views that show projected landmarks: the Fluoro slice view and the 3D views."""
        fluoro = layout.fluoro_slice_node(self.scene)
        return [fluoro.GetID(), *layout.three_d_view_node_ids(self.scene)]

    # ---------------------------------------------------------------- live loop
    @property
    def live(self) -> bool:
        """Whether a live session is watching a C-arm transform."""
        return self._live is not None

    def live_nodes(self) -> tuple:
        """(CT node, C-arm transform node, landmarks node) of the live session, or (None, None, None)."""
        session = self._live
        if session is None:
            return (None, None, None)
        return (session.ct_node, session.transform_node, session.landmarks_node)

    def start_live(self, ctNode, transformNode, setup: CArmSetup | None = None, *,
                   settings: SimulationSettings | None = None, landmarksNode=None, stages=None,
                   display_stage: str | None = None, enabled: bool = True, _output=None) -> None:
        """Watch ``transformNode``, ``landmarksNode`` and ``ctNode`` (its parent transform and voxels) and
        re-render ``ctNode`` when they change."""
        check_ct_node(ctNode)
        if transformNode is None:
            raise InputError("No C-arm transform to follow.", "Pick or create the C-arm transform, then simulate.")
        self.stop_live()
        if isinstance(stages, str):
            stages = (stages,)
        session = _LiveSession(ct_node=ctNode, transform_node=transformNode, setup=setup or CArmSetup(),
                               settings=settings or self.settings, landmarks_node=landmarksNode,
                               stages=tuple(stages) if stages is not None else None,
                               display_stage=display_stage, enabled=enabled)
        if _output is not None:
            session.last_output = _output
            session.last_geometry = _output.geometry
            session.fitted_size_mm = _detector_size(_output.geometry)
        self._live = session
        self.watch_carm_transform(transformNode)
        self._observe(transformNode, transformNode.TransformModifiedEvent, self._on_transform_modified)
        # the CT moved (its parent transform) or its voxels were edited: the image is stale
        session.voxels_time = voxel_modified_time(ctNode)
        self._observe(ctNode, ctNode.TransformModifiedEvent, self._on_ct_modified)
        self._observe(ctNode, ctNode.ImageDataModifiedEvent, self._on_ct_modified)
        self._observe(ctNode, vtk.vtkCommand.ModifiedEvent, self._on_ct_modified)  # arrayFromVolumeModified
        self._observe_landmarks(landmarksNode)

    def stop_live(self) -> None:
        """Stop watching; pending renders are dropped."""
        session, self._live = self._live, None
        if session is not None:
            for obj, tag in session.observations:
                obj.RemoveObserver(tag)
            session.observations.clear()
        self.scheduler.cancel_all()

    def update_live(self, *, setup: CArmSetup | None = None, settings: SimulationSettings | None = None,
                    landmarksNode=..., display_stage: str | None = None, enabled: bool | None = None) -> None:
        """Change what the live session renders; re-renders (or re-displays) as needed."""
        session = self._live
        if session is None:
            return
        render = False
        if setup is not None and setup != session.setup:
            session.setup = setup
            render = True
            if session.transform_node is not None:
                update_carm_models(self.scene, session.transform_node, setup.sid_mm, setup.sod_mm,
                                   setup.detector_size_mm, setup.detector_size_mm,
                                   view_node_ids=layout.three_d_view_node_ids(self.scene) or None)
        if settings is not None and _settings_key(settings) != _settings_key(session.settings):
            session.settings = settings
            render = True
        if landmarksNode is not ... and _node_id(landmarksNode) != _node_id(session.landmarks_node):
            old_id = _node_id(session.landmarks_node)
            keep = []
            for obj, tag in session.observations:
                if old_id is not None and _node_id(obj) == old_id:
                    obj.RemoveObserver(tag)
                else:
                    keep.append((obj, tag))
            session.observations = keep
            session.landmarks_node = landmarksNode
            session.landmarks = None
            self._observe_landmarks(landmarksNode)
            self._schedule("landmarks", self.landmarks_delay_s, self._update_landmarks_live, restart=False)
        if enabled is not None and enabled != session.enabled:
            session.enabled = enabled
            render = render or enabled
        if display_stage is not None and display_stage != session.display_stage:
            session.display_stage = display_stage
            last = session.last_output
            # A stage the last full render with these settings did not compute (another metal's line integral,
            # the line-integral mode's total) would not come from rendering again.
            not_computed = (last is not None and not last.preview and session.stages is None
                            and display_stage not in last.result.stages)
            if not self.show_stage(display_stage):
                if not_computed:
                    self._report(InputError(
                        f"Stage {display_stage!r} is not computed with these settings.",
                        f"Pick one of {', '.join(last.result.stages)}; the image mode (polychromatic or "
                        "line-integral), the metal and the stages decide which are computed."))
                else:
                    render = True
        if render and session.enabled:
            self.request_render()

    def show_stage(self, stage: str) -> bool:
        """Show ``stage`` of the live CT in the Fluoro view, if it has an output node. Returns whether it did."""
        session = self._live
        if session is None or session.last_geometry is None:
            return False
        node = find_stage_node(self.scene, session.ct_node.GetID(), stage)
        if node is None:
            return False
        layout.show_in_fluoro_view(self.scene, node, session.last_geometry, fit=False)
        return True

    def request_render(self, preview: bool = True) -> None:
        """Schedule a live render: a throttled preview (if ``preview``) and a debounced full render."""
        if self._live is None or not self._live.enabled:
            return
        if self.scheduler.synchronous:
            self._render_live(preview=False)
            return
        if preview:
            self._schedule("preview", self.preview_delay_s, lambda: self._render_live(preview=True), restart=False)
        self._schedule("full", self.full_delay_s, lambda: self._render_live(preview=False), restart=True)

    def render_now(self, preview: bool = False) -> SimulationOutput | None:
        """Render the live session at once (errors propagate, unlike scheduled renders)."""
        if self._live is None:
            raise InputError("Nothing to render: no live simulation.", "Run simulate(..., live=True) first.")
        return self._render(self._live, preview=preview)

    def _schedule(self, key, delay, callback, restart) -> None:
        self.scheduler.call_later(key, delay, callback, restart=restart)

    def _observe(self, obj, event, callback) -> None:
        tag = obj.AddObserver(event, callback)
        self._live.observations.append((obj, tag))

    def _observe_landmarks(self, node) -> None:
        if node is None:
            return
        for event in (node.PointModifiedEvent, node.PointAddedEvent, node.PointRemovedEvent,
                      node.TransformModifiedEvent):
            self._observe(node, event, self._on_landmarks_modified)

    def _on_carm_pose_modified(self, caller, event) -> None:
        if self._setting_pose or not self.pose_listeners:
            return
        try:
            pose = pose_of(caller)
            alpha, beta, roll = angles_from_pose(pose)
        except InputError as error:
            self._report(error)
            return
        for listener in list(self.pose_listeners):
            listener(alpha, beta, roll, pose)

    def _on_transform_modified(self, caller, event) -> None:
        if self._live is not None and not self._quiet:
            self.request_render()

    def _on_ct_modified(self, caller, event) -> None:
        session = self._live
        if session is None:
            return
        voxels_time = voxel_modified_time(session.ct_node)
        if event == "ModifiedEvent" and voxels_time == session.voxels_time:
            return   # a name, display or other change of the node: the image stands
        session.voxels_time = voxels_time
        self.request_render()

    def _on_landmarks_modified(self, caller, event) -> None:
        if self._live is None:
            return
        self._live.landmarks = None
        self._schedule("landmarks", self.landmarks_delay_s, self._update_landmarks_live, restart=False)

    def _live_landmarks(self, session: _LiveSession):
        if session.landmarks_node is None:
            return None
        if session.landmarks is None:
            session.landmarks = landmarks_from_node(session.landmarks_node)
        return session.landmarks

    def _update_landmarks_live(self) -> None:
        session = self._live
        if session is None or session.last_geometry is None:
            return
        try:
            if session.landmarks_node is None:
                return
            try:
                landmarks = self._live_landmarks(session)
            except InputError:
                self._clear_projected(session)
                raise
            projected = project_landmarks(landmarks, session.last_geometry)
            update_projected_landmarks_node(self.scene, session.landmarks_node, projected, session.last_geometry,
                                            view_node_ids=self._overlay_view_ids())
            self.stats["landmark_updates"] += 1
        except Exception as error:  # a timer callback: report, never raise
            self._report(error)

    def _clear_projected(self, session: _LiveSession) -> None:
        node = find_projected_node(self.scene, session.landmarks_node)
        if node is not None:
            node.RemoveAllControlPoints()

    def _render_live(self, preview: bool, scatter_refresh: bool = False) -> None:
        session = self._live
        if session is None or not session.enabled:
            return
        try:
            output = self._render(session, preview=preview, scatter_refresh=scatter_refresh)
        except Exception as error:  # a timer callback: report, never raise
            self._report(error)
            return
        for listener in list(self.render_listeners):
            listener(output)

    def _render(self, session: _LiveSession, preview: bool, scatter_refresh: bool = False) -> SimulationOutput:
        started = time.perf_counter()
        simulator = self.simulator_for(session.ct_node, session.settings)
        geometry = session.setup.geometry(pose_of(session.transform_node), preview=preview)
        try:
            landmarks = self._live_landmarks(session)
        except InputError as error:  # e.g. every point deleted: render the image, report the landmarks
            landmarks = None
            self._clear_projected(session)
            self._report(error)
        # Scatter: a still pose whose Monte Carlo is not cached shows the last scatter at once and runs the
        # MC on a worker thread (the kernel releases the GIL, the panel stays responsive); when it is done
        # the pose is rendered again, now with its own scatter. Previews never run it.
        deferred = (not preview and not self.scheduler.synchronous and simulator.settings.wants_scatter()
                    and not simulator.scatter_ready(geometry))
        result = simulator.render(geometry, landmarks=landmarks, preview=preview or deferred)
        if deferred and not simulator.scatter_ready(geometry):
            self._start_scatter(simulator, geometry)
        self.stats["previews" if preview else ("scatter_refreshes" if scatter_refresh else "renders")] += 1
        stages = self._choose_stages(result, session.stages)
        display = self._choose_display_stage(stages, session.display_stage)
        size = _detector_size(geometry)
        fit = session.fitted_size_mm is None or not np.allclose(size, session.fitted_size_mm)
        output = self._write_outputs(session.ct_node, result, geometry, stages, display, session.landmarks_node,
                                     session.transform_node, {}, preview=preview, window_level=not preview,
                                     show=True, fit=fit)
        session.fitted_size_mm = size
        session.last_geometry = geometry
        session.last_output = output
        output.seconds = time.perf_counter() - started
        return output

    def _start_scatter(self, simulator, geometry) -> None:
        import threading

        job = self._scatter_job
        if job is not None and job["thread"].is_alive() and job["geometry"] is geometry:
            return
        job = {"geometry": geometry, "simulator": simulator, "error": None}

        def work():
            try:
                simulator.prepare_scatter(geometry)
            except Exception as error:  # reported on the main thread by the poll
                job["error"] = error

        job["thread"] = threading.Thread(target=work, name="DeepDRR scatter", daemon=True)
        self._scatter_job = job
        job["thread"].start()
        self.stats["scatter_jobs"] += 1
        self._schedule("scatter", 0.2, self._poll_scatter, restart=True)

    def _poll_scatter(self) -> None:
        job = self._scatter_job
        if job is None:
            return
        job["thread"].join(timeout=0.02)   # a short wait: a virtual-time scheduler polls without pause
        if job["thread"].is_alive():
            self._schedule("scatter", 0.2, self._poll_scatter, restart=True)
            return
        self._scatter_job = None
        if job["error"] is not None:
            self._report(job["error"])
            return
        session = self._live
        if session is not None and session.last_geometry is job["geometry"]:
            self._render_live(preview=False, scatter_refresh=True)

    def _report(self, error: Exception) -> None:
        if not isinstance(error, (InputError, SimulationCancelled)):
            _LOG.exception("DeepDRR live update failed")
        for listener in list(self.error_listeners):
            listener(error)


def _part(progress, start: float, end: float):
    """``progress`` mapped so that 0..1 covers start..end of it (None stays None)."""
    if progress is None:
        return None
    return lambda fraction: progress(start + (end - start) * float(fraction))


def _carm_from_dict(values: dict) -> CArm:
    known = {f.name for f in fields(CArm)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"Unknown C-arm field(s): {', '.join(unknown)}.",
                         f"Use the fields of CArm: {', '.join(sorted(known))} (e.g. {{'alpha_deg': 30.0}}).")
    return CArm(**values)


def _node_id(node):
    return node.GetID() if node is not None else None


def _angle_difference(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def _detector_size(geometry: DetectorGeometry) -> tuple:
    spacing_u, spacing_v = geometry.pixel_spacing
    return (round(geometry.width * spacing_u, 6), round(geometry.height * spacing_v, 6))
