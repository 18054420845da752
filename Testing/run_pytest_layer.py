"""Run one layer of the test suite with pytest, for CTest.

Usage:  python Testing/run_pytest_layer.py FOLDER [pytest options...]

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
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    extra = argv[2:]
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
