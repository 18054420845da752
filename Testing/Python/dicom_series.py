"""DICOM edge cases made from the real 20-slice abdomen series shipped in Testing/Data.

Each helper copies the series into a folder, editing headers with pydicom (the
pixel data stay the scanner's own unless said): a gantry tilt, a missing slice,
nested folders, several series, a non-CT modality, missing rescale tags, two
slices at one position.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

SERIES = Path(__file__).resolve().parents[1] / "Data" / "abdomen_dicom_20slices"
ROWS = COLUMNS = 512
PIXEL_MM = 0.9765625
STEP_MM = 2.0


def pydicom():
    return pytest.importorskip("pydicom", reason="pydicom (a test dependency: pip install -e '.[test]') is missing")


def sorted_slices() -> list:
    """The shipped slices as pydicom datasets, sorted by z (feet first)."""
    dcm = pydicom()
    slices = [dcm.dcmread(path) for path in sorted(SERIES.iterdir())]
    return sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))


def write(datasets, folder: Path, names=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / (names[index] if names else f"slice_{index:03d}.dcm")
        ds.save_as(path)
        paths.append(path)
    return paths


def new_series(datasets, description: str, number: int) -> list:
    """Copies of the datasets as a separate series: new SeriesInstanceUID and SOPInstanceUIDs."""
    dcm = pydicom()
    series_uid = dcm.uid.generate_uid(entropy_srcs=[f"series {description} {number}"])  # same UIDs every run
    out = []
    for index, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = dcm.uid.generate_uid(entropy_srcs=[series_uid, str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        out.append(ds)
    return out


def tilted(folder: Path, degrees: float) -> list:
    """A gantry-tilted acquisition: slice planes tilted by ``degrees`` about the patient's L axis,
    stacked along the table (z) 2 mm apart, as the scanner stores them. Returns the datasets."""
    angle = math.radians(degrees)
    slices = sorted_slices()
    first = np.array([float(v) for v in slices[0].ImagePositionPatient])
    for k, ds in enumerate(slices):
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, round(math.cos(angle), 10), round(math.sin(angle), 10)]
        ds.ImagePositionPatient = [float(first[0]), float(first[1]), float(first[2] + STEP_MM * k)]
        ds.GantryDetectorTilt = degrees
    write(slices, folder)
    return slices


def pixel_lps(ds, row: int, column: int) -> np.ndarray:
    """LPS position of pixel (row, column) of a slice, from its own header (DICOM PS3.3 C.7.6.2.1.1)."""
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    spacing_row, spacing_column = (float(v) for v in ds.PixelSpacing)
    return position + orientation[:3] * spacing_column * column + orientation[3:] * spacing_row * row


def hu_of(ds) -> np.ndarray:
    """The slice in HU, decoded by SimpleITK (GDCM), independently of the reader under test."""
    import SimpleITK as sitk

    path = Path(ds.filename)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0].astype(np.float32)
