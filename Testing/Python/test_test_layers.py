"""The test command reports each layer's counts, and every layer it lists exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "Testing" / "run_pytest_layer.py"


def test_a_layer_prints_and_saves_its_counts(tmp_path):
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "test_mixed.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_also_ok(): pass\n"
        "def test_bad(): assert False\n"
        "@pytest.mark.skip(reason='no device here')\n"
        "def test_skipped(): pass\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError('setup')\n"
        "def test_error(broken): pass\n")
    counts = tmp_path / "counts" / "mixed.json"
    done = subprocess.run([sys.executable, str(RUNNER), "--counts-file", str(counts), str(layer), "-p",
                           "no:cacheprovider"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert f"{layer}: 2 passed, 1 failed, 1 skipped, 1 errors (failed)" in done.stdout
    saved = json.loads(counts.read_text())
    assert (saved["passed"], saved["failed"], saved["skipped"], saved["errors"]) == (2, 1, 1, 1)
    summary = subprocess.run([sys.executable, str(RUNNER), "--summary", str(counts.parent)],
                             capture_output=True, text=True, timeout=60)
    assert re.search(r"mixed\s+2 passed, 1 failed, 1 skipped, 1 errors \(failed\)", summary.stdout)


def test_an_all_skipped_layer_says_why(tmp_path):
    layer = tmp_path / "gpu"
    layer.mkdir()
    (layer / "test_device.py").write_text("import pytest\n"
                                          "def test_device(): pytest.skip('no usable CUDA device: none here')\n")
    counts = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(RUNNER), "--counts-file", str(counts), str(layer), "-p",
                           "no:cacheprovider"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 77
    assert "0 passed, 0 failed, 1 skipped, 0 errors (skipped): no usable CUDA device: none here" in done.stdout


def test_test_script_prints_the_counts_after_ctest():
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "rm -rf build/layer-counts" in script
    assert "run_pytest_layer.py --summary build/layer-counts" in script
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert '--counts-file "${CMAKE_CURRENT_BINARY_DIR}/layer-counts/${name}.json"' in cmake


def test_every_listed_layer_folder_exists_and_holds_tests():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    cmake = (REPO / "CMakeLists.txt").read_text()
    layers = re.findall(r"deepdrr_add_pytest_layer\((\w+)\s+(\S+?)[\s)]", cmake)
    assert {"engine", "mrml", "gpu"} <= {name for name, _ in layers}
    folders = set(pyproject["tool"]["pytest"]["ini_options"]["testpaths"]) | {folder for _, folder in layers}
    for folder in folders:
        assert list((REPO / folder).glob("test_*.py")), f"{folder} is listed as a test layer but holds no tests"


def test_version_has_one_source():
    from DeepDRRSlicerLib import __version__
    from DeepDRRSlicerLib.cli import package_version

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "DeepDRRSlicerLib.__version__"}
    assert package_version() == __version__
