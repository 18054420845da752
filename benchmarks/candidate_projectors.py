"""Projector candidates that lost to Joseph's method, kept to rerun the comparison (not shipped).

Both use the product's voxel layout and helpers (projector_cpu), so they differ
from the shipped kernels only in where they sample:

- ``voxel_step``: the trilinear march with a voxel-size-adaptive step, one
  dominant-axis voxel per step (the step Joseph takes), but not aligned to the
  slice planes: samples at the midpoints of equal steps from the entry point.
- ``siddon_midpoint``: Siddon's exact voxel path, with the trilinear
  interpolant sampled at the midpoint of each voxel segment times its length.

``project_candidate(materials, geometry, name)`` returns line integrals (M, H, W)
in g/cm2 like ``project(...).line_integrals``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from DeepDRRSlicerLib.projector import _ray_frame
from DeepDRRSlicerLib.projector_cpu import _add_trilinear, _finish_pixel, _ray, _siddon_start

CANDIDATES = ("voxel_step", "siddon_midpoint")


@njit(parallel=True, fastmath=True, nogil=True)
def _voxel_step_rows(packed, channels, use_labels, label_mask, nk, nj, ni, source_ijk, origin_ijk, u_ijk, v_ijk,
                     source_ras, origin_ras, u_ras, v_ras, line_integrals):
    n_materials, height, width = line_integrals.shape
    values = packed.view(np.float32)
    empty = np.zeros((n_materials, 0))
    for r in prange(height):
        acc = np.zeros(n_materials)
        scratch = np.empty(0)
        for c in range(width):
            e0, e1, e2, length_mm, t_in, t_out = _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras,
                                                      origin_ras, u_ras, v_ras, ni, nj, nk)
            for m in range(n_materials):
                acc[m] = 0.0
            if t_in < t_out:
                dominant = max(abs(e0), abs(e1), abs(e2))
                n_steps = max(1, int(math.ceil((t_out - t_in) * dominant)))
                dt = (t_out - t_in) / n_steps
                for s in range(n_steps):
                    t = t_in + (s + 0.5) * dt
                    _add_trilinear(packed, values, channels, use_labels, label_mask, source_ijk[0] + t * e0,
                                   source_ijk[1] + t * e1, source_ijk[2] + t * e2, ni, nj, nk, dt, acc)
            _finish_pixel(acc, length_mm, r, c, line_integrals, False, empty, scratch, scratch, line_integrals[0])


@njit(parallel=True, fastmath=True, nogil=True)
def _siddon_midpoint_rows(packed, channels, use_labels, label_mask, nk, nj, ni, source_ijk, origin_ijk, u_ijk,
                          v_ijk, source_ras, origin_ras, u_ras, v_ras, line_integrals):
    n_materials, height, width = line_integrals.shape
    values = packed.view(np.float32)
    empty = np.zeros((n_materials, 0))
    for r in prange(height):
        acc = np.zeros(n_materials)
        scratch = np.empty(0)
        for c in range(width):
            e0, e1, e2, length_mm, t_in, t_out = _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras,
                                                      origin_ras, u_ras, v_ras, ni, nj, nk)
            for m in range(n_materials):
                acc[m] = 0.0
            if t_in < t_out:
                _, walk_i, walk_j, walk_k = _siddon_start(source_ijk, e0, e1, e2, t_in, t_out, ni, nj, nk)
                t_i, dt_i = walk_i[0], walk_i[1]
                t_j, dt_j = walk_j[0], walk_j[1]
                t_k, dt_k = walk_k[0], walk_k[1]
                t = t_in
                while t < t_out:
                    t_next = min(t_i, t_j, t_k, t_out)
                    if t_next == t_i:
                        t_i += dt_i
                    elif t_next == t_j:
                        t_j += dt_j
                    elif t_next == t_k:
                        t_k += dt_k
                    if t_next > t:
                        tm = 0.5 * (t + t_next)
                        _add_trilinear(packed, values, channels, use_labels, label_mask, source_ijk[0] + tm * e0,
                                       source_ijk[1] + tm * e1, source_ijk[2] + tm * e2, ni, nj, nk, t_next - t, acc)
                    t = t_next
            _finish_pixel(acc, length_mm, r, c, line_integrals, False, empty, scratch, scratch, line_integrals[0])


def project_candidate(materials, geometry, name: str) -> np.ndarray:
    layout = materials.projector_layout()
    source_ijk, origin_ijk, u_ijk, v_ijk = _ray_frame(materials, geometry)
    line_integrals = np.zeros((layout.n_materials, *geometry.shape), dtype=np.float32)
    kernel = {"voxel_step": _voxel_step_rows, "siddon_midpoint": _siddon_midpoint_rows}[name]
    kernel(layout.packed, layout.channels, layout.kind == "labels", layout.label_mask, *layout.shape_kji,
           source_ijk, origin_ijk, u_ijk, v_ijk, geometry.source, geometry.detector_origin, geometry.u, geometry.v,
           line_integrals)
    return line_integrals
