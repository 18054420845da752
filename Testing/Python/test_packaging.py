"""Packaging and extension metadata: what pip, Slicer and CI rely on.

These tests read the repository's files directly, so they check the source
tree (the same files a wheel and a Slicer build are made from).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from DeepDRRSlicerLib import resources

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "DeepDRRSlicer" / "DeepDRRSlicerLib"

S4EXT_KEYS = (
    "scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage",
    "contributors", "category", "iconurl", "status", "description",
    "screenshoturls", "enabled",
)


def _tomllib():
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return _tomllib().load(f)


def _s4ext() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (REPO / "DeepDRRSlicer.s4ext").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def _cmake_extension_vars() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', text))


# --- pip package -------------------------------------------------------------

def test_every_engine_subpackage_is_listed_in_pyproject():
    """setuptools only ships the packages listed in [tool.setuptools] packages."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {"DeepDRRSlicerLib"}
    for init in LIB.rglob("__init__.py"):
        if "__pycache__" in init.parts:
            continue
        rel = init.parent.relative_to(LIB)
        if rel.parts:
            on_disk.add(".".join(("DeepDRRSlicerLib", *rel.parts)))
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages (and package-dir if needed) in pyproject.toml"


def test_resources_are_mapped_into_the_package():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"]["DeepDRRSlicerLib"] == "DeepDRRSlicer/DeepDRRSlicerLib"
    assert setuptools_cfg["package-dir"]["DeepDRRSlicerLib.Resources"] == "Resources"
    globs = setuptools_cfg["package-data"]["DeepDRRSlicerLib.Resources"]
    # Every file under Resources/ must match one of the globs, or pip drops it.
    suffixes = tuple(g.removeprefix("**/*") for g in globs)
    excluded = setuptools_cfg.get("exclude-package-data", {}).get("DeepDRRSlicerLib.Resources", [])
    assert excluded == ["Screenshots/*"], "only the screenshots stay out of the package"
    unshipped = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "Resources").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(suffixes)
        and p.parent.name != "Screenshots"
    ]
    assert not unshipped, f"add package-data globs for {unshipped} in pyproject.toml"


def test_console_script_and_extras():
    project = _pyproject()["project"]
    assert project["scripts"]["deepdrr-slicer"] == "DeepDRRSlicerLib.cli:main"
    assert set(project["optional-dependencies"]) >= {"test", "cuda", "pycuda"}
    assert any(d.replace(" ", "").startswith("numpy>=2") for d in project["dependencies"])


# --- resources ---------------------------------------------------------------

def test_sample_ct_is_found_and_is_the_bundled_file():
    path = resources.sample_ct_path()
    assert path.is_file()
    assert path.name == "pelvis_ct_3mm.nii.gz"
    assert path.stat().st_size > 1_000_000
    # Its attribution travels with it.
    assert (path.parent / "README.md").is_file()
    assert (path.parent / "TOTALSEGMENTATOR_REPO_LICENSE_Apache-2.0.txt").is_file()


def test_missing_resource_names_the_file_and_the_fix():
    with pytest.raises(FileNotFoundError) as err:
        resources.resource_path("SampleData", "no_such_file.nii.gz")
    message = str(err.value)
    assert "SampleData/no_such_file.nii.gz" in message
    assert "Fix:" in message


def test_resource_path_refuses_to_leave_resources():
    with pytest.raises(ValueError):
        resources.resource_path("..", "pyproject.toml")


def test_icon_is_a_128px_png():
    from PIL import Image

    with Image.open(resources.resource_path("Icons", "DeepDRRSlicer.png")) as icon:
        assert icon.format == "PNG"
        assert icon.size == (128, 128)


# --- Slicer extension metadata ----------------------------------------------

def test_s4ext_has_every_field_filled():
    fields = _s4ext()
    missing = [k for k in S4EXT_KEYS if not fields.get(k)]
    assert not missing, f"DeepDRRSlicer.s4ext lacks {missing}"
    assert fields["scm"] == "git"
    assert fields["enabled"] in {"0", "1"}


def test_s4ext_agrees_with_cmake_extension_variables():
    fields = _s4ext()
    cmake = _cmake_extension_vars()
    pairs = {
        "homepage": "EXTENSION_HOMEPAGE",
        "category": "EXTENSION_CATEGORY",
        "contributors": "EXTENSION_CONTRIBUTORS",
        "description": "EXTENSION_DESCRIPTION",
        "iconurl": "EXTENSION_ICONURL",
        "screenshoturls": "EXTENSION_SCREENSHOTURLS",
        "depends": "EXTENSION_DEPENDS",
    }
    differ = {k: (fields.get(k), cmake.get(v)) for k, v in pairs.items() if fields.get(k) != cmake.get(v)}
    assert not differ, f"DeepDRRSlicer.s4ext and CMakeLists.txt disagree: {differ}"


def test_screenshot_urls_point_at_screenshots_in_this_repository():
    urls = _s4ext()["screenshoturls"].split()
    assert len(urls) >= 3
    for url in urls:
        path = REPO / url.split("/main/", 1)[1]
        assert path.parent == REPO / "Resources" / "Screenshots" and path.is_file(), url
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"Resources/Screenshots/([\w.-]+\.png)", readme))
    assert shown and all((REPO / "Resources" / "Screenshots" / name).is_file() for name in shown)


def test_icon_url_points_at_the_icon_in_this_repository():
    url = _s4ext()["iconurl"]
    marker = "/main/"
    assert marker in url
    assert (REPO / url.split(marker, 1)[1]).is_file()


# --- product files stay self-contained -------------------------------------

def _product_text_files():
    roots = [REPO / "DeepDRRSlicer", REPO / "Resources"]
    files = [REPO / "README.md", REPO / "pyproject.toml", REPO / "CMakeLists.txt", REPO / "DeepDRRSlicer.s4ext"]
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    text_suffixes = {".py", ".md", ".txt", ".json", ".ui", ".toml", ".s4ext", ".csv", ".cu", ".cuh", ""}
    return [p for p in files if p.suffix in text_suffixes or p.name == "CMakeLists.txt"]


def test_product_files_do_not_point_outside_the_repository():
    """A user's machine has only this repository: no '../shared', no machine paths."""
    bad = []
    for path in _product_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        # the folder holding this checkout is a path of the developer's machine
        for pattern in ("../shared", str(REPO.parent) + "/"):
            if pattern in text:
                bad.append(f"{path.relative_to(REPO).as_posix()}: {pattern!r}")
    assert not bad, "product files refer to paths that users do not have: " + ", ".join(bad)
