"""The module's requirements list, the installation plan, and what importing needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib.mrml import dependencies  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib


def test_requirements_are_listed_once_and_agree_with_the_package():
    requirements = dependencies.load_requirements()
    names = {r.name.lower() for r in requirements}
    assert names == {"numba", "xraydb"}
    assert "numpy" not in names and "torch" not in names  # Slicer's numpy stays; torch via SlicerPyTorch
    with open(REPO / "pyproject.toml", "rb") as f:
        declared = _tomllib().load(f)["project"]["dependencies"]
    declared_names = {dependencies.Requirement.parse(d).name.lower() for d in declared}
    assert names <= declared_names


def test_requirement_versions_are_checked():
    installed = metadata.version("numpy")
    assert dependencies.Requirement.parse(f"numpy>={installed}").is_satisfied()
    assert not dependencies.Requirement.parse("numpy<1").is_satisfied()
    assert not dependencies.Requirement.parse("surely-not-an-installed-package-xyz").is_satisfied()
    with pytest.raises(ValueError):
        dependencies.Requirement.parse("numba >= banana")


def test_installation_plan_in_this_environment():
    assert dependencies.plan_installation(slicer).method == "none"  # the test venv has everything
    missing = [dependencies.Requirement.parse("surely-not-an-installed-package-xyz>=1")]
    plan = dependencies.plan_installation(slicer, missing)
    # slicer-core has slicer.util.pip_install but no slicer.packaging.pip_ensure (a Slicer 5.10-like case).
    assert plan.method == "pip_install" and not plan.asks_user
    assert "surely-not-an-installed-package-xyz" in plan.describe()


def test_declining_installs_nothing():
    missing = [dependencies.Requirement.parse("surely-not-an-installed-package-xyz>=1")]
    asked = []
    assert dependencies.install(slicer, confirm=lambda text: asked.append(text) or False, requirements=missing) is False
    assert asked and "surely-not-an-installed-package-xyz" in asked[0]


def test_pip_ensure_gets_requirement_objects_and_the_numpy_pin():
    """Slicer >= 5.11's pip_ensure reads .name/.marker of packaging Requirements; strings would crash it.

    Slicer's real pip_ensure cannot run here, so a recorder stands in for that one function
    (the ``slicer`` package itself stays the real slicer-core one)."""
    import types

    calls = []

    def pip_ensure(requirements, constraints=None, requester=None):
        calls.append((requirements, constraints and Path(constraints).read_text(), requester))

    slicer_like = types.SimpleNamespace(__name__="slicer", pydeps=types.SimpleNamespace(pip_ensure=pip_ensure),
                                        util=slicer.util)
    missing = [dependencies.Requirement.parse("surely-not-an-installed-package-xyz>=1.2")]
    assert dependencies.plan_installation(slicer_like, missing).method == "pip_ensure"
    assert dependencies.install(slicer_like, requirements=missing) is False  # the recorder installs nothing
    (requirements, constraints, requester), = calls
    assert [(r.name, str(r.specifier), r.marker) for r in requirements] == [
        ("surely-not-an-installed-package-xyz", ">=1.2", None)]
    assert f"numpy=={metadata.version('numpy')}" in constraints.splitlines()
    assert requester


def test_numpy_is_pinned_during_installs(tmp_path):
    path = dependencies.numpy_constraints_file(tmp_path)
    assert f"numpy=={metadata.version('numpy')}" in path.read_text().splitlines()


def test_mrml_adapters_import_without_the_engine_dependencies():
    """The module panel loads (and can offer to install) before numba and xraydb are installed."""
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None      # importing them now raises ImportError
        sys.modules["xraydb"] = None
        sys.modules["SimpleITK"] = None
        import DeepDRRSlicerLib.mrml.logic, DeepDRRSlicerLib.mrml.dependencies, DeepDRRSlicerLib.mrml.layout
        import DeepDRRSlicerLib.mrml.carm_models, DeepDRRSlicerLib.mrml.stages
        from DeepDRRSlicerLib.mrml import dependencies
        print(sorted(r.name for r in dependencies.missing_requirements()) != [])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
