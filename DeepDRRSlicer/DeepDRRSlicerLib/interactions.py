"""Photon interaction data for the Monte Carlo: partial cross-sections, form factors, edges.

Per element, from ``Resources/Physics/photon_interactions.npz`` (made offline
by ``tools/generate_interaction_table.py``; see ``Resources/Physics/README.md``):

* photoelectric, coherent (Rayleigh) and incoherent (Compton) mass attenuation
  coefficients (cm^2/g), Elam et al. via xraydb, 1..150 keV in 0.5 keV steps,
  with the photoabsorption edges as break points;
* the atomic form factor F(x, Z) and incoherent scattering function S(x, Z) at
  momentum transfer x = sin(theta/2)/lambda (1/Angstrom).

Materials mix by mass fraction, per gram: mu_k = sum_i w_i mu_k,i, and for the
angular shapes F^2 and S are summed over atoms, weighted w_i / A_i (independent
atom approximation). Elements outside the table use xraydb (cross-sections and
F for x <= 6/A) and xraylib (S and F above 6/A) when installed; otherwise
:class:`attenuation.AttenuationDataUnavailable` says what to install.

Nothing here imports numba, xraydb or xraylib at module import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import attenuation
from .attenuation import AttenuationDataUnavailable

__all__ = ["HC_KEV_ANGSTROM", "ELECTRON_REST_KEV", "MaterialInteractions", "material_interactions",
           "absorption_edges_keV", "interaction_table_info", "total_mass_attenuation"]

HC_KEV_ANGSTROM = 12.398419843320026
ELECTRON_REST_KEV = 510.99895
_TABLE_PARTS = ("Physics", "photon_interactions.npz")
_F0_VALID_MAX_X = 6.0
_FIX = "pip install xraydb xraylib (in 3D Slicer: slicer.util.pip_install('xraydb xraylib'))"


class _Table:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            self.symbols = tuple(str(s) for s in z["symbols"])
            self.atomic_mass = dict(zip(self.symbols, np.asarray(z["atomic_mass"], dtype=np.float64).tolist()))
            self.energies = np.asarray(z["energies_keV"], dtype=np.float64)
            self.parts = {"photo": np.asarray(z["photo"], dtype=np.float64),
                          "coherent": np.asarray(z["coherent"], dtype=np.float64),
                          "incoherent": np.asarray(z["incoherent"], dtype=np.float64)}
            edge_el = np.asarray(z["edge_element"], dtype=np.int64)
            edge_e = np.asarray(z["edge_keV"], dtype=np.float64)
            below = np.asarray(z["edge_photo_below"], dtype=np.float64)
            above = np.asarray(z["edge_photo_above"], dtype=np.float64)
            self.x = np.asarray(z["x_per_angstrom"], dtype=np.float64)
            self.form_factor = np.asarray(z["form_factor"], dtype=np.float64)
            self.incoherent_function = np.asarray(z["incoherent_function"], dtype=np.float64)
            self.meta = {k: z[k].item() for k in z.files if z[k].ndim == 0}
        n = len(self.symbols)
        if any(a.shape != (n, self.energies.size) for a in self.parts.values()) or \
                self.form_factor.shape != (n, self.x.size) or self.incoherent_function.shape != (n, self.x.size):
            raise RuntimeError(f"{path} is malformed. Regenerate it with tools/generate_interaction_table.py.")
        self.row = {s: i for i, s in enumerate(self.symbols)}
        self.edges = {s: (edge_e[edge_el == i], below[edge_el == i], above[edge_el == i])
                      for i, s in enumerate(self.symbols)}

    def partial(self, symbol: str, part: str, energies: np.ndarray) -> np.ndarray:
        """Log-log interpolation; photoabsorption breaks at the edges (no segment spans one)."""
        grid_x = self.energies
        grid_y = self.parts[part][self.row[symbol]]
        if part == "photo":
            edge_e, below, above = self.edges[symbol]
            x = np.concatenate([grid_x, edge_e, edge_e])
            y = np.concatenate([grid_y, below, above])
            order = np.lexsort((np.concatenate([np.zeros(grid_x.size), np.zeros(edge_e.size),
                                                np.ones(edge_e.size)]), x))
            grid_x, grid_y = x[order], y[order]
        lx, ly = np.log(grid_x), np.log(grid_y)
        q = np.log(energies)
        j = np.clip(np.searchsorted(lx, q, side="right") - 1, 0, lx.size - 2)
        step = lx[j + 1] - lx[j]
        t = np.where(step > 0, (q - lx[j]) / np.where(step > 0, step, 1.0), 0.0)
        return np.exp(ly[j] + t * (ly[j + 1] - ly[j]))


@functools.lru_cache(maxsize=1)
def _table() -> _Table | None:
    from .resources import resource_path

    try:
        return _Table(resource_path(*_TABLE_PARTS))
    except FileNotFoundError:
        return None


def interaction_table_info() -> dict:
    table = _table()
    if table is None:
        return {}
    return {**table.meta, "elements": table.symbols, "energy_range_keV": (table.energies[0], table.energies[-1])}


def _modules(symbol: str):
    try:
        import xraydb
        import xraylib
    except ImportError:
        raise AttenuationDataUnavailable(
            f"Scatter data for {symbol} (not in the shipped interaction table) need xraydb and xraylib. "
            f"Fix: {_FIX}.") from None
    return xraydb, xraylib


def _check_energies(energies) -> np.ndarray:
    e = np.asarray(energies, dtype=np.float64)
    if e.size and (not np.all(np.isfinite(e)) or e.min() < 1.0 or e.max() > 150.0):
        raise ValueError("Interaction data cover 1-150 keV; energies must be in keV within that range.")
    return e


@functools.lru_cache(maxsize=None)
def _element_angular(symbol: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(F(x), S(x)) on the table's x grid, and the atomic mass."""
    table = _table()
    if table is not None and symbol in table.row:
        i = table.row[symbol]
        return table.form_factor[i], table.incoherent_function[i], table.atomic_mass[symbol]
    xraydb, xraylib = _modules(symbol)
    from_table = table.x if table is not None else 15.0 * (np.arange(400) / 399.0) ** 2
    z = xraydb.atomic_number(symbol)
    f = np.empty_like(from_table)
    low = from_table <= _F0_VALID_MAX_X
    f[low] = np.asarray(xraydb.f0(symbol, from_table[low]), dtype=np.float64)
    f[~low] = [xraylib.FF_Rayl(z, float(q)) for q in from_table[~low]]
    f[0] = float(z)
    s_first = xraylib.SF_Compt(z, 1e-3)
    s = np.array([s_first * (q / 1e-3) ** 2 if q < 1e-3 else xraylib.SF_Compt(z, float(q)) for q in from_table])
    return np.clip(f, 0, None), s, float(xraydb.atomic_mass(symbol))


def _element_partials(symbol: str, energies: np.ndarray) -> np.ndarray:
    """(3, n): photo, coherent, incoherent mu/rho in cm^2/g."""
    table = _table()
    if table is not None and symbol in table.row:
        return np.stack([table.partial(symbol, part, energies) for part in ("photo", "coherent", "incoherent")])
    xraydb, _ = _modules(symbol)
    ev = energies * 1000.0
    return np.stack([np.atleast_1d(np.asarray(xraydb.mu_elam(symbol, ev, kind=k), dtype=np.float64))
                     for k in ("photo", "coh", "incoh")])


def x_grid() -> np.ndarray:
    table = _table()
    return table.x.copy() if table is not None else 15.0 * (np.arange(400) / 399.0) ** 2


@dataclass(frozen=True, eq=False)
class MaterialInteractions:
    """Interaction data of one material, per gram."""

    name: str
    fractions: tuple            # ((symbol, mass fraction), ...)
    x: np.ndarray               # momentum transfer grid, 1/Angstrom
    form_factor_squared: np.ndarray   # sum_i w_i/A_i F_i(x)^2   (mol/g)
    incoherent_function: np.ndarray   # sum_i w_i/A_i S_i(x)     (mol/g)
    electrons_per_gram_mol: float     # sum_i w_i Z_i / A_i = S(x -> infinity)

    def partials(self, energies_keV) -> np.ndarray:
        """(3, n) photo, coherent, incoherent mu/rho (cm^2/g) at ``energies_keV``."""
        e = _check_energies(energies_keV).ravel()
        total = np.zeros((3, e.size))
        for symbol, w in self.fractions:
            total += w * _element_partials(symbol, e)
        return total


@functools.lru_cache(maxsize=64)
def _material_interactions(name: str, fractions: tuple) -> MaterialInteractions:
    x = x_grid()
    f2 = np.zeros_like(x)
    s = np.zeros_like(x)
    electrons = 0.0
    from .attenuation import _element_symbol  # noqa: F401  (validation of symbols happened at registration)

    for symbol, w in fractions:
        f, s_el, mass = _element_angular(symbol)
        f2 += (w / mass) * f * f
        s += (w / mass) * s_el
        electrons += w * _atomic_number(symbol) / mass
    for a in (x, f2, s):
        a.flags.writeable = False
    return MaterialInteractions(name, fractions, x, f2, s, electrons)


def _atomic_number(symbol: str) -> int:
    return attenuation._ELEMENT_SYMBOLS.index(symbol) + 1


def material_interactions(name: str) -> MaterialInteractions:
    """Interaction data of a registered material (or element symbol)."""
    material = attenuation.get_material(name)
    return _material_interactions(material.name, material.fractions)


def absorption_edges_keV(material_names, low_keV: float, high_keV: float) -> np.ndarray:
    """Sorted photoabsorption edge energies of the materials' elements strictly inside (low, high)."""
    found = set()
    table = _table()
    for name in material_names:
        for symbol, _ in attenuation.get_material(name).fractions:
            if table is not None and symbol in table.row:
                edges = table.edges[symbol][0]
            else:
                xraydb, _ = _modules(symbol)
                edges = np.array([edge.energy / 1000.0 for edge in xraydb.xray_edges(symbol).values()])
            found.update(float(e) for e in edges if low_keV < e < high_keV)
    return np.array(sorted(found))


_GRID_TOLERANCE_KEV = 1e-9


def total_mass_attenuation(name: str, energies_keV) -> np.ndarray:
    """Total mu/rho (cm^2/g) without importing xraydb for tabulated elements: the shipped attenuation
    table at integer keV (xraydb's exact values), the sum of this table's partial coefficients elsewhere."""
    energies = _check_energies(energies_keV)
    flat = energies.ravel()
    on_grid = np.abs(flat - np.rint(flat)) <= _GRID_TOLERANCE_KEV
    out = np.empty(flat.shape)
    if np.any(on_grid):
        out[on_grid] = attenuation.mass_attenuation(name, flat[on_grid])
    if np.any(~on_grid):
        out[~on_grid] = material_interactions(name).partials(flat[~on_grid]).sum(axis=0)
    return out.reshape(energies.shape)
