"""Coalescing bursts of events into few renders, with the timer injected.

Dragging a transform handle or a slider fires a modified event per mouse move.
The logic asks a scheduler to call it back later, by key:

* ``restart=False`` (throttle): a request while one is pending for the same key
  is merged into it; used for low-resolution previews, which then run at most
  once per delay while the drag goes on.
* ``restart=True`` (debounce): each request pushes the call back; used for the
  full-resolution render, which then runs once the pose has stopped moving.

Inside Slicer the timers are ``qt.QTimer`` (``DeepDRRSlicerLib.gui.timers``);
tests and scripts use :class:`ManualScheduler` (a clock advanced by hand) or
:class:`ImmediateScheduler` (no coalescing: every request runs at once).
No Qt is imported here.
"""

from __future__ import annotations

from typing import Callable, Protocol

__all__ = ["Scheduler", "ImmediateScheduler", "ManualScheduler"]


class Scheduler(Protocol):
    """What the logic needs from a timer service."""

    #: True when ``call_later`` runs the callback before returning (no coalescing possible).
    synchronous: bool

    def call_later(self, key: str, delay_s: float, callback: Callable[[], None], *, restart: bool) -> None:
        """Run ``callback`` after ``delay_s`` seconds; see the module docstring for ``restart``."""

    def cancel(self, key: str) -> None:
        """Forget the pending call for ``key``, if any."""

    def cancel_all(self) -> None:
        """Forget every pending call."""


class ImmediateScheduler:
    """Runs every request at once (a script that moves the C-arm gets one render per move)."""

    synchronous = True

    def call_later(self, key: str, delay_s: float, callback: Callable[[], None], *, restart: bool) -> None:
        callback()

    def cancel(self, key: str) -> None:
        pass

    def cancel_all(self) -> None:
        pass


class ManualScheduler:
    """A scheduler with a hand-driven clock, for tests and benchmarks.

    ``advance(seconds)`` moves the clock and runs what fell due, in due order;
    ``run_pending()`` runs everything pending regardless of time.
    """

    synchronous = False

    def __init__(self) -> None:
        self.now = 0.0
        self._pending: dict[str, tuple[float, Callable[[], None]]] = {}

    def call_later(self, key: str, delay_s: float, callback: Callable[[], None], *, restart: bool) -> None:
        if key in self._pending and not restart:
            due, _ = self._pending[key]
            self._pending[key] = (due, callback)
            return
        self._pending[key] = (self.now + max(0.0, float(delay_s)), callback)

    def cancel(self, key: str) -> None:
        self._pending.pop(key, None)

    def cancel_all(self) -> None:
        self._pending.clear()

    def pending(self) -> list[str]:
        """Keys waiting to run, soonest first."""
        return [key for key, _ in sorted(self._pending.items(), key=lambda item: item[1][0])]

    def advance(self, seconds: float) -> int:
        """Move the clock forward and run the calls that fell due. Returns how many ran."""
        target = self.now + float(seconds)
        ran = 0
        while True:
            due = [(when, key) for key, (when, _) in self._pending.items() if when <= target]
            if not due:
                break
            when, key = min(due)
            self.now = max(self.now, when)
            _, callback = self._pending.pop(key)
            callback()
            ran += 1
        self.now = target
        return ran

    def run_pending(self) -> int:
        """Run every pending call (and any they schedule), soonest first. Returns how many ran."""
        ran = 0
        while self._pending:
            if ran >= 10_000:
                raise RuntimeError("ManualScheduler.run_pending: callbacks keep rescheduling themselves")
            key = self.pending()[0]
            due, callback = self._pending.pop(key)
            self.now = max(self.now, due)
            callback()
            ran += 1
        return ran
