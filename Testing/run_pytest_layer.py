"""Run one layer of the test suite with pytest, for CTest, and count what happened.

Usage:
  python Testing/run_pytest_layer.py [--required | --required-in-ci] [--counts-file FILE] FOLDER [pytest options...]
  python Testing/run_pytest_layer.py --summary FOLDER_OF_COUNT_FILES

With --required (the engine and MRML layers), a layer that runs nothing is a
failure, not a skip: its dependencies (e.g. the slicer-core wheel) are part of
the test install, so silently skipping it would hide a broken setup.
With --required-in-ci (the views layer) the same holds when the environment
variable CI is set (CI=true, as CI runs it; scripts/test.sh installs what the
layer needs there); elsewhere the layer may skip, printing why (e.g. no
offscreen OpenGL context on this machine).

Each run prints, as its last line, the layer's passed/failed/skipped/error
counts and, with --counts-file, writes them as JSON. ``--summary`` prints one
line per layer from those files: scripts/test.sh shows it after ctest, whose own
output says only whether each layer passed.

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

import json
import os
import sys
from pathlib import Path

SKIPPED = 77


class _Tally:
    """pytest plugin counting outcomes per test (a setup or teardown failure is an error)."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.errors = 0
        self.skip_reasons: dict[str, int] = {}

    @property
    def ran(self) -> int:
        return self.passed + self.failed

    def pytest_runtest_logreport(self, report) -> None:  # pytest hook
        if report.when == "call":
            if report.passed:
                self.passed += 1
            elif report.failed:
                self.failed += 1
            elif report.skipped:
                self._skip(report)
        elif report.failed:
            self.errors += 1
        elif report.skipped:
            self._skip(report)

    def _skip(self, report) -> None:
        self.skipped += 1
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1

    def counts(self, folder: Path, status: str) -> dict:
        return {"layer": str(folder), "status": status, "passed": self.passed, "failed": self.failed,
                "skipped": self.skipped, "errors": self.errors, "skip_reasons": self.skip_reasons}


def main(argv: list[str]) -> int:
    arguments = argv[1:]
    if arguments[:1] == ["--summary"]:
        return summary(Path(arguments[1]) if len(arguments) > 1 else Path("build/layer-counts"))
    required = False
    counts_file = None
    while arguments and arguments[0] in ("--required", "--required-in-ci", "--counts-file"):
        if arguments[0] == "--counts-file":
            counts_file = Path(arguments[1])
            arguments = arguments[2:]
        else:
            required = arguments[0] == "--required" or _in_ci()
            arguments = arguments[1:]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(arguments[0])
    extra = arguments[1:]
    tally = _Tally()
    status = _run(folder, extra, tally)
    outcome = {0: "passed", SKIPPED: "skipped"}.get(status, "failed")
    if status == SKIPPED and required:
        print(f"[run_pytest_layer] {folder}: this layer is required but ran no test (failed).")
        status, outcome = 1, "failed"
    counts = tally.counts(folder, outcome)
    print(f"[run_pytest_layer] {folder}: {_line(counts)}")
    if counts_file is not None:
        counts_file.parent.mkdir(parents=True, exist_ok=True)
        counts_file.write_text(json.dumps(counts, indent=1))
    return status


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _run(folder: Path, extra: list[str], tally: _Tally) -> int:
    if not folder.is_dir():
        print(f"[run_pytest_layer] {folder}: folder not present; nothing to run (skipped).")
        return SKIPPED

    import pytest

    status = int(pytest.main([str(folder), *extra], plugins=[tally]))
    if status == int(pytest.ExitCode.NO_TESTS_COLLECTED):
        print(f"[run_pytest_layer] {folder}: no tests collected (skipped).")
        return SKIPPED
    if status == int(pytest.ExitCode.OK) and tally.ran == 0 and tally.failed == 0:
        print(f"[run_pytest_layer] {folder}: every test was skipped (skipped).")
        return SKIPPED
    return status


def _line(counts: dict) -> str:
    text = (f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
            f"{counts['errors']} errors ({counts['status']})")
    if counts["skip_reasons"] and not counts["passed"] and not counts["failed"]:
        reason, number = max(counts["skip_reasons"].items(), key=lambda item: item[1])
        text += f": {reason}"
    return text


def summary(folder: Path) -> int:
    """Print the per-layer counts written by earlier runs (one JSON file per layer)."""
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        print(f"(no per-layer counts in {folder})")
        return 0
    print("Per-layer test counts:")
    for path in files:
        counts = json.loads(path.read_text())
        print(f"  {path.stem:<8} {_line(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
