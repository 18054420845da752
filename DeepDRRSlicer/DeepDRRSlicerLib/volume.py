"""CT volumes: a read-only HU array plus its IJK -> RAS matrix.

Arrays are indexed [k, j, i] (slowest to fastest), as SimpleITK and
``slicer.util.arrayFromVolume`` give them. Files in LPS (NIfTI via ITK,
NRRD, DICOM) are converted to RAS here and nowhere else.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ImplausibleCTWarning(UserWarning):
    """The volume's values do not look like Hounsfield units."""


@dataclass(frozen=True, eq=False)
class Volume:
    hu: np.ndarray          # float32 [k, j, i], read-only
    ijk_to_ras: np.ndarray  # 4x4 float64

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.hu.shape
        return (i, j, k)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def corners_ras(self) -> np.ndarray:
        """(8, 3) RAS corners of the box bounded by the outer voxel faces."""
        i, j, k = self.shape_ijk
        corners = np.array([[a, b, c, 1.0] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
        return (corners @ self.ijk_to_ras.T)[:, :3]

    def center_ras(self) -> np.ndarray:
        return self.corners_ras().mean(axis=0)

    def contains_ras(self, point_ras) -> bool:
        return point_in_voxel_box(point_ras, self.ijk_to_ras, self.hu.shape)

    @classmethod
    def from_array(cls, array, ijk_to_ras=None, *, spacing=None, origin=None, index_order: str = "kji",
                   source: str = "array") -> "Volume":
        """Wrap a 3D HU array. The caller's array is copied, never modified.

        Give either ``ijk_to_ras`` (4x4, may be oblique) or ``spacing`` (+ ``origin``),
        which builds an axis-aligned RAS matrix. ``index_order`` says whether the
        array is indexed [k, j, i] (SimpleITK, Slicer) or [i, j, k] (nibabel).
        """
        hu = np.array(array, dtype=np.float32, copy=True)
        if index_order == "ijk":
            hu = np.ascontiguousarray(hu.transpose(2, 1, 0)) if hu.ndim == 3 else hu
        elif index_order != "kji":
            raise InputError(f"index_order must be 'kji' or 'ijk', got {index_order!r}.",
                             "Pass index_order='kji' for Slicer/SimpleITK arrays, 'ijk' for nibabel arrays.")
        if ijk_to_ras is None:
            if spacing is None:
                raise InputError(f"No IJK->RAS matrix or spacing given for {source}.",
                                 "Pass ijk_to_ras (4x4) or spacing=(si, sj, sk) in mm.")
            spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
            if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
                raise InputError(f"Voxel spacing {spacing.tolist()} of {source} is not three positive numbers.",
                                 "Give a positive spacing in mm along i, j and k.")
            ijk_to_ras = np.diag([*spacing, 1.0])
            if origin is not None:
                ijk_to_ras[:3, 3] = np.asarray(origin, dtype=np.float64).reshape(3)
        matrix = np.array(ijk_to_ras, dtype=np.float64, copy=True)
        _validate(hu, matrix, source)
        hu.setflags(write=False)
        matrix.setflags(write=False)
        return cls(hu=hu, ijk_to_ras=matrix)


def point_in_voxel_box(point_ras, ijk_to_ras, shape_kji) -> bool:
    """Whether a RAS point lies in the box bounded by the outer voxel faces (faces included)."""
    ijk = np.linalg.inv(ijk_to_ras) @ np.append(np.asarray(point_ras, dtype=np.float64), 1.0)
    return bool(np.all(ijk[:3] >= -0.5) and np.all(ijk[:3] <= np.array(shape_kji[::-1]) - 0.5))


def _validate(hu: np.ndarray, matrix: np.ndarray, source: str) -> None:
    if hu.ndim != 3:
        raise InputError(f"{source} has {hu.ndim} dimension(s) {hu.shape}; a CT volume needs 3.",
                         "Load a 3D CT (a series of slices), not a single image.")
    if hu.size == 0:
        raise InputError(f"{source} is empty (shape {hu.shape}).", "Load a CT volume that contains voxels.")
    if min(hu.shape) < 2:
        raise InputError(f"{source} is a single slice (shape {hu.shape}); a DRR needs a 3D volume.",
                         "Load the whole CT series, not one slice.")
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InputError(f"IJK->RAS matrix of {source} is not a finite 4x4 matrix.",
                         "Give a 4x4 matrix of finite numbers.")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 1e-9) or abs(np.linalg.det(matrix[:3, :3])) <= 1e-12:
        raise InputError(f"Voxel spacing of {source} is zero or the IJK->RAS matrix is singular "
                         f"(spacing {spacing.round(6).tolist()} mm).",
                         "Fix the spacing in the file header (it must be > 0 along every axis).")
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise InputError(f"{source} contains {bad} NaN or infinite voxel(s).",
                         "Replace them, e.g. with -1000 HU (air), before simulating.")
    low, high = float(hu.min()), float(hu.max())
    if low > -500 or high < 100 or low < -5000 or high > 40000:
        hint = (" The values look shifted by +1024 (stored without RescaleIntercept)." if low >= -50 and high > 1000
                else "")
        warnings.warn(f"{source}: value range [{low:.0f}, {high:.0f}] is implausible for a CT in Hounsfield "
                      f"units (expect air near -1000 and bone above +300).{hint} Check that it is a CT in HU.",
                      ImplausibleCTWarning, stacklevel=3)


def load_volume(path) -> Volume:
    """Read a NIfTI, NRRD, MetaImage file or a DICOM series folder into RAS."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"CT file not found: {path}.", "Check the path given to --ct.")
    import SimpleITK as sitk

    try:
        if path.is_dir():
            image = _read_dicom_series(sitk, path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        if "spacing" in str(error).lower():
            raise InputError(f"Cannot read CT {path}: its header gives a zero or negative voxel spacing "
                             f"({first_line.strip()}).",
                             "Fix the voxel spacing in the file header (it must be > 0 along every axis).") from None
        raise InputError(f"Cannot read CT {path}: {first_line}",
                         "Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha) file or a DICOM folder.") from None
    return volume_from_sitk(image, source=str(path))


def volume_from_sitk(image, source: str = "image") -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"{source} has {image.GetDimension()} dimension(s); a CT volume needs 3.",
                         "Load a 3D CT (a series of slices), not a single image.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel.",
                         "Load a scalar CT volume (one HU value per voxel), not a colour or vector image.")
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return Volume.from_array(sitk.GetArrayViewFromImage(image), LPS_TO_RAS @ ijk_to_lps, source=source)


def _read_dicom_series(sitk, folder: Path):
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"No DICOM series found in folder {folder}.",
                         "Point --ct at a folder of DICOM slices, or at a NIfTI/NRRD file.")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    largest = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series) > 1:
        warnings.warn(f"{folder} holds {len(series)} DICOM series; using the largest ({largest}, "
                      f"{len(files_per_series[largest])} slices).", stacklevel=3)
    reader.SetFileNames(files_per_series[largest])
    return reader.Execute()
