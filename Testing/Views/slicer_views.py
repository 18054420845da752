"""Slicer's own views, rendered offscreen without Qt: what the user of the module sees.

The ``slicer-core`` wheel ships Slicer's rendering code: ``vtkMRMLSliceLogic``
(reslicing, window/level, layer compositing), the slice-view and 3D-view
displayable-manager factories and the managers themselves (Markups, Models,
Transforms, Volume Rendering, Segmentations, ...). Inside Slicer, Qt widgets
(``qMRMLSliceWidget``, ``qMRMLThreeDView``) own a render window each and wire
these classes together; this file does that wiring on offscreen VTK render
windows (EGL, or OSMesa, or an X server if one is there), the same way:

* ``SlicerApplication``: what ``qSlicerApplication`` puts in a scene before any
  module runs (application logic, default colour tables, crosshair, slice
  orientation presets) and the module logics the displayable managers need
  (Markups, Volume Rendering).
* ``SliceView``: a ``vtkMRMLSliceLogic`` on a slice node and a displayable
  manager group made by ``vtkMRMLSliceViewDisplayableManagerFactory``. The one
  piece that is not Slicer's is the blit of the slice logic's output image to
  the window: in Slicer CTK's ``vtkLightBoxRendererManager`` draws it with a
  ``vtkImageMapper`` (window 255, level 127.5) on a background ``vtkActor2D``,
  which is what ``_SliceImageActor`` does (one image, no light box).
* ``ThreeDView``: a ``vtkMRMLViewLogic`` view node and a displayable manager
  group made by ``vtkMRMLThreeDViewDisplayableManagerFactory``.
* ``FluoroLayout``: the module's Fluoro layout, i.e. the 3D view "1" and the
  Fluoro slice view on the module's own layout nodes
  (``DeepDRRSlicerLib.mrml.layout``).

Images come back as numpy ``uint8`` arrays ``(rows, columns, 3)``, row 0 at the
top, like a screenshot. Screen positions are ``(column, row)`` in the same frame,
pixel centres at integers. This is test and documentation tooling, not part of
the product: the module itself never renders.

Run ``python slicer_views.py --probe`` to check that an offscreen OpenGL
context can be made here (exit status 0, or 1 with the reason).
"""

from __future__ import annotations

import os
import sys

if not os.environ.get("DISPLAY") and not os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"):
    # No X server: go straight to EGL instead of failing on X first (VTK falls back to OSMesa after EGL).
    os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"

import numpy as np
import vtk
from vtk.util.numpy_support import vtk_to_numpy

import slicer

__all__ = [
    "offscreen_rendering_problem",
    "SlicerApplication",
    "SliceView",
    "ThreeDView",
    "FluoroLayout",
    "SLICE_VIEW_MANAGERS",
    "THREE_D_VIEW_MANAGERS",
]

#: Displayable managers of a slice view in Slicer: the core ones (qMRMLSliceView) and the modules' ones
#: (Markups, Segmentations, Transforms register theirs when they load).
SLICE_VIEW_MANAGERS = (
    "vtkMRMLVolumeGlyphSliceDisplayableManager",
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLScalarBarDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLTransformsDisplayableManager2D",
)

#: Displayable managers of a 3D view in Slicer (qMRMLThreeDView and the modules).
THREE_D_VIEW_MANAGERS = (
    "vtkMRMLVolumeRenderingDisplayableManager",
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLThreeDReformatDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager3D",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLTransformsDisplayableManager3D",
)


def offscreen_rendering_problem() -> str | None:
    """None when an offscreen OpenGL window renders here; otherwise why not.

    Call it in a child process when a crash is possible (a broken driver can abort the process):
    ``python slicer_views.py --probe``.
    """
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(32, 32)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.0, 0.0, 0.0)
    window.AddRenderer(renderer)
    sphere = vtk.vtkSphereSource()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(sphere.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(1.0, 1.0, 1.0)
    actor.GetProperty().LightingOff()
    renderer.AddActor(actor)
    try:
        window.Render()
    except Exception as error:  # pragma: no cover - depends on the machine
        return f"rendering failed: {error}"
    if not window.SupportsOpenGL():
        return (f"{window.GetClassName()} cannot make an OpenGL context (no X server, and no EGL or OSMesa "
                "library: on Debian, apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)")
    image = _grab(window)
    if image.max() < 200:
        return f"{window.GetClassName()} made a context but rendered nothing"
    window.Finalize()
    return None


def _grab(window) -> np.ndarray:
    """The window's back buffer as (rows, columns, 3) uint8, row 0 at the top."""
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.SetInputBufferTypeToRGB()
    grabber.ReadFrontBufferOff()
    grabber.ShouldRerenderOff()
    grabber.Update()
    image = grabber.GetOutput()
    columns, rows, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)
    return np.ascontiguousarray(pixels[::-1, :, :3])


def _matrix_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


class SlicerApplication:
    """The application-level objects Slicer makes for a scene, without Qt (after qSlicerCoreApplication)."""

    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.vtkMRMLScene()
        scene = self.scene
        if scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
            crosshair = slicer.vtkMRMLCrosshairNode()
            crosshair.SetCrosshairName("default")
            scene.AddNode(crosshair)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(scene)          # adds the selection and interaction singletons
        self.app_logic.GetColorLogic().SetMRMLScene(scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()   # "Grey" and the other tables display nodes use
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        for factory in (slicer.vtkMRMLThreeDViewDisplayableManagerFactory,
                        slicer.vtkMRMLSliceViewDisplayableManagerFactory):
            factory.GetInstance().SetMRMLApplicationLogic(self.app_logic)
        self.markups_logic = self._module_logic("Markups", slicer.vtkSlicerMarkupsLogic())
        self.volume_rendering_logic = self._module_logic("VolumeRendering", slicer.vtkSlicerVolumeRenderingLogic())
        # Axial/Sagittal/Coronal presets of new slice nodes, patient right on screen left (Slicer's default).
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)

    def _module_logic(self, name, logic):
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic(name, logic)
        return logic

    def show_volume_rendering(self, volume_node):
        """Volume rendering of ``volume_node`` in the 3D views (what the Volume Rendering module's eye does).

        The wheel ships no presets, so the transfer function is set here, close to Slicer's "CT-Bone":
        opaque, bone-coloured from about 180 HU, soft tissue faint.
        """
        logic = self.volume_rendering_logic
        display = logic.GetFirstVolumeRenderingDisplayNode(volume_node)
        if display is None:
            if volume_node.GetDisplayNode() is None:
                volume_node.CreateDefaultDisplayNodes()
            display = logic.CreateVolumeRenderingDisplayNode()
            self.scene.AddNode(display)
            volume_node.AddAndObserveDisplayNodeID(display.GetID())
            logic.UpdateDisplayNodeFromVolumeNode(display, volume_node)
        prop = display.GetVolumePropertyNode().GetVolumeProperty()
        opacity = vtk.vtkPiecewiseFunction()
        for hu, alpha in ((-1024, 0.0), (-200, 0.0), (0, 0.015), (120, 0.03), (180, 0.25), (700, 0.85),
                          (3000, 0.95)):
            opacity.AddPoint(hu, alpha)
        colors = vtk.vtkColorTransferFunction()
        for hu, rgb in ((-1024, (0.0, 0.0, 0.0)), (0, (0.62, 0.36, 0.18)), (180, (0.85, 0.66, 0.45)),
                        (700, (1.0, 0.96, 0.88)), (3000, (1.0, 1.0, 1.0))):
            colors.AddRGBPoint(hu, *rgb)
        prop.SetScalarOpacity(opacity)
        prop.SetColor(colors)
        prop.ShadeOn()
        prop.SetInterpolationTypeToLinear()
        display.SetVisibility(True)
        return display


class _View:
    """A render window, its renderer and a displayable manager group."""

    def __init__(self, app: SlicerApplication, factory_class, managers, size):
        self.app = app
        self.scene = app.scene
        self.size = (int(size[0]), int(size[1]))
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetMultiSamples(0)
        self.window.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = factory_class.GetInstance()
        for manager in managers:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)

    def render(self) -> np.ndarray:
        """Render now (as the view does when the scene changed) and return the picture."""
        self.window.Render()
        return _grab(self.window)

    def _display_to_screen(self, display_xy) -> np.ndarray:
        """VTK display coordinates (origin at the bottom left) -> (column, row), row 0 at the top."""
        display_xy = np.asarray(display_xy, dtype=float)
        return np.stack([display_xy[..., 0], self.size[1] - 1 - display_xy[..., 1]], axis=-1)

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()


class _SliceImageActor:
    """The slice logic's composited RGBA image, drawn 1:1 at the bottom left (CTK's light box with one pane)."""

    def __init__(self, renderer):
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255.0)
        self.mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(self.mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(self.actor)
        self._connection = None

    def set_input(self, connection) -> None:
        if connection is self._connection:
            return
        self._connection = connection
        if connection is None:
            self.actor.SetVisibility(False)
            return
        self.mapper.SetInputConnection(connection)
        self.actor.SetVisibility(True)


class SliceView(_View):
    """One slice view (qMRMLSliceWidget without the controller bar) on ``slice_node``."""

    def __init__(self, app: SlicerApplication, slice_node, size=(512, 512)):
        super().__init__(app, slicer.vtkMRMLSliceViewDisplayableManagerFactory, SLICE_VIEW_MANAGERS, size)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.image = _SliceImageActor(self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app.app_logic)
        self.logic.SetMRMLScene(self.scene)
        self.logic.SetSliceNode(slice_node)
        app.app_logic.GetSliceLogics().AddItem(self.logic)
        self.slice_node = slice_node
        self.managers.SetMRMLDisplayableNode(slice_node)
        self.logic.ResizeSliceNode(*self.size)
        self._logic_observer = self.logic.AddObserver(vtk.vtkCommand.ModifiedEvent, self._update_image_input)
        self._update_image_input()

    def _update_image_input(self, *_):
        self.image.set_input(self.logic.GetImageDataConnection())

    @property
    def composite_node(self):
        return self.logic.GetSliceCompositeNode()

    def fit(self) -> None:
        """Fit the view to its volumes, as the module does after Simulate (``FitSliceToAll``)."""
        self.logic.FitSliceToAll()

    def render(self) -> np.ndarray:
        self._update_image_input()
        return super().render()

    def xy_to_ras(self) -> np.ndarray:
        """The view's own XY (pixels, origin bottom left) -> RAS matrix, 4x4."""
        return _matrix_array(self.slice_node.GetXYToRAS())

    def ras_to_screen(self, points_ras) -> np.ndarray:
        """(N, 3) RAS -> (N, 2) (column, row) on the rendered picture, through the view's own XYToRAS."""
        points = np.atleast_2d(np.asarray(points_ras, dtype=float))
        homogeneous = np.c_[points, np.ones(len(points))]
        xy = (np.linalg.inv(self.xy_to_ras()) @ homogeneous.T).T
        return self._display_to_screen(xy[:, :2])

    def screen_to_ras(self, screen_xy) -> np.ndarray:
        """(N, 2) (column, row) -> (N, 3) RAS on the slice plane."""
        screen = np.atleast_2d(np.asarray(screen_xy, dtype=float))
        xy = np.c_[screen[:, 0], self.size[1] - 1 - screen[:, 1], np.zeros(len(screen)), np.ones(len(screen))]
        return (self.xy_to_ras() @ xy.T).T[:, :3]

    def close(self) -> None:
        self.logic.RemoveObserver(self._logic_observer)
        self.app.app_logic.GetSliceLogics().RemoveItem(self.logic)
        self.logic.SetMRMLScene(None)
        super().close()


class ThreeDView(_View):
    """One 3D view (qMRMLThreeDView) on the view node of layout name ``name``."""

    def __init__(self, app: SlicerApplication, name: str = "1", size=(512, 512)):
        super().__init__(app, slicer.vtkMRMLThreeDViewDisplayableManagerFactory, THREE_D_VIEW_MANAGERS, size)
        self.renderer.SetUseDepthPeeling(True)
        self.renderer.SetUseDepthPeelingForVolumes(True)
        self.logic = slicer.vtkMRMLViewLogic()
        self.logic.SetMRMLApplicationLogic(app.app_logic)
        self.logic.SetMRMLScene(self.scene)
        app.app_logic.GetViewLogics().AddItem(self.logic)
        self.view_node = self.logic.AddViewNode(name)
        self.managers.SetMRMLDisplayableNode(self.view_node)
        style = slicer.vtkMRMLThreeDViewInteractorStyle()
        style.SetDisplayableManagers(self.managers)
        style.SetInteractor(self.interactor)
        self._style = style

    @property
    def camera_node(self):
        return self.managers.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()

    def look_from(self, direction_ras, view_up_ras=(0.0, 0.0, 1.0), focal_point_ras=None, view_angle_deg=30.0,
                  distance_mm: float | None = None) -> None:
        """Point the camera (through its MRML camera node, as rotating the view does) from ``direction_ras``.

        The camera sits ``distance_mm`` from the focal point (default: the centre of the visible props), or,
        without a distance, backs off until every visible prop is in view (ResetCamera).
        """
        camera = self.camera_node
        if focal_point_ras is None:
            bounds = [0.0] * 6
            self.renderer.ComputeVisiblePropBounds(bounds)
            focal_point_ras = [(bounds[2 * i] + bounds[2 * i + 1]) / 2.0 for i in range(3)]
        direction = np.asarray(direction_ras, dtype=float)
        direction = direction / np.linalg.norm(direction)
        camera.SetFocalPoint(*focal_point_ras)
        camera.SetPosition(*(np.asarray(focal_point_ras, dtype=float) + (distance_mm or 1000.0) * direction))
        camera.SetViewUp(*view_up_ras)
        camera.SetViewAngle(view_angle_deg)
        if distance_mm is None:
            self.renderer.ResetCamera()
        camera.ResetClippingRange()

    def reset_focal_point(self) -> None:
        """What the view's "centre" button does (qMRMLThreeDView::resetFocalPoint): the box fits the scene."""
        node = self.view_node
        box, labels = node.GetBoxVisible(), node.GetAxisLabelsVisible()
        was_modifying = node.StartModify()
        node.SetBoxVisible(False)
        node.SetAxisLabelsVisible(False)
        node.EndModify(was_modifying)
        bounds = [0.0] * 6
        self.renderer.ComputeVisiblePropBounds(bounds)
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(*[(bounds[2 * i] + bounds[2 * i + 1]) / 2.0 for i in range(3)])
        camera.ComputeViewPlaneNormal()
        camera.OrthogonalizeViewUp()
        was_modifying = node.StartModify()
        node.SetBoxVisible(box)
        node.SetAxisLabelsVisible(labels)
        node.EndModify(was_modifying)
        node.InvokeEvent(slicer.vtkMRMLViewNode.ResetFocalPointRequestedEvent)
        self.renderer.ResetCameraClippingRange()

    def world_to_screen(self, points_ras) -> np.ndarray:
        """(N, 3) world RAS -> (N, 2) (column, row) on the rendered picture, through the view's camera."""
        self.renderer.ResetCameraClippingRange()
        screen = []
        for point in np.atleast_2d(np.asarray(points_ras, dtype=float)):
            self.renderer.SetWorldPoint(*point, 1.0)
            self.renderer.WorldToDisplay()
            screen.append(self.renderer.GetDisplayPoint()[:2])
        return self._display_to_screen(np.array(screen))

    def close(self) -> None:
        self.app.app_logic.GetViewLogics().RemoveItem(self.logic)
        self.logic.SetMRMLScene(None)
        super().close()


class FluoroLayout:
    """The module's Fluoro layout: the 3D view "1" beside the Fluoro slice view, on one scene.

    The Fluoro view is made on the module's own slice node (``layout.fluoro_slice_node``), which the
    module logic then reformats to the detector and fills with the stage image; the 3D view exists
    first, as in Slicer, so the module restricts its C-arm models to it.
    """

    def __init__(self, scene=None, fluoro_size=(512, 512), three_d_size=(512, 512)):
        from DeepDRRSlicerLib.mrml import layout

        self.app = SlicerApplication(scene)
        self.scene = self.app.scene
        self.three_d = ThreeDView(self.app, "1", three_d_size)
        self.fluoro = SliceView(self.app, layout.fluoro_slice_node(self.scene), fluoro_size)

    def fit(self) -> None:
        """What the module does after Simulate: fit the Fluoro view, centre the 3D view."""
        self.fluoro.fit()
        self.three_d.reset_focal_point()

    def close(self) -> None:
        self.fluoro.close()
        self.three_d.close()


def _main(argv) -> int:
    if argv[1:] == ["--probe"]:
        problem = offscreen_rendering_problem()
        if problem is None:
            window = vtk.vtkRenderWindow()
            print(f"offscreen rendering works ({window.GetClassName()})")
            return 0
        print(problem)
        return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
