"""``QtTimerScheduler``: the live loop's delayed calls on ``qt.QTimer``.

The Qt-free logic (``DeepDRRSlicerLib.mrml.logic``) asks a scheduler to call it
back later, by key (see ``DeepDRRSlicerLib.mrml.scheduler`` for the contract and
the Qt-free schedulers used by tests and scripts). Inside Slicer this one runs
the calls on single-shot Qt timers, so renders happen on the GUI thread between
mouse events.
"""

from __future__ import annotations

import qt

__all__ = ["QtTimerScheduler"]


class QtTimerScheduler:
    """Runs the Lib logic's delayed calls on ``qt.QTimer`` (see ``DeepDRRSlicerLib.mrml.scheduler``)."""

    synchronous = False

    def __init__(self):
        self._timers = {}
        self._callbacks = {}

    def call_later(self, key, delay_s, callback, *, restart):
        self._callbacks[key] = callback
        timer = self._timers.get(key)
        if timer is None:
            timer = qt.QTimer()
            timer.setSingleShot(True)
            timer.connect("timeout()", lambda key=key: self._fire(key))
            self._timers[key] = timer
        if timer.isActive() and not restart:
            return
        timer.start(max(0, int(round(delay_s * 1000.0))))

    def _fire(self, key):
        callback = self._callbacks.pop(key, None)
        if callback is not None:
            callback()

    def cancel(self, key):
        timer = self._timers.get(key)
        if timer is not None:
            timer.stop()
        self._callbacks.pop(key, None)

    def cancel_all(self):
        for key in list(self._timers):
            self.cancel(key)
