"""X-ray tube spectra: tabulated tungsten-anode spectra plus added filtration.

The table ``Resources/Physics/tube_spectra.npz`` was made offline with SpekPy
by ``tools/generate_spectra.py`` (see ``Resources/Physics/README.md``):
tungsten anode, 12 degree anode angle, 0.7 mm Al inherent filtration, 40-150
kV in 1 kV steps, 1 keV bins centred at integer energies, absolute fluence in
photons per mAs per mm^2 at 1 m per bin. SpekPy is not needed at run time.

``tube_spectrum(kvp, filtration)`` interpolates linearly between the two
neighbouring tabulated tube potentials and applies the *added* filtration
(on top of the inherent 0.7 mm Al) as exp(-mu/rho(E) rho t). The filters'
mu/rho and densities come from :mod:`.attenuation`, which answers the integer
bin centres from its shipped table of xraydb (Elam) values, so neither this
module nor a simulation imports xraydb.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from . import attenuation
from .resources import resource_path

__all__ = [
    "Spectrum",
    "spectrum_table_info",
    "tabulated_kvp_range",
    "tube_spectrum",
]

_TABLE_PARTS = ("Physics", "tube_spectra.npz")
_KEV_TO_J = 1.602176634e-16


@functools.lru_cache(maxsize=1)
def _table():
    path = resource_path(*_TABLE_PARTS)
    with np.load(path, allow_pickle=False) as z:
        kvp = np.asarray(z["kvp"], dtype=np.float64)
        energies = np.asarray(z["energies_keV"], dtype=np.float64)
        fluence = np.asarray(z["fluence"], dtype=np.float64)
        meta = {k: z[k].item() for k in z.files if z[k].ndim == 0}
    if fluence.shape != (kvp.size, energies.size) or not np.all(np.diff(kvp) == 1.0):
        raise RuntimeError(f"{path} is malformed: expected fluence[kvp, energy] on a 1 kV grid. "
                           "Regenerate it with tools/generate_spectra.py.")
    for a in (kvp, energies, fluence):
        a.flags.writeable = False
    return kvp, energies, fluence, meta


def spectrum_table_info() -> dict:
    """Metadata of the tabulated spectra (units, SpekPy version, anode angle,
    inherent filtration, the command that made the table, ...)."""
    kvp, energies, _, meta = _table()
    info = dict(meta)
    info["kvp_range"] = (float(kvp[0]), float(kvp[-1]))
    info["energy_range_keV"] = (float(energies[0]), float(energies[-1]))
    if "inherent_filtration" in info:
        info["inherent_filtration"] = json.loads(info["inherent_filtration"])
    return info


def tabulated_kvp_range() -> tuple[float, float]:
    """(lowest, highest) tube potential in kV that :func:`tube_spectrum` accepts."""
    kvp = _table()[0]
    return float(kvp[0]), float(kvp[-1])


def _check_filtration(filtration) -> dict[str, float]:
    """Validate {material or element: thickness in mm}; returns a plain dict."""
    if filtration is None:
        return {}
    if not isinstance(filtration, Mapping):
        raise ValueError(
            "filtration must be a mapping {material or element symbol: thickness in mm}, "
            f"e.g. {{'Al': 2.5, 'Cu': 0.1}}; got {type(filtration).__name__}."
        )
    out: dict[str, float] = {}
    for name, mm in filtration.items():
        try:
            attenuation.get_material(name)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Unknown filter {name!r}: {exc}") from None
        try:
            mm = float(mm)
        except (TypeError, ValueError):
            raise ValueError(f"Filter {name!r}: the thickness must be a number in mm, got {mm!r}.") from None
        if not math.isfinite(mm) or mm < 0:
            raise ValueError(f"Filter {name!r}: the thickness must be a finite number >= 0 mm, got {mm}.")
        out[name] = out.get(name, 0.0) + mm
    return out


def _log_transmission(filtration: Mapping[str, float], energies_keV: np.ndarray) -> np.ndarray:
    """ln of the filters' transmission, -sum_f mu/rho_f(E) rho_f t_f, at each bin
    centre. (Evaluating at the bin centre, as the projector does, keeps filters
    exactly composable: adding A then B equals adding A and B at once.)"""
    mu_t = np.zeros(energies_keV.shape)
    for name, mm in filtration.items():
        if mm == 0:
            continue
        mat = attenuation.get_material(name)
        mu_t += attenuation.mass_attenuation(name, energies_keV) * mat.density * (mm / 10.0)
    return -mu_t


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A tube spectrum on 1 keV bins.

    energies_keV: bin centres (N,), keV.
    fluence: photons per mAs per mm^2 at 1 m in each bin (N,).
    kvp: tube potential, kV.
    filtration: added filtration {material or element: mm} (beyond the
        table's inherent filtration, see spectrum_table_info()).
    """

    energies_keV: np.ndarray
    fluence: np.ndarray
    kvp: float
    filtration: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        e = _readonly(self.energies_keV)
        n = _readonly(self.fluence)
        if e.ndim != 1 or e.shape != n.shape or e.size == 0:
            raise ValueError(f"energies_keV {e.shape} and fluence {n.shape} must be equal-length 1-D arrays.")
        if not (np.all(np.isfinite(n)) and np.all(n >= 0)):
            raise ValueError("Spectrum fluence must be finite and >= 0.")
        if n.sum() <= 0:
            raise ValueError("Spectrum has no photons (zero total fluence); the added filtration is too thick.")
        object.__setattr__(self, "energies_keV", e)
        object.__setattr__(self, "fluence", n)
        object.__setattr__(self, "kvp", float(self.kvp))
        object.__setattr__(self, "filtration", MappingProxyType(dict(self.filtration)))

    # -- summaries ----------------------------------------------------------
    @property
    def total_fluence(self) -> float:
        """Photons per mAs per mm^2 at 1 m, summed over the bins."""
        return float(self.fluence.sum())

    @property
    def mean_energy_keV(self) -> float:
        """Fluence-weighted mean photon energy, keV."""
        return float(np.dot(self.fluence, self.energies_keV) / self.fluence.sum())

    def fluence_at(self, distance_mm: float) -> np.ndarray:
        """Per-bin fluence (photons per mAs per mm^2) at ``distance_mm`` from the
        focal spot, by the inverse-square law (no air attenuation)."""
        d = float(distance_mm)
        if not math.isfinite(d) or d <= 0:
            raise ValueError(f"distance_mm must be a positive distance in mm, got {distance_mm!r}.")
        return self.fluence * (1000.0 / d) ** 2

    def photon_weights(self) -> np.ndarray:
        """N(E) / sum N: weights for a photon-counting detector (sum to 1)."""
        return self.fluence / self.fluence.sum()

    def energy_weights(self) -> np.ndarray:
        """N(E) E / sum N E: weights for an energy-integrating detector (sum to 1)."""
        w = self.fluence * self.energies_keV
        return w / w.sum()

    def air_kerma_uGy_per_mAs(self, distance_mm: float = 1000.0) -> float:
        """Air kerma free in air (uGy per mAs) at ``distance_mm``, from NIST
        mu_en/rho of dry air: K = sum N(E) E (mu_en/rho)_air(E)."""
        per_cm2 = self.fluence_at(distance_mm) * 100.0
        muen = attenuation.air_mass_energy_absorption(self.energies_keV)
        gray = np.sum(per_cm2 * self.energies_keV * _KEV_TO_J * muen * 1000.0)  # J/kg
        return float(gray * 1e6)

    def half_value_layer_mm(self, element: str = "Al") -> float:
        """First half-value layer (mm of ``element`` or a material name):
        the added thickness that halves the air kerma (air mu_en/rho from
        NIST, filter mu/rho from xraydb's Elam data via attenuation.py), found
        by bisection."""
        mat = attenuation.get_material(element)
        mu_lin = attenuation.mass_attenuation(element, self.energies_keV) * mat.density / 10.0  # 1/mm
        weights = self.fluence * self.energies_keV * attenuation.air_mass_energy_absorption(self.energies_keV)
        k0 = weights.sum()

        def ratio(t_mm: float) -> float:
            return float(np.dot(weights, np.exp(-mu_lin * t_mm)) / k0)

        lo, hi = 0.0, 1.0
        while ratio(hi) > 0.5:
            lo, hi = hi, hi * 2.0
            if hi > 1e5:
                raise ValueError(f"No half-value layer below 100 m of {element}.")
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if ratio(mid) > 0.5:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-9 * max(hi, 1e-6):
                break
        return 0.5 * (lo + hi)

    def with_added_filtration(self, filtration: Mapping[str, float]) -> Spectrum:
        """A new spectrum with more filtration {material or element: mm}."""
        extra = _check_filtration(filtration)
        fluence = self.fluence * np.exp(_log_transmission(extra, self.energies_keV))
        combined = dict(self.filtration)
        for name, mm in extra.items():
            combined[name] = combined.get(name, 0.0) + mm
        return Spectrum(self.energies_keV, fluence, self.kvp, combined)

    def __repr__(self) -> str:
        filt = ", ".join(f"{k} {v:g} mm" for k, v in self.filtration.items()) or "none added"
        return (f"Spectrum({self.kvp:g} kV, filtration: {filt}; mean {self.mean_energy_keV:.1f} keV, "
                f"{self.total_fluence:.4g} photons/mAs/mm^2 at 1 m)")


def tube_spectrum(kvp: float, filtration: Mapping[str, float] | None = None) -> Spectrum:
    """The spectrum of the tabulated tungsten tube at ``kvp`` kV with added filtration.

    filtration: {material name or element symbol: thickness in mm}, e.g.
        {"Al": 2.5, "Cu": 0.1} or {"water": 100}; it is added to the
        tube's inherent filtration (0.7 mm Al in the shipped table).
    Non-integer kVp interpolates linearly between the neighbouring 1 kV
    spectra; bins centred above kvp are set to zero.
    Raises ValueError for kVp outside the table (40-150 kV) or a bad filter.
    """
    kvps, energies, table, _ = _table()
    lo_kv, hi_kv = float(kvps[0]), float(kvps[-1])
    try:
        kv = float(kvp)
    except (TypeError, ValueError):
        raise ValueError(f"kvp must be a number in kV, got {kvp!r}.") from None
    if not (math.isfinite(kv) and lo_kv <= kv <= hi_kv):
        raise ValueError(
            f"Tube potential {kvp!r} kV is outside the tabulated range {lo_kv:g}-{hi_kv:g} kV. "
            f"Fix: choose a kVp between {lo_kv:g} and {hi_kv:g}, or regenerate "
            "Resources/Physics/tube_spectra.npz with tools/generate_spectra.py --kvp-min/--kvp-max."
        )
    filters = _check_filtration(filtration)
    i = min(int(math.floor(kv - lo_kv)), kvps.size - 1)
    frac = kv - float(kvps[i])
    fluence = table[i].copy()
    if frac > 0:
        fluence = (1.0 - frac) * table[i] + frac * table[i + 1]
        fluence[energies > kv] = 0.0
    fluence *= np.exp(_log_transmission(filters, energies))
    return Spectrum(energies, fluence, kv, filters)
