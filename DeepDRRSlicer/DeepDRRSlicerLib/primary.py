"""Polychromatic primary: Beer-Lambert over the tube spectrum.

For an energy-integrating detector, the transmitted fraction of energy is
I/I0 = sum_E N(E) E exp(-sum_m (mu/rho)_m(E) L_m) / sum_E N(E) E,
with L_m the line integral of material m in g/cm2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attenuation import mass_attenuation

# Bins carrying less than this fraction of the energy are dropped (<1e-6 of the total in all).
_NEGLIGIBLE_WEIGHT = 1e-9


@dataclass(frozen=True, eq=False)
class PrimaryModel:
    material_names: tuple
    energies_keV: np.ndarray
    weights: np.ndarray   # (E,) normalised detector weights, sum 1 before dropping empty bins
    mu: np.ndarray        # (M, E) mass attenuation, cm2/g

    @classmethod
    def for_spectrum(cls, spectrum, material_names) -> "PrimaryModel":
        weights = np.asarray(spectrum.energy_weights(), dtype=np.float64)
        keep = weights > _NEGLIGIBLE_WEIGHT
        energies = np.asarray(spectrum.energies_keV, dtype=np.float64)[keep]
        mu = np.stack([mass_attenuation(name, energies) for name in material_names])
        return cls(tuple(material_names), energies, weights[keep], mu.astype(np.float64))

    def transmission(self, line_integrals) -> np.ndarray:
        """I/I0 for line integrals shaped (M, ...) in g/cm2."""
        line_integrals = np.asarray(line_integrals, dtype=np.float64)
        if line_integrals.shape[0] != len(self.material_names):
            raise ValueError(f"expected {len(self.material_names)} material line integrals, "
                             f"got {line_integrals.shape[0]}")
        exponent = np.tensordot(self.mu.T, line_integrals, axes=(1, 0))  # (E, ...)
        return np.tensordot(self.weights, np.exp(-exponent), axes=(0, 0))
