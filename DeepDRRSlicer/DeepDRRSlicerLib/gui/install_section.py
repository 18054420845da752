"""The accelerators: a status message while they are missing, and the "Install accelerators..." flow.

The list of packages and the installation itself live in
``DeepDRRSlicerLib.mrml.dependencies`` (no Qt); this section asks the user and
reports.
"""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from ..mrml import dependencies
from .panel import PanelSection

__all__ = ["InstallSection"]


class InstallSection(PanelSection):
    def setup(self) -> None:
        self.ui.installButton.connect("clicked(bool)", self.on_install)

    def ready(self) -> None:
        self.show_dependency_status()

    def on_install(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=False):
            self.ensure_dependencies()

    def ensure_dependencies(self) -> bool:
        """Install the missing accelerator packages, with the user's consent. Returns whether all are present."""
        if not dependencies.missing_requirements():
            self.ui.installButton.visible = False
            return True
        installed = dependencies.install(
            slicer, confirm=lambda message: slicer.util.confirmOkCancelDisplay(message, windowTitle=_("DeepDRR")))
        self.show_dependency_status()
        if not installed:
            self.context.status.show(_("Nothing was installed; simulation keeps using the slower fallbacks."))
        return installed

    def show_dependency_status(self) -> None:
        missing = dependencies.missing_requirements()
        self.ui.installButton.visible = bool(missing)
        if missing:
            self.context.status.show(_("Running without {names}: simulation works but is slower. "
                                       "Press 'Install accelerators...' to speed it up.").format(
                                           names=", ".join(r.name for r in missing)))
