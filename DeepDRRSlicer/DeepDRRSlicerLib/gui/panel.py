"""The module panel as a list of sections, and what a section may use.

A section owns the widgets of one part of the ``.ui`` file that are not plain
parameter bindings (those the parameter node wrapper handles): action
buttons, enabled states, tooltips, messages. The module widget makes a
``PanelContext``, creates every section of ``panel_sections()`` with it, and
forwards its events to the sections' hooks, in list order.

To add a section (e.g. for a network, scatter or dataset export): put its
widgets in the ``.ui`` file, write a ``PanelSection`` subclass in a new file of
this package, and add it to ``panel_sections()``. Its parameters go in the
module file's parameter node class, bound by a ``SlicerParameterName``
property on the widget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["PanelContext", "PanelSection", "panel_sections"]


@dataclass
class PanelContext:
    """What the module widget shares with its sections."""

    #: The ``.ui`` file's widgets by object name (``slicer.util.childWidgetVariables``).
    ui: Any
    #: The module logic (``DeepDRRSlicerLogic`` of the module file; its ``lib`` is the Qt-free logic).
    logic: Any
    #: The status line (``status.StatusLine``).
    status: Any
    #: Returns the parameter node now bound to the panel, or None (between scenes).
    parameters: Callable[[], Any]
    #: Call with a ``SimulationOutput`` after a render started from the panel (status, stage choices).
    rendered: Callable[[Any], None]


class PanelSection:
    """One part of the module panel. Override the hooks it needs; each default does nothing."""

    def __init__(self, context: PanelContext):
        self.context = context
        self.ui = context.ui
        self.logic = context.logic

    def setup(self) -> None:
        """Connect the section's widgets (called once, when the panel is built)."""

    def ready(self) -> None:
        """The panel is built and its parameter node bound (called once, after every ``setup``)."""

    def parameters_modified(self, parameters) -> None:
        """The parameter node changed (any field): refresh enabled states and tooltips.

        Also called while the sliders show a pose set by the C-arm's handles (see ``live_section``).
        """

    def carm_moved(self, alpha, beta, roll, pose) -> None:
        """The C-arm transform moved (by its handles, another module or a script), not by the panel itself.

        Angles in degrees (``DeepDRRSlicerLib.mrml.carm_transform.angles_from_pose``); ``pose`` is its 4x4.
        """

    def rendered(self, output) -> None:
        """A render finished (from the panel or the live loop); ``output`` is a ``SimulationOutput``."""

    def cleanup(self) -> None:
        """The panel is being destroyed: release what ``setup`` took."""


def panel_sections() -> list:
    """The panel's section classes, in the order their hooks run."""
    from .carm_section import CArmSection
    from .dataset_section import DatasetSection
    from .display_section import DisplaySection
    from .gpu_section import GpuSection
    from .install_section import InstallSection
    from .live_section import LiveSection
    from .simulate_section import SimulateSection

    # LiveSection last: it may stop the live view or report an error after the others refreshed their states.
    return [SimulateSection, CArmSection, DisplaySection, InstallSection, GpuSection, DatasetSection, LiveSection]
