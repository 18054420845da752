"""Pure-numpy fallback projector, for Pythons without numba (e.g. a stock 3D Slicer).

The default algorithm, Joseph's method exactly as ``projector_cpu.joseph_rows``
documents it (same cells, sample points, weights and stored voxel values),
vectorised over blocks of rays. It samples every cell trilinearly (on a full
cell the weight along the dominant axis is 0, which is the numba kernel's
bilinear fast path), so the two agree to rounding. It is 10-30 times slower
than the numba kernels and is only used when numba cannot be imported.
"""

from __future__ import annotations

import numpy as np

from .projector_voxels import VoxelLayout

MM_TO_CM = 0.1
_SAMPLES_PER_BLOCK = 400_000


def _clip_to_box(source, directions, shape_ijk):
    """Entry and exit tau in [0, 1] of rays source + tau * direction through the voxel box."""
    t_in = np.zeros(len(directions))
    t_out = np.ones(len(directions))
    for axis in range(3):
        s = source[axis]
        e = directions[:, axis]
        low, high = -0.5, shape_ijk[axis] - 0.5
        flat = np.abs(e) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = (low - s) / e
            tb = (high - s) / e
        # a ray parallel to this axis' faces is inside for all tau or for none
        near = np.where(flat, -np.inf, np.minimum(ta, tb))
        far = np.where(flat, np.inf if low <= s <= high else -np.inf, np.maximum(ta, tb))
        t_in = np.maximum(t_in, near)
        t_out = np.minimum(t_out, far)
    return t_in, t_out


def _corner(coordinate, n):
    """Lower padded index and fraction per point along one axis, clamped to the padding."""
    p = coordinate + 1.0
    index = np.floor(p)
    fraction = p - index
    fraction = np.where(index < 0, 0.0, np.where(index > n, 1.0, fraction))
    return np.clip(index, 0, n).astype(np.int64), fraction


def joseph_rays(layout: VoxelLayout, source_ijk, ends_ijk, lengths_mm) -> np.ndarray:
    """Line integrals (rays, materials) in g/cm2 for rays from source_ijk to ends_ijk (index space)."""
    nk, nj, ni = layout.shape_kji
    n_materials = layout.n_materials
    source_ijk = np.asarray(source_ijk, dtype=np.float64)
    directions = np.asarray(ends_ijk, dtype=np.float64) - source_ijk
    t_in, t_out = _clip_to_box(source_ijk, directions, (ni, nj, nk))
    result = np.zeros((len(directions), n_materials))
    rays = np.flatnonzero(t_in < t_out)
    if rays.size == 0:
        return result
    e = directions[rays]
    axis = np.argmax(np.abs(e), axis=1)   # ties: the lower axis
    along = np.arange(rays.size)
    s_a = source_ijk[axis]
    e_a = e[along, axis]
    n_a = np.array([ni, nj, nk])[axis]
    p_in = s_a + t_in[rays] * e_a
    p_out = s_a + t_out[rays] * e_a
    lo, hi = np.minimum(p_in, p_out), np.maximum(p_in, p_out)
    n_lo = np.clip(np.floor(lo + 0.5), 0, n_a - 1).astype(np.int64)
    n_hi = np.clip(np.floor(hi + 0.5), 0, n_a - 1).astype(np.int64)
    counts = n_hi - n_lo + 1

    pi, pij = ni + 2, (ni + 2) * (nj + 2)
    if layout.kind == "labels":
        values = layout.packed.view(np.float32)
        labels = (layout.packed & np.uint32(layout.label_mask)).astype(np.int64)
    order = np.argsort(counts, kind="stable")   # similar lengths share a block: little padding wasted
    sorted_counts = counts[order]
    start = 0
    while start < rays.size:
        # the most rays from ``start`` whose padded sample grid stays within the budget
        ends = np.arange(start + 1, rays.size + 1)
        fits = (ends - start) * sorted_counts[ends - 1] <= _SAMPLES_PER_BLOCK
        stop = start + max(1, int(np.count_nonzero(fits)))
        block = order[start:stop]
        q = np.arange(int(counts[block].max()))[None, :]
        n = n_lo[block, None] + q
        p0 = np.maximum(lo[block, None], n - 0.5)
        p1 = np.minimum(hi[block, None], n + 0.5)
        valid = (q < counts[block, None]) & (p1 > p0)
        weight = np.where(valid, (p1 - p0) / np.abs(e_a[block, None]), 0.0)
        t = (0.5 * (p0 + p1) - s_a[block, None]) / e_a[block, None]
        position = source_ijk + t[..., None] * e[block, None, :]
        (i0, fx), (j0, fy), (k0, fz) = (_corner(position[..., a], size) for a, size in enumerate((ni, nj, nk)))
        accumulated = np.zeros((block.size, n_materials))
        ray_slot = np.broadcast_to(np.arange(block.size)[:, None], weight.shape)
        for corner in range(8):
            di, dj, dk = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
            flat = (k0 + dk) * pij + (j0 + dj) * pi + (i0 + di)
            w = weight * (fx if di else 1.0 - fx) * (fy if dj else 1.0 - fy) * (fz if dk else 1.0 - fz)
            if layout.kind == "labels":
                slot = ray_slot * n_materials + labels[flat]
                accumulated += np.bincount(slot.ravel(), weights=(w * values[flat]).ravel(),
                                           minlength=block.size * n_materials).reshape(block.size, n_materials)
            else:
                accumulated += np.einsum("rq,rqm->rm", w, layout.channels[flat])
        result[rays[block]] = accumulated
        start = stop
    return result * (np.asarray(lengths_mm, dtype=np.float64) * MM_TO_CM)[:, None]
