"""Run one layer of the test suite with pytest, for CTest.

Usage:  python Testing/run_pytest_layer.py [--required | --required-in-ci] FOLDER [pytest options...]

With --required (the engine and MRML layers), a layer that runs nothing is a
failure, not a skip: its dependencies (e.g. the slicer-core wheel) are part of
the test install, so silently skipping it would hide a broken setup.
With --required-in-ci (the views layer) the same holds when the environment
variable CI is set (CI=true, as CI runs it; scripts/test.sh installs what the
layer needs there); elsewhere the layer may skip, printing why (e.g. no
offscreen OpenGL context on this machine).

Exit status:
  0    tests ran and passed
  77   nothing ran: FOLDER is absent, pytest collected no tests (pytest's own
       exit code 5), or every collected test was skipped (e.g. GPU tests on a
       machine without a device). CMakeLists.txt sets SKIP_RETURN_CODE 77, so
       CTest reports the layer as skipped instead of failed.
  other  pytest's exit status (1 tests failed, 2 interrupted, 3 internal
       error, 4 usage error): CTest reports a failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SKIPPED = 77


class _Tally:
    """pytest plugin counting tests whose body actually ran."""

    def __init__(self) -> None:
        self.ran = 0
        self.failed = 0

    def pytest_runtest_logreport(self, report) -> None:  # pytest hook
        if report.failed:
            self.failed += 1
        if report.when == "call" and (report.passed or report.failed):
            self.ran += 1


def main(argv: list[str]) -> int:
    arguments = argv[1:]
    required = False
    if arguments and arguments[0] in ("--required", "--required-in-ci"):
        required = arguments[0] == "--required" or _in_ci()
        arguments = arguments[1:]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(arguments[0])
    extra = arguments[1:]
    status = _run(folder, extra)
    if status == SKIPPED and required:
        print(f"[run_pytest_layer] {folder}: this layer is required but ran no test (failed).")
        return 1
    return status


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _run(folder: Path, extra: list[str]) -> int:
    if not folder.is_dir():
        print(f"[run_pytest_layer] {folder}: folder not present; nothing to run (skipped).")
        return SKIPPED

    import pytest

    tally = _Tally()
    status = int(pytest.main([str(folder), *extra], plugins=[tally]))
    if status == int(pytest.ExitCode.NO_TESTS_COLLECTED):
        print(f"[run_pytest_layer] {folder}: no tests collected (skipped).")
        return SKIPPED
    if status == int(pytest.ExitCode.OK) and tally.ran == 0 and tally.failed == 0:
        print(f"[run_pytest_layer] {folder}: every test was skipped (skipped).")
        return SKIPPED
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
