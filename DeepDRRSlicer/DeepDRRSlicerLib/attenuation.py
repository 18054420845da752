"""Material table and photon mass attenuation coefficients.

``mass_attenuation(material, energies_keV)`` returns the *total* mass
attenuation coefficient mu/rho in cm^2/g, coherent (Rayleigh) scattering
included, as DeepDRR's polychromatic projector uses it (not mu_en/rho).

Elemental mu/rho are those of the Elam, Ravel and Sieber tables as computed
by ``xraydb``; compounds and mixtures follow the mass-fraction mixture rule

    (mu/rho)_mix(E) = sum_i w_i (mu/rho)_i(E).

Where the numbers come from at run time:

1. ``Resources/Physics/mass_attenuation_elements.npz`` (made offline from
   xraydb by ``tools/generate_attenuation_table.py``) holds xraydb's total
   mu/rho of 62 elements at the integer energies 1..150 keV -- the centres of
   the tube-spectrum bins -- and their densities. A request whose energies
   all lie on that grid (within 1e-9 keV) is answered from the table without
   importing xraydb; the numbers are xraydb's own. Every simulation takes
   this path.
2. Anything else (off-grid energies, energies outside 1..150 keV, elements
   not tabulated, chemical formulas) imports ``xraydb`` lazily.
3. Without xraydb (e.g. a stock 3D Slicer), off-grid energies within
   1..150 keV of tabulated elements are interpolated log-log between the
   table's points, with the absorption edges in 1..150 keV stored as separate
   break points, so no interpolation crosses an edge. Against xraydb, on a
   0.01 keV grid for every tabulated element: within 0.26 % at 10-150 keV
   (0.2 % for the built-in materials; 2e-6 next to the iodine K edge), up to
   6 % at 5-10 keV and up to 33 % at 1-5 keV, where heavy elements have
   closely spaced L and M edges; see ``Resources/Physics/README.md``.
   Requests the table cannot answer raise :class:`AttenuationDataUnavailable`,
   whose message says to ``pip install xraydb``.

Importing this module stays cheap: neither the table nor xraydb is loaded
until a coefficient is needed. Results are cached per (material, energy grid)
because the same spectrum grid is reused by every simulation.

Materials are looked up by name (case-insensitive; spaces and hyphens read as
underscores). A bare element symbol ("Al", "Cu", "I") also works and means the
pure element at its standard density. New materials are added with
:func:`register_material`.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = [
    "AttenuationDataUnavailable",
    "DEFAULT_MATERIALS",
    "Material",
    "air_mass_energy_absorption",
    "available_materials",
    "density",
    "element_table_info",
    "get_material",
    "linear_attenuation",
    "mass_attenuation",
    "mass_attenuation_table",
    "register_material",
]

#: Labels 0, 1, 2 of the threshold decomposition (see materials.py), in order.
DEFAULT_MATERIALS = ("air", "soft_tissue", "bone")

#: Energies accepted by mass_attenuation, keV. The Elam tables start at 0.1 keV
#: and xraydb calls them unreliable above 800 keV.
MIN_ENERGY_KEV = 0.1
MAX_ENERGY_KEV = 800.0

# Element symbols Z = 1..98 (the range of the Elam tables), index = Z - 1.
_ELEMENT_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf"
).split()
_SYMBOL_BY_LOWER = {s.lower(): s for s in _ELEMENT_SYMBOLS}

_FRACTION_TOLERANCE = 1e-3

#: The element table shipped in Resources/ (see tools/generate_attenuation_table.py).
_ELEMENT_TABLE_PARTS = ("Physics", "mass_attenuation_elements.npz")
#: An energy within this many keV of an integer counts as on the table's grid.
_GRID_TOLERANCE_KEV = 1e-9
_XRAYDB_FIX = ("pip install xraydb (in 3D Slicer: the module's dependency installer, or "
               "slicer.util.pip_install('xraydb'))")


class AttenuationDataUnavailable(RuntimeError):
    """The shipped table cannot answer a request and xraydb is not installed."""


def _xraydb_or_none():
    """The xraydb module, or None if it cannot be imported."""
    try:
        import xraydb  # lazy: pulls sqlalchemy and opens its SQLite database (~1 s)
    except ImportError:
        return None
    return xraydb


def _xraydb(purpose: str, alternative: str = ""):
    """Import xraydb for ``purpose``, or raise AttenuationDataUnavailable saying how to get it."""
    xraydb = _xraydb_or_none()
    if xraydb is None:
        raise AttenuationDataUnavailable(
            f"{purpose} needs the xraydb package, which is not installed; the attenuation table "
            f"shipped with DeepDRRSlicer cannot answer this request. Fix: {_XRAYDB_FIX}"
            + (f"; or {alternative}." if alternative else ".")
        )
    return xraydb


@dataclass(frozen=True)
class Material:
    """A material: elemental mass fractions and a nominal density.

    ``fractions`` is a tuple of (element symbol, mass fraction) pairs sorted by
    symbol, normalised to sum to exactly 1; ``density`` is in g/cm^3.
    """

    name: str
    fractions: tuple[tuple[str, float], ...]
    density: float
    source: str = ""

    @property
    def composition(self) -> Mapping[str, float]:
        """Elemental mass fractions as a read-only mapping."""
        return MappingProxyType(dict(self.fractions))


# --------------------------------------------------------------------------
# Built-in materials. Mass fractions and densities are those of the NIST
# "X-Ray Mass Attenuation Coefficients" database (Hubbell & Seltzer, NIST
# SRD 126, Table 2), which takes the body tissues from ICRU Report 44 (1989).
# --------------------------------------------------------------------------
_BUILTIN = (
    # NIST SRD 126 Table 2, "Air, Dry (Near Sea Level)".
    ("air", {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, 1.205e-3,
     "NIST SRD 126 Table 2: Air, Dry (Near Sea Level)"),
    # NIST SRD 126 Table 2, "Tissue, Soft (ICRU-44)".
    ("soft_tissue", {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
                     "S": 0.003, "Cl": 0.002, "K": 0.003}, 1.06,
     "ICRU Report 44 via NIST SRD 126 Table 2: Tissue, Soft (ICRU-44)"),
    # NIST SRD 126 Table 2, "Bone, Cortical (ICRU-44)".
    ("bone", {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
              "P": 0.103, "S": 0.003, "Ca": 0.225}, 1.92,
     "ICRU Report 44 via NIST SRD 126 Table 2: Bone, Cortical (ICRU-44)"),
    # NIST SRD 126 Table 2, "Water, Liquid".
    ("water", {"H": 0.111898, "O": 0.888102}, 1.0,
     "NIST SRD 126 Table 2: Water, Liquid"),
    # NIST SRD 126 Table 2, "Lung Tissue (ICRU-44)". The density is that of the
    # tissue itself; inflated lung in a CT is about 0.26 g/cm^3 on average.
    ("lung", {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002,
              "S": 0.003, "Cl": 0.003, "K": 0.002}, 1.05,
     "ICRU Report 44 via NIST SRD 126 Table 2: Lung Tissue (ICRU-44)"),
    # NIST SRD 126 Table 2, "Adipose Tissue (ICRU-44)".
    ("adipose", {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001,
                 "Cl": 0.001}, 0.95,
     "ICRU Report 44 via NIST SRD 126 Table 2: Adipose Tissue (ICRU-44)"),
    # NIST SRD 126 Table 2, "Muscle, Skeletal (ICRU-44)".
    ("muscle", {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002,
                "S": 0.003, "Cl": 0.001, "K": 0.004}, 1.05,
     "ICRU Report 44 via NIST SRD 126 Table 2: Muscle, Skeletal (ICRU-44)"),
    # NIST SRD 126 Table 2, "Blood, Whole (ICRU-44)".
    ("blood", {"H": 0.102, "C": 0.110, "N": 0.033, "O": 0.745, "Na": 0.001, "P": 0.001,
               "S": 0.002, "Cl": 0.003, "K": 0.002, "Fe": 0.001}, 1.06,
     "ICRU Report 44 via NIST SRD 126 Table 2: Blood, Whole (ICRU-44)"),
    # Pure metals; densities from NIST SRD 126 Table 1.
    ("titanium", {"Ti": 1.0}, 4.54, "element; density NIST SRD 126 Table 1"),
    ("aluminium", {"Al": 1.0}, 2.699, "element; density NIST SRD 126 Table 1"),
    ("copper", {"Cu": 1.0}, 8.96, "element; density NIST SRD 126 Table 1"),
    # Iodinated contrast, e.g. iohexol 350 mgI/ml: modelled as water plus
    # 0.35 g/cm^3 iodine, ignoring the organic carrier (density ~1.40 g/cm^3
    # for the product; here 1.0 + 0.35, mass fractions accordingly).
    ("iodine_contrast", {"I": 0.35 / 1.35, "H": 0.111898 / 1.35, "O": 0.888102 / 1.35}, 1.35,
     "water + 350 mg/ml iodine (simplified iodinated contrast agent)"),
)

_ALIASES = {
    "aluminum": "aluminium",
    "soft": "soft_tissue",
    "tissue": "soft_tissue",
    "cortical_bone": "bone",
    "bone_cortical": "bone",
    "fat": "adipose",
    "contrast": "iodine_contrast",
}

_lock = threading.Lock()
_MATERIALS: dict[str, Material] = {}


def _normalise_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"A material name must be a string, got {type(name).__name__}.")
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _ALIASES.get(key, key)


def _element_symbol(text: str) -> str | None:
    """The canonical element symbol for ``text`` ('al' -> 'Al'), or None."""
    return _SYMBOL_BY_LOWER.get(text.strip().lower()) if isinstance(text, str) else None


def _formula_fractions(formula: str) -> dict[str, float]:
    """Mass fractions of a chemical formula such as 'H2O' or 'CaCO3'."""
    xraydb = _xraydb(f"Parsing the chemical formula {formula!r}",
                     "give the composition as a mapping {element symbol: mass fraction}")
    try:
        counts = xraydb.chemparse(formula)
    except Exception as exc:  # xraydb raises a bare ValueError/KeyError
        raise ValueError(f"Cannot parse the chemical formula {formula!r}: {exc}") from None
    if not counts:
        raise ValueError(f"The chemical formula {formula!r} names no elements.")
    masses = {}
    for sym, n in counts.items():
        canon = _element_symbol(sym)
        if canon is None or canon != sym:
            raise ValueError(f"Unknown element {sym!r} in the chemical formula {formula!r}.")
        masses[canon] = masses.get(canon, 0.0) + float(n) * float(xraydb.atomic_mass(canon))
    total = sum(masses.values())
    return {sym: m / total for sym, m in masses.items()}


def _validated_fractions(composition, context: str) -> tuple[tuple[str, float], ...]:
    if isinstance(composition, str):
        fractions = _formula_fractions(composition)
    elif isinstance(composition, Mapping):
        fractions = {}
        for sym, w in composition.items():
            canon = _element_symbol(sym)
            if canon is None:
                raise ValueError(
                    f"{context}: {sym!r} is not an element symbol (use symbols H..Cf, e.g. 'Ca')."
                )
            try:
                w = float(w)
            except (TypeError, ValueError):
                raise ValueError(f"{context}: the mass fraction of {canon} must be a number, got {w!r}.") from None
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"{context}: the mass fraction of {canon} must be >= 0, got {w}.")
            fractions[canon] = fractions.get(canon, 0.0) + w
    else:
        raise ValueError(
            f"{context}: the composition must be a mapping {{element: mass fraction}} or a chemical "
            f"formula string such as 'H2O', got {type(composition).__name__}."
        )
    total = sum(fractions.values())
    if not fractions or abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ValueError(
            f"{context}: mass fractions must sum to 1 (within {_FRACTION_TOLERANCE:g}), they sum to {total:.6g}."
        )
    return tuple(sorted((sym, w / total) for sym, w in fractions.items() if w > 0))


def register_material(name: str, composition: Mapping[str, float] | str, density: float,
                      *, source: str = "", overwrite: bool = False) -> Material:
    """Add a material to the table and return it.

    ``composition`` is either a mapping of element symbol to mass fraction
    (summing to 1 within 1e-3; renormalised exactly) or a chemical formula
    string ("H2O", "CaCO3"). ``density`` is the nominal density in g/cm^3.
    Re-registering an existing name needs ``overwrite=True``.
    """
    key = _normalise_name(name)
    if not key or not re.fullmatch(r"[a-z0-9_]+", key):
        raise ValueError(f"Material names use letters, digits and underscores only, got {name!r}.")
    context = f"Material {name!r}"
    try:
        density = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"{context}: the density must be a number in g/cm^3, got {density!r}.") from None
    if not math.isfinite(density) or density <= 0:
        raise ValueError(f"{context}: the density must be > 0 g/cm^3, got {density}.")
    material = Material(name=key, fractions=_validated_fractions(composition, context),
                        density=density, source=str(source))
    with _lock:
        if key in _MATERIALS and not overwrite and _MATERIALS[key] != material:
            raise ValueError(
                f"{context} is already registered with another definition; pass overwrite=True to replace it."
            )
        _MATERIALS[key] = material
    return material


for _name, _comp, _rho, _src in _BUILTIN:
    register_material(_name, _comp, _rho, source=_src)
del _name, _comp, _rho, _src


def available_materials() -> tuple[str, ...]:
    """Names of the registered materials (element symbols are accepted too)."""
    with _lock:
        return tuple(_MATERIALS)


def get_material(name: str) -> Material:
    """The registered material ``name``, or a pure element given by its symbol.

    Raises ValueError naming the known materials when ``name`` is neither.
    """
    key = _normalise_name(name)
    with _lock:
        material = _MATERIALS.get(key)
    if material is not None:
        return material
    symbol = _element_symbol(name)
    if symbol is not None:
        return Material(name=symbol, fractions=((symbol, 1.0),), density=_element_density(symbol),
                        source="element; density from xraydb (atomic_density)")
    raise ValueError(
        f"Unknown material {name!r}. Known materials: {', '.join(available_materials())}; "
        "an element symbol such as 'Al' also works. Add others with register_material()."
    )


def density(name: str) -> float:
    """Nominal density of a material or element, g/cm^3."""
    return get_material(name).density


class _ElementTable:
    """The shipped element table: xraydb's mu/rho on the integer-keV grid, densities, edges."""

    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            symbols = tuple(str(s) for s in z["symbols"])
            energies = np.asarray(z["energies_keV"], dtype=np.float64)
            mu = np.asarray(z["mu_rho"], dtype=np.float64)
            rho = np.asarray(z["density_g_cm3"], dtype=np.float64)
            edge_el = np.asarray(z["edge_element"], dtype=np.int64)
            edge_e = np.asarray(z["edge_keV"], dtype=np.float64)
            below = np.asarray(z["edge_mu_rho_below"], dtype=np.float64)
            above = np.asarray(z["edge_mu_rho_above"], dtype=np.float64)
            self.meta = {k: z[k].item() for k in z.files if z[k].ndim == 0}
        n = len(symbols)
        first = float(energies[0]) if energies.size else 0.0
        if (mu.shape != (n, energies.size) or rho.shape != (n,) or energies.size < 2
                or not np.array_equal(energies, first + np.arange(energies.size))
                or not (edge_el.shape == edge_e.shape == below.shape == above.shape)
                or (edge_el.size and edge_el.max() >= n)
                or not (np.all(mu > 0) and np.all(rho > 0))):
            raise RuntimeError(f"{path} is malformed. Regenerate it with tools/generate_attenuation_table.py.")
        mu.flags.writeable = False
        self.symbols = symbols
        self.row = {s: i for i, s in enumerate(symbols)}
        self.energies = energies
        self.e_min, self.e_max = first, float(energies[-1])
        self.mu = mu
        self.density = dict(zip(symbols, rho.tolist()))
        self.edges = {s: (edge_e[edge_el == i], below[edge_el == i], above[edge_el == i])
                      for i, s in enumerate(symbols)}

    def grid_rows(self, energies: np.ndarray) -> np.ndarray | None:
        """Column indices if every energy is on the integer grid (within 1e-9 keV), else None."""
        k = np.rint(energies)
        if (energies.size == 0 or np.any(np.abs(energies - k) > _GRID_TOLERANCE_KEV)
                or k.min() < self.e_min or k.max() > self.e_max):
            return None
        return (k - self.e_min).astype(np.intp)

    def interpolate(self, symbol: str, energies: np.ndarray) -> np.ndarray:
        """Log-log interpolation between the grid points, breaking at absorption edges.

        Each edge inside the grid adds two nodes at the same energy (the values
        just below and just above it); a query picks the last node at or below
        it, so no segment spans an edge.
        """
        edge_e, below, above = self.edges[symbol]
        x = np.concatenate([self.energies, edge_e, edge_e])
        y = np.concatenate([self.mu[self.row[symbol]], below, above])
        # Sort by energy; at an edge the below-value comes first.
        order = np.lexsort((np.concatenate([np.zeros(self.energies.size), np.zeros(edge_e.size),
                                            np.ones(edge_e.size)]), x))
        lx, ly = np.log(x[order]), np.log(y[order])
        q = np.log(energies)
        j = np.clip(np.searchsorted(lx, q, side="right") - 1, 0, lx.size - 2)
        t = (q - lx[j]) / (lx[j + 1] - lx[j])
        return np.exp(ly[j] + t * (ly[j + 1] - ly[j]))


@functools.lru_cache(maxsize=1)
def _element_table() -> _ElementTable | None:
    from .resources import resource_path

    try:
        path = resource_path(*_ELEMENT_TABLE_PARTS)
    except FileNotFoundError:
        return None  # an incomplete install: fall back to xraydb for everything
    return _ElementTable(path)


def element_table_info() -> dict:
    """What the shipped element table holds: its elements, energy range (keV),
    edge count and metadata (xraydb version, source, the command that made it).
    Empty if the table is missing."""
    table = _element_table()
    if table is None:
        return {}
    info = dict(table.meta)
    info["elements"] = table.symbols
    info["energy_range_keV"] = (table.e_min, table.e_max)
    info["edges"] = sum(v[0].size for v in table.edges.values())
    return info


@functools.lru_cache(maxsize=None)
def _element_density(symbol: str) -> float:
    table = _element_table()
    if table is not None and symbol in table.density:
        return table.density[symbol]
    return float(_xraydb(f"The density of {symbol} (not in the shipped table)").atomic_density(symbol))


def _energy_grid(energies_keV) -> np.ndarray:
    e = np.asarray(energies_keV, dtype=np.float64)
    if e.size and (not np.all(np.isfinite(e)) or e.min() < MIN_ENERGY_KEV or e.max() > MAX_ENERGY_KEV):
        bad = e[~np.isfinite(e) | (e < MIN_ENERGY_KEV) | (e > MAX_ENERGY_KEV)].ravel()[0]
        raise ValueError(
            f"Photon energies must lie in [{MIN_ENERGY_KEV:g}, {MAX_ENERGY_KEV:g}] keV, got {bad!r}. "
            "Energies are in keV (not eV or MeV)."
        )
    return e


def _element_mu(symbol: str, e: np.ndarray) -> np.ndarray:
    """Total mu/rho of one element at energies ``e`` (keV, 1-D): table, xraydb, or interpolation."""
    table = _element_table()
    tabulated = table is not None and symbol in table.row
    if tabulated:
        cols = table.grid_rows(e)
        if cols is not None:
            return table.mu[table.row[symbol], cols]  # xraydb's own numbers, no import
    xraydb = _xraydb_or_none()
    if xraydb is not None:
        mu = xraydb.mu_elam(symbol, e * 1000.0, kind="total")
        return np.atleast_1d(np.asarray(mu, dtype=np.float64))
    if not tabulated:
        listed = " ".join(table.symbols) if table is not None else "none (the table file is missing)"
        raise AttenuationDataUnavailable(
            f"mu/rho of {symbol} needs the xraydb package, which is not installed, and {symbol} is not "
            f"in the attenuation table shipped with DeepDRRSlicer (elements: {listed}). Fix: {_XRAYDB_FIX}."
        )
    if e.min() < table.e_min or e.max() > table.e_max:
        raise AttenuationDataUnavailable(
            f"mu/rho at energies outside {table.e_min:g}-{table.e_max:g} keV needs the xraydb package, "
            f"which is not installed (the shipped table covers {table.e_min:g}-{table.e_max:g} keV). "
            f"Fix: {_XRAYDB_FIX}."
        )
    return table.interpolate(symbol, e)


@functools.lru_cache(maxsize=4096)
def _element_mu_cached(symbol: str, energies: tuple[float, ...]) -> np.ndarray:
    mu = _element_mu(symbol, np.asarray(energies, dtype=np.float64)).copy()
    mu.flags.writeable = False
    return mu


def _clear_caches() -> None:
    """Forget cached coefficients, densities and the loaded table (for tests)."""
    for cached in (_element_mu_cached, _mixture_mu_cached, _element_density, _element_table):
        cached.cache_clear()


@functools.lru_cache(maxsize=1024)
def _mixture_mu_cached(fractions: tuple[tuple[str, float], ...], energies: tuple[float, ...]) -> np.ndarray:
    mu = np.zeros(len(energies), dtype=np.float64)
    for symbol, w in fractions:
        mu += w * _element_mu_cached(symbol, energies)
    mu.flags.writeable = False
    return mu


def mass_attenuation(material: str, energies_keV) -> np.ndarray:
    """Total mass attenuation coefficient mu/rho (cm^2/g) of ``material``.

    Coherent scattering is included. ``energies_keV`` is a scalar or an array
    of photon energies in keV; the result has its shape (float64, a new array
    the caller may modify). Unknown material -> ValueError naming the known
    ones.
    """
    mat = get_material(material)
    e = _energy_grid(energies_keV)
    if e.size == 0:
        return np.zeros(e.shape)
    mu = _mixture_mu_cached(mat.fractions, tuple(e.ravel().tolist()))
    return mu.reshape(e.shape).copy()


def linear_attenuation(material: str, energies_keV, density_g_cm3: float | None = None) -> np.ndarray:
    """Linear attenuation coefficient mu (1/cm) at the material's nominal density
    (or ``density_g_cm3``)."""
    rho = get_material(material).density if density_g_cm3 is None else float(density_g_cm3)
    return mass_attenuation(material, energies_keV) * rho


def mass_attenuation_table(materials: Sequence[str] | Iterable[str], energies_keV) -> np.ndarray:
    """mu/rho for several materials on one energy grid: shape (M, N), cm^2/g,
    float64. Row m belongs to ``materials[m]`` (e.g. DEFAULT_MATERIALS)."""
    e = np.asarray(energies_keV, dtype=np.float64).ravel()
    names = list(materials)
    table = np.empty((len(names), e.size), dtype=np.float64)
    for m, name in enumerate(names):
        table[m] = mass_attenuation(name, e)
    return table


# --------------------------------------------------------------------------
# Mass energy-absorption coefficient of air, for air kerma and half-value
# layers. xraydb has no mu_en/rho, so this is the NIST table itself:
# Hubbell & Seltzer, NIST SRD 126, Table 4, "Air, Dry (Near Sea Level)",
# mu_en/rho in cm^2/g. The argon K edge (3.2029 keV) appears twice.
# --------------------------------------------------------------------------
_AIR_MUEN_KEV = np.array([
    1.0, 1.5, 2.0, 3.0, 3.2029, 3.2029, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0,
])
_AIR_MUEN = np.array([
    3.599e3, 1.188e3, 5.262e2, 1.614e2, 1.330e2, 1.460e2, 7.636e1, 3.931e1, 2.270e1, 9.446e0,
    4.742e0, 1.334e0, 5.389e-1, 1.537e-1, 6.833e-2, 4.098e-2, 3.041e-2, 2.407e-2, 2.325e-2,
    2.496e-2, 2.672e-2, 2.872e-2,
])


def air_mass_energy_absorption(energies_keV) -> np.ndarray:
    """mu_en/rho of dry air (cm^2/g), NIST SRD 126 Table 4, log-log interpolated.

    Valid from 1 to 300 keV; outside that range -> ValueError.
    """
    e = np.asarray(energies_keV, dtype=np.float64)
    if e.size and (not np.all(np.isfinite(e)) or e.min() < 1.0 or e.max() > 300.0):
        raise ValueError("The air mu_en/rho table covers 1-300 keV; got energies outside it.")
    out = np.empty(e.shape)
    edge = 3.2029
    below = e < edge
    loge = np.log(np.where(e > 0, e, 1.0))
    lo_x, lo_y = np.log(_AIR_MUEN_KEV[:5]), np.log(_AIR_MUEN[:5])
    hi_x, hi_y = np.log(_AIR_MUEN_KEV[5:]), np.log(_AIR_MUEN[5:])
    out[below] = np.exp(np.interp(loge[below], lo_x, lo_y))
    out[~below] = np.exp(np.interp(loge[~below], hi_x, hi_y))
    return out
