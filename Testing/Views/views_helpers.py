"""Helpers of the views layer: the skip rule, a bead phantom, and reading pictures.

Import ``slicer`` (through ``require_views``) before anything else of this file.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "MRML"))  # mrml_helpers: the bundled CT and landmarks read by Slicer's readers


@functools.lru_cache(maxsize=1)
def offscreen_problem() -> str | None:
    """Why no offscreen OpenGL context can be made here, or None. Probed in a child process (a broken
    driver may abort the process that tries)."""
    try:
        result = subprocess.run([sys.executable, str(HERE / "slicer_views.py"), "--probe"], capture_output=True,
                                text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "the offscreen rendering probe did not finish in 300 s"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if lines:
        return lines[-1]
    return (f"the offscreen rendering probe crashed (exit status {result.returncode}): no usable EGL, OSMesa or X "
            "OpenGL library (on Debian: apt-get install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri)")


def require_views():
    """The ``slicer`` package of slicer-core, or skip the calling module saying why views cannot render."""
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (real MRML without Qt) is not installed")
    if not hasattr(slicer, "vtkMRMLSliceViewDisplayableManagerFactory"):
        pytest.skip("the installed 'slicer' package has no displayable managers (not slicer-core)",
                    allow_module_level=True)
    problem = offscreen_problem()
    if problem is not None:
        pytest.skip(f"no offscreen OpenGL context can be made here: {problem}", allow_module_level=True)
    return slicer


# ----------------------------------------------------------------------------- phantom

#: Beads of the orientation phantom, RAS mm relative to its centre: (name, centre, radius mm).
BEADS = (
    ("right", (45.0, 0.0, 0.0), 9.0),        # on the patient's right, level with the centre
    ("superior", (0.0, 0.0, 45.0), 6.0),     # toward the head, on the midline
)


def bead_phantom(scene, name="bead phantom"):
    """A cylinder of light tissue (axis S, -400 HU) in air with two dense beads (``BEADS``), as a scalar volume node in HU.

    Its IJK->RAS flips R and A (as DICOM CTs read into Slicer do), so a test that passes cannot rely on
    the identity matrix.
    """
    import slicer
    import vtk

    spacing = (1.5, 1.5, 2.0)
    shape_kji = (72, 96, 96)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape_kji), indexing="ij")
    center_ijk = [(n - 1) / 2.0 for n in shape_kji[::-1]]
    # IJK -> RAS: i runs toward -R, j toward -A, k toward +S; the phantom is centred on the RAS origin.
    r = -(i - center_ijk[0]) * spacing[0]
    a = -(j - center_ijk[1]) * spacing[1]
    s = (k - center_ijk[2]) * spacing[2]
    hu = np.full(shape_kji, -1000.0, dtype=np.float32)
    hu[r ** 2 + a ** 2 <= 60.0 ** 2] = -400.0  # light tissue, so that the beads stand out
    for _, (cr, ca, cs), radius in BEADS:
        hu[(r - cr) ** 2 + (a - ca) ** 2 + (s - cs) ** 2 <= radius ** 2] = 2500.0
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, hu)
    matrix = vtk.vtkMatrix4x4()
    for row, value in enumerate((-spacing[0], -spacing[1], spacing[2])):
        matrix.SetElement(row, row, value)
    matrix.SetElement(0, 3, center_ijk[0] * spacing[0])
    matrix.SetElement(1, 3, center_ijk[1] * spacing[1])
    matrix.SetElement(2, 3, -center_ijk[2] * spacing[2])
    node.SetIJKToRASMatrix(matrix)
    node.CreateDefaultDisplayNodes()
    return node


# ----------------------------------------------------------------------------- pictures

def gray(picture: np.ndarray) -> np.ndarray:
    """Mean of the colour channels, float."""
    return picture.astype(np.float64).mean(axis=-1)


def changed(a: np.ndarray, b: np.ndarray, threshold: float = 24.0) -> np.ndarray:
    """Boolean mask of the pixels that differ between two pictures (sum of channel differences)."""
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(axis=-1) > threshold


def blobs(mask: np.ndarray, min_pixels: int = 4):
    """Connected regions of ``mask``: list of (centroid (column, row), pixel count), largest first."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    found = []
    for index in range(1, count + 1):
        rows, cols = np.nonzero(labels == index)
        if rows.size >= min_pixels:
            found.append((np.array([cols.mean(), rows.mean()]), int(rows.size)))
    return sorted(found, key=lambda item: -item[1])


def sample(picture_gray: np.ndarray, screen_xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of a gray picture at (column, row) positions."""
    from scipy import ndimage

    screen_xy = np.atleast_2d(screen_xy)
    return ndimage.map_coordinates(picture_gray, [screen_xy[:, 1], screen_xy[:, 0]], order=1, mode="nearest")


def expected_slice_picture(view, node, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What ``view`` must show of volume ``node`` (its voxels, or ``image`` in their place) with its display.

    For every screen pixel: its RAS point on the slice plane (the view's own XYToRAS), then the node's
    RASToIJK, then the image bilinearly interpolated there (Slicer reslices with linear interpolation),
    then the window (0 at the window's minimum, 255 at its maximum) and the colour table. Returns
    (expected gray, mask of the screen pixels that fall on the image).
    """
    import slicer
    import vtk
    from scipy import ndimage

    if image is None:
        image = slicer.util.arrayFromVolume(node)[0]

    columns, rows = view.size
    grid_c, grid_r = np.meshgrid(np.arange(columns, dtype=float), np.arange(rows, dtype=float))
    ras = view.screen_to_ras(np.c_[grid_c.ravel(), grid_r.ravel()])
    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    ras_to_ijk = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = (ras_to_ijk @ np.c_[ras, np.ones(len(ras))].T).T
    height, width = image.shape
    inside = (ijk[:, 0] >= 0) & (ijk[:, 0] <= width - 1) & (ijk[:, 1] >= 0) & (ijk[:, 1] <= height - 1)
    values = ndimage.map_coordinates(np.asarray(image, dtype=np.float64), [ijk[:, 1], ijk[:, 0]], order=1,
                                     mode="nearest")
    display = node.GetDisplayNode()
    low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    fraction = np.clip((values - low) / (high - low), 0.0, 1.0)
    table = display_table(display)
    index = np.clip(np.floor(fraction * len(table)), 0, len(table) - 1).astype(int)
    expected = table[index] * 255.0
    return expected.reshape(rows, columns), inside.reshape(rows, columns)


def display_table(display_node) -> np.ndarray:
    """The gray levels (0..1) of the display node's colour table, in table order."""
    colors = display_node.GetColorNode()
    count = colors.GetNumberOfColors()
    rgba = [0.0, 0.0, 0.0, 0.0]
    levels = []
    for index in range(count):
        colors.GetColor(index, rgba)
        levels.append(sum(rgba[:3]) / 3.0)
    return np.array(levels)
