"""Compiled per-pixel spectral sums for :meth:`primary.PrimaryModel.spectral_sums` (numba, one thread per row)."""

from __future__ import annotations

import math

from numba import njit, prange


@njit(parallel=True, fastmath=True, nogil=True, cache=True)
def spectral_sums_rows(line_integrals, air, mu, mu_air, weights, out):
    """out[k, r, c] = sum_b weights[k, b] exp(-sum_m mu[m, b] L[m, r, c] - mu_air[b] air[r, c])."""
    n_materials = line_integrals.shape[0]
    n_bins = weights.shape[1]
    n_out = weights.shape[0]
    height, width = air.shape
    for r in prange(height):
        exponent = mu_air.copy()
        acc = weights[:, 0].copy()
        for c in range(width):
            a = air[r, c]
            for b in range(n_bins):
                exponent[b] = mu_air[b] * a
            for m in range(n_materials):
                value = line_integrals[m, r, c]
                for b in range(n_bins):
                    exponent[b] += mu[m, b] * value
            for k in range(n_out):
                acc[k] = 0.0
            for b in range(n_bins):
                t = math.exp(-exponent[b])
                for k in range(n_out):
                    acc[k] += weights[k, b] * t
            for k in range(n_out):
                out[k, r, c] = acc[k]
