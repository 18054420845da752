"""Locate files shipped in the top-level ``Resources/`` folder.

The same ``Resources/`` tree lives in a different place depending on how the
engine was installed, so :func:`resource_path` looks in each, in this order:

1. ``<package>/Resources`` -- ``pip install .`` copies it into the package.
2. ``<package>/../Resources`` -- a Slicer build puts the scripted module's
   resources next to the module script, i.e. beside ``DeepDRRSlicerLib/``.
3. ``<repository>/Resources`` -- a source checkout or ``pip install -e .``.

Only the standard library is imported here, so this module is safe to import
anywhere (Slicer, CLI, tests).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "resource_dirs",
    "resource_path",
    "sample_ct_path",
    "sample_landmarks_path",
]

_HERE = Path(__file__).resolve().parent


def resource_dirs() -> list[Path]:
    """Candidate ``Resources`` folders, in search order (they need not exist)."""
    candidates = [
        _HERE / "Resources",  # pip-installed package
        _HERE.parent / "Resources",  # Slicer build/install tree
    ]
    if len(_HERE.parents) > 1:
        candidates.append(_HERE.parents[1] / "Resources")  # source tree
    unique: list[Path] = []
    for c in candidates:
        if c not in unique:
            unique.append(c)
    return unique


def resource_path(*parts: str) -> Path:
    """Return the path of ``Resources/<parts...>`` (a file or a folder).

    Raises FileNotFoundError naming the missing item, the places searched and
    how to fix it.
    """
    if not parts:
        raise ValueError(
            "resource_path() needs at least one path component, "
            "e.g. resource_path('Icons', 'DeepDRRSlicer.png')."
        )
    relative = Path(*parts)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"resource_path() takes a path inside Resources/, got {relative.as_posix()!r}.")
    searched = resource_dirs()
    for base in searched:
        candidate = base / relative
        if candidate.exists():
            return candidate
    where = ", ".join(str(b) for b in searched)
    raise FileNotFoundError(
        f"Resource 'Resources/{relative.as_posix()}' was not found (searched: {where}). "
        "Fix: reinstall the package from a complete checkout (pip install .), or rebuild the "
        "Slicer extension so that the top-level Resources/ folder is copied next to DeepDRRSlicerLib/."
    )


def sample_ct_path() -> Path:
    """The bundled abdomen-pelvis CT (3 mm isotropic NIfTI, Hounsfield units)."""
    return resource_path("SampleData", "pelvis_ct_3mm.nii.gz")


def sample_landmarks_path() -> Path:
    """Landmarks for the bundled CT, as a Slicer markups JSON file."""
    return resource_path("SampleData", "pelvis_ct_3mm_landmarks.mrk.json")
