"""Errors raised for bad user input: each names the problem and how to fix it."""


class InputError(ValueError):
    """The user's input cannot be used. The message says what is wrong and what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}")


class SimulationCancelled(RuntimeError):
    """Raised when a progress callback asks to stop."""
