"""The Simulate button: one full render of the current pose, with a cancellable progress dialog.

The render then keeps following the C-arm transform (the live loop of
``DeepDRRSlicerLib.mrml.logic``).
"""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from ..errors import SimulationCancelled
from .panel import PanelSection
from .progress import progress_dialog
from .views import fit_views

__all__ = ["SimulateSection"]


class SimulateSection(PanelSection):
    def setup(self) -> None:
        self.ui.simulateButton.connect("clicked(bool)", self.on_simulate)

    def parameters_modified(self, parameters) -> None:
        has_ct = parameters.ct is not None
        self.ui.simulateButton.enabled = has_ct
        self.ui.simulateButton.toolTip = (_("Simulate the image for the current pose and show it in the Fluoro view.")
                                         if has_ct else _("Select a CT volume first."))

    def on_simulate(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Simulation failed."), waitCursor=True):
            parameters = self.context.parameters()
            self.logic.stopLive()
            if parameters.carmTransform is None:
                parameters.carmTransform = self.logic.createCArmTransform(parameters.ct, parameters.alpha,
                                                                         parameters.beta)
            else:
                self.logic.setCArmAngles(parameters.carmTransform, parameters.alpha, parameters.beta)
            try:
                with progress_dialog(_("Simulating fluoroscopy..."), window_title=_("DeepDRR")) as progress:
                    output = self.logic.simulateFromParameters(parameters, progress=progress)
            except SimulationCancelled:
                self.context.status.show(_("Simulation cancelled."))
                return
            fit_views()
            self.context.rendered(output)
