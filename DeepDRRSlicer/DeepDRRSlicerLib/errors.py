"""Errors raised for bad user input: each names the problem and how to fix it.

Also the small checks every public entry point uses on its arguments, so that a
wrong type or value surfaces as an :class:`InputError` naming the argument,
never as an ``AttributeError`` or ``TypeError`` from deep inside.
"""

from __future__ import annotations

import math
import numbers


class InputError(ValueError):
    """The user's input cannot be used. The message says what is wrong and what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}")


class SimulationCancelled(RuntimeError):
    """Raised when a progress callback asks to stop."""


def describe(value) -> str:
    """A short description of a value for error messages: its type and, when short, its repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, str) else f"the text {text}"


def is_real_number(value) -> bool:
    """True for int/float and numpy integer/floating scalars (and 0-d arrays of them); False for bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):  # numpy registers its integer and floating scalars here, not np.bool_
        return True
    # numpy 0-d arrays behave as numbers in arithmetic; accept them like numpy scalars.
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and dtype is not None and dtype.kind in "iuf"


def as_number(value, argument: str, fix: str, *, low: float | None = None, high: float | None = None,
              unit: str = "") -> float:
    """``value`` as a finite float, or InputError naming ``argument``.

    numpy scalars (np.float32(90), np.int64(90)) are numbers; strings and booleans are not.
    ``low``/``high`` bound the value inclusively.
    """
    if not is_real_number(value):
        raise InputError(f"{argument} must be a number, got {describe(value)}.", fix)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{argument} must be a finite number, got {number}.", fix)
    suffix = f" {unit}" if unit else ""
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"{low:g}-{high:g}{suffix}" if low is not None and high is not None
                  else f">= {low:g}{suffix}" if low is not None else f"<= {high:g}{suffix}")
        raise InputError(f"{argument} = {number:g}{suffix} is outside the supported {bounds}.", fix)
    return number


def require_type(value, types, argument: str, expected: str, fix: str):
    """``value`` unchanged when it is an instance of ``types``, else InputError naming ``argument``."""
    if not isinstance(value, types):
        raise InputError(f"{argument} must be {expected}, got {describe(value)}.", fix)
    return value
