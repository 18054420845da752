"""Polychromatic primary: Beer-Lambert over the tube spectrum, seen by a real detector.

For an energy-integrating detector the signal of a pixel is the energy it absorbs,

    S = sum_b N_b E_b eta_b exp(-sum_m (mu/rho)_m(E_b) L_m - (mu/rho)_air(E_b) a),

with N_b the photons of spectral bin b reaching the pixel, eta_b the detector's
absorption (see :mod:`.detector`), L_m the line integral of material m (g/cm2)
and a the air outside the CT (g/cm2). The ``primary`` stage is S divided by
the flat field (the same sum with no patient), i.e. I/I0 after a flat-field
correction. ``PrimaryModel.weights`` (sum 1) are the per-bin weights for the
projector's fused sum.

Absorption edges: the spectrum comes in 1 keV bins evaluated at their centres.
A bin that contains an absorption edge of a material present (a patient
material, the CsI scintillator, air) is split at the edge into sub-bins, each
evaluated at its own centre with the bin's fluence shared by width, so mu never
averages across an edge (iodine's K edge at 33.17 keV, caesium's at 35.98 keV).
Off-grid sub-bin energies take mu/rho from the interaction table (edge-aware
log-log interpolation of xraydb's values; see interactions.total_mass_attenuation),
so no xraydb import is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .interactions import total_mass_attenuation as _mass_attenuation_on

# Bins carrying less than this fraction of the energy are dropped (<1e-6 of the total in all).
_NEGLIGIBLE_WEIGHT = 1e-9


def split_bins_at_edges(centers, fluence, edges, width: float = 1.0):
    """Sub-bin centres and fluence after splitting bins [c - w/2, c + w/2) at the given edges."""
    out_e, out_n, out_parent = [], [], []
    edges = np.sort(np.asarray(edges, dtype=np.float64))
    for index, (center, count) in enumerate(zip(centers, fluence)):
        low, high = center - width / 2, center + width / 2
        inside = edges[(edges > low) & (edges < high)]
        bounds = np.concatenate([[low], inside, [high]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            out_e.append(0.5 * (a + b) if inside.size else center)
            out_n.append(count * (b - a) / width)
            out_parent.append(index)
    return np.array(out_e), np.array(out_n), np.array(out_parent, dtype=np.intp)


# The flat field is interpolated from this many air values (see PrimaryModel.flat_field_sums); beyond this
# range of air (g/cm2; 0.12 is a metre of air) it is summed exactly.
_FLAT_FIELD_GRID = 2049
_FLAT_FIELD_MAX_AIR_RANGE_G_CM2 = 1.0


@dataclass(frozen=True, eq=False)
class PrimaryModel:
    material_names: tuple
    energies_keV: np.ndarray
    weights: np.ndarray   # (E,) normalised detector weights for the fused sum (sum 1 before dropping empty bins)
    mu: np.ndarray        # (M, E) mass attenuation, cm2/g
    fluence: np.ndarray | None = None      # (E,) photons per mAs per mm2 at 1 m in each (sub-)bin
    efficiency: np.ndarray | None = None   # (E,) detector absorption eta at normal incidence (1 = ideal)
    mu_air: np.ndarray | None = None       # (E,) cm2/g of air
    detector: object | None = None
    edges_keV: tuple = ()

    @classmethod
    def for_spectrum(cls, spectrum, material_names, detector=None, air_mm: float = 0.0) -> "PrimaryModel":
        """Model for ``spectrum`` and the materials. ``detector`` (a :class:`detector.Detector`) adds the
        scintillator's absorption; None is an ideal detector (absorbs everything). ``air_mm`` of air
        (e.g. the SID) is folded into ``weights`` for the fused projector sum."""
        from .detector import AIR_DENSITY_G_CM3, SCINTILLATOR_MATERIAL
        from .interactions import absorption_edges_keV

        names = tuple(material_names)
        centers = np.asarray(spectrum.energies_keV, dtype=np.float64)
        fluence = np.asarray(spectrum.fluence, dtype=np.float64)
        energy_weights = fluence * centers
        keep = energy_weights / energy_weights.sum() > _NEGLIGIBLE_WEIGHT
        centers, fluence = centers[keep], fluence[keep]
        edge_materials = list(names) + ["air"] + ([SCINTILLATOR_MATERIAL] if detector is not None else [])
        edges = absorption_edges_keV(edge_materials, float(centers.min()) - 0.5, float(centers.max()) + 0.5)
        energies, fluence, _ = split_bins_at_edges(centers, fluence, edges)
        mu = np.stack([_mass_attenuation_on(name, energies) for name in names]) if names else np.zeros((0, energies.size))
        mu_air = _mass_attenuation_on("air", energies)
        efficiency = np.ones_like(energies) if detector is None else detector.absorption(energies)
        weights = fluence * energies * efficiency * np.exp(-mu_air * AIR_DENSITY_G_CM3 * air_mm / 10.0)
        weights = weights / weights.sum()
        return cls(names, energies, weights, mu.astype(np.float64), fluence, efficiency, mu_air, detector,
                   tuple(float(e) for e in edges))

    def signal_weights(self) -> np.ndarray:
        """(3, E) per-bin weights, per mAs per mm2 at 1 m: rows are the absorbed energy (keV), its second
        moment (keV^2, for compound-Poisson noise) and the number of absorbed photons."""
        n = self.fluence * self.efficiency
        return np.stack([n * self.energies_keV, n * self.energies_keV ** 2, n])

    def transmission(self, line_integrals) -> np.ndarray:
        """I/I0 for line integrals shaped (M, ...) in g/cm2 (the fused-sum weights)."""
        line_integrals = np.asarray(line_integrals, dtype=np.float64)
        if line_integrals.shape[0] != len(self.material_names):
            raise ValueError(f"expected {len(self.material_names)} material line integrals, "
                             f"got {line_integrals.shape[0]}")
        exponent = np.tensordot(self.mu.T, line_integrals, axes=(1, 0))  # (E, ...)
        return np.tensordot(self.weights, np.exp(-exponent), axes=(0, 0))

    def spectral_sums(self, line_integrals, air_g_cm2, weights) -> np.ndarray:
        """(K, H, W) float64: sum_b weights[k, b] exp(-sum_m mu[m, b] L_m - mu_air[b] air) per pixel.

        ``line_integrals`` (M, H, W) g/cm2 (M may be 0 for the flat field), ``air_g_cm2`` (H, W).
        Uses the compiled kernel when numba is importable, else numpy in row blocks.
        """
        line_integrals = np.ascontiguousarray(line_integrals, dtype=np.float32)
        air = np.ascontiguousarray(air_g_cm2, dtype=np.float64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        mu = np.ascontiguousarray(self.mu if line_integrals.shape[0] else np.zeros((0, self.energies_keV.size)))
        out = np.empty((weights.shape[0], *air.shape), dtype=np.float64)
        try:
            from .primary_cpu import spectral_sums_rows
        except ImportError:
            spectral_sums_rows = None
        if spectral_sums_rows is not None:
            spectral_sums_rows(line_integrals, air, mu, np.ascontiguousarray(self.mu_air), weights, out)
            return out
        rows = max(1, 65536 // max(1, air.shape[1] * 4))
        for start in range(0, air.shape[0], rows):
            block = slice(start, min(air.shape[0], start + rows))
            exponent = np.tensordot(mu.T, line_integrals[:, block].astype(np.float64), axes=(1, 0)) if mu.shape[0] \
                else np.zeros((mu.shape[1], *air[block].shape))
            exponent += self.mu_air[:, None, None] * air[block][None]
            out[:, block] = np.tensordot(weights, np.exp(-exponent), axes=(1, 0))
        return out

    def flat_field_sums(self, air_g_cm2, weights) -> np.ndarray:
        """``spectral_sums`` with no patient, (K, H, W) float64: a smooth function of the air per pixel only, so
        it is evaluated exactly on a fine grid of air values and interpolated (relative error < 1e-9 for any
        air range a detector sees; it saves a full spectral sum per render)."""
        air = np.ascontiguousarray(air_g_cm2, dtype=np.float64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        low, high = float(air.min(initial=0.0)), float(air.max(initial=0.0))
        if air.size <= _FLAT_FIELD_GRID or high - low > _FLAT_FIELD_MAX_AIR_RANGE_G_CM2:
            return self.spectral_sums(np.zeros((0, *air.shape), np.float32), air, weights)
        grid = np.linspace(low, high, _FLAT_FIELD_GRID)
        table = weights @ np.exp(-self.mu_air[:, None] * grid[None, :])   # (K, grid)
        flat = air.ravel()
        return np.stack([np.interp(flat, grid, row) for row in table]).reshape(weights.shape[0], *air.shape)

    def summary(self) -> dict:
        return {"bins": int(self.energies_keV.size), "split_at_edges_keV": [round(e, 4) for e in self.edges_keV],
                "mean_detector_absorption": None if self.efficiency is None else round(float(
                    np.sum(self.fluence * self.efficiency) / np.sum(self.fluence)), 5)}
