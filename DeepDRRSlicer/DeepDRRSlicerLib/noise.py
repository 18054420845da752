"""Detector noise from physical inputs, in a fixed, documented order.

Inputs per pixel (from the primary and scatter stages, for the chosen mAs):
the mean absorbed energy m = sum_E n(E) E and its second moment
v = sum_E n(E) E^2 (keV, keV^2), where n(E) is the expected number of photons
of energy E absorbed in the pixel: fluence per mAs at 1 m x mAs x (1000/r)^2 x
cos(theta) x pixel area x exp(-attenuation) x eta(E) (see primary.py and
detector.py).

Order, as in an indirect (CsI + a-Si) flat panel:

1. **Quantum noise.** An energy-integrating detector sums the energies of a
   Poisson number of photons of random energy: compound Poisson, mean m,
   variance v (not m x mean energy). It is drawn as a scaled Poisson,
   g x Poisson(m / g) with g = v / m, which has exactly this mean and variance
   and stays discrete at low counts.
2. **Light spread (blur).** Each absorbed photon's light spreads in the
   scintillator before it reaches the photodiodes, so the blur acts on the
   already-noisy quantum image: the noise becomes correlated (its power
   spectrum is multiplied by |MTF|^2) and the mean image is blurred too.
   Blurring before drawing the noise would leave white noise on a blurred
   image, which no indirect detector shows. Kernel: a Gaussian of sigma
   ``Detector.blur_sigma_mm`` integrated over each (possibly binned) pixel.
3. **Electronic noise.** Added at read-out, after the light spread: Gaussian,
   white, sigma per native pixel (``Detector.electronic_noise_keV``), scaled by
   sqrt(number of native pixels) for binned pixels.

Seeding: one ``numpy.random.Generator`` (PCG64) from SeedSequence([seed, 1]);
the same seed gives bit-identical images on the same machine.

Exposure defaults (``EXPOSURE_PRESETS``): a mobile C-arm's pulsed fluoroscopy
frame, 0.05 mAs (e.g. 5 mA x 10 ms), and its single-shot radiography mode,
1 mAs. At the default 90 kV with 4 mm Al in total (70 uGy/mAs at 1 m, see
spectrum.py) and SID 1020 mm these give about 3.3 uGy and 67 uGy incident at the
detector without a patient; behind 20 cm of tissue (~3 % of the kerma
transmitted) about 0.1 uGy per fluoroscopy frame and 2 uGy per radiograph, the
detector doses at which flat-panel
fluoroscopy (tens to a few hundred nGy per frame) and digital radiography
(a few uGy) operate. The summary reports the detector air kerma actually
reached, so users can match their own system.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

__all__ = ["EXPOSURE_PRESETS", "NOISE_STREAM", "blur_kernel_1d", "blur", "add_noise", "final_image",
           "validate_mas"]

EXPOSURE_PRESETS = {"fluoroscopy": 0.05, "radiography": 1.0}   # mAs per image
NOISE_STREAM = 1


def validate_mas(mas) -> float:
    if isinstance(mas, bool) or not isinstance(mas, (int, float)) or not math.isfinite(mas) or not 0 < mas <= 1000:
        raise InputError(f"Exposure {mas!r} mAs is outside (0, 1000].",
                         "Give --mas > 0, e.g. 0.05 per fluoroscopy frame or 1 for a radiograph.")
    return float(mas)


def blur_kernel_1d(sigma_px: float) -> np.ndarray:
    """A Gaussian of sigma_px pixels integrated over each pixel (sums to 1)."""
    if sigma_px <= 1e-3:
        return np.ones(1)
    radius = max(1, int(math.ceil(4.0 * sigma_px)))
    edges = (np.arange(-radius, radius + 2) - 0.5) / (sigma_px * math.sqrt(2.0))
    cdf = np.array([0.5 * (1.0 + math.erf(x)) for x in edges])
    kernel = np.diff(cdf)
    return kernel / kernel.sum()


def _convolve_reflect(image: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = kernel.size // 2
    if radius == 0:
        return image
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="reflect" if image.shape[axis] > radius else "edge")
    out = np.zeros_like(image, dtype=np.float64)
    n = image.shape[axis]
    for offset, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(offset, offset + n), axis=axis)
    return out


def blur(image: np.ndarray, sigma_mm: float, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Separable light-spread blur; pixel_spacing_mm is (column spacing, row spacing)."""
    out = np.asarray(image, dtype=np.float64)
    out = _convolve_reflect(out, blur_kernel_1d(sigma_mm / pixel_spacing_mm[1]), 0)
    return _convolve_reflect(out, blur_kernel_1d(sigma_mm / pixel_spacing_mm[0]), 1)


def add_noise(mean_keV: np.ndarray, second_moment_keV2: np.ndarray, *, seed: int, blur_sigma_mm: float = 0.0,
              pixel_spacing_mm: tuple[float, float] = (1.0, 1.0), electronic_sigma_keV: float = 0.0) -> np.ndarray:
    """One noisy detector image (keV absorbed per pixel), in the order quantum -> blur -> electronic."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), NOISE_STREAM]))
    mean = np.clip(np.asarray(mean_keV, dtype=np.float64), 0.0, None)
    second = np.clip(np.asarray(second_moment_keV2, dtype=np.float64), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        quantum_energy = np.where(mean > 0, second / np.where(mean > 0, mean, 1.0), 0.0)   # g = v / m
        counts = np.where(quantum_energy > 0, mean / np.where(quantum_energy > 0, quantum_energy, 1.0), 0.0)
    signal = quantum_energy * rng.poisson(counts)
    if blur_sigma_mm > 0:
        signal = blur(signal, blur_sigma_mm, pixel_spacing_mm)
    if electronic_sigma_keV > 0:
        signal = signal + rng.normal(0.0, electronic_sigma_keV, size=signal.shape)
    return signal


def final_image(normalised: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """-log of the flat-field-corrected image, windowed to [0, 1] for display, dense matter dark (as a
    C-arm monitor shows it). The window is the 1-99 % range of -log over the central 70 % of the field,
    from pixels whose rays crossed the patient (``reference`` < 0.95, e.g. the primary), like the
    automatic window of a C-arm. Pixels with no positive signal (photon starved: quantum and electronic
    noise can take them to or below zero) show as the densest matter and are left out of the window, so
    a starved few percent do not wash the anatomy out."""
    normalised = np.asarray(normalised, dtype=np.float64)
    attenuation = -np.log(np.clip(normalised, 1e-6, None))
    rows, cols = attenuation.shape
    central = np.zeros(attenuation.shape, dtype=bool)
    central[int(0.15 * rows):int(np.ceil(0.85 * rows)), int(0.15 * cols):int(np.ceil(0.85 * cols))] = True
    body = (np.asarray(reference) < 0.95) if reference is not None else np.ones(attenuation.shape, dtype=bool)
    signal = normalised > 0
    values = attenuation[signal] if signal.any() else attenuation.ravel()
    for region in (body & central & signal, body & signal):
        if region.sum() > 0.05 * attenuation.size:
            values = attenuation[region]
            break
    low, high = (float(v) for v in np.percentile(values, [1.0, 99.0]))
    if high <= low:
        high = low + 1.0
    windowed = np.clip((attenuation - low) / (high - low), 0.0, 1.0)
    return (1.0 - windowed).astype(np.float32), {"neg_log_low": low, "neg_log_high": high,
                                                  "no_signal_fraction": float(1.0 - signal.mean())}
