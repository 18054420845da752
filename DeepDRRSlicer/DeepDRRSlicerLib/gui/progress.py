"""A modal progress dialog with a Cancel button, seen by long work as a ``progress(fraction)`` callback."""

from __future__ import annotations

import contextlib

import qt

import slicer
from slicer.i18n import tr as _

from ..errors import SimulationCancelled

__all__ = ["progress_dialog"]


@contextlib.contextmanager
def progress_dialog(label_text, window_title="DeepDRR"):
    """Yields ``progress(fraction)``: it moves the bar, keeps the GUI responsive, and raises
    ``SimulationCancelled`` once the user pressed Cancel. The dialog closes on leaving the block."""
    dialog = slicer.util.createProgressDialog(windowTitle=window_title, labelText=label_text, maximum=100,
                                              windowModality=qt.Qt.ApplicationModal)
    dialog.setCancelButtonText(_("Cancel"))

    def progress(fraction):
        dialog.value = int(round(100 * fraction))
        slicer.app.processEvents()
        if dialog.wasCanceled:
            raise SimulationCancelled()

    try:
        yield progress
    finally:
        dialog.close()
