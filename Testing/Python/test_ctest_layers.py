"""The CTest layers: which are required, and what "required" means (Testing/run_pytest_layer.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "Testing" / "run_pytest_layer.py"


def test_layers_registered_with_ctest():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    layers = dict(re.findall(r"deepdrr_add_pytest_layer\((\w+)\s+[^\s)]+\s*([^)#]*)\)", text))
    assert {name: flags.strip() for name, flags in layers.items()} == {
        "engine": "--required", "mrml": "--required", "views": "--required-in-ci", "gpu": ""}


@pytest.mark.parametrize("ci, expected", [(None, 77), ("", 77), ("false", 77), ("true", 1), ("1", 1)])
def test_views_layer_is_required_only_in_ci(tmp_path, ci, expected):
    """A layer whose every test skips (no OpenGL here) is skipped (77), except where CI is set: failed (1)."""
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\ndef test_needs_opengl():\n    pytest.skip('no offscreen OpenGL context')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run([sys.executable, str(RUNNER), "--required-in-ci", str(tmp_path), "-q", "-p",
                             "no:cacheprovider"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == expected, result.stdout + result.stderr
