"""The Slicer module's files, checked without Slicer: imports, .ui bindings, CMake and resources.

Inside Slicer the parameter node wrapper binds each .ui widget that has a
``SlicerParameterName`` dynamic property to the parameter of that name, and
fails at run time when the widget type cannot hold the parameter's type.
These tests read the module file's syntax tree and the .ui XML to catch such
mistakes in CI, where Qt and Slicer are not available.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from DeepDRRSlicerLib import resources

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "DeepDRRSlicer" / "DeepDRRSlicer.py"
GUI_PACKAGE = REPO / "DeepDRRSlicer" / "DeepDRRSlicerLib" / "gui"
MODULE_CMAKE = REPO / "DeepDRRSlicer" / "CMakeLists.txt"
UI_FILE = REPO / "Resources" / "UI" / "DeepDRRSlicer.ui"

ALLOWED_TOP_LEVEL_IMPORTS = {"slicer", "vtk", "qt", "ctk", "numpy"}

# Widget classes the parameter node wrapper can bind, per parameter type (Slicer's guiConnectors.py).
BINDABLE = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
    "enum": {"QComboBox"},
    "node": {"qMRMLNodeComboBox"},
}


def _panel_code() -> str:
    """The module file and the Qt-side package together: where the panel's widgets are wired."""
    files = [MODULE_FILE, *sorted(GUI_PACKAGE.glob("*.py"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _class(tree, name) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"{MODULE_FILE.name} has no class {name}")


def _parameters() -> dict:
    """name -> (kind, annotation source, has range) of the @parameterNodeWrapper class."""
    tree = _module_tree()
    cls = _class(tree, "DeepDRRSlicerParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    enums = {c.name for c in tree.body if isinstance(c, ast.ClassDef)
             and any(getattr(b, "attr", getattr(b, "id", "")) == "Enum" for b in c.bases)}
    found = {}
    for item in cls.body:
        if not isinstance(item, ast.AnnAssign):
            continue
        source = ast.unparse(item.annotation)
        base = source
        if isinstance(item.annotation, ast.Subscript) and ast.unparse(item.annotation.value) == "Annotated":
            base = ast.unparse(item.annotation.slice.elts[0])
        if base in ("float", "int", "bool", "str"):
            kind = base
        elif base in enums:
            kind = "enum"
        elif base.startswith("vtkMRML"):
            kind = "node"
        else:
            raise AssertionError(f"parameter {item.target.id}: unexpected type {source}")
        found[item.target.id] = (kind, source, "WithinRange" in source)
    return found


def _ui_bindings() -> dict:
    """SlicerParameterName -> (widget class, widget element) in the .ui file."""
    root = ET.parse(UI_FILE).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName must be a dynamic property (stdset=0)"
                name = prop.find("string").text
                assert name not in bound, f"two widgets are bound to '{name}'"
                bound[name] = (widget.get("class"), widget)
    return bound


def test_module_file_imports_only_slicer_qt_vtk_numpy_and_the_standard_library_at_file_scope():
    tree = _module_tree()
    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            if top not in stdlib and top not in ALLOWED_TOP_LEVEL_IMPORTS:
                offenders.append(name)
    assert not offenders, f"file-scope imports beyond stdlib/Slicer/vtk/qt/ctk/numpy: {offenders}"


def test_module_file_has_module_widget_logic_and_test_classes():
    tree = _module_tree()
    bases = {c.name: [ast.unparse(b) for b in c.bases] for c in tree.body if isinstance(c, ast.ClassDef)}
    assert "ScriptedLoadableModule" in bases["DeepDRRSlicer"]
    assert "ScriptedLoadableModuleWidget" in bases["DeepDRRSlicerWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["DeepDRRSlicerLogic"]
    assert "ScriptedLoadableModuleTest" in bases["DeepDRRSlicerTest"]
    text = MODULE_FILE.read_text(encoding="utf-8")
    for required in ("slicer.util.loadUI", "arXiv:1803.08606", "Unberath"):
        assert required in text, f"the module file should use/mention {required}"
    panel = _panel_code()
    for required in ("tryWithErrorDisplay", "createProgressDialog", "connectParametersToGui", "disconnectGui"):
        assert required in panel, f"the module file or DeepDRRSlicerLib/gui should use {required}"


def test_every_parameter_has_exactly_one_widget_of_a_bindable_type():
    parameters = _parameters()
    bindings = _ui_bindings()
    assert set(bindings) == set(parameters), (
        f"unbound parameters: {sorted(set(parameters) - set(bindings))}; "
        f"widgets bound to unknown parameters: {sorted(set(bindings) - set(parameters))}")
    for name, (kind, source, has_range) in parameters.items():
        widget_class, widget = bindings[name]
        assert widget_class in BINDABLE[kind], f"'{name}' ({source}) cannot bind to a {widget_class}"
        if widget_class in ("ctkSliderWidget", "QSlider"):
            assert has_range, f"'{name}' is shown on a slider, so its annotation needs WithinRange"
        if kind == "str" and widget_class == "QComboBox":
            assert "Choice" in source, f"'{name}' on a QComboBox needs a Choice annotation"
        if kind == "node":
            types = [s.text for s in widget.iter("string") if s.text and s.text.startswith("vtkMRML")]
            assert re.sub(r"^Optional\[|\]$", "", source) in types, f"'{name}': nodeTypes {types} vs {source}"


def test_every_ui_control_is_bound_or_is_an_action_button():
    root = ET.parse(UI_FILE).getroot()
    bound = {w for w, _ in _ui_bindings().values()}
    assert bound  # sanity
    actions = {"simulateButton", "installButton", "installGpuButton", "centerButton", "installTorchButton"}
    inputs = {"qMRMLNodeComboBox", "ctkSliderWidget", "QSpinBox", "QDoubleSpinBox", "QComboBox", "QCheckBox",
              "QLineEdit", "QSlider", "QPushButton"}
    unbound = []
    for widget in root.iter("widget"):
        if widget.get("class") not in inputs or widget.get("name") in actions:
            continue
        if not any(p.get("name") == "SlicerParameterName" for p in widget.findall("property")):
            unbound.append(widget.get("name"))
    assert not unbound, f"controls without a SlicerParameterName: {unbound}"
    panel = _panel_code()
    for action in actions:
        assert f"self.ui.{action}.connect(" in panel, f"{action} is never connected (module file or gui/)"


def test_node_selectors_get_the_scene_from_the_ui():
    root = ET.parse(UI_FILE).getroot()
    selectors = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert selectors and selectors <= receivers
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared


def test_stage_enum_matches_the_library_list():
    from DeepDRRSlicerLib.mrml.stages import KNOWN_STAGES

    cls = _class(_module_tree(), "FluoroStage")
    values = [ast.literal_eval(item.value) for item in cls.body
              if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant)]
    assert tuple(values) == KNOWN_STAGES


def test_every_material_of_the_shipped_models_has_a_selectable_stage():
    from DeepDRRSlicerLib.hu_calibration import CALIBRATED_BASIS, DEEPDRR_BASIS
    from DeepDRRSlicerLib.metal import METAL_CHOICES
    from DeepDRRSlicerLib.mrml.stages import KNOWN_STAGES

    materials = set(CALIBRATED_BASIS) | set(DEEPDRR_BASIS) | {m for m in METAL_CHOICES.values() if m}
    missing = sorted(m for m in materials if f"line_integral_{m}" not in KNOWN_STAGES)
    assert not missing, f"no stage selector entry for {missing}"


def test_cmake_builds_the_module_with_generic_tests_and_registers_the_self_test():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    assert re.search(r"slicerMacroBuildScriptedModule\([^)]*WITH_GENERIC_TESTS", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    text = text.replace("${MODULE_NAME}", "DeepDRRSlicer")
    scripts = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", text, re.S).group(1).split()
    lib = REPO / "DeepDRRSlicer" / "DeepDRRSlicerLib"
    on_disk = {p.relative_to(lib.parent).as_posix() for p in lib.rglob("*.py") if "__pycache__" not in p.parts}
    assert set(scripts) == on_disk | {"DeepDRRSlicer.py"}, "list every script of the module in its CMakeLists.txt"
    for resource in ("Resources/UI/DeepDRRSlicer.ui", "Resources/Icons/DeepDRRSlicer.png",
                     "Resources/requirements.txt"):
        assert resource in text, f"{resource} is not listed in DeepDRRSlicer/CMakeLists.txt"
        assert (REPO / resource).is_file()


@pytest.mark.parametrize("relative", ["UI/DeepDRRSlicer.ui", "Icons/DeepDRRSlicer.png", "requirements.txt"])
def test_module_resources_resolve_from_the_source_tree(relative):
    assert resources.resource_path(*relative.split("/")).is_file()


_STUB_PROJECT = """
cmake_minimum_required(VERSION 3.16)
project(CheckDeepDRRSlicerModuleCMake LANGUAGES NONE)
# Stand-ins for what find_package(Slicer) provides, to configure the module's CMakeLists.txt alone.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.12/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.12/qt-scripted-modules")
set(BUILD_TESTING ON)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  # Like ctkMacroCompilePythonScript: <source dir>/<script> -> <qt-scripted-modules>/<script>
  foreach(script IN LISTS MY_SCRIPTS)
    get_filename_component(folder "${script}" DIRECTORY)
    file(COPY "${CMAKE_CURRENT_SOURCE_DIR}/${script}"
         DESTINATION "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${folder}")
  endforeach()
  string(REPLACE ";" "\\n" scripts "${MY_SCRIPTS}")
  file(WRITE "${CMAKE_BINARY_DIR}/module.txt" "NAME=${MY_NAME}\\nGENERIC=${MY_WITH_GENERIC_TESTS}\\n${scripts}\\n")
endmacro()
function(slicer_add_python_unittest)
  file(APPEND "${CMAKE_BINARY_DIR}/module.txt" "UNITTEST=${ARGN}\\n")
endfunction()
add_subdirectory("${MODULE_DIR}" module)
"""


def _cmake():
    import shutil

    candidates = [shutil.which("cmake"), str(Path(sys.executable).with_name("cmake"))]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("cmake is not installed")


def test_module_cmake_configures_lists_every_script_and_lays_out_a_working_build_tree(tmp_path):
    """Configure DeepDRRSlicer/CMakeLists.txt with stand-ins for Slicer's macros, then use the build tree."""
    import subprocess

    cmake = _cmake()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text(_STUB_PROJECT, encoding="utf-8")
    build = tmp_path / "build"
    result = subprocess.run([cmake, "-S", str(tmp_path / "src"), "-B", str(build),
                             f"-DMODULE_DIR={(REPO / 'DeepDRRSlicer').as_posix()}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (build / "module.txt").read_text(encoding="utf-8").splitlines()
    assert "NAME=DeepDRRSlicer" in lines and "GENERIC=TRUE" in lines
    assert "UNITTEST=SCRIPT;DeepDRRSlicer.py" in lines
    lib = REPO / "DeepDRRSlicer" / "DeepDRRSlicerLib"
    expected = {"DeepDRRSlicer.py"} | {p.relative_to(lib.parent).as_posix() for p in lib.rglob("*.py")
                                       if "__pycache__" not in p.parts}
    assert expected <= set(lines), f"scripts missing from the module build: {sorted(expected - set(lines))}"
    modules = build / "lib" / "Slicer-5.12" / "qt-scripted-modules"
    for resource in ("UI/DeepDRRSlicer.ui", "Icons/DeepDRRSlicer.png", "requirements.txt",
                     "SampleData/pelvis_ct_3mm.nii.gz", "Physics/tube_spectra.npz"):
        assert (modules / "Resources" / resource).is_file(), resource
    assert not (modules / "Resources" / "Screenshots").exists(), "screenshots are not part of the module"
    # In that layout the Lib finds its resources next to the module, as resourcePath() does.
    probe = ("import DeepDRRSlicerLib.resources as r; "
             "print(r.resource_path('UI', 'DeepDRRSlicer.ui').resolve())")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           cwd=str(tmp_path), env={**__import__("os").environ, "PYTHONPATH": str(modules)})
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == (modules / "Resources" / "UI" / "DeepDRRSlicer.ui").resolve()


def test_widgets_used_by_the_panel_code_exist_in_the_ui_file():
    """``ui.<name>`` in the module file or a gui section must be a widget of the .ui file (CI cannot run Qt)."""
    names = {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    used = set(re.findall(r"\bui\.([A-Za-z_][A-Za-z0-9_]*)", _panel_code()))
    assert used, "the panel code uses no widget at all?"
    assert used <= names, f"not in {UI_FILE.name}: {sorted(used - names)}"
