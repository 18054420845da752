"""Truncation: the pixels where the image misses patient matter because the CT ends there.

A CT covers part of a patient. Its first and last slices (the scan range) and
often its side faces (the reconstruction field of view, or the table side)
cut through the body. An X-ray through the missing parts sees too little
matter, and the image shows a hard edge where the patient seems to end.

``truncation_mask(materials, geometry)`` is 1.0 where a pixel's ray
- enters or leaves the CT through a face where the CT cuts tissue, or
- passes beyond the first or last slice through the extension of the tissue
  cut there: the patient goes on along the scan axis (k), so the rays beside
  the CT that would cross the continuing body are marked too;
and 0.0 elsewhere. Tissue is density above 0.1 g/cm3 (about -900 HU: lung
and denser; air and CT padding are not). Side faces are not extended: what
lies beyond them (a flattened back, the edge of the field of view) is thin
and unknown, so only rays through the cut itself are marked.
"""

from __future__ import annotations

import numpy as np

from .geometry import DetectorGeometry
from .materials import MaterialVolume

TISSUE_DENSITY = 0.1          # g/cm3
MIN_CUT_VOXELS = 4            # fewer tissue voxels on a face: noise, not a cut
_SAMPLES_PER_VOXEL = 2        # extension test: samples per voxel along the ray's track over a face
_RAYS_PER_BLOCK = 65536


def cut_faces(materials: MaterialVolume) -> dict:
    """{(axis, side): boolean mask over the face} for the faces that cut tissue; axis 0/1/2 = i/j/k,
    side 0 = the first voxel layer, 1 = the last. A face's mask is indexed like the volume with that
    axis removed ([k, j] for i faces, [k, i] for j faces, [j, i] for k faces)."""
    density = materials.density
    faces = {}
    for axis in range(3):
        array_axis = 2 - axis
        for side in (0, 1):
            layer = np.take(density, 0 if side == 0 else density.shape[array_axis] - 1, axis=array_axis)
            tissue = layer > TISSUE_DENSITY
            if int(tissue.sum()) >= MIN_CUT_VOXELS:
                faces[axis, side] = tissue
    return faces


def _lookup(mask: np.ndarray, axis: int, points: np.ndarray) -> np.ndarray:
    """Nearest-voxel value of a face mask at index points (N, 3); False outside the face."""
    other = [a for a in range(3) if a != axis]          # increasing: the mask's columns are other[0]
    column = np.floor(points[:, other[0]] + 0.5).astype(np.int64)
    row = np.floor(points[:, other[1]] + 0.5).astype(np.int64)
    inside = (column >= 0) & (column < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
    hit = np.zeros(len(points), dtype=bool)
    hit[inside] = mask[row[inside], column[inside]]
    return hit


def truncation_mask(materials: MaterialVolume, geometry: DetectorGeometry) -> np.ndarray:
    """(H, W) float32: 1.0 where the ray misses matter the CT cut off (see the module docstring)."""
    faces = cut_faces(materials)
    height, width = geometry.shape
    mask = np.zeros(height * width, dtype=bool)
    if not faces:
        return mask.reshape(height, width).astype(np.float32)
    ras_to_ijk = np.linalg.inv(materials.ijk_to_ras)
    linear, offset = ras_to_ijk[:3, :3], ras_to_ijk[:3, 3]
    source = linear @ geometry.source + offset
    origin, step_u, step_v = linear @ geometry.detector_origin + offset, linear @ geometry.u, linear @ geometry.v
    nk, nj, ni = materials.density.shape
    size = np.array([ni, nj, nk], dtype=np.float64)
    columns = np.arange(width, dtype=np.float64)
    rows_per_block = max(1, _RAYS_PER_BLOCK // width)
    for first in range(0, height, rows_per_block):   # pixel centres block by block: no (H, W, 3) array
        rows = np.arange(first, min(height, first + rows_per_block), dtype=np.float64)
        ends = origin + columns[None, :, None] * step_u + rows[:, None, None] * step_v
        mask[first * width:(first + len(rows)) * width] = _block_mask(faces, source, ends.reshape(-1, 3) - source,
                                                                      size)
    return mask.reshape(height, width).astype(np.float32)


def _block_mask(faces: dict, source: np.ndarray, directions: np.ndarray, size: np.ndarray) -> np.ndarray:
    low, high = -0.5, size - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (low - source) / directions
        tb = (high - source) / directions
    near = np.where(directions == 0, np.where((source >= low) & (source <= high), -np.inf, np.inf),
                    np.minimum(ta, tb))
    far = np.where(directions == 0, np.where((source >= low) & (source <= high), np.inf, -np.inf),
                   np.maximum(ta, tb))
    t_in, t_out = near.max(axis=1), far.min(axis=1)
    crosses = (t_in < t_out) & (t_in > 0.0)
    marked = np.zeros(len(directions), dtype=bool)

    # 1. rays that enter or leave through tissue on a face (leaving only if they reach the far face)
    for t, axis_of, side_of in ((t_in, near.argmax(axis=1), directions < 0), (t_out, far.argmin(axis=1),
                                                                                 directions > 0)):
        through = crosses & (t < 1.0) if t is t_out else crosses
        for (axis, side), face in faces.items():
            rays = np.flatnonzero(through & (axis_of == axis) & (side_of[:, axis] == bool(side)))
            if rays.size:
                points = source + t[rays, None] * directions[rays]
                marked[rays] |= _lookup(face, axis, points)

    # 2. rays through the extension of the tissue cut by the first or last slice (k faces)
    for side in (0, 1):
        face = faces.get((2, side))
        if face is None:
            continue
        plane = low if side == 0 else high[2]
        e_k = directions[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_plane = (plane - source[2]) / e_k
        beyond_from_start = (source[2] < plane) if side == 0 else (source[2] > plane)
        # the part of tau in [0, 1] beyond the plane
        t0 = np.where(e_k == 0, np.where(beyond_from_start, 0.0, 1.0),
                      np.where((e_k > 0) == (side == 0), 0.0, np.clip(t_plane, 0.0, 1.0)))
        t1 = np.where(e_k == 0, np.where(beyond_from_start, 1.0, 0.0),
                      np.where((e_k > 0) == (side == 0), np.clip(t_plane, 0.0, 1.0), 1.0))
        # ... inside the face's rectangle in (i, j)
        for axis in (0, 1):
            e = directions[:, axis]
            with np.errstate(divide="ignore", invalid="ignore"):
                ta = (low - source[axis]) / e
                tb = (high[axis] - source[axis]) / e
            inside = low <= source[axis] <= high[axis]
            t0 = np.maximum(t0, np.where(e == 0, -np.inf if inside else np.inf, np.minimum(ta, tb)))
            t1 = np.minimum(t1, np.where(e == 0, np.inf if inside else -np.inf, np.maximum(ta, tb)))
        rays = np.flatnonzero((t0 < t1) & ~marked)
        if rays.size == 0:
            continue
        # sample the ray's track over the face every half voxel (in i, j)
        span = np.abs(directions[rays, :2]).max(axis=1) * (t1[rays] - t0[rays])
        count = np.maximum(1, np.ceil(span * _SAMPLES_PER_VOXEL).astype(np.int64)) + 1
        hit = np.zeros(rays.size, dtype=bool)
        for q in range(int(count.max())):
            active = np.flatnonzero(~hit & (q < count))
            if active.size == 0:
                break
            fraction = q / np.maximum(count[active] - 1, 1)
            t = t0[rays[active]] + fraction * (t1[rays[active]] - t0[rays[active]])
            points = source + t[:, None] * directions[rays[active]]
            hit[active] = _lookup(face, 2, points)
        marked[rays[hit]] = True
    return marked


def mark_on_preview(preview: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An 8-bit preview with the truncated pixels hatched (black diagonal stripes)."""
    rows, cols = np.indices(preview.shape)
    stripes = ((rows + cols) // 3) % 4 == 0
    marked = np.array(preview, copy=True)
    marked[(mask > 0.5) & stripes] = 0
    return marked
