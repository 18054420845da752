"""HU -> density and elemental composition: the calibrated model and DeepDRR's fits.

**calibrated** (the default): a stoichiometric calibration after Schneider,
Bortfeld & Schlegel (Phys. Med. Biol. 45:459, 2000). Reference tissues sit at
the HU a CT would give them, computed from their ICRU-44 / NIST SRD 126
compositions and densities (:mod:`attenuation`) at :data:`CALIBRATION_KEV`
(70 keV: a conventional 120 kVp CT reads about like a 70 keV monoenergetic
image). Between two neighbouring reference tissues a voxel is their mixture by
*volume*, so its density is piecewise linear in HU and its attenuation at the
calibration energy is exactly the one its HU says; the mass fractions of the
two tissues, and so the elemental composition, change with HU inside each
class. Two curves, as Schneider et al. separate soft and skeletal tissue:

* air and soft tissue: air (-1000 HU, 0.0012 g/cm3) -> air + ICRU lung tissue
  (lung parenchyma and partial volume; composition lung from -990 HU up) ->
  adipose (ICRU-44, 0.95) -> water (0 HU, exactly 1.000 g/cm3) -> soft tissue
  (ICRU-44, 1.06); above it soft tissue, denser in proportion to 1000 + HU
  (contrast-enhanced blood and organs keep a soft-tissue composition).
* bone: as above up to adipose, then marrow (red and yellow marrow 1:1 as in
  Schneider et al., Woodard & White 1986 compositions) -> cortical bone (ICRU-44,
  1.92); spongiosa is their mixture, as in Schneider et al.'s bone bins.
  Above cortical bone, bone denser in proportion to 1000 + HU.

Marrow is carried as 77 % adipose + 23 % soft tissue by mass, which matches
its mu/rho within 0.1 % at 30-100 keV, so that every voxel is a mixture of a
few basis materials (:data:`CALIBRATED_BASIS`) the projector already knows.

**deepdrr**: DeepDRR's two linear fits, density = min(0.001029 HU + 1.030,
0.0005886 HU + 1.03) (water at 1.03 g/cm3), one fixed composition per class
(air, ICRU soft tissue, ICRU cortical bone). Kept for comparison.

Both take per-voxel class probabilities (air, soft tissue, bone; one-hot for
thresholds) and an optional metal mask, and return density plus mass
fractions over their basis materials.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .attenuation import get_material, mass_attenuation

DENSITY_MODELS = ("calibrated", "deepdrr")
CALIBRATION_KEV = 70.0
#: Basis materials of the calibrated model (metal is appended when present).
CALIBRATED_BASIS = ("air", "lung", "adipose", "water", "soft_tissue", "bone")
DEEPDRR_BASIS = ("air", "soft_tissue", "bone")
#: Upper end of the air + lung-tissue mixing segment; above it, a blend towards adipose.
LUNG_NODE_HU = -200.0
#: Red and yellow marrow, mass fractions (Woodard & White 1986, as tabulated in ICRU Report 46).
RED_MARROW = ({"H": 0.105, "C": 0.414, "N": 0.034, "O": 0.439, "P": 0.001, "S": 0.002, "Cl": 0.002, "K": 0.002,
               "Fe": 0.001}, 1.03)
YELLOW_MARROW = ({"H": 0.115, "C": 0.644, "N": 0.007, "O": 0.231, "Na": 0.001, "S": 0.001, "Cl": 0.001}, 0.98)
#: Marrow as a mixture of basis materials (mass fractions) and its density (1:1 red/yellow by mass).
MARROW_AS_BASIS = {"adipose": 0.77, "soft_tissue": 0.23}
MARROW_DENSITY = 1.0 / (0.5 / RED_MARROW[1] + 0.5 / YELLOW_MARROW[1])
CHUNK_VOXELS = 1 << 20


def hu_of(material: str, density: float | None = None, energy_keV: float = CALIBRATION_KEV) -> float:
    """The HU a CT reads for ``material`` (at its nominal density or ``density``) at the calibration energy."""
    rho = get_material(material).density if density is None else density
    mu = float(mass_attenuation(material, energy_keV)) * rho
    return 1000.0 * (mu / float(mass_attenuation("water", energy_keV)) - 1.0)


@dataclass(frozen=True)
class Curve:
    """Reference points (HU, density, mass fractions over ``basis``) with volume mixing between them."""

    basis: tuple
    hu: np.ndarray        # (n,) ascending
    mass: np.ndarray      # (n, M) g/cm3 of each basis material per cm3 of voxel (density * mass fraction)

    def evaluate(self, hu: np.ndarray) -> np.ndarray:
        """(M, N) float32 mass per cm3 of each basis material for HU values ``hu`` (N,).

        Piecewise linear in HU: volume mixing between points; beyond the last
        point the composition stays and the density grows in proportion to
        1000 + HU (also linear); from the first point down to -1024 HU it falls to 0.
        """
        breaks, offset, slope = self._lines()
        h = np.asarray(hu, dtype=np.float32)
        segment = np.searchsorted(breaks, h, side="right")
        mass = np.take(slope, segment, axis=1)
        mass *= h[None]
        mass += np.take(offset, segment, axis=1)
        return mass

    def _lines(self):
        """Inner breakpoints and, per segment, mass = offset + slope * HU (float32)."""
        cached = getattr(self, "_cached_lines", None)
        if cached is not None:
            return cached
        bottom = min(-1024.0, float(self.hu[0]) - 1.0)
        points_hu = np.concatenate([[bottom], self.hu])
        points_mass = np.concatenate([np.zeros((1, self.mass.shape[1])), self.mass])
        slopes = [(points_mass[s + 1] - points_mass[s]) / (points_hu[s + 1] - points_hu[s])
                  for s in range(points_hu.size - 1)]
        offsets = [points_mass[s] - slopes[s] * points_hu[s] for s in range(points_hu.size - 1)]
        top_slope = self.mass[-1] / (1000.0 + self.hu[-1])        # proportional to 1000 + HU
        slopes = [np.zeros_like(slopes[0])] + slopes + [top_slope]   # below the bottom: nothing
        offsets = [np.zeros_like(offsets[0])] + offsets + [top_slope * 1000.0]
        lines = (points_hu.astype(np.float32), np.stack(offsets, 1).astype(np.float32),
                 np.stack(slopes, 1).astype(np.float32))
        object.__setattr__(self, "_cached_lines", lines)
        return lines


def _point(basis, hu, density, composition: dict) -> tuple[float, np.ndarray]:
    total = sum(composition.values())
    mass = np.array([density * composition.get(name, 0.0) / total for name in basis], dtype=np.float64)
    return float(hu), mass


def _volume_mix(a, b, hu):
    """The point at ``hu`` on the volume-mixing line between points a and b."""
    v = (hu - a[0]) / (b[0] - a[0])
    return float(hu), (1 - v) * a[1] + v * b[1]


@lru_cache(maxsize=4)
def calibrated_curves(energy_keV: float = CALIBRATION_KEV) -> dict:
    """{'tissue': Curve, 'bone': Curve} over :data:`CALIBRATED_BASIS`."""
    basis = CALIBRATED_BASIS
    air = _point(basis, -1000.0, get_material("air").density, {"air": 1.0})
    lung_tissue = _point(basis, hu_of("lung", energy_keV=energy_keV), get_material("lung").density, {"lung": 1.0})
    lung_node = _volume_mix(air, lung_tissue, LUNG_NODE_HU)
    adipose = _point(basis, hu_of("adipose", energy_keV=energy_keV), get_material("adipose").density, {"adipose": 1.0})
    water = _point(basis, 0.0, 1.0, {"water": 1.0})
    soft = _point(basis, hu_of("soft_tissue", energy_keV=energy_keV), get_material("soft_tissue").density,
                  {"soft_tissue": 1.0})
    marrow_mu = sum(w * float(mass_attenuation(m, energy_keV)) for m, w in MARROW_AS_BASIS.items()) * MARROW_DENSITY
    marrow_hu = 1000.0 * (marrow_mu / float(mass_attenuation("water", energy_keV)) - 1.0)
    marrow = _point(basis, marrow_hu, MARROW_DENSITY, MARROW_AS_BASIS)
    cortical = _point(basis, hu_of("bone", energy_keV=energy_keV), get_material("bone").density, {"bone": 1.0})
    tissue_points = [air, lung_node, adipose, water, soft]
    bone_points = [air, lung_node, adipose, marrow, cortical]
    for points in (tissue_points, bone_points):
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise RuntimeError(f"calibration points are not in ascending HU: {[round(p[0], 1) for p in points]}")
    make = lambda points: Curve(basis, np.array([p[0] for p in points]), np.stack([p[1] for p in points]))  # noqa: E731
    return {"tissue": make(tissue_points), "bone": make(bone_points)}


def deepdrr_density(hu) -> np.ndarray:
    """DeepDRR's two linear fits, g/cm3 (never negative)."""
    hu = np.asarray(hu, dtype=np.float32)
    density = np.minimum(np.float32(0.001029) * hu + np.float32(1.030), np.float32(0.0005886) * hu + np.float32(1.03))
    return np.maximum(density, np.float32(0.0))


def compose(hu, class_probabilities, model: str = "calibrated", metal_mask=None, metal_material: str | None = None,
            progress=None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Density (float32 [k, j, i]), mass fractions (float32 [M, k, j, i]) and basis names.

    ``class_probabilities`` is [3, k, j, i] (air, soft tissue, bone), summing to 1
    per voxel, or a uint8 class label per voxel [k, j, i] (thresholds). Inside ``metal_mask`` the voxel is ``metal_material`` at its nominal
    density (CT numbers saturate in metal, so they say nothing about its density).
    ``progress(fraction)`` is called between chunks.
    """
    if model not in DENSITY_MODELS:
        raise ValueError(f"unknown density model {model!r}; use one of {', '.join(DENSITY_MODELS)}")
    hu = np.asarray(hu, dtype=np.float32)
    shape = hu.shape
    has_metal = metal_mask is not None and metal_material is not None and bool(np.any(metal_mask))
    basis = CALIBRATED_BASIS if model == "calibrated" else DEEPDRR_BASIS
    names = basis + ((metal_material,) if has_metal else ())
    density = np.empty(hu.size, dtype=np.float32)
    fractions = np.zeros((len(names), hu.size), dtype=np.float32)
    flat_hu = hu.reshape(-1)
    hard = np.ndim(class_probabilities) == hu.ndim
    flat_p = (np.asarray(class_probabilities).reshape(-1) if hard
              else np.asarray(class_probabilities, dtype=np.float32).reshape(3, -1))
    curves = calibrated_curves() if model == "calibrated" else None
    kernels = _compiled_kernels()
    for start in range(0, hu.size, CHUNK_VOXELS):
        part = slice(start, min(hu.size, start + CHUNK_VOXELS))
        h = flat_hu[part]
        p = ((flat_p[part][None] == np.arange(3, dtype=flat_p.dtype)[:, None]).astype(np.float32) if hard
             else flat_p[:, part])
        if kernels is not None:
            _compose_compiled(kernels, model, curves, h, p, density[part], fractions[: len(basis), part])
            if progress is not None:
                progress(part.stop / hu.size)
            continue
        if model == "calibrated":
            mass = curves["tissue"].evaluate(h)
            mass *= (p[0] + p[1])[None]
            bone = p[2] > 0
            if np.all(bone):
                mass += p[2][None] * curves["bone"].evaluate(h)
            elif np.any(bone):
                mass[:, bone] += p[2][bone][None] * curves["bone"].evaluate(h[bone])
        else:
            mass = p * deepdrr_density(h)[None]
        rho = mass.sum(axis=0)
        density[part] = rho
        empty = rho <= 0
        mass /= np.where(empty, np.float32(1.0), rho)[None]
        mass[0, empty] = 1.0   # empty voxels: air by convention
        fractions[: len(basis), part] = mass
        if progress is not None:
            progress(part.stop / hu.size)
    if has_metal:
        inside = np.asarray(metal_mask, dtype=bool).reshape(-1)
        fractions[:, inside] = 0.0
        fractions[-1, inside] = 1.0
        density[inside] = get_material(metal_material).density
    return density.reshape(shape), fractions.reshape(len(names), *shape), names


def _compiled_kernels():
    """The numba kernels (hu_calibration_cpu), or None without numba (the numpy path gives the same bits)."""
    try:
        from . import hu_calibration_cpu
    except ImportError:
        return None
    return hu_calibration_cpu


def _compose_compiled(kernels, model, curves, h, p, density, fractions):
    rows = [np.ascontiguousarray(p[c], dtype=np.float32) for c in range(3)]
    if model == "calibrated":
        tissue, bone = curves["tissue"]._lines(), curves["bone"]._lines()
        kernels.compose_calibrated(np.ascontiguousarray(h), *rows, *tissue, *bone, density, fractions)
    else:
        kernels.compose_deepdrr(np.ascontiguousarray(h), *rows, density, fractions)


__all__ = ["DENSITY_MODELS", "CALIBRATION_KEV", "CALIBRATED_BASIS", "DEEPDRR_BASIS", "Curve", "hu_of",
           "calibrated_curves", "deepdrr_density", "compose"]
