"""The Fluoro layout in the application's layout manager, and fitting the views to what they show.

``DeepDRRSlicerLib.mrml.layout`` describes the layout and orients the Fluoro
slice node on any scene; this file reaches the widgets of the running
application (``slicer.app.layoutManager()``), which exist only in the GUI.
"""

from __future__ import annotations

import slicer

from ..mrml import layout

__all__ = ["register_fluoro_layout", "fit_views"]


def register_fluoro_layout() -> None:
    """Add the "Fluoro" layout (3D view + Fluoro slice view) to the application's layouts."""
    layout_manager = slicer.app.layoutManager()
    if layout_manager is None:  # no main window
        return
    layout.register_layout(layout_manager.layoutLogic().GetLayoutNode())


def fit_views() -> None:
    """Fit the Fluoro view to the image and the 3D view to the scene (needs the real view sizes)."""
    layout_manager = slicer.app.layoutManager()
    if layout_manager is None:
        return
    slicer.app.processEvents()
    slice_widget = layout_manager.sliceWidget(layout.FLUORO_VIEW_NAME)
    if slice_widget is not None:
        slice_widget.sliceLogic().FitSliceToAll()
    if layout_manager.threeDWidget(0) is not None:
        layout_manager.threeDWidget(0).threeDView().resetFocalPoint()
