"""Noise stage: measured statistics of flat fields against the physics (noise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from DeepDRRSlicerLib.detector import Detector
from DeepDRRSlicerLib.noise import add_noise, blur, blur_kernel_1d, final_image
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.spectrum import tube_spectrum

SHAPE = (1000, 1000)   # 1e6 pixels: the sample variance is known to 0.14 % (1 sigma)


def test_monoenergetic_quantum_noise_is_poisson_in_energy():
    energy, photons = 60.0, 400.0
    mean = np.full(SHAPE, energy * photons)
    noisy = add_noise(mean, energy * mean, seed=1)
    assert noisy.mean() == pytest.approx(energy * photons, rel=2e-3)
    # Poisson counts of 60 keV quanta: variance = E x mean signal = E^2 N
    assert noisy.var() == pytest.approx(energy ** 2 * photons, rel=0.02)
    assert np.allclose(np.mod(noisy / energy, 1.0), 0.0)   # whole photons


def test_polychromatic_noise_is_compound_poisson():
    """Variance = sum N(E) E^2, not mean energy x signal: the two differ by <E^2>/<E>^2 (~8 % at 90 kV)."""
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), ("water",), detector=Detector())
    energy, energy2, count = model.signal_weights().sum(axis=1)
    scale = 300.0 / count          # 300 absorbed photons per pixel
    mean, second = energy * scale, energy2 * scale
    noisy = add_noise(np.full(SHAPE, mean), np.full(SHAPE, second), seed=2)
    assert noisy.mean() == pytest.approx(mean, rel=2e-3)
    assert noisy.var() == pytest.approx(second, rel=0.02)
    naive = (energy / count) * mean    # simple Poisson with the mean energy
    assert abs(second / naive - 1.0) > 0.05, "the test must be able to tell compound from simple Poisson"
    assert abs(noisy.var() / naive - 1.0) > 0.04


def test_electronic_noise_adds_its_variance():
    sigma = 250.0
    noisy = add_noise(np.zeros(SHAPE), np.zeros(SHAPE), seed=3, electronic_sigma_keV=sigma)
    assert noisy.mean() == pytest.approx(0.0, abs=3 * sigma / 1000)
    assert noisy.var() == pytest.approx(sigma ** 2, rel=0.02)
    both = add_noise(np.full(SHAPE, 6000.0), np.full(SHAPE, 6000.0 * 60), seed=4, electronic_sigma_keV=sigma)
    assert both.var() == pytest.approx(6000.0 * 60 + sigma ** 2, rel=0.02)


def test_electronic_noise_scales_with_binned_pixel_area():
    detector = Detector(electronic_noise_keV=100.0)
    assert detector.electronic_sigma_keV(detector.native_pixel_mm ** 2) == pytest.approx(100.0)
    assert detector.electronic_sigma_keV(4 * detector.native_pixel_mm ** 2) == pytest.approx(200.0)


def test_blur_shapes_the_noise_power_spectrum_like_mtf_squared():
    """Quantum noise with the light spread applied after it (as in the detector): NPS(with blur) /
    NPS(without) = |MTF|^2 of the kernel. Blurring before drawing the noise would leave it white."""
    pitch_mm, sigma_mm = 0.2, 0.3
    sigma_px = sigma_mm / pitch_mm
    kernel = blur_kernel_1d(sigma_px)
    size, crop, realisations = 160, 128, 48
    white_sum = np.zeros((crop, crop))
    blurred_sum = np.zeros((crop, crop))
    lo = (size - crop) // 2
    flat = np.full((size, size), 1000.0)
    for seed in range(realisations):
        white = add_noise(flat, flat, seed=100 + seed)
        blurred = add_noise(flat, flat, seed=100 + seed, blur_sigma_mm=sigma_mm, pixel_spacing_mm=(pitch_mm, pitch_mm))
        assert np.allclose(blurred, blur(white, sigma_mm, (pitch_mm, pitch_mm)))   # same quanta, then blurred
        w = white[lo:lo + crop, lo:lo + crop]
        b = blurred[lo:lo + crop, lo:lo + crop]
        white_sum += np.abs(np.fft.fft2(w - w.mean())) ** 2
        blurred_sum += np.abs(np.fft.fft2(b - b.mean())) ** 2
    freqs = np.fft.fftfreq(crop)
    offsets = np.arange(kernel.size) - kernel.size // 2
    transfer_1d = np.abs(np.sum(kernel[None, :] * np.exp(-2j * np.pi * freqs[:, None] * offsets[None, :]), axis=1))
    mtf2 = (transfer_1d[:, None] * transfer_1d[None, :]) ** 2
    band = mtf2 > 0.05
    band[0, 0] = False
    measured = np.where(band, blurred_sum / np.where(band, white_sum, 1.0), 0.0)
    # average over rings of equal |f| to beat the speckle of single frequencies
    radius = np.hypot(*np.meshgrid(freqs, freqs, indexing="ij"))
    bins = np.linspace(0.0, radius[band].max(), 12)
    which = np.digitize(radius, bins)
    for ring in range(1, bins.size):
        sel = band & (which == ring)
        if sel.sum() < 50:
            continue
        assert measured[sel].mean() == pytest.approx(mtf2[sel].mean(), rel=0.05), f"ring {ring}"
    # and the noise is really correlated: neighbouring pixels of the blurred image
    assert np.corrcoef(blurred[:, :-1].ravel(), blurred[:, 1:].ravel())[0, 1] > 0.5


def test_same_seed_is_bit_identical_and_another_differs():
    mean = np.full((64, 64), 5000.0)
    a = add_noise(mean, mean * 50, seed=7, blur_sigma_mm=0.3, pixel_spacing_mm=(0.2, 0.2), electronic_sigma_keV=80)
    b = add_noise(mean, mean * 50, seed=7, blur_sigma_mm=0.3, pixel_spacing_mm=(0.2, 0.2), electronic_sigma_keV=80)
    c = add_noise(mean, mean * 50, seed=8, blur_sigma_mm=0.3, pixel_spacing_mm=(0.2, 0.2), electronic_sigma_keV=80)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_final_image_is_windowed_log_with_dense_matter_dark():
    transmission = np.full((100, 100), 0.5)
    transmission[40:60, 40:60] = 0.05      # a dense object
    final, window = final_image(transmission, reference=transmission)
    assert final.dtype == np.float32 and final.min() >= 0 and final.max() <= 1
    assert final[50, 50] < final[10, 10]
    assert window["neg_log_low"] == pytest.approx(-np.log(0.5), rel=1e-6)
    assert window["neg_log_high"] == pytest.approx(-np.log(0.05), rel=1e-6)


def test_photon_starved_pixels_do_not_set_the_window():
    """3 % of pixels at or below zero (no photons counted, electronic noise): they show dense (dark) but the
    window stays on the anatomy, so the object remains visible instead of washing out."""
    rng = np.random.default_rng(4)
    transmission = np.full((100, 100), 0.5)
    transmission[40:60, 40:60] = 0.05
    starved = rng.random(transmission.shape) < 0.03
    noisy = np.where(starved, -rng.random(transmission.shape) * 0.01, transmission)
    final, window = final_image(noisy, reference=transmission)
    assert window["neg_log_high"] == pytest.approx(-np.log(0.05), rel=1e-6)
    assert window["no_signal_fraction"] == pytest.approx(starved.mean())
    assert final[~starved & (transmission == 0.5)].min() > 0.9 and np.all(final[starved] == 0.0)
    object_pixels = ~starved & (transmission == 0.05)
    assert final[object_pixels].max() < 0.1   # the object against the background: full contrast kept
