"""The layer rule, read from the source: each layer imports only the layers before it.

    engine (DeepDRRSlicerLib, outside mrml/ and gui/)   no Slicer, no VTK, no Qt
      -> mrml (DeepDRRSlicerLib/mrml)                    MRML through slicer and vtk; no Qt, no application
      -> gui (DeepDRRSlicerLib/gui)                      Qt widgets, dialogs, timers (runs only inside Slicer)
      -> the module file (DeepDRRSlicer/DeepDRRSlicer.py)

Every import statement counts, also those inside functions (that is where the
module file and the heavy engine imports live). The gui package cannot be
imported outside Slicer, so its imports are also resolved here, statically.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "DeepDRRSlicer"
LIB = MODULE_DIR / "DeepDRRSlicerLib"
MODULE_FILE = MODULE_DIR / "DeepDRRSlicer.py"
MODULE_FILE_MAX_LINES = 500

LAYERS = ("engine", "mrml", "gui", "module")
#: Outside packages each layer may NOT import (by top-level name).
QT = {"qt", "ctk", "PythonQt", "PyQt5", "PyQt6", "PySide2", "PySide6", "slicerqt"}
SLICER = {"slicer", "vtk", "vtkmodules", "mrml", "vtkAddon", "vtkITK", "vtkSegmentationCore", "MRMLCorePython"}
FORBIDDEN_OUTSIDE = {
    "engine": QT | SLICER,
    "mrml": QT,
    "gui": set(),
    "module": set(),
}


def _layer_of_file(path: Path) -> str:
    if path == MODULE_FILE:
        return "module"
    parts = path.relative_to(LIB).parts
    if parts[0] in ("mrml", "gui"):
        return parts[0]
    return "engine"


def _layer_of_module(name: str) -> str | None:
    """Layer of a dotted module name inside this project, or None for an outside package."""
    parts = name.split(".")
    if parts[0] == "DeepDRRSlicer":
        return "module"
    if parts[0] != "DeepDRRSlicerLib":
        return None
    if len(parts) > 1 and parts[1] in ("mrml", "gui"):
        return parts[1]
    return "engine"


def _package_of(path: Path) -> list[str]:
    """Dotted package of a Lib file, as a list (``DeepDRRSlicerLib/mrml/x.py`` -> [DeepDRRSlicerLib, mrml])."""
    return ["DeepDRRSlicerLib", *path.relative_to(LIB).parts[:-1]]


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module name, imported names) for every import statement in the file.

    ``text`` stands in for the file's content (used to plant a wrong import without writing a file).
    """
    source = path.read_text(encoding="utf-8") if text is None else text
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _source_files() -> list[Path]:
    files = [p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files) + [MODULE_FILE]


def _layer_violations(files, texts=None) -> list[str]:
    problems = []
    for path in files:
        layer = _layer_of_file(path)
        rank = LAYERS.index(layer)
        for line, module, names in _imports(path, (texts or {}).get(path)):
            where = f"{path.relative_to(REPO).as_posix()}:{line}"
            target = _layer_of_module(module)
            if target is None:
                top = module.split(".")[0]
                if top in FORBIDDEN_OUTSIDE[layer]:
                    problems.append(f"{where}: the {layer} layer imports {module}")
                continue
            if module == "DeepDRRSlicerLib" and names:  # "from DeepDRRSlicerLib import mrml" names a subpackage
                for name in names:
                    sub = _layer_of_module(f"DeepDRRSlicerLib.{name}")
                    if LAYERS.index(sub) > rank:
                        problems.append(f"{where}: the {layer} layer imports DeepDRRSlicerLib.{name} ({sub})")
                continue
            if LAYERS.index(target) > rank:
                problems.append(f"{where}: the {layer} layer imports {module} (the {target} layer, above it)")
    return problems


def test_every_source_file_belongs_to_a_layer():
    layers = {_layer_of_file(p) for p in _source_files()}
    assert layers == set(LAYERS), f"expected files in every layer, found {sorted(layers)}"
    assert (LIB / "gui" / "__init__.py").is_file() and (LIB / "mrml" / "__init__.py").is_file()


def test_each_layer_imports_only_the_layers_before_it():
    problems = _layer_violations(_source_files())
    assert not problems, "layer rule broken:\n" + "\n".join(problems)


def test_qt_is_imported_only_by_the_gui_package_and_the_module_file():
    importers = set()
    for path in _source_files():
        if any(module.split(".")[0] in QT for _, module, _ in _imports(path)):
            importers.add(_layer_of_file(path))
    assert importers <= {"gui", "module"}, importers
    assert "gui" in importers  # the rule is about real code: the gui package does use Qt


def test_mrml_layer_never_reaches_the_application():
    """``slicer.app`` (the Qt application, its layout manager and widgets) exists only in the GUI."""
    offenders = []
    for path in sorted((LIB / "mrml").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("app", "modules", "moduleNames")
                    and isinstance(node.value, ast.Name) and node.value.id == "slicer"):
                offenders.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}: slicer.{node.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize("layer, bad_import, expected", [
    ("engine", "import qt", "imports qt"),
    ("engine", "import slicer", "imports slicer"),
    ("engine", "from .mrml import logic", "DeepDRRSlicerLib.mrml"),
    ("engine", "from DeepDRRSlicerLib import gui", "DeepDRRSlicerLib.gui"),
    ("mrml", "import ctk", "imports ctk"),
    ("mrml", "def f():\n    from ..gui.timers import QtTimerScheduler", "DeepDRRSlicerLib.gui.timers"),
    ("gui", "import DeepDRRSlicer", "the module layer"),
])
def test_the_rule_catches_a_wrong_import(layer, bad_import, expected):
    """The checker itself: a wrong import planted in (the text of) a file of each layer is reported."""
    planted = {"engine": LIB, "mrml": LIB / "mrml", "gui": LIB / "gui"}[layer] / "planted.py"
    problems = _layer_violations([planted], texts={planted: bad_import})
    assert any(expected in p for p in problems), problems
    assert not _layer_violations([planted], texts={planted: "import numpy"})


def test_module_file_stays_thin():
    lines = len(MODULE_FILE.read_text(encoding="utf-8").splitlines())
    assert lines <= MODULE_FILE_MAX_LINES, (
        f"DeepDRRSlicer.py has {lines} lines (at most {MODULE_FILE_MAX_LINES}): move panel code into a section "
        "of DeepDRRSlicerLib/gui/ and Qt-free code into DeepDRRSlicerLib/mrml/")


# --- code that CI cannot import (the gui package needs Slicer's Qt) is resolved statically -------------

def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _file_of_module(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "DeepDRRSlicerLib":
        return None
    base = LIB.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    raise AssertionError(f"no module {module}")


def test_project_imports_resolve_to_existing_names():
    """Every ``from DeepDRRSlicerLib... import name`` names a module or a top-level definition that exists."""
    problems = []
    for path in _source_files():
        for line, module, names in _imports(path):
            if _layer_of_module(module) in (None, "module"):
                continue
            where = f"{path.relative_to(REPO).as_posix()}:{line}"
            try:
                target = _file_of_module(module)
            except AssertionError as error:
                problems.append(f"{where}: {error}")
                continue
            defined = _top_level_names(target)
            for name in names:
                submodule = target.parent / f"{name}.py" if target.name == "__init__.py" else None
                if name != "*" and name not in defined and not (submodule and submodule.is_file()) \
                        and not (target.parent / name / "__init__.py").is_file():
                    problems.append(f"{where}: {module} has no {name}")
    assert not problems, "\n".join(problems)


def test_every_gui_section_file_is_in_the_panel():
    """A ``*_section.py`` file in gui/ defines PanelSection subclasses, and panel_sections() lists them all."""
    panel = ast.parse((LIB / "gui" / "panel.py").read_text(encoding="utf-8"))
    listing = next(n for n in panel.body if isinstance(n, ast.FunctionDef) and n.name == "panel_sections")
    returned = next(n for n in ast.walk(listing) if isinstance(n, ast.Return))
    listed = [elt.id for elt in returned.value.elts]
    defined = {}
    for path in sorted((LIB / "gui").glob("*_section.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "PanelSection" for b in node.bases):
                defined[node.name] = path.name
    assert defined, "no PanelSection subclass found in gui/*_section.py"
    assert sorted(listed) == sorted(defined), f"panel_sections() lists {listed}; the section files define {defined}"
    assert listed[-1] == "LiveSection", "LiveSection reacts last (it may stop the live view)"
    hooks = {n.name for n in ast.walk(next(n for n in panel.body if isinstance(n, ast.ClassDef)
                                            and n.name == "PanelSection")) if isinstance(n, ast.FunctionDef)}
    module_text = MODULE_FILE.read_text(encoding="utf-8")
    for hook in hooks - {"__init__"}:
        assert f"section.{hook}(" in module_text, f"the module widget never calls the sections' {hook}() hook"
