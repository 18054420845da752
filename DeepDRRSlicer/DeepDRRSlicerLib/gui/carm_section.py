"""The C-arm controls besides the bound sliders: "Centre C-arm on CT"."""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from .panel import PanelSection

__all__ = ["CArmSection"]


class CArmSection(PanelSection):
    def setup(self) -> None:
        self.ui.centerButton.connect("clicked(bool)", self.on_center)

    def parameters_modified(self, parameters) -> None:
        self.ui.centerButton.enabled = parameters.ct is not None and parameters.carmTransform is not None

    def on_center(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot move the C-arm."), waitCursor=True):
            parameters = self.context.parameters()
            self.logic.centerCArmOnCT(parameters.carmTransform, parameters.ct)
