"""Pure-numpy fallback projector, for Pythons without numba (e.g. a stock 3D Slicer).

The same trilinear ray march as ``projector_cpu.trilinear_rows`` (same sample
points, same weights), vectorised over blocks of rays. It is several times
slower than the numba kernels and is only used when numba cannot be imported.
"""

from __future__ import annotations

import numpy as np

MM_TO_CM = 0.1
_SAMPLES_PER_BLOCK = 1_500_000


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


def trilinear_rays(density, labels, n_materials, source_ijk, ends_ijk, lengths_mm, step_mm):
    """Line integrals (rays, materials) in g/cm2 for rays from source_ijk to ends_ijk."""
    nk, nj, ni = density.shape
    directions = ends_ijk - source_ijk
    t_in, t_out = _clip_to_box(source_ijk, directions, (ni, nj, nk))
    hit = t_in < t_out
    result = np.zeros((len(directions), n_materials))
    rays = np.flatnonzero(hit)
    if rays.size == 0:
        return result
    span = (t_out[rays] - t_in[rays]) * lengths_mm[rays]
    steps = np.maximum(1, np.ceil(span / step_mm).astype(np.int64))
    dt = (t_out[rays] - t_in[rays]) / steps
    flat_density = density.ravel()
    flat_labels = labels.ravel()
    rays_per_block = max(1, _SAMPLES_PER_BLOCK // int(steps.max()))
    for start in range(0, rays.size, rays_per_block):
        stop = min(rays.size, start + rays_per_block)
        block = slice(start, stop)
        n_max = int(steps[block].max())
        sample = np.arange(n_max)[None, :]
        valid = sample < steps[block, None]
        t = t_in[rays[block], None] + (sample + 0.5) * dt[block, None]
        position = source_ijk[None, None, :] + t[..., None] * directions[rays[block], None, :]
        base = np.floor(position).astype(np.int64)
        fraction = position - base
        # per axis: weights and in-volume masks of the lower (0) and upper (1) neighbour
        weights = [(1.0 - fraction[..., a], fraction[..., a]) for a in range(3)]
        inside = [((base[..., a] >= 0) & (base[..., a] < n), (base[..., a] >= -1) & (base[..., a] < n - 1))
                  for a, n in enumerate((ni, nj, nk))]
        flat_base = (base[..., 2] * nj + base[..., 1]) * ni + base[..., 0]
        ray_index = np.broadcast_to(np.arange(stop - start)[:, None], t.shape)
        accumulated = np.zeros((stop - start) * n_materials)
        for corner in range(8):
            di, dj, dk = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
            use = valid & inside[0][di] & inside[1][dj] & inside[2][dk]
            flat = flat_base[use] + (dk * nj + dj) * ni + di
            weight = (weights[0][di] * weights[1][dj] * weights[2][dk])[use]
            slot = ray_index[use] * n_materials + flat_labels[flat]
            accumulated += np.bincount(slot, weights=weight * flat_density[flat], minlength=accumulated.size)
        scale = dt[block] * lengths_mm[rays[block]] * MM_TO_CM
        result[rays[block]] = accumulated.reshape(stop - start, n_materials) * scale[:, None]
    return result
