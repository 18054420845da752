"""The GPU: the backend of each render beside the status line, and the opt-in "Install CuPy (GPU)..." button.

The button shows only where an NVIDIA driver is present and no CUDA launcher works yet
(``DeepDRRSlicerLib.mrml.gpu.gpu_offer``); nothing is installed at import or without a click
and a confirmation, and Slicer's numpy is kept. The label under the status line names the
backend of the last render (GPU or CPU) with the reason in its tooltip.
"""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _

from ..mrml import gpu
from .panel import PanelSection

__all__ = ["GpuSection"]


class GpuSection(PanelSection):
    def setup(self) -> None:
        self.ui.installGpuButton.connect("clicked(bool)", self.on_install)
        self.ui.installGpuButton.visible = False
        self.ui.backendLabel.text = ""

    def ready(self) -> None:
        self.show_offer()

    def show_offer(self) -> None:
        offer = gpu.gpu_offer()
        self.ui.installGpuButton.visible = offer is not None
        if offer is not None:
            self.ui.installGpuButton.toolTip = offer.describe()

    def rendered(self, output) -> None:
        self.ui.backendLabel.text = _("Rendered on: {backend}").format(backend=gpu.backend_line(output.result))
        self.ui.backendLabel.toolTip = gpu.backend_tooltip(output.result)

    def on_install(self) -> None:
        offer = gpu.gpu_offer()
        if offer is None:
            self.show_offer()
            return
        with slicer.util.tryWithErrorDisplay(_("Installing CuPy failed."), waitCursor=False):
            works = gpu.install_cupy(
                slicer, offer,
                confirm=lambda message: slicer.util.confirmOkCancelDisplay(
                    offer.describe() + "\n\n" + message, windowTitle=_("DeepDRR: GPU")))
            self.show_offer()
            if works:
                self.context.status.show(_("CuPy is installed: the next render runs on the GPU."))
            else:
                self.context.status.show(_("The GPU is still not usable; the projector keeps running on the CPU. "
                                           "The tooltip of 'Rendered on' says why after the next render."))
