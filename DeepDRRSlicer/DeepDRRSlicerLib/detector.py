"""The flat-panel detector and what lies between the source and it.

* :class:`Detector`: a CsI:Tl scintillator of given thickness (default 600 um,
  as in flat panels of mobile C-arms), energy-integrating. A photon of energy E
  reaching it at incidence cos(theta) is absorbed with probability
  eta(E, theta) = 1 - exp(-mu_CsI(E) t / cos(theta)) (xraydb's total mu/rho of
  CsI) and then deposits E (the quantum detection efficiency model: iodine and
  caesium K fluorescence is taken as reabsorbed). Its light spread and
  electronic noise feed :mod:`.noise`.
* :class:`AntiScatterGrid`: a focused linear grid (lead strips, focused on the
  source). Model: the strips are opaque; a photon whose direction deviates from
  the focal direction by a slope ``s`` across the strips passes with probability
  open_fraction * max(0, 1 - ratio * |s|) (the geometric transmission of the
  channel averaged over the entry point), with open_fraction = D / (D + d) for
  interspace D and strip thickness d. Primary photons (s = 0) therefore pass
  with exactly open_fraction; interspace attenuation is neglected (fibre
  interspacers transmit ~95 % at these energies).
* Pixel geometry: distance and obliquity of every pixel as seen from the
  source, the chord of each ray through the CT box, and the air outside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import attenuation
from .errors import InputError
from .geometry import NATIVE_PIXEL_SPACING_MM, DetectorGeometry

__all__ = ["Detector", "AntiScatterGrid", "PixelGeometry", "pixel_geometry", "AIR_DENSITY_G_CM3",
           "SCINTILLATOR_MATERIAL"]

SCINTILLATOR_MATERIAL = "csi"
# CsI by mass (Cs 132.905, I 126.904 g/mol); density 4.51 g/cm3 (NIST SRD 126 Table 2, "Cesium Iodide").
attenuation.register_material(SCINTILLATOR_MATERIAL, {"Cs": 132.90545 / 259.80992, "I": 126.90447 / 259.80992},
                              4.51, source="CsI, NIST SRD 126 Table 2: Cesium Iodide", overwrite=True)
AIR_DENSITY_G_CM3 = attenuation.get_material("air").density

# Light spread of columnar CsI:Tl grows with the depth of interaction; a Gaussian
# of sigma = 0.2 x thickness (0.12 mm for 600 um) with the 0.194 mm pixel gives
# MTF(1 lp/mm) ~ 0.7 and MTF(2 lp/mm) ~ 0.25, typical of such panels.
LIGHT_SPREAD_PER_THICKNESS = 0.2
# Additive electronic noise of an a-Si flat panel, per native 0.194 mm pixel, in keV of
# deposited energy: about two absorbed 50 keV photons (a few thousand electrons
# against ~1000 electrons per absorbed photon).
DEFAULT_ELECTRONIC_NOISE_KEV = 100.0


@dataclass(frozen=True)
class Detector:
    scintillator_mm: float = 0.6
    light_spread_sigma_mm: float | None = None       # None: 0.2 x scintillator thickness
    electronic_noise_keV: float = DEFAULT_ELECTRONIC_NOISE_KEV  # per native pixel
    native_pixel_mm: float = NATIVE_PIXEL_SPACING_MM

    def validate(self) -> None:
        if not (isinstance(self.scintillator_mm, (int, float)) and math.isfinite(self.scintillator_mm)
                and 0.0 < self.scintillator_mm <= 5.0):
            raise InputError(f"Scintillator thickness {self.scintillator_mm!r} mm is outside (0, 5] mm: it must be "
                             "more than 0 and at most 5 mm.",
                             "Give --detector-thickness in mm, e.g. 0.6 (600 um CsI:Tl).")
        if self.light_spread_sigma_mm is not None and not (
                math.isfinite(self.light_spread_sigma_mm) and self.light_spread_sigma_mm >= 0):
            raise InputError(f"Detector light spread {self.light_spread_sigma_mm!r} mm is not a distance.",
                             "Give a sigma >= 0 in mm (0 switches the blur off).")
        if not (math.isfinite(self.electronic_noise_keV) and self.electronic_noise_keV >= 0):
            raise InputError(f"Electronic noise {self.electronic_noise_keV!r} keV is negative or not finite.",
                             "Give --electronic-noise >= 0 (keV per native pixel; 0 switches it off).")

    @property
    def blur_sigma_mm(self) -> float:
        if self.light_spread_sigma_mm is not None:
            return float(self.light_spread_sigma_mm)
        return LIGHT_SPREAD_PER_THICKNESS * float(self.scintillator_mm)

    def attenuation_per_cos(self, energies_keV) -> np.ndarray:
        """mu_CsI(E) x thickness (dimensionless), at normal incidence."""
        rho = attenuation.get_material(SCINTILLATOR_MATERIAL).density
        from .interactions import total_mass_attenuation

        return total_mass_attenuation(SCINTILLATOR_MATERIAL, energies_keV) * rho * self.scintillator_mm / 10.0

    def absorption(self, energies_keV, cos_incidence=1.0) -> np.ndarray:
        """eta(E, theta): the fraction of photons absorbed in the scintillator."""
        return -np.expm1(-self.attenuation_per_cos(energies_keV) / np.asarray(cos_incidence, dtype=np.float64))

    def electronic_sigma_keV(self, pixel_area_mm2: float) -> float:
        """Electronic noise of one simulated pixel (native pixels add in quadrature)."""
        return self.electronic_noise_keV * math.sqrt(pixel_area_mm2 / self.native_pixel_mm ** 2)

    def summary(self) -> dict:
        return {"scintillator": "CsI:Tl", "scintillator_mm": self.scintillator_mm,
                "light_spread_sigma_mm": round(self.blur_sigma_mm, 6),
                "electronic_noise_keV_per_native_pixel": self.electronic_noise_keV,
                "native_pixel_mm": self.native_pixel_mm}


@dataclass(frozen=True)
class AntiScatterGrid:
    ratio: float = 10.0
    strips_per_cm: float = 60.0
    strip_thickness_um: float = 36.0
    strips_along: str = "rows"   # lamellae parallel to the image rows ("rows") or columns ("columns")

    def validate(self) -> None:
        if not (math.isfinite(self.ratio) and 1.0 <= self.ratio <= 30.0):
            raise InputError(f"Grid ratio {self.ratio!r} is outside 1-30.", "Give --grid-ratio, e.g. 10.")
        if not (math.isfinite(self.strips_per_cm) and 10.0 <= self.strips_per_cm <= 200.0):
            raise InputError(f"Grid strip density {self.strips_per_cm!r} lines/cm is outside 10-200.",
                             "Give --grid-lines, e.g. 60 (lines per cm).")
        if not (math.isfinite(self.strip_thickness_um) and 0 < self.strip_thickness_um * self.strips_per_cm < 1e4 * 0.8):
            raise InputError(f"Grid strips of {self.strip_thickness_um!r} um leave no interspace at "
                             f"{self.strips_per_cm} lines/cm.", "Give thinner strips (typically 20-50 um).")
        if self.strips_along not in ("rows", "columns"):
            raise InputError(f"Grid orientation {self.strips_along!r} is unknown.", "Use 'rows' or 'columns'.")

    @property
    def open_fraction(self) -> float:
        period_mm = 10.0 / self.strips_per_cm
        return (period_mm - self.strip_thickness_um / 1000.0) / period_mm

    def transmission(self, slope_deviation) -> np.ndarray:
        return self.open_fraction * np.clip(1.0 - self.ratio * np.abs(slope_deviation), 0.0, None)

    def across_unit(self, geometry: DetectorGeometry) -> np.ndarray:
        """Unit vector in the detector plane perpendicular to the strips."""
        axis = geometry.v if self.strips_along == "rows" else geometry.u
        return axis / np.linalg.norm(axis)

    def summary(self) -> dict:
        return {"ratio": self.ratio, "strips_per_cm": self.strips_per_cm,
                "strip_thickness_um": self.strip_thickness_um, "strips_along": self.strips_along,
                "primary_transmission": round(self.open_fraction, 6)}


@dataclass(frozen=True, eq=False)
class PixelGeometry:
    distance_mm: np.ndarray      # (H, W) source to pixel centre
    cos_incidence: np.ndarray    # (H, W) cosine between the ray and the detector normal
    chord_in_box_mm: np.ndarray  # (H, W) length of the ray inside the CT box (0 without a box)
    pixel_area_mm2: float

    @property
    def solid_angle_sr(self) -> np.ndarray:
        """(H, W) solid angle of each pixel seen from the source: A cos(theta) / r^2."""
        return self.pixel_area_mm2 * self.cos_incidence / self.distance_mm ** 2

    @property
    def fluence_factor(self) -> np.ndarray:
        """(H, W) mm^2 x (1000 mm / r)^2 x cos(theta): multiplies photons/mm2 at 1 m into photons per pixel
        (inverse square and obliquity; r = SID / cos(theta), so this is A (1000/SID)^2 cos^3(theta))."""
        return self.solid_angle_sr * 1.0e6

    def air_outside_box_g_cm2(self) -> np.ndarray:
        return AIR_DENSITY_G_CM3 * (self.distance_mm - self.chord_in_box_mm) / 10.0

    def air_flat_g_cm2(self) -> np.ndarray:
        return AIR_DENSITY_G_CM3 * self.distance_mm / 10.0


def pixel_geometry(geometry: DetectorGeometry, ijk_to_ras=None, box_shape=None) -> PixelGeometry:
    """Distances, obliquity and CT-box chords for every pixel centre."""
    centers = geometry.pixel_centers()
    rays = centers - geometry.source
    distance = np.linalg.norm(rays, axis=-1)
    cos_incidence = np.abs(rays @ geometry.normal) / distance
    chord = np.zeros_like(distance)
    if ijk_to_ras is not None and box_shape is not None:
        ras_to_ijk = np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64))
        start = ras_to_ijk[:3, :3] @ geometry.source + ras_to_ijk[:3, 3]
        direction = rays @ ras_to_ijk[:3, :3].T                 # per unit tau (source -> pixel)
        t_in = np.zeros_like(distance)
        t_out = np.ones_like(distance)
        sizes = np.asarray(box_shape, dtype=np.float64)[::-1]  # (ni, nj, nk) for (i, j, k)
        for axis in range(3):
            e = direction[..., axis]
            with np.errstate(divide="ignore", invalid="ignore"):
                ta = (-0.5 - start[axis]) / e
                tb = (sizes[axis] - 0.5 - start[axis]) / e
            parallel = np.abs(e) < 1e-12
            inside = (start[axis] >= -0.5) & (start[axis] <= sizes[axis] - 0.5)
            lo = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb))
            hi = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
            t_in = np.maximum(t_in, lo)
            t_out = np.minimum(t_out, hi)
        chord = np.clip(t_out - t_in, 0.0, None) * distance
    area = float(np.linalg.norm(np.cross(geometry.u, geometry.v)))
    return PixelGeometry(distance, cos_incidence, chord, area)
