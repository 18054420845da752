"""Smoothing of Monte Carlo scatter tallies (scatter is low-frequency).

Method: normalised Gaussian convolution on the tally grid (weights renormalised
where the kernel leaves the detector, so the edges are not darkened), with the
variance propagated through the same weights (the tally pixels are
statistically independent: a photon scores in one pixel at most), then
bilinear interpolation to the image grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_kernel_1d", "smooth", "smooth_with_variance", "upsample_bilinear"]


def gaussian_kernel_1d(sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return np.ones(1)
    radius = max(1, int(np.ceil(3.5 * sigma_px)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    return kernel / kernel.sum()


def _convolve_axis(image: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Zero-padded 'same' convolution along one axis (kernel is symmetric)."""
    radius = kernel.size // 2
    moved = np.moveaxis(image, axis, -1)
    padded = np.zeros(moved.shape[:-1] + (moved.shape[-1] + 2 * radius,))
    padded[..., radius:radius + moved.shape[-1]] = moved
    out = np.zeros_like(moved, dtype=np.float64)
    for offset, weight in enumerate(kernel):
        out += weight * padded[..., offset:offset + moved.shape[-1]]
    return np.moveaxis(out, -1, axis)


def smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    kernel = gaussian_kernel_1d(sigma_px)
    ones = np.ones(image.shape)
    num = _convolve_axis(_convolve_axis(np.asarray(image, dtype=np.float64), kernel, 0), kernel, 1)
    den = _convolve_axis(_convolve_axis(ones, kernel, 0), kernel, 1)
    return num / den


def smooth_with_variance(image: np.ndarray, variance: np.ndarray, sigma_px: float):
    """Smoothed image and the variance of each smoothed value: sum w_j^2 var_j with normalised w."""
    kernel = gaussian_kernel_1d(sigma_px)
    ones = np.ones(image.shape)
    den = _convolve_axis(_convolve_axis(ones, kernel, 0), kernel, 1)
    num = _convolve_axis(_convolve_axis(np.asarray(image, dtype=np.float64), kernel, 0), kernel, 1)
    var = _convolve_axis(_convolve_axis(np.asarray(variance, dtype=np.float64), kernel ** 2, 0), kernel ** 2, 1)
    return num / den, var / den ** 2


def upsample_bilinear(image: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """From a grid of block x block bins (bin (i, j) covers image rows i*block .. i*block+block-1)
    to ``shape`` by bilinear interpolation between bin centres (constant beyond the outer centres)."""
    if block == 1 and image.shape == tuple(shape):
        return np.asarray(image, dtype=np.float64)
    height, width = shape

    def centres(n_bins, n_pixels):
        starts = np.arange(n_bins) * block
        stops = np.minimum(starts + block, n_pixels)
        return 0.5 * (starts + stops - 1)

    rows_c, cols_c = centres(image.shape[0], height), centres(image.shape[1], width)
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    along_cols = np.stack([np.interp(cols, cols_c, line) for line in np.asarray(image, dtype=np.float64)])
    return np.stack([np.interp(rows, rows_c, along_cols[:, c]) for c in range(width)], axis=1)
