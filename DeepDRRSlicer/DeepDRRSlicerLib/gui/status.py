"""The panel's status line: one label for what happened last (a render, a warning, an error)."""

from __future__ import annotations

__all__ = ["StatusLine"]

_ERROR_STYLE = "color: #c03030"


class StatusLine:
    """Shows short messages in a ``QLabel``; errors in red."""

    def __init__(self, label):
        self.label = label

    def show(self, text, error=False) -> None:
        self.label.text = text
        self.label.styleSheet = _ERROR_STYLE if error else ""

    @property
    def text(self) -> str:
        return self.label.text
