"""CT volumes: a read-only HU array plus its IJK -> RAS matrix.

Arrays are indexed [k, j, i] (slowest to fastest), as SimpleITK and
``slicer.util.arrayFromVolume`` give them. Files in LPS (NIfTI via ITK,
NRRD, DICOM) are converted to RAS here and nowhere else.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, describe
from .volume_files import SHEAR_TOLERANCE, check_ct_file

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Volume file names a folder given as the CT may hold besides DICOM (then the DICOM series is read, with a warning).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class ImplausibleCTWarning(UserWarning):
    """The volume's values do not look like Hounsfield units."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT: ``hu`` float32 [k, j, i] (read-only) and its 4x4 IJK -> RAS matrix (mm).

    Build one with :meth:`from_array` or :func:`load_volume`, which check the voxels too.
    The matrix is checked on every construction: it must be affine (last row 0 0 0 1),
    non-singular, and rectangular (perpendicular voxel axes; a sheared grid is refused).
    """

    hu: np.ndarray          # float32 [k, j, i], read-only
    ijk_to_ras: np.ndarray  # 4x4 float64

    @functools.cached_property
    def value_range(self) -> tuple[float, float]:
        """(min, max) of the voxels, computed once per Volume (the voxels are read-only)."""
        return float(self.hu.min()), float(self.hu.max())

    def __post_init__(self):
        if not isinstance(self.hu, np.ndarray):
            raise InputError(f"Volume.hu must be a numpy array, got {describe(self.hu)}.",
                             "Build volumes with Volume.from_array(array, ijk_to_ras) or load_volume(path).")
        check_ijk_to_ras(self.ijk_to_ras, "the volume")

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
        hu = _hu_array(array, source)
        if index_order == "ijk":
            hu = np.ascontiguousarray(hu.transpose(2, 1, 0)) if hu.ndim == 3 else hu
        elif index_order != "kji":
            raise InputError(f"index_order must be 'kji' or 'ijk', got {index_order!r}.",
                             "Pass index_order='kji' for Slicer/SimpleITK arrays, 'ijk' for nibabel arrays.")
        if ijk_to_ras is None:
            if spacing is None:
                raise InputError(f"No IJK->RAS matrix or spacing given for {source}.",
                                 "Pass ijk_to_ras (4x4) or spacing=(si, sj, sk) in mm.")
            spacing = _float_vector(spacing, "spacing", "Give spacing=(si, sj, sk): three positive numbers in mm.")
            if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
                raise InputError(f"Voxel spacing {spacing.tolist()} of {source} is not three positive numbers.",
                                 "Give a positive spacing in mm along i, j and k.")
            ijk_to_ras = np.diag([*spacing, 1.0])
            if origin is not None:
                origin = _float_vector(origin, "origin", "Give origin=(R, A, S): three numbers in mm.")
                if origin.shape != (3,) or not np.all(np.isfinite(origin)):
                    raise InputError(f"origin {origin.tolist()} of {source} is not three finite numbers.",
                                     "Give origin=(R, A, S) in mm: the RAS position of voxel (0, 0, 0).")
                ijk_to_ras[:3, 3] = origin
        elif spacing is not None or origin is not None:
            raise InputError("Both ijk_to_ras and spacing/origin were given.",
                             "Give either the 4x4 ijk_to_ras matrix or spacing (and origin), not both.")
        matrix = _float_vector(ijk_to_ras, "ijk_to_ras", "Give ijk_to_ras as a 4x4 matrix of numbers.")
        value_range = _validate(hu, matrix, source)
        hu.setflags(write=False)
        matrix.setflags(write=False)
        volume = cls(hu=hu, ijk_to_ras=matrix)
        volume.__dict__["value_range"] = value_range   # the cached property, already scanned for by _validate
        return volume


def _hu_array(array, source: str) -> np.ndarray:
    """A float32 copy of ``array``, refusing what cannot be Hounsfield units (None, objects, complex, bools, text)."""
    fix = ("Pass a 3D numpy array of Hounsfield units (integers or floats), e.g. "
           "Volume.from_array(hu, spacing=(1, 1, 1)); read files with load_volume(path).")
    if array is None:
        raise InputError(f"array is None: no voxels were given for {source}.", fix)
    if isinstance(array, (str, bytes, Path)):
        raise InputError(f"array must be a numpy array of HU values, got {describe(array)}.",
                         "Read a CT file with load_volume(path); wrap an array with Volume.from_array(hu, ...).")
    try:
        values = np.asarray(array)
    except (TypeError, ValueError) as error:
        raise InputError(f"array cannot be read as a numeric array ({error}).", fix) from None
    if values.dtype.kind not in "iuf":
        kinds = {"b": "booleans (a mask, not HU)", "c": "complex numbers", "O": "Python objects",
                 "U": "text", "S": "bytes", "V": "structured records", "M": "dates", "m": "time spans"}
        raise InputError(f"array holds {kinds.get(values.dtype.kind, values.dtype.name)} (dtype {values.dtype}), "
                         f"not Hounsfield units.", fix)
    return np.array(values, dtype=np.float32, copy=True)


def _float_vector(value, argument: str, fix: str) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes)):
        raise InputError(f"{argument} must be numbers, got {describe(value)}.", fix)
    try:
        result = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise InputError(f"{argument} must be numbers, got {describe(value)}.", fix) from None
    return result.reshape(-1) if argument != "ijk_to_ras" else result


def check_ijk_to_ras(matrix, source: str) -> None:
    """Refuse an IJK->RAS matrix that is not a finite, affine, non-singular, rectangular 4x4 matrix."""
    matrix = np.asarray(matrix)
    if matrix.shape != (4, 4) or matrix.dtype.kind not in "iuf" or not np.all(np.isfinite(matrix)):
        raise InputError(f"IJK->RAS matrix of {source} is not a finite 4x4 matrix (shape {matrix.shape}).",
                         "Give a 4x4 matrix of finite numbers.")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise InputError(f"IJK->RAS matrix of {source} is projective: its last row is "
                         f"{np.round(matrix[3], 6).tolist()}, not [0, 0, 0, 1], so voxels would not keep "
                         "their size across the volume.",
                         "Give an affine matrix (rotation, spacing and translation only) with last row 0 0 0 1.")
    linear = np.asarray(matrix[:3, :3], dtype=np.float64)
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 1e-9) or abs(np.linalg.det(linear)) <= 1e-12 * max(float(np.prod(spacing)), 1e-300):
        raise InputError(f"Voxel spacing of {source} is zero or the IJK->RAS matrix is singular "
                         f"(spacing {spacing.round(6).tolist()} mm).",
                         "Fix the spacing in the file header (it must be > 0 along every axis).")
    axes = linear / spacing
    names = "ijk"
    for a, b in ((0, 1), (0, 2), (1, 2)):
        cosine = abs(float(axes[:, a] @ axes[:, b]))
        if cosine > SHEAR_TOLERANCE:
            angle = math.degrees(math.acos(min(1.0, cosine)))
            raise InputError(f"IJK->RAS matrix of {source} is sheared: its {names[a]} and {names[b]} voxel axes "
                             f"meet at {angle:.3f} degrees, not 90, so voxels are not boxes.",
                             "Resample the CT onto a rectangular grid first (3D Slicer: Resample Scalar Volume; "
                             "a gantry-tilted DICOM series: load_volume(folder) corrects the tilt), or check "
                             "that the matrix's columns are the voxel axes times the spacing.")


def point_in_voxel_box(point_ras, ijk_to_ras, shape_kji) -> bool:
    """Whether a RAS point lies in the box bounded by the outer voxel faces (faces included)."""
    ijk = np.linalg.inv(ijk_to_ras) @ np.append(np.asarray(point_ras, dtype=np.float64), 1.0)
    return bool(np.all(ijk[:3] >= -0.5) and np.all(ijk[:3] <= np.array(shape_kji[::-1]) - 0.5))


def _validate(hu: np.ndarray, matrix: np.ndarray, source: str) -> tuple[float, float]:
    """Refuse what is not a CT volume; warn when its values do not look like HU. Returns (min, max)."""
    if hu.ndim != 3:
        raise InputError(f"{source} has {hu.ndim} dimension(s) {hu.shape}; a CT volume needs 3.",
                         "Load a 3D CT (a series of slices), not a single image.")
    if hu.size == 0:
        raise InputError(f"{source} is empty (shape {hu.shape}).", "Load a CT volume that contains voxels.")
    if min(hu.shape) < 2:
        raise InputError(f"{source} is a single slice (shape {hu.shape}); a DRR needs a 3D volume.",
                         "Load the whole CT series, not one slice.")
    check_ijk_to_ras(matrix, source)
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise InputError(f"{source} contains {bad} NaN or infinite voxel(s).",
                         "Replace them, e.g. with -1000 HU (air), before simulating.")
    value_range = (float(hu.min()), float(hu.max()))
    message = implausible_hu_message(value_range, source)
    if message:
        warnings.warn(message, ImplausibleCTWarning, stacklevel=3)
    return value_range


def implausible_hu_message(value_range: tuple, source: str = "The CT") -> str | None:
    """Why voxel values spanning ``value_range`` (low, high) do not look like a CT in Hounsfield units, with
    the fix; None when they do."""
    low, high = value_range
    if -5000 <= low <= -500 and 100 <= high <= 40000:
        return None
    if low >= -50 and high > 1000:
        hint = " The values look shifted by +1024 (stored without RescaleIntercept): subtract 1024."
    elif low >= 0 and high < 10:
        hint = (" The values look like attenuation coefficients (mu, per mm or per cm), not HU: convert with "
                "HU = 1000 (mu - mu_water) / mu_water at the scan's effective energy.")
    else:
        hint = ""
    return (f"{source}: value range [{low:.4g}, {high:.4g}] is implausible for a CT in Hounsfield units (expect air "
            f"near -1000 and bone above +300).{hint} Check that it is a CT in HU; the image is not meaningful otherwise.")


def load_volume(path, series=None) -> Volume:
    """Read a NIfTI, NRRD, MetaImage file or a DICOM series folder into RAS.

    A folder is searched for DICOM series recursively. When it holds several,
    ``series`` picks one: its number in the listing the error message shows
    (1, 2, ...), its SeriesInstanceUID, or the UID's last digits; without it the
    only CT volume (or the one with the most voxels, with a warning) is used.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a file or folder path, got {describe(path)}.",
                         "Pass the CT's path, e.g. load_volume('ct.nii.gz') or load_volume('dicom_folder/').")
    if isinstance(path, str) and not path.strip():
        raise InputError("path is empty.", "Pass the CT's path, e.g. --ct ct.nii.gz or --ct dicom_folder/.")
    path = Path(path)
    if not path.exists():
        raise InputError(f"CT file not found: {path}.", "Check the path given to --ct.")
    import SimpleITK as sitk

    warning_display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw warnings; the checks here say it clearly
    try:
        if path.is_dir():
            return _load_dicom_folder(path, series)
        if _is_dicom_file(path):
            return _load_dicom_folder(path.parent, series, member=path)
        if series is not None:
            raise InputError(f"--series {series!r} was given, but {path} is a single file, not a DICOM folder.",
                             "Drop --series, or point --ct at the folder that holds the DICOM series.")
        check_ct_file(path)
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise _read_error(path, error) from None
    except OSError as error:
        raise InputError(f"Cannot read CT {path}: {error.strerror or error}.",
                         "Check that the file is readable (permissions) and not a special file.") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warning_display)
    return volume_from_sitk(image, source=str(path))


def _read_error(path: Path, error: RuntimeError) -> InputError:
    text = str(error).strip()
    first_line = text.splitlines()[-1].strip() if text else "unknown reason"
    lowered = text.lower()
    if "orthonormal" in lowered:
        return InputError(f"Cannot read CT {path}: its voxel axes are not perpendicular (the header's orientation "
                          "matrix is sheared), e.g. a gantry-tilted scan saved without tilt correction.",
                          "Resample it onto a rectangular grid first (load the original DICOM series here, which "
                          "corrects the tilt, or convert it with dcm2niix, or resample it in 3D Slicer).")
    if "spacing" in lowered:
        return InputError(f"Cannot read CT {path}: its header gives a zero or negative voxel spacing "
                          f"({first_line}).",
                          "Fix the voxel spacing in the file header (it must be > 0 along every axis).")
    if "unable to determine imageio reader" in lowered:
        size = path.stat().st_size if path.is_file() else 0
        what = "it is empty (0 bytes)" if size == 0 else "no image reader recognises its contents"
        return InputError(f"Cannot read CT {path}: {what}.",
                          "Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha) file or a DICOM folder.")
    return InputError(f"Cannot read CT {path}: {first_line}",
                      "Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha) file or a DICOM folder.")


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


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


def _load_dicom_folder(folder: Path, selector, member: Path | None = None) -> Volume:
    from . import dicom

    if member is not None:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(member))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise _read_error(member, error) from None
        own_uid = reader.GetMetaData(dicom.TAG_SERIES_UID).strip() if reader.HasMetaDataKey(
            dicom.TAG_SERIES_UID) else None
        found = [s for s in dicom.find_series(folder) if s.uid == own_uid and any(
            f.parent == folder for f in s.files)]
        if not found:
            raise InputError(f"{member} is a DICOM file, but no series could be read from its folder.",
                             "Point --ct at the folder that holds the whole DICOM series.")
        chosen = found[0]
        chosen.files = [f for f in chosen.files if f.parent == folder]
        warnings.warn(f"{member} is one DICOM file; reading the whole series it belongs to from {folder} "
                      f"({len(chosen.files)} files).", dicom.DicomWarning, stacklevel=3)
    else:
        series = dicom.find_series(folder)
        if not series:
            raise InputError(f"No DICOM series found in folder {folder} (subfolders searched too).",
                             "Point --ct at a folder of DICOM slices, or at a NIfTI/NRRD file.")
        chosen = dicom.choose_series(series, selector, folder)
        volumes = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
        if volumes:
            warnings.warn(f"{folder} holds volume file(s) too ({', '.join(volumes[:3])}"
                          f"{', ...' if len(volumes) > 3 else ''}); read the DICOM series in "
                          f"{chosen.files[0].parent} instead. Pass the file itself to read it.",
                          dicom.DicomWarning, stacklevel=3)
    hu, ijk_to_lps = dicom.read_series(chosen, folder)
    return Volume.from_array(hu, LPS_TO_RAS @ ijk_to_lps, source=f"DICOM series in {folder}")
