"""The Materials section: decomposition choices (bound to the parameter node), PyTorch, overrides.

The network needs PyTorch, which comes only from the SlicerPyTorch extension
(``mrml.dependencies.install_torch``), after the user confirms. Without it
the module simulates with HU thresholds and this section says so. A
segmentation picked here overrides the materials inside its segments, mapped
by segment name ("titanium screw", "steel", "bone", ...).
"""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from ..mrml import dependencies
from .panel import PanelSection

__all__ = ["MaterialsSection"]


class MaterialsSection(PanelSection):
    def setup(self) -> None:
        self.ui.installTorchButton.connect("clicked(bool)", self.on_install_torch)

    def ready(self) -> None:
        self.show_torch_status()

    def parameters_modified(self, parameters) -> None:
        uses_network = getattr(parameters, "materials", "network") == "network"
        self.ui.installTorchButton.visible = uses_network and not dependencies.torch_available()

    def rendered(self, output) -> None:
        notes = [n for n in getattr(output, "notes", []) if "thresholds" in n or "segment" in n]
        if notes:
            self.ui.materialsStatusLabel.text = notes[0]

    def on_install_torch(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing PyTorch failed."), waitCursor=True):
            installed, message = dependencies.install_torch(
                slicer, confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle=_("DeepDRR")))
            self.ui.materialsStatusLabel.text = message
            if installed:
                self.logic.lib.clear_cache()
            self.show_torch_status()

    def show_torch_status(self) -> None:
        available = dependencies.torch_available()
        self.ui.installTorchButton.visible = not available
        self.ui.materialsStatusLabel.text = (
            _("Segmentation network ready (PyTorch found).") if available else
            _("PyTorch is not installed: materials come from HU thresholds. Press 'Install PyTorch...'."))
