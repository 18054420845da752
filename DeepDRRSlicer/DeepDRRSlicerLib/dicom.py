"""DICOM CT series: find them (recursively), choose one, check its geometry and values, read it.

ITK's series reader takes the first slice's orientation and one averaged slice
spacing, so a gantry-tilted series comes back sheared without a word and a
series with missing slices is stretched over the gap. Here the slice positions
(ImagePositionPatient) are checked one by one:

- equal steps along the slice normal: a regular series;
- a step with a component inside the slice plane: gantry tilt. Each slice is
  shifted in its own plane onto a rectangular grid (bilinear, exact for whole-pixel
  shifts), so every voxel keeps its true position; a warning gives the angle;
- unequal steps (missing slices, irregular spacing) or two slices at one position:
  refused with the positions, since no single spacing describes the series.

Modality and rescale tags are checked: a non-CT series is refused, a CT without
RescaleSlope/Intercept whose values are not Hounsfield units is refused, and
warnings name the series that was used when a folder holds several.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError


class DicomWarning(UserWarning):
    """Something about a DICOM series the user should know (several series, gantry tilt, missing tags)."""


TAG_SERIES_UID = "0020|000e"
TAG_SERIES_NUMBER = "0020|0011"
TAG_DESCRIPTION = "0008|103e"
TAG_MODALITY = "0008|0060"
TAG_IMAGE_TYPE = "0008|0008"
TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_RESCALE_INTERCEPT = "0028|1052"
TAG_RESCALE_SLOPE = "0028|1053"
TAG_SOP_INSTANCE_UID = "0008|0018"
TAG_GANTRY_TILT = "0018|1120"
TAG_ROWS = "0028|0010"
TAG_COLUMNS = "0028|0011"

# Modalities whose pixel values are not Hounsfield units (PT, MR, ...) are refused; these pass.
HU_MODALITIES = ("CT",)
# Slice steps may differ by this fraction of the typical step (rounding in ImagePositionPatient).
STEP_TOLERANCE = 0.1
# Tilt below this in-plane shift over the whole series (mm) is rounding noise, not tilt.
TILT_TOLERANCE_MM = 0.01

# --series matches the end of a SeriesInstanceUID when given at least this many characters.
MIN_UID_TAIL = 4
SERIES_FIX = "Choose one with --series N (its number in the list) or --series UID (or the UID's last digits)."


@dataclass
class DicomSeries:
    uid: str
    files: list = field(default_factory=list)   # Path of every file of the series
    description: str = ""
    modality: str = ""
    series_number: str = ""
    rows: int = 0
    columns: int = 0
    localizer: bool = False

    @property
    def voxels(self) -> int:
        return self.rows * self.columns * len(self.files)

    def label(self, index: int | None = None) -> str:
        number = f"{index}. " if index is not None else ""
        description = f"'{self.description}'" if self.description else "(no description)"
        kind = f"{self.modality or 'no modality'}{', localizer' if self.localizer else ''}"
        uid = f"UID {self.uid}" if self.uid else "no SeriesInstanceUID"
        return (f"{number}{description}, {kind}, {self.columns} x {self.rows} x {len(self.files)} "
                f"(series number {self.series_number or '-'}, {uid})")


def _tag(reader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def find_series(folder: Path) -> list[DicomSeries]:
    """Every DICOM series under ``folder`` (subfolders included), sorted by series number and UID."""
    import SimpleITK as sitk

    by_uid: dict[str, DicomSeries] = {}
    for directory, subdirectories, _ in os.walk(folder):
        subdirectories.sort()
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory, uid)
            entry = by_uid.setdefault(uid, DicomSeries(uid=uid))
            entry.files.extend(Path(f) for f in files)
    reader = sitk.ImageFileReader()
    found = []
    for uid, entry in by_uid.items():
        reader.SetFileName(str(entry.files[0]))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # e.g. a structured report or presentation state: no image
        entry.description = _tag(reader, TAG_DESCRIPTION)
        entry.modality = _tag(reader, TAG_MODALITY).upper()
        entry.series_number = _tag(reader, TAG_SERIES_NUMBER)
        entry.columns, entry.rows = int(reader.GetSize()[0]), int(reader.GetSize()[1])
        entry.localizer = "LOCALIZER" in _tag(reader, TAG_IMAGE_TYPE).upper()
        found.append(entry)

    def order(series: DicomSeries):
        try:
            number = int(series.series_number)
        except ValueError:
            number = 1 << 30
        return (number, series.uid)

    return sorted(found, key=order)


def choose_series(series: list[DicomSeries], selector, folder: Path) -> DicomSeries:
    """The series ``selector`` names (position in the list, UID or the UID's tail), or the only sensible one."""
    listing = "\n".join("    " + s.label(i) for i, s in enumerate(series, start=1))
    if selector is not None:
        text = str(selector).strip()
        if text.isdigit() and 1 <= int(text) <= len(series) and not any(s.uid == text for s in series):
            return series[int(text) - 1]
        matches = [s for s in series if s.uid == text] or [
            s for s in series if len(text) >= MIN_UID_TAIL and s.uid.endswith(text)]
        if len(matches) == 1:
            return matches[0]
        problem = (f"--series {text!r} matches {'several' if matches else 'none'} of the {len(series)} DICOM "
                   f"series in {folder}:\n{listing}\n ")
        raise InputError(problem, f"Give the series' number in this list (1-{len(series)}) or its UID "
                                  f"(or at least its last {MIN_UID_TAIL} characters).")
    if len(series) == 1:
        return series[0]
    volumes = [s for s in series if s.modality in HU_MODALITIES and not s.localizer and len(s.files) > 1]
    candidates = volumes or [s for s in series if len(s.files) > 1] or series
    most = max(s.voxels for s in candidates)
    best = [s for s in candidates if s.voxels == most]
    if len(best) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series and {len(best)} of them are equally large "
                         f"CT volumes, so none is an obvious choice:\n{listing}\n ", SERIES_FIX)
    chosen = best[0]
    reason = "the only CT volume" if len(candidates) == 1 else "the CT volume with the most voxels"
    warnings.warn(f"{folder} holds {len(series)} DICOM series; using {reason}, "
                  f"number {series.index(chosen) + 1}:\n{listing}\n  {SERIES_FIX}", DicomWarning, stacklevel=3)
    return chosen


def read_series(series: DicomSeries, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels [k, j, i] (float32, HU) and the 4x4 IJK -> LPS matrix of a checked, tilt-corrected series."""
    import SimpleITK as sitk

    _check_modality(series)
    files = _unique_instances(series)
    if len(files) == 1:
        image = sitk.ReadImage(str(files[0]))
        if image.GetDimension() == 3 and image.GetSize()[2] > 1:  # multi-frame object: ITK places the frames
            return _image_arrays(image)
        raise InputError(f"The DICOM series {series.label()} in {folder} has a single slice; a DRR needs a "
                         "3D volume.", "Point --ct at a folder holding the whole CT series.")
    headers = [_read_header(f) for f in files]
    sizes = {(h["size"][0], h["size"][1]) for h in headers}
    if len(sizes) > 1:
        raise InputError(f"The slices of DICOM series {series.label()} have different sizes {sorted(sizes)}.",
                         "The series mixes images; export the CT series alone and try again.")
    directions = np.array([h["direction"] for h in headers])
    if np.abs(directions - directions[0]).max() > 1e-4:
        raise InputError(f"The slices of DICOM series {series.label()} have different orientations "
                         "(ImageOrientationPatient), so they do not form one volume.",
                         "Export the CT series alone (one orientation), or pick another series with --series.")
    spacings = np.array([h["spacing"][:2] for h in headers])
    if np.abs(spacings - spacings[0]).max() > 1e-4 * spacings[0].max():
        raise InputError(f"The slices of DICOM series {series.label()} have different pixel spacings.",
                         "Export the CT series alone, or pick another series with --series.")
    direction = directions[0].reshape(3, 3)
    row_axis, column_axis = direction[:, 0], direction[:, 1]
    normal = np.cross(row_axis, column_axis)
    positions = np.array([h["origin"] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    positions = positions[order]
    step, tilt_mm = _regular_step(series, positions, normal)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    image = reader.Execute()
    hu = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    _check_rescale(series, headers, hu)
    spacing_column, spacing_row = float(spacings[0][0]), float(spacings[0][1])
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = row_axis * spacing_column
    ijk_to_lps[:3, 1] = column_axis * spacing_row
    ijk_to_lps[:3, 2] = step
    ijk_to_lps[:3, 3] = positions[0]
    if tilt_mm > TILT_TOLERANCE_MM:
        hu, ijk_to_lps = _untilt(hu, ijk_to_lps, normal)
        along = float(step @ normal)
        angle = math.degrees(math.atan2(np.linalg.norm(step - along * normal), abs(along)))
        tag = _tag_of(headers[0], TAG_GANTRY_TILT)
        stated = f" (GantryDetectorTilt {tag})" if tag else ""
        warnings.warn(f"DICOM series {series.label()} was acquired with a gantry tilt of {angle:.2f} degrees"
                      f"{stated}: its slices are shifted in their planes by up to {tilt_mm:.1f} mm across the "
                      "series. Each slice was moved onto a rectangular grid, so every voxel keeps its true "
                      "position.", DicomWarning, stacklevel=3)
    return hu, ijk_to_lps


def _read_header(path: Path) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        last = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"Cannot read the DICOM file {path}: {last}",
                         "Remove or replace the damaged file, or export the series again.") from None
    tags = {key: _tag(reader, key) for key in (TAG_RESCALE_INTERCEPT, TAG_RESCALE_SLOPE, TAG_SOP_INSTANCE_UID,
                                               TAG_GANTRY_TILT, TAG_POSITION)}
    if not tags[TAG_POSITION]:
        raise InputError(f"DICOM file {path} has no ImagePositionPatient, so its place in the volume is unknown.",
                         "Export the series with its geometry tags (a CT image always has them).")
    return {"path": path, "size": reader.GetSize(), "origin": np.array(reader.GetOrigin(), dtype=np.float64),
            "direction": np.array(reader.GetDirection(), dtype=np.float64),
            "spacing": np.array(reader.GetSpacing(), dtype=np.float64), "tags": tags}


def _tag_of(header: dict, key: str) -> str:
    return header["tags"].get(key, "")


def _unique_instances(series: DicomSeries) -> list[Path]:
    """The series' files, without second copies of the same instance (SOPInstanceUID) met in other folders."""
    import SimpleITK as sitk

    if len(series.files) < 2:
        return list(series.files)
    seen, unique = set(), []
    reader = sitk.ImageFileReader()
    for path in series.files:
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
            instance = _tag(reader, TAG_SOP_INSTANCE_UID)
        except RuntimeError:
            instance = ""
        if not instance:  # anonymised without SOPInstanceUID: identical bytes are the same instance
            instance = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        if instance not in seen:
            seen.add(instance)
            unique.append(path)
    if len(unique) < len(series.files):
        warnings.warn(f"DICOM series {series.label()}: {len(series.files) - len(unique)} file(s) are second "
                      "copies of the same images (same SOPInstanceUID) and were read once.", DicomWarning,
                      stacklevel=4)
    return unique


def _check_modality(series: DicomSeries) -> None:
    if not series.modality:
        warnings.warn(f"DICOM series {series.label()} has no Modality tag; its values are taken as Hounsfield "
                      "units. Check that it is a CT.", DicomWarning, stacklevel=4)
        return
    if series.modality not in HU_MODALITIES:
        raise InputError(f"DICOM series {series.label()} is modality {series.modality}, not CT: its values are "
                         "not Hounsfield units, so no X-ray attenuation can be derived from them.",
                         "Pick the CT series (--series), or give a CT in Hounsfield units.")


def _check_rescale(series: DicomSeries, headers: list, hu: np.ndarray) -> None:
    missing = [h for h in headers if not _tag_of(h, TAG_RESCALE_INTERCEPT) or not _tag_of(h, TAG_RESCALE_SLOPE)]
    if not missing:
        return
    low, high = float(np.min(hu)), float(np.max(hu))
    if low >= -50 and high > 1000:
        raise InputError(f"DICOM series {series.label()} has no RescaleSlope/RescaleIntercept in {len(missing)} "
                         f"of its {len(headers)} slice(s), and its stored values ({low:.0f} to {high:.0f}) are not "
                         "Hounsfield units: air would read as about 0 instead of -1000, so the image would be "
                         "wrong throughout.",
                         "Export the series with its rescale tags (CT scanners write RescaleIntercept, typically "
                         "-1024), or convert the values to HU and save the CT as NIfTI.")
    warnings.warn(f"DICOM series {series.label()} has no RescaleSlope/RescaleIntercept in {len(missing)} of its "
                  f"{len(headers)} slice(s); its values ({low:.0f} to {high:.0f}) look like Hounsfield units "
                  "already and are used as stored.", DicomWarning, stacklevel=4)


def _regular_step(series: DicomSeries, positions: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
    """The slice step vector (LPS mm) of a regular series and the in-plane shift it accumulates (mm).

    Refuses duplicated positions, missing slices and irregular spacing.
    """
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    typical = float(np.median(along))
    duplicate = np.flatnonzero(np.abs(along) < 1e-3)
    if duplicate.size:
        where = positions[duplicate[0]]
        raise InputError(f"DICOM series {series.label()} has {duplicate.size} slice(s) at the position of "
                         f"another (first at {_mm(where)}): it holds several volumes (e.g. phases or echoes) in "
                         "one series.", "Export one volume (one phase) as its own series, then load that.")
    irregular = np.flatnonzero(np.abs(along - typical) > STEP_TOLERANCE * abs(typical))
    if irregular.size:
        gaps = []
        for index in irregular[:5]:
            ratio = along[index] / typical
            missing = round(ratio) - 1
            what = (f"{missing} slice(s) missing" if missing >= 1 and abs(ratio - round(ratio)) < STEP_TOLERANCE
                    else "an irregular step")
            gaps.append(f"between slices at {_mm(positions[index])} and {_mm(positions[index + 1])}: "
                        f"{abs(along[index]):.3g} mm ({what})")
        more = f" and {irregular.size - 5} more" if irregular.size > 5 else ""
        raise InputError(f"DICOM series {series.label()} has unequal slice spacing: slices are "
                         f"{abs(typical):.3g} mm apart except " + "; ".join(gaps) + more + ". One voxel spacing "
                         "cannot describe it, and averaging would stretch the anatomy over the gap.",
                         "Export the complete series again (a file may have been lost in transfer), or resample "
                         "it onto regular slices first (e.g. 3D Slicer's DICOM module with acquisition geometry "
                         "regularization) and load the result.")
    step = np.median(steps, axis=0)
    spread = np.abs(steps - step).max() if len(steps) else 0.0
    if spread > STEP_TOLERANCE * np.linalg.norm(step):
        raise InputError(f"DICOM series {series.label()}: the slices do not lie on one straight line "
                         f"(slice-to-slice steps differ by up to {spread:.2f} mm).",
                         "Export the CT series alone; it may mix several acquisitions.")
    in_plane = step - (step @ normal) * normal
    return step, float(np.linalg.norm(in_plane) * (len(positions) - 1))


def _mm(point) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in point) + ") mm LPS"


def _untilt(hu: np.ndarray, ijk_to_lps: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift every slice of a sheared stack within its plane onto a rectangular grid (bilinear).

    Slice k sits at origin + k * step; its in-plane offset k * (step - (step.n) n), in pixels along the
    column (i) and row (j) axes, is undone here. The new grid covers every shifted slice; the uncovered
    rim is filled with the series' lowest value (at most -1024 HU), i.e. no material.
    """
    axis_i, axis_j, step = ijk_to_lps[:3, 0], ijk_to_lps[:3, 1], ijk_to_lps[:3, 2]
    along = float(step @ normal)
    in_plane = step - along * normal
    shift_i = float(in_plane @ axis_i / (axis_i @ axis_i))   # pixels per slice along i
    shift_j = float(in_plane @ axis_j / (axis_j @ axis_j))
    slices, rows, columns = hu.shape
    offsets_i = shift_i * np.arange(slices)
    offsets_j = shift_j * np.arange(slices)
    low_i, high_i = math.floor(offsets_i.min() + 1e-6), math.ceil(offsets_i.max() - 1e-6)
    low_j, high_j = math.floor(offsets_j.min() + 1e-6), math.ceil(offsets_j.max() - 1e-6)
    fill = float(min(np.min(hu), -1024.0))
    out = np.full((slices, rows + high_j - low_j, columns + high_i - low_i), fill, dtype=np.float32)
    for k in range(slices):
        # output pixel (j', i') shows slice k at (j' + low_j - offsets_j[k], i' + low_i - offsets_i[k])
        _shifted_into(out[k], hu[k], low_j - offsets_j[k], low_i - offsets_i[k], fill)
    matrix = np.array(ijk_to_lps, dtype=np.float64, copy=True)
    matrix[:3, 2] = along * normal
    matrix[:3, 3] = ijk_to_lps[:3, 3] + low_i * axis_i + low_j * axis_j
    return out, matrix


def _shifted_into(out: np.ndarray, image: np.ndarray, row_offset: float, column_offset: float, fill: float) -> None:
    """out[r, c] = image sampled bilinearly at (r + row_offset, c + column_offset), ``fill`` outside."""
    whole_r, whole_c = math.floor(row_offset + 1e-6), math.floor(column_offset + 1e-6)
    frac_r, frac_c = row_offset - whole_r, column_offset - whole_c
    frac_r = 0.0 if abs(frac_r) < 1e-6 else frac_r
    frac_c = 0.0 if abs(frac_c) < 1e-6 else frac_c
    rows, columns = out.shape

    def grid(dr: int, dc: int) -> np.ndarray:
        """image[r + whole_r + dr, c + whole_c + dc] on the output grid, fill outside the image."""
        canvas = np.full(out.shape, fill, dtype=np.float32)
        top, left = whole_r + dr, whole_c + dc
        r0, r1 = max(0, -top), min(rows, image.shape[0] - top)
        c0, c1 = max(0, -left), min(columns, image.shape[1] - left)
        if r1 > r0 and c1 > c0:
            canvas[r0:r1, c0:c1] = image[r0 + top:r1 + top, c0 + left:c1 + left]
        return canvas

    result = grid(0, 0) * np.float32((1 - frac_r) * (1 - frac_c))
    if frac_c:
        result += grid(0, 1) * np.float32((1 - frac_r) * frac_c)
    if frac_r:
        result += grid(1, 0) * np.float32(frac_r * (1 - frac_c))
    if frac_r and frac_c:
        result += grid(1, 1) * np.float32(frac_r * frac_c)
    out[...] = result


def _image_arrays(image) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * spacing
    matrix[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False), matrix
