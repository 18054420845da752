"""DeepDRR: simulate fluoroscopy from a CT, with a C-arm you can drag.

This file is the thin top layer of the module: the Module (metadata), the
parameter node, the Widget's wiring, a Logic that delegates to
``DeepDRRSlicerLib.mrml.logic.DeepDRRLogic``, and the self-test. The layers
below it, each importing only those before it: the engine (``DeepDRRSlicerLib``,
no Slicer, no Qt), its ``mrml`` subpackage (MRML, no Qt) and its ``gui``
subpackage (the panel's sections, dialogs and timers; the only Lib code that
imports qt/ctk). They are imported inside functions only: at file scope this
module imports nothing beyond the standard library, Slicer, vtk, qt and ctk,
so it loads even before the engine's dependencies are installed.
"""

import enum
import os
import time
from typing import Annotated, Optional

import ctk  # noqa: F401  (custom widgets of the .ui file)
import qt
import vtk

import slicer
from slicer import (
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _resourcePath(relativePath: str) -> str:
    """``Resources/<relativePath>``: next to this file in a Slicer build, else where ``DeepDRRSlicerLib.resources``
    finds it (one level up in the source tree)."""
    besideModule = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", relativePath)
    if os.path.exists(besideModule):
        return besideModule
    try:
        from DeepDRRSlicerLib.resources import resource_path

        return str(resource_path(*relativePath.split("/")))
    except FileNotFoundError:
        return besideModule


class DeepDRRSlicer(ScriptedLoadableModule):
    """Module metadata. See https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py"""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DeepDRR")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Simulation")]
        self.parent.dependencies = []
        self.parent.contributors = ["DeepDRRSlicer developers"]
        self.parent.helpText = _("""
Simulates fluoroscopy (X-ray images) from a CT volume, after the DeepDRR method.
<ol>
<li>Pick the <b>CT volume</b> and, optionally, a <b>landmarks</b> point list.</li>
<li>Press <b>Simulate</b>. A <i>Fluoro</i> view opens beside the 3D view with the simulated image;
the C-arm (source, detector outline, beam) appears in 3D around the patient.</li>
<li>Drag the C-arm transform's handles in the 3D view, or move the &alpha; / &beta; / SID sliders:
the Fluoro view updates live (a quick low-resolution preview while moving, full resolution when it stops).</li>
<li>Landmarks are shown as labelled points at their projected positions in the Fluoro view.</li>
<li><b>Stage shown</b> switches between the stages the engine computes (primary image, per-material line integrals).</li>
</ol>
The image is displayed like an AP radiograph on a light box at &alpha; = &beta; = 0: the head at the top,
the patient's right on the left. The same features are available from the Python console through the module
logic (<code>slicer.util.getModuleLogic("DeepDRRSlicer").simulate(...)</code>); see the README.
Simulation works in a stock Slicer. <b>Install accelerators</b> (after asking) adds numba, which makes the
projector 10&ndash;50 times faster, and xraydb, for attenuation data beyond the bundled table.
""")
        self.parent.acknowledgementText = _("""
DeepDRRSlicer is an independent implementation of the method of
M. Unberath, J.-N. Zaech, S. C. Lee, B. Bier, J. Fotouhi, M. Armand, N. Navab:
<i>DeepDRR &ndash; A Catalyst for Machine Learning in Fluoroscopy-guided Procedures</i>,
MICCAI 2018 (<a href="https://arxiv.org/abs/1803.08606">arXiv:1803.08606</a>). Please cite it when you use
simulated images. The bundled sample CT comes from the TotalSegmentator test data (Wasserthal et al. 2023).
""")
        iconPath = _resourcePath("Icons/DeepDRRSlicer.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        # Register the Fluoro layout at startup, so that a scene saved with it opens with it.
        slicer.app.connect("startupCompleted()", _registerFluoroLayout)

    def resourcePath(self, filename):
        return _resourcePath(filename)


def _registerFluoroLayout():
    from DeepDRRSlicerLib.gui.views import register_fluoro_layout

    register_fluoro_layout()


class FluoroStage(enum.Enum):
    """Stages the Fluoro view can show (values are the engine's stage names).

    Keep in step with ``DeepDRRSlicerLib.mrml.stages.KNOWN_STAGES`` (a CI test checks it).
    """

    PRIMARY = "primary"
    SCATTER = "scatter"
    TOTAL = "total"
    NOISY = "noisy"
    FINAL = "final"
    SPR = "spr"
    SCATTER_RELATIVE_ERROR = "scatter_relative_error"
    LINE_INTEGRAL = "line_integral"
    LINE_INTEGRAL_AIR = "line_integral_air"
    LINE_INTEGRAL_LUNG = "line_integral_lung"
    LINE_INTEGRAL_ADIPOSE = "line_integral_adipose"
    LINE_INTEGRAL_WATER = "line_integral_water"
    LINE_INTEGRAL_SOFT_TISSUE = "line_integral_soft_tissue"
    LINE_INTEGRAL_BONE = "line_integral_bone"
    LINE_INTEGRAL_TITANIUM_ALLOY = "line_integral_titanium_alloy"
    LINE_INTEGRAL_STAINLESS_STEEL = "line_integral_stainless_steel"
    LINE_INTEGRAL_COBALT_CHROMIUM = "line_integral_cobalt_chromium"

    def label(self) -> str:
        from DeepDRRSlicerLib.mrml.stages import stage_title

        return stage_title(self.value)


@parameterNodeWrapper
class DeepDRRSlicerParameterNode:
    """What the module's GUI holds; saved with the scene.

    ct - the CT volume to simulate from.
    landmarks - optional point list projected onto the image.
    carmTransform - the C-arm pose (isocentre and orientation); created at the CT's centre if empty.
    alpha, beta - C-arm angles in degrees (orbital, LAO positive; angulation, cranial positive).
    sid, sod - source-to-detector and source-to-isocentre distances in mm.
    detectorPixels, detectorSize - pixels per side and side length (mm) of the square detector.
    kvp, mas, detectorThickness, scatterPhotons, seed, grid - tube voltage, exposure per image, CsI thickness
        (mm), Monte Carlo photons, seed of the scatter and the noise, anti-scatter grid.
    mode - "polychromatic" (the X-ray physics) or "line-integral" (the plain line integral, a classic DRR).
    stage, livePreview - the stage the Fluoro view shows; re-render while the C-arm moves.
    materials, densityModel, metal - material decomposition (network/threshold, calibrated/deepdrr, implant metal).
    materialSegmentation - optional segmentation whose segments (named after a material) override the materials.
    """

    ct: vtkMRMLScalarVolumeNode
    landmarks: vtkMRMLMarkupsFiducialNode
    carmTransform: vtkMRMLLinearTransformNode
    alpha: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    beta: Annotated[float, WithinRange(-90.0, 90.0)] = 0.0
    sid: Annotated[float, WithinRange(500.0, 1500.0)] = 1020.0
    sod: Annotated[float, WithinRange(100.0, 1400.0)] = 530.0
    detectorPixels: Annotated[int, WithinRange(16, 1536)] = 256
    detectorSize: Annotated[float, WithinRange(50.0, 500.0)] = 298.0
    kvp: Annotated[float, WithinRange(40.0, 150.0)] = 90.0
    mas: Annotated[float, WithinRange(0.001, 100.0)] = 0.05
    detectorThickness: Annotated[float, WithinRange(0.1, 2.0)] = 0.6
    scatterPhotons: Annotated[int, WithinRange(10000, 100000000)] = 200000
    seed: Annotated[int, WithinRange(0, 1000000)] = 0
    grid: bool = False
    mode: Annotated[str, Choice(["polychromatic", "line-integral"])] = "polychromatic"
    stage: FluoroStage = FluoroStage.PRIMARY
    livePreview: bool = True
    materials: Annotated[str, Choice(["network", "threshold"])] = "network"
    densityModel: Annotated[str, Choice(["calibrated", "deepdrr"])] = "calibrated"
    metal: Annotated[str, Choice(["titanium", "steel", "cocr", "none"])] = "titanium"
    materialSegmentation: vtkMRMLSegmentationNode


class DeepDRRSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. See https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py"""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.sections = []
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def resourcePath(self, filename):
        return _resourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from DeepDRRSlicerLib.gui.panel import PanelContext, panel_sections
        from DeepDRRSlicerLib.gui.status import StatusLine

        # Widgets come from the .ui file; each bound widget carries a "SlicerParameterName" property.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepDRRSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.uiWidget = uiWidget
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.status = StatusLine(self.ui.statusLabel)

        self.logic = DeepDRRSlicerLogic()
        self.logic.poseListeners.append(self._onCArmMoved)
        self.logic.renderListeners.append(self._onRendered)
        self.logic.errorListeners.append(self._onLiveError)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Each section (DeepDRRSlicerLib/gui/*_section.py) connects its own buttons.
        context = PanelContext(ui=self.ui, logic=self.logic, status=self.status,
                               parameters=lambda: self._parameterNode, rendered=self._onRendered)
        self.sections = [section(context) for section in panel_sections()]
        for section in self.sections:
            section.setup()

        self.initializeParameterNode()
        for section in self.sections:
            section.ready()

    def cleanup(self) -> None:
        self.removeObservers()
        for section in self.sections:
            section.cleanup()
        if self.logic is not None:
            self.logic.stopLive()
            for listeners in (self.logic.poseListeners, self.logic.renderListeners, self.logic.errorListeners):
                listeners.clear()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The live view keeps following the C-arm in other modules; only the GUI binding stops.
        if self._parameterNode:
            self._releaseParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.stopLive()
        self.logic.clearCache()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.ct:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and firstVolumeNode.GetClassName() == "vtkMRMLScalarVolumeNode" \
                    and not firstVolumeNode.GetAttribute("DeepDRR.Stage"):
                self._parameterNode.ct = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[DeepDRRSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._releaseParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            from DeepDRRSlicerLib.gui.binding import connect_gui

            self._parameterNodeGuiTag = connect_gui(self._parameterNode, self.uiWidget)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _releaseParameterNode(self) -> None:
        """Undo ``setParameterNode``'s GUI binding and observation (the parameter node itself stays)."""
        from DeepDRRSlicerLib.gui.binding import disconnect_gui

        disconnect_gui(self._parameterNode, self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    # ---------------------------------------------------------------- reactions (forwarded to the sections)
    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is not None:
            for section in self.sections:
                section.parameters_modified(self._parameterNode)

    def _onCArmMoved(self, alpha, beta, roll, pose) -> None:
        for section in self.sections:
            section.carm_moved(alpha, beta, roll, pose)

    def _onRendered(self, output) -> None:
        for section in self.sections:
            section.rendered(output)

    def _onLiveError(self, error) -> None:
        self.status.show(str(error), error=True)


class DeepDRRSlicerLogic(ScriptedLoadableModuleLogic):
    """The module logic: a Slicer-side front of ``DeepDRRSlicerLib.mrml.logic.DeepDRRLogic``.

    Python console::

        logic = slicer.util.getModuleLogic("DeepDRRSlicer")   # or DeepDRRSlicer.DeepDRRSlicerLogic()
        from DeepDRRSlicerLib.geometry import CArm
        out = logic.simulate(ctNode, CArm(alpha_deg=30, width=256, height=256, pixel_spacing_mm=298 / 256),
                             landmarksNode=pointsNode)
        out.node("primary"), out.landmarks_node, out.transform_node

    ``simulate`` runs synchronously; with ``live=True`` the C-arm transform is
    then followed, renders running on Qt timers.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._lib = None
        # The widget's callbacks for the live loop; shared with every ``lib`` (one per scene).
        self.poseListeners, self.renderListeners, self.errorListeners = [], [], []

    @property
    def lib(self):
        """The Qt-free logic (``DeepDRRLogic``) bound to ``slicer.mrmlScene``."""
        if self._lib is None or self._lib.scene is not slicer.mrmlScene:
            from DeepDRRSlicerLib.gui.timers import QtTimerScheduler
            from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic

            self._lib = DeepDRRLogic(slicer.mrmlScene, scheduler=QtTimerScheduler())
            self._lib.pose_listeners = self.poseListeners
            self._lib.render_listeners = self.renderListeners
            self._lib.error_listeners = self.errorListeners
        return self._lib

    def getParameterNode(self):
        return DeepDRRSlicerParameterNode(super().getParameterNode())

    # ---- console API
    def simulate(self, ctNode, carm=None, landmarksNode=None, stages=None, **kwargs):
        """Simulate fluoroscopy of ``ctNode``; returns a ``SimulationOutput`` (output nodes and more).

        ``carm``: a ``DeepDRRSlicerLib.geometry.CArm`` (or a dict of its fields), a
        ``DetectorGeometry``, or None for the pose of the C-arm transform.
        ``landmarksNode``: optional markups point list, projected onto the image.
        ``stages``: stage names to output (default: all computed).
        Keywords: ``transformNode``, ``setup`` (``CArmSetup``), ``settings`` (``SimulationSettings``),
        ``display_stage``, ``show``, ``live``, ``progress``. See ``DeepDRRLogic.simulate``.
        """
        return self.lib.simulate(ctNode, carm, landmarksNode, stages, **kwargs)

    def simulateFromParameters(self, parameters, progress=None):
        """``simulate`` with the panel's parameters, then following the C-arm transform live."""
        from DeepDRRSlicerLib.mrml.panel_parameters import simulate_from_parameters

        return simulate_from_parameters(self.lib, parameters, progress=progress)

    def updateLiveFromParameters(self, parameters) -> None:
        from DeepDRRSlicerLib.mrml.panel_parameters import update_live_from_parameters

        update_live_from_parameters(self.lib, parameters)

    def createCArmTransform(self, ctNode, alpha=0.0, beta=0.0):
        """A new C-arm transform at the centre of ``ctNode``, pointing at (alpha, beta), handles shown."""
        from DeepDRRSlicerLib.mrml.carm_transform import create_carm_transform, pose_from_angles

        center = self.lib.volume_for(ctNode).center_ras()
        return create_carm_transform(slicer.mrmlScene, pose=pose_from_angles(alpha, beta, center))

    def setCArmAngles(self, transformNode, alpha, beta):
        return self.lib.set_carm_angles(transformNode, alpha, beta)

    def centerCArmOnCT(self, transformNode, ctNode):
        self.lib.center_carm_on_ct(transformNode, ctNode)

    def isLive(self) -> bool:
        return self._lib is not None and self._lib.live

    def stopLive(self) -> None:
        if self._lib is not None:
            self._lib.stop_live()

    def clearCache(self) -> None:
        if self._lib is not None:
            self._lib.clear_cache()


class DeepDRRSlicerTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: runs headless, without a GPU and without installing anything.

    In a stock Slicer (no numba, no xraydb) the engine runs its pure-numpy
    projector and bundled attenuation table, so every check runs everywhere.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GuiIsBound()
        self.setUp()
        self.test_BadInputsAreExplained()
        self.setUp()
        self.test_SimulateMoveAndLandmarks()

    def _loadSampleData(self):
        from DeepDRRSlicerLib import resources

        ctNode = slicer.util.loadVolume(str(resources.sample_ct_path()))
        landmarksNode = slicer.util.loadMarkups(str(resources.sample_landmarks_path()))
        return ctNode, landmarksNode

    def test_GuiIsBound(self):
        self.delayDisplay("Checking that every control of the module panel is bound to the parameter node")
        widget = slicer.util.getModuleWidget("DeepDRRSlicer")
        parameters = widget.logic.getParameterNode()
        widget.setParameterNode(parameters)
        from slicer.parameterNodeWrapper import findChildWidgetForParameter

        for name in parameters.allParameters:
            self.assertIsNotNone(findChildWidgetForParameter(widget.uiWidget, name), f"no widget is bound to '{name}'")
        parameters.alpha = 30.0
        self.assertAlmostEqual(widget.ui.alphaSlider.value, 30.0)
        widget.ui.betaSlider.value = -15.0
        self.assertAlmostEqual(parameters.beta, -15.0)
        parameters.stage = FluoroStage.LINE_INTEGRAL_BONE
        self.assertEqual(widget.ui.stageComboBox.currentIndex, list(FluoroStage).index(FluoroStage.LINE_INTEGRAL_BONE))
        self.delayDisplay("GUI binding OK")

    def test_BadInputsAreExplained(self):
        self.delayDisplay("Checking the messages for bad inputs")
        from DeepDRRSlicerLib.errors import InputError

        logic = DeepDRRSlicerLogic()
        with self.assertRaisesRegex(InputError, "No CT volume is selected"):
            logic.simulate(None)
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
        with self.assertRaisesRegex(InputError, "label map"):
            logic.simulate(labelNode)
        ctNode, _landmarks = self._loadSampleData()
        emptyPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
        with self.assertRaisesRegex(InputError, "has no control points"):
            logic.simulate(ctNode, None, emptyPoints)
        self.delayDisplay("Input checks OK")

    def test_SimulateMoveAndLandmarks(self):
        import numpy as np

        from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm
        from DeepDRRSlicerLib.landmarks import project_landmarks
        from DeepDRRSlicerLib.mrml.landmark_nodes import landmarks_from_node
        from DeepDRRSlicerLib.mrml.layout import FLUORO_LAYOUT_ID

        self.delayDisplay("Loading the bundled CT and landmarks")
        ctNode, landmarksNode = self._loadSampleData()
        voxelsBefore, matrixBefore = slicer.util.arrayFromVolume(ctNode).copy(), _ijkToRAS(ctNode)

        self.delayDisplay("Simulating")
        logic = DeepDRRSlicerLogic()
        center = logic.lib.volume_for(ctNode).center_ras()
        carm = CArm(width=96, height=96, pixel_spacing_mm=DETECTOR_SIDE_MM / 96, isocenter_ras=tuple(center))
        output = logic.simulate(ctNode, carm, landmarksNode, live=True)
        self.delayDisplay(f"Simulated with the {output.result.backend} backend")
        primary = output.node("primary")
        geometry = output.geometry
        self.assertEqual(slicer.util.arrayFromVolume(primary).shape, (1, 96, 96))
        corner = _ijkToRAS(primary)[:3, 3]
        np.testing.assert_allclose(corner, geometry.pixel_center(0, 0), atol=1e-6)

        expected = project_landmarks(landmarks_from_node(landmarksNode), geometry)
        projectedNode = output.landmarks_node
        self.assertEqual(projectedNode.GetNumberOfControlPoints(), len(expected))
        for index, item in enumerate(expected):
            self.assertEqual(projectedNode.GetNthControlPointLabel(index), item.label)
            if item.visible:
                position = np.array(projectedNode.GetNthControlPointPositionVector(index))
                np.testing.assert_allclose(position, geometry.pixel_center(item.u, item.v), atol=1e-6)
        self.assertIn("vtkMRMLSliceNodeFluoro", projectedNode.GetDisplayNode().GetViewNodeIDs())

        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            self.assertEqual(layoutManager.layout, FLUORO_LAYOUT_ID)
            self.assertIsNotNone(layoutManager.sliceWidget("Fluoro"))

        self.delayDisplay("Moving the C-arm 20 mm towards the patient's left")
        renders = logic.lib.stats["renders"]
        pose = slicer.util.arrayFromTransformMatrix(output.transform_node)
        pose[0, 3] -= 20.0
        slicer.util.updateTransformMatrixFromArray(output.transform_node, pose)
        deadline = time.time() + 30.0
        while logic.lib.stats["renders"] == renders and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        self.assertGreater(logic.lib.stats["renders"], renders, "no full-resolution render after the move")
        np.testing.assert_allclose(_ijkToRAS(primary)[:3, 3] - corner, [-20.0, 0.0, 0.0], atol=1e-6)
        self.assertEqual(logic.lib.stats["decompositions"], 1)

        logic.stopLive()
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), voxelsBefore)
        np.testing.assert_array_equal(_ijkToRAS(ctNode), matrixBefore)
        self.delayDisplay("Test passed")


def _ijkToRAS(volumeNode):
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)
