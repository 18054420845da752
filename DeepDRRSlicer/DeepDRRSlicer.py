"""DeepDRR: simulate fluoroscopy from a CT, with a C-arm you can drag.

This file is the thin Qt layer of the module: the Module (metadata), the
parameter node, the Widget, a Logic that delegates to
``DeepDRRSlicerLib.mrml.logic.DeepDRRLogic``, and the self-test. Every MRML
adapter and all the logic live in ``DeepDRRSlicerLib`` (the engine and its
``mrml`` subpackage), which is imported inside functions only: at file scope
this module imports nothing beyond the standard library, Slicer, vtk, qt and
ctk, so it loads even before the engine's dependencies are installed.
"""

import enum
import os
import time
from typing import Annotated, Optional

import ctk  # noqa: F401  (custom widgets of the .ui file)
import qt
import vtk

import slicer
from slicer import vtkMRMLLinearTransformNode, vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _resourcePath(relativePath: str) -> str:
    """Path of ``Resources/<relativePath>``, in a Slicer build (next to this file) or the source tree.

    A Slicer build copies the top-level Resources/ folder next to this file; in
    the source tree it sits one level up, beside the ``DeepDRRSlicer`` folder.
    ``DeepDRRSlicerLib.resources`` knows every place it can be.
    """
    besideModule = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", relativePath)
    if os.path.exists(besideModule):
        return besideModule
    try:
        from DeepDRRSlicerLib.resources import resource_path

        return str(resource_path(*relativePath.split("/")))
    except FileNotFoundError:
        return besideModule


def _nodeID(node):
    return node.GetID() if node is not None else None


#
# DeepDRRSlicer
#


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
    """Add the "Fluoro" layout (3D view + Fluoro slice view) to the application's layouts."""
    layoutManager = slicer.app.layoutManager()
    if layoutManager is None:  # no main window
        return
    from DeepDRRSlicerLib.mrml import layout

    layout.register_layout(layoutManager.layoutLogic().GetLayoutNode())


#
# Parameter node
#


class FluoroStage(enum.Enum):
    """Stages the Fluoro view can show (values are the engine's stage names).

    Keep in step with ``DeepDRRSlicerLib.mrml.stages.KNOWN_STAGES`` (a CI test checks it).
    """

    PRIMARY = "primary"
    SCATTER = "scatter"
    TOTAL = "total"
    NOISY = "noisy"
    FINAL = "final"
    LINE_INTEGRAL = "line_integral"
    LINE_INTEGRAL_AIR = "line_integral_air"
    LINE_INTEGRAL_SOFT_TISSUE = "line_integral_soft_tissue"
    LINE_INTEGRAL_BONE = "line_integral_bone"

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
    kvp - tube voltage.
    smoothInterpolation - trilinear ray march instead of exact voxel paths (hides the grid of coarse CTs).
    stage - the stage the Fluoro view shows.
    livePreview - re-render while the C-arm moves.
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
    smoothInterpolation: bool = False
    stage: FluoroStage = FluoroStage.PRIMARY
    livePreview: bool = True


#
# Timers for the Lib logic's live loop
#


class QtTimerScheduler:
    """Runs the Lib logic's delayed calls on ``qt.QTimer`` (see ``DeepDRRSlicerLib.mrml.scheduler``)."""

    synchronous = False

    def __init__(self):
        self._timers = {}
        self._callbacks = {}

    def call_later(self, key, delay_s, callback, *, restart):
        self._callbacks[key] = callback
        timer = self._timers.get(key)
        if timer is None:
            timer = qt.QTimer()
            timer.setSingleShot(True)
            timer.connect("timeout()", lambda key=key: self._fire(key))
            self._timers[key] = timer
        if timer.isActive() and not restart:
            return
        timer.start(max(0, int(round(delay_s * 1000.0))))

    def _fire(self, key):
        callback = self._callbacks.pop(key, None)
        if callback is not None:
            callback()

    def cancel(self, key):
        timer = self._timers.get(key)
        if timer is not None:
            timer.stop()
        self._callbacks.pop(key, None)

    def cancel_all(self):
        for key in list(self._timers):
            self.cancel(key)


#
# DeepDRRSlicerWidget
#


class DeepDRRSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. See https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py"""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._syncingFromPose = False

    def resourcePath(self, filename):
        return _resourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        # Widgets come from the .ui file; each bound widget carries a "SlicerParameterName" property.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepDRRSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.uiWidget = uiWidget
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DeepDRRSlicerLogic()
        self.logic.addListeners(pose=self._onCArmMoved, rendered=self._onRendered, error=self._onLiveError)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.simulateButton.connect("clicked(bool)", self.onSimulateButton)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.ui.centerButton.connect("clicked(bool)", self.onCenterButton)

        self.initializeParameterNode()
        self._showDependencyStatus()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.stopLive()
            self.logic.removeListeners()

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
            self._parameterNodeGuiTag = self._connectGui()
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _connectGui(self):
        """Bind every widget of the .ui file that has a "SlicerParameterName" dynamic property; returns the tag.

        Same widgets as the wrapper's ``connectGui(self.ui)``, but that method returns None (it drops the
        tag of ``connectParametersToGui``), so ``disconnectGui`` could never release a binding: the old
        bindings would stay live after ``exit``/``enter`` and, when the new binding refills the stage
        combo box, write its transient indices into the parameter node (resetting the stage).
        """
        widgets = {}
        for widget in self.uiWidget.findChildren(qt.QWidget):
            name = widget.property("SlicerParameterName")
            if name:
                widgets[str(name)] = widget
        return self._parameterNode.connectParametersToGui(widgets)

    def _releaseParameterNode(self) -> None:
        """Undo ``setParameterNode``'s GUI binding and observation (the parameter node itself stays)."""
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    # ---------------------------------------------------------------- reactions
    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        hasCT = parameters.ct is not None
        self.ui.simulateButton.enabled = hasCT
        self.ui.simulateButton.toolTip = (_("Simulate the image for the current pose and show it in the Fluoro view.")
                                         if hasCT else _("Select a CT volume first."))
        self.ui.centerButton.enabled = hasCT and parameters.carmTransform is not None
        if self._syncingFromPose:
            return
        try:
            if parameters.carmTransform is not None:
                # The sliders write the transform; a live view re-renders from the transform's event.
                self.logic.setCArmAngles(parameters.carmTransform, parameters.alpha, parameters.beta)
            if not self.logic.isLive():
                return
            if (_nodeID(parameters.ct), _nodeID(parameters.carmTransform)) != self.logic.liveNodeIDs():
                self.logic.stopLive()
                self._setStatus(_("The CT or the C-arm transform changed: press Simulate."))
                return
            self.logic.updateLiveFromParameters(parameters)
        except Exception as error:  # e.g. SOD >= SID while a slider moves: say so, keep the last image
            self._onLiveError(error)

    def _onCArmMoved(self, alpha, beta, roll, pose) -> None:
        """The C-arm transform moved (handles, another module, a script): show its angles on the sliders."""
        parameters = self._parameterNode
        if parameters is None:
            return
        self._syncingFromPose = True
        try:
            with slicer.util.NodeModify(parameters):
                if abs(parameters.alpha - alpha) > 1e-3:
                    parameters.alpha = float(min(180.0, max(-180.0, alpha)))
                if abs(parameters.beta - beta) > 1e-3:
                    parameters.beta = float(min(90.0, max(-90.0, beta)))
        finally:
            self._syncingFromPose = False

    def _onRendered(self, output) -> None:
        height, width = output.geometry.shape
        kind = _("preview") if output.preview else _("full resolution")
        message = _("{stage}: {width} x {height} px ({kind}) in {seconds:.2f} s").format(
            stage=output.display_stage, width=width, height=height, kind=kind, seconds=output.seconds)
        wanted = self._parameterNode.stage.value if self._parameterNode else output.display_stage
        if wanted != output.display_stage:
            message += " " + _("('{wanted}' is not computed by this version)").format(wanted=wanted)
        self._setStatus(message)
        self._updateStageChoices(output.stages)

    def _onLiveError(self, error) -> None:
        self._setStatus(str(error), error=True)

    def _setStatus(self, text, error=False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c03030" if error else ""

    def _updateStageChoices(self, computedStages) -> None:
        """Grey out the stages the last render did not compute."""
        model = self.ui.stageComboBox.model()
        if not hasattr(model, "item"):
            return
        for index, stage in enumerate(FluoroStage):
            item = model.item(index)
            if item is not None:
                item.setEnabled(stage.value in computedStages)

    def _showDependencyStatus(self) -> None:
        from DeepDRRSlicerLib.mrml import dependencies

        missing = dependencies.missing_requirements()
        self.ui.installButton.visible = bool(missing)
        if missing:
            self._setStatus(_("Running without {names}: simulation works but is slower. "
                              "Press 'Install accelerators...' to speed it up.").format(
                                  names=", ".join(r.name for r in missing)))

    # ---------------------------------------------------------------- buttons
    def onSimulateButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Simulation failed."), waitCursor=True):
            parameters = self._parameterNode
            self.logic.stopLive()
            if parameters.carmTransform is None:
                parameters.carmTransform = self.logic.createCArmTransform(parameters.ct, parameters.alpha,
                                                                         parameters.beta)
            else:
                self.logic.setCArmAngles(parameters.carmTransform, parameters.alpha, parameters.beta)

            from DeepDRRSlicerLib.errors import SimulationCancelled

            progressDialog = slicer.util.createProgressDialog(
                windowTitle=_("DeepDRR"), labelText=_("Simulating fluoroscopy..."), maximum=100,
                windowModality=qt.Qt.ApplicationModal)
            progressDialog.setCancelButtonText(_("Cancel"))

            def progress(fraction):
                progressDialog.value = int(round(100 * fraction))
                slicer.app.processEvents()
                if progressDialog.wasCanceled:
                    raise SimulationCancelled()

            try:
                output = self.logic.simulateFromParameters(parameters, progress=progress)
            except SimulationCancelled:
                self._setStatus(_("Simulation cancelled."))
                return
            finally:
                progressDialog.close()
            self._fitViews()
            self._onRendered(output)

    def onInstallButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=False):
            self._ensureDependencies()

    def onCenterButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot move the C-arm."), waitCursor=True):
            self.logic.centerCArmOnCT(self._parameterNode.carmTransform, self._parameterNode.ct)

    def _ensureDependencies(self) -> bool:
        """Install the missing accelerator packages, with the user's consent. Returns whether all are present."""
        from DeepDRRSlicerLib.mrml import dependencies

        if not dependencies.missing_requirements():
            self.ui.installButton.visible = False
            return True
        installed = dependencies.install(
            slicer, confirm=lambda message: slicer.util.confirmOkCancelDisplay(message, windowTitle=_("DeepDRR")))
        self._showDependencyStatus()
        if not installed:
            self._setStatus(_("Nothing was installed; simulation keeps using the slower fallbacks."))
        return installed

    def _fitViews(self) -> None:
        """Fit the Fluoro view to the image and the 3D view to the scene (needs the real view sizes)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        slicer.app.processEvents()
        sliceWidget = layoutManager.sliceWidget("Fluoro")
        if sliceWidget is not None:
            sliceWidget.sliceLogic().FitSliceToAll()
        if layoutManager.threeDWidget(0) is not None:
            layoutManager.threeDWidget(0).threeDView().resetFocalPoint()


#
# DeepDRRSlicerLogic
#


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
        self._listeners = {}

    @property
    def lib(self):
        """The Qt-free logic (``DeepDRRLogic``) bound to ``slicer.mrmlScene``."""
        if self._lib is None or self._lib.scene is not slicer.mrmlScene:
            from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic

            self._lib = DeepDRRLogic(slicer.mrmlScene, scheduler=QtTimerScheduler())
            self._attachListeners()
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
        """``simulate`` with the widget's parameters, following the C-arm transform live."""
        return self.lib.simulate(parameters.ct, None, parameters.landmarks, transformNode=parameters.carmTransform,
                                 setup=self.setupFromParameters(parameters),
                                 settings=self.settingsFromParameters(parameters),
                                 display_stage=parameters.stage.value, show=True, live=True, progress=progress)

    def updateLiveFromParameters(self, parameters) -> None:
        self.lib.update_live(setup=self.setupFromParameters(parameters),
                             settings=self.settingsFromParameters(parameters),
                             landmarksNode=parameters.landmarks, display_stage=parameters.stage.value,
                             enabled=parameters.livePreview)

    @staticmethod
    def setupFromParameters(parameters):
        from DeepDRRSlicerLib.mrml.carm_transform import CArmSetup

        return CArmSetup(sid_mm=parameters.sid, sod_mm=parameters.sod, detector_pixels=parameters.detectorPixels,
                         detector_size_mm=parameters.detectorSize)

    @staticmethod
    def settingsFromParameters(parameters):
        from DeepDRRSlicerLib.pipeline import SimulationSettings

        return SimulationSettings(kvp=float(parameters.kvp),
                                  algorithm="trilinear" if parameters.smoothInterpolation else "siddon")

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

    def liveNodeIDs(self):
        """(CT node ID, C-arm transform ID) of the live view, or (None, None)."""
        if self._lib is None:
            return (None, None)
        ctNode, transformNode, _landmarksNode = self._lib.live_nodes()
        return (_nodeID(ctNode), _nodeID(transformNode))

    def stopLive(self) -> None:
        if self._lib is not None:
            self._lib.stop_live()

    def clearCache(self) -> None:
        if self._lib is not None:
            self._lib.clear_cache()

    # ---- listeners (the widget's status and sliders)
    def addListeners(self, pose=None, rendered=None, error=None) -> None:
        self._listeners = {"pose": pose, "rendered": rendered, "error": error}
        if self._lib is not None:
            self._attachListeners()

    def removeListeners(self) -> None:
        self._listeners = {}
        if self._lib is not None:
            self._lib.pose_listeners.clear()
            self._lib.render_listeners.clear()
            self._lib.error_listeners.clear()

    def _attachListeners(self) -> None:
        lib = self._lib
        for name, target in (("pose", lib.pose_listeners), ("rendered", lib.render_listeners),
                             ("error", lib.error_listeners)):
            target.clear()
            if self._listeners.get(name) is not None:
                target.append(self._listeners[name])


#
# DeepDRRSlicerTest
#


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
        voxelsBefore = slicer.util.arrayFromVolume(ctNode).copy()
        matrixBefore = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(matrixBefore)

        self.delayDisplay("Simulating")
        logic = DeepDRRSlicerLogic()
        center = logic.lib.volume_for(ctNode).center_ras()
        carm = CArm(width=96, height=96, pixel_spacing_mm=DETECTOR_SIDE_MM / 96, isocenter_ras=tuple(center))
        output = logic.simulate(ctNode, carm, landmarksNode, live=True)
        self.delayDisplay(f"Simulated with the {output.result.backend} backend")
        primary = output.node("primary")
        geometry = output.geometry
        self.assertEqual(slicer.util.arrayFromVolume(primary).shape, (1, 96, 96))
        ijkToRas = vtk.vtkMatrix4x4()
        primary.GetIJKToRASMatrix(ijkToRas)
        corner = np.array(ijkToRas.MultiplyPoint((0, 0, 0, 1)))[:3]
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
        transform = output.transform_node
        matrix = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToParent(matrix)
        matrix.SetElement(0, 3, matrix.GetElement(0, 3) - 20.0)
        transform.SetMatrixTransformToParent(matrix)
        deadline = time.time() + 30.0
        while logic.lib.stats["renders"] == renders and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        self.assertGreater(logic.lib.stats["renders"], renders, "no full-resolution render after the move")
        primary.GetIJKToRASMatrix(ijkToRas)
        moved = np.array(ijkToRas.MultiplyPoint((0, 0, 0, 1)))[:3]
        np.testing.assert_allclose(moved - corner, [-20.0, 0.0, 0.0], atol=1e-6)
        self.assertEqual(logic.lib.stats["decompositions"], 1)

        logic.stopLive()
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), voxelsBefore)
        matrixAfter = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(matrixAfter)
        for r in range(4):
            for c in range(4):
                self.assertEqual(matrixAfter.GetElement(r, c), matrixBefore.GetElement(r, c))
        self.delayDisplay("Test passed")
