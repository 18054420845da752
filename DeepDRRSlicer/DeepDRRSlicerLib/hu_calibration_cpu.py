"""The per-voxel work of ``hu_calibration.compose`` compiled with numba: one pass over the voxels instead of a
dozen whole-array numpy operations (5.2 -> about 1 s for the 35 M voxels of a 512 x 512 x 133 chest CT).

Every operation is the numpy path's, in float32 and in the same order (segment lookup, slope * HU + offset,
times the class probability, the per-voxel sum over materials from the first to the last, the division),
so both paths give the same bits; a test holds them to that.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _segment(breaks, h):
    """numpy.searchsorted(breaks, h, side='right') for one value (NaN sorts last)."""
    if h != h:
        return breaks.shape[0]
    s = 0
    while s < breaks.shape[0] and breaks[s] <= h:
        s += 1
    return s


@njit(parallel=True, nogil=True, cache=True)
def compose_calibrated(hu, p_air, p_soft, p_bone, tissue_breaks, tissue_offset, tissue_slope, bone_breaks,
                       bone_offset, bone_slope, density, fractions):
    """density[n], fractions[m, n] (float32) of each voxel n from its HU and class probabilities."""
    n_materials = tissue_offset.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for n in prange(hu.shape[0]):
        h = hu[n]
        s = _segment(tissue_breaks, h)
        outside_bone = p_air[n] + p_soft[n]
        b = p_bone[n]
        sb = _segment(bone_breaks, h) if b > zero else 0
        rho = zero
        for m in range(n_materials):
            mass = tissue_slope[m, s] * h + tissue_offset[m, s]
            mass = mass * outside_bone
            if b > zero:
                mass = mass + b * (bone_slope[m, sb] * h + bone_offset[m, sb])
            fractions[m, n] = mass
            rho = rho + mass if m > 0 else mass
        density[n] = rho
        if rho <= zero:
            for m in range(n_materials):
                fractions[m, n] = fractions[m, n] / one
            fractions[0, n] = one
        else:
            for m in range(n_materials):
                fractions[m, n] = fractions[m, n] / rho


@njit(parallel=True, nogil=True, cache=True)
def compose_deepdrr(hu, p_air, p_soft, p_bone, density, fractions):
    """DeepDRR's fits: density = max(min(0.001029 HU + 1.030, 0.0005886 HU + 1.03), 0) per class share."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    a1, b1 = np.float32(0.001029), np.float32(1.030)
    a2, b2 = np.float32(0.0005886), np.float32(1.03)
    for n in prange(hu.shape[0]):
        h = hu[n]
        d = min(a1 * h + b1, a2 * h + b2)
        d = max(d, zero)
        m0 = p_air[n] * d
        m1 = p_soft[n] * d
        m2 = p_bone[n] * d
        rho = m0 + m1 + m2
        density[n] = rho
        if rho <= zero:
            fractions[0, n] = one
            fractions[1, n] = m1
            fractions[2, n] = m2
        else:
            fractions[0, n] = m0 / rho
            fractions[1, n] = m1 / rho
            fractions[2, n] = m2 / rho
