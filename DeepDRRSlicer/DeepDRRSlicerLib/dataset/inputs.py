"""Write in-memory inputs (a CT, landmarks, a label map) as files the generator reads.

The Slicer module generates from scene nodes: it writes them into the dataset's
``inputs/`` folder with these functions, so the dataset is made by the same
file-based generator as on the command line, records the inputs it used, and
can be resumed (the same node writes the same bytes).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from .shards import atomic_write_bytes

INPUTS = "inputs"


def _sitk_image(array: np.ndarray, ijk_to_ras: np.ndarray):
    import SimpleITK as sitk

    from ..volume import LPS_TO_RAS

    ijk_to_lps = np.linalg.inv(LPS_TO_RAS) @ np.asarray(ijk_to_ras, dtype=np.float64)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(x) for x in ijk_to_lps[:3, 3]])
    image.SetDirection([float(x) for x in (ijk_to_lps[:3, :3] / spacing).ravel()])
    return image


def _write_image(image, path: Path) -> None:
    import SimpleITK as sitk

    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        sitk.WriteImage(image, str(temporary), True)
        atomic_write_bytes(path, temporary.read_bytes())
    finally:
        try:
            temporary.unlink()
        except OSError:
            pass


def write_volume(volume, path) -> Path:
    """A CT ``Volume`` as a compressed NRRD (int16 when its values are whole numbers in range)."""
    hu = np.asarray(volume.hu)
    if np.all(hu == np.round(hu)) and hu.min() >= -32768 and hu.max() <= 32767:
        hu = hu.astype(np.int16)
    _write_image(_sitk_image(hu, volume.ijk_to_ras), path)
    return Path(path)


def write_label_map(labels: np.ndarray, ijk_to_ras, path) -> Path:
    """An integer label map on the grid ``ijk_to_ras`` (array in [k, j, i] order) as a compressed NRRD."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.uint16
    _write_image(_sitk_image(labels.astype(dtype), ijk_to_ras), path)
    return Path(path)


def write_landmarks(landmarks, path) -> Path:
    """Landmarks as CSV ``label,R,A,S`` (RAS mm), readable by ``landmarks.load_landmarks``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "R", "A", "S"])
    for point in landmarks:
        writer.writerow([point.label, *(repr(float(x)) for x in point.position_ras)])
    atomic_write_bytes(Path(path), buffer.getvalue().encode())
    return Path(path)


def write_label_names(names: dict, path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name"])
    for label, name in sorted(names.items()):
        writer.writerow([label, name])
    atomic_write_bytes(Path(path), buffer.getvalue().encode())
    return Path(path)


__all__ = ["INPUTS", "write_volume", "write_label_map", "write_landmarks", "write_label_names"]
