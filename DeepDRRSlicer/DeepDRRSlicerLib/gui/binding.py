"""Binding the ``.ui`` widgets to the parameter node, in a way that can be undone.

Each bound widget of the ``.ui`` file carries a ``SlicerParameterName`` dynamic
property naming its parameter (``Testing/Python/test_slicer_module_files.py``
checks every one against the parameter node's fields).
"""

from __future__ import annotations

import qt

__all__ = ["bound_widgets", "connect_gui", "disconnect_gui"]


def bound_widgets(ui_widget) -> dict:
    """Parameter name -> widget, for every child of ``ui_widget`` with a "SlicerParameterName" property."""
    widgets = {}
    for widget in ui_widget.findChildren(qt.QWidget):
        name = widget.property("SlicerParameterName")
        if name:
            widgets[str(name)] = widget
    return widgets


def connect_gui(parameter_node, ui_widget):
    """Bind the widgets of ``ui_widget`` to ``parameter_node``; returns the tag for ``disconnect_gui``.

    Same widgets as the wrapper's ``connectGui(self.ui)``, but that method returns None (it drops the
    tag of ``connectParametersToGui``), so ``disconnectGui`` could never release a binding: the old
    bindings would stay live after ``exit``/``enter`` and, when the new binding refills the stage
    combo box, write its transient indices into the parameter node (resetting the stage).
    """
    return parameter_node.connectParametersToGui(bound_widgets(ui_widget))


def disconnect_gui(parameter_node, tag) -> None:
    """Release a binding made by ``connect_gui`` (None: nothing to release)."""
    if tag is not None:
        parameter_node.disconnectGui(tag)
