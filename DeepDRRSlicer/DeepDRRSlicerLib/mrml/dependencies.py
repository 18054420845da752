"""The module's Python requirements: check them, and install them when the user asks.

The list lives in one place, ``Resources/requirements.txt``. Nothing is
installed at import time or without the user's consent:

* Slicer 5.12 and later: ``slicer.packaging.pip_ensure`` (it asks the user,
  installs with progress, and offers a restart when needed);
* Slicer 5.10: ``slicer.util.pip_install``, after our own confirmation.

Either way pip gets a constraints file pinning numpy to the version Slicer
ships, so installing never changes (or downgrades) Slicer's numpy; if no
numba release supports that numpy, pip fails and says so instead.

torch is not installed by pip here: when a feature needs it, it comes from
the SlicerPyTorch extension (``PyTorchUtils``), which picks the build that
matches the machine's GPU and CUDA.

This file imports only the standard library; ``slicer`` is passed in (or
imported when an installation is actually requested), never Qt.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..resources import resource_path

__all__ = [
    "REQUIREMENTS_FILE",
    "Requirement",
    "load_requirements",
    "missing_requirements",
    "numpy_constraints_file",
    "InstallPlan",
    "plan_installation",
    "install",
    "torch_instructions",
    "torch_available",
    "install_torch",
]

REQUIREMENTS_FILE = "requirements.txt"
REQUESTER = "DeepDRRSlicer"

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")
_SPECIFIER = re.compile(r"^\s*(==|>=|<=|!=|~=|>|<)\s*([0-9][0-9A-Za-z.*+!-]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One line of requirements.txt: a distribution name and version specifiers (``>=0.61``, ...)."""

    text: str
    name: str
    specifiers: tuple  # ((operator, version), ...)

    @classmethod
    def parse(cls, line: str) -> "Requirement":
        line = line.split(";", 1)[0].strip()
        match = _REQUIREMENT.match(line)
        if not match:
            raise ValueError(f"Cannot read the requirement {line!r}.")
        name, _, rest = match.groups()
        specifiers = []
        for part in filter(None, (p.strip() for p in rest.split(","))):
            spec = _SPECIFIER.match(part)
            if not spec:
                raise ValueError(f"Cannot read the version specifier {part!r} in {line!r}.")
            specifiers.append((spec.group(1), spec.group(2)))
        return cls(text=line, name=name, specifiers=tuple(specifiers))

    def installed_version(self) -> str | None:
        try:
            return metadata.version(self.name)
        except metadata.PackageNotFoundError:
            return None

    def is_satisfied(self) -> bool:
        version = self.installed_version()
        return version is not None and all(_compare(version, op, wanted) for op, wanted in self.specifiers)


def _version_key(text: str) -> tuple:
    """A sortable key for release versions ("1.26.4" > "1.9"); pre/post/dev tags are ignored."""
    release = re.match(r"^\s*v?(\d+(?:\.\d+)*)", text)
    if not release:
        return ()
    parts = [int(x) for x in release.group(1).split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _compare(installed: str, operator: str, wanted: str) -> bool:
    try:  # 'packaging' ships with pip and with Slicer; use it when present
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion

        try:
            return SpecifierSet(f"{operator}{wanted}").contains(installed, prereleases=True)
        except InvalidVersion:
            pass
    except ImportError:
        pass
    a, b = _version_key(installed), _version_key(wanted.rstrip(".*"))
    return {"==": a == b, "!=": a != b, ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b,
            "~=": a >= b and a[: max(1, len(b) - 1)] == b[: max(1, len(b) - 1)]}[operator]


def requirements_path() -> Path:
    """``Resources/requirements.txt`` (source tree, Slicer build or pip install)."""
    return resource_path(REQUIREMENTS_FILE)


def load_requirements(path=None) -> list:
    """The module's requirements, one :class:`Requirement` per non-comment line."""
    path = Path(path) if path is not None else requirements_path()
    requirements = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirements.append(Requirement.parse(line))
    return requirements


def missing_requirements(requirements=None) -> list:
    """The requirements that are not installed at a matching version."""
    requirements = load_requirements() if requirements is None else requirements
    return [r for r in requirements if not r.is_satisfied()]


def numpy_constraints_file(directory=None) -> Path | None:
    """A pip constraints file pinning numpy to the installed version (None if numpy is absent)."""
    try:
        version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="deepdrr-pip-"))
    path = directory / "deepdrr-constraints.txt"
    path.write_text(f"# Keep the numpy that Slicer ships (never downgrade it)\nnumpy=={version}\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class InstallPlan:
    """How the missing requirements would be installed in this Slicer."""

    method: str              # "pip_ensure" (Slicer >= 5.12), "pip_install" (5.10), or "none" (nothing missing)
    requirements: tuple      # requirement strings
    asks_user: bool          # True when the method shows its own confirmation dialog

    def describe(self) -> str:
        if self.method == "none":
            return "All Python requirements are installed."
        return (f"Missing Python packages: {', '.join(self.requirements)}. They would be installed with "
                f"{self.method} (numpy is kept at the version Slicer ships).")


def _pip_ensure(slicer_module):
    for holder in ("packaging", "pydeps", "util"):
        function = getattr(getattr(slicer_module, holder, None), "pip_ensure", None)
        if callable(function):
            return function
    try:  # slicer.packaging is a submodule that may need an explicit import
        import importlib

        return importlib.import_module(f"{slicer_module.__name__}.packaging").pip_ensure
    except (ImportError, AttributeError):
        return None


def plan_installation(slicer_module, requirements=None) -> InstallPlan:
    """Choose the installation method available in ``slicer_module`` (the ``slicer`` package)."""
    missing = missing_requirements(requirements)
    texts = tuple(r.text for r in missing)
    if not missing:
        return InstallPlan("none", (), False)
    if _pip_ensure(slicer_module) is not None:
        return InstallPlan("pip_ensure", texts, True)
    if callable(getattr(getattr(slicer_module, "util", None), "pip_install", None)):
        return InstallPlan("pip_install", texts, False)
    raise RuntimeError("This Slicer offers neither slicer.packaging.pip_ensure nor slicer.util.pip_install; "
                       f"install {', '.join(texts)} from Slicer's Python console with pip.")


def install(slicer_module, confirm=None, requirements=None) -> bool:
    """Install the missing requirements on the user's request. Returns True when all are installed after.

    ``confirm(message) -> bool`` asks the user (used with ``pip_install``, which
    does not ask); ``pip_ensure`` asks by itself. Declining returns False.
    """
    plan = plan_installation(slicer_module, requirements)
    if plan.method == "none":
        return True
    if plan.method == "pip_install" and confirm is not None and not confirm(plan.describe() + "\n\nInstall them now?"):
        return False
    with tempfile.TemporaryDirectory(prefix="deepdrr-pip-") as folder:
        constraints = numpy_constraints_file(folder)
        if plan.method == "pip_ensure":
            # pip_ensure takes packaging Requirement objects, not strings (it reads .name and .marker)
            from packaging.requirements import Requirement as PackagingRequirement

            try:  # pip_ensure asks the user itself
                _pip_ensure(slicer_module)([PackagingRequirement(text) for text in plan.requirements],
                                           constraints=str(constraints) if constraints else None, requester=REQUESTER)
            except RuntimeError:  # the user declined
                return False
        else:
            arguments = list(plan.requirements)  # a list: no shell quoting of the constraints path
            if constraints is not None:
                arguments += ["-c", str(constraints)]
            slicer_module.util.pip_install(arguments)
    metadata_cache_clear()
    return not missing_requirements(requirements)


def metadata_cache_clear() -> None:
    """Make packages installed by a pip subprocess visible to this process."""
    import importlib

    importlib.invalidate_caches()


def torch_instructions() -> str:
    """How to get torch inside Slicer (never by pip from this module)."""
    return ("PyTorch is provided by the SlicerPyTorch extension: install 'PyTorch' from the Extensions "
            "Manager, then run PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True).")


def torch_available() -> bool:
    """Whether ``import torch`` works in this Python."""
    from ..material_network import torch_status

    return torch_status()[0]


def install_torch(slicer_module, confirm) -> tuple[bool, str]:
    """Get PyTorch through the SlicerPyTorch extension, after ``confirm(message) -> bool`` agrees.

    Returns (installed, message). Never runs pip for torch: SlicerPyTorch picks
    the build for the machine's GPU and CUDA (as TotalSegmentator and
    MONAIAuto3DSeg do). Without the extension, says how to get it.
    """
    if torch_available():
        return True, "PyTorch is already installed."
    try:
        import PyTorchUtils  # the SlicerPyTorch extension's module
    except ImportError:
        return False, ("The segmentation network needs PyTorch, which comes from the 'PyTorch' extension "
                       "(SlicerPyTorch). Install it from the Extensions Manager, restart Slicer, then press "
                       "'Install PyTorch...' again. Until then the materials come from HU thresholds.")
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        if not confirm("The material segmentation network needs PyTorch. Install it now through the PyTorch "
                       "extension? This downloads several hundred MB (more with CUDA) and can take minutes."):
            return False, "PyTorch was not installed; the materials come from HU thresholds."
        torch = logic.installTorch(askConfirmation=False)
        if torch is None:
            return False, "Installing PyTorch failed; see the Python console. The materials come from HU thresholds."
    metadata_cache_clear()
    return torch_available(), "PyTorch is installed: the segmentation network decomposes the CT."
