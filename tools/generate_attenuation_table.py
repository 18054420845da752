#!/usr/bin/env python3
"""Generate the elemental mass attenuation table shipped with the engine.

Offline tool: it needs xraydb (pip install xraydb). At run time
DeepDRRSlicerLib.attenuation reads the table and imports xraydb only for
requests the table cannot answer. Run from the repository root:

    python tools/generate_attenuation_table.py   # -> Resources/Physics/mass_attenuation_elements.npz

Content (all numbers are xraydb's own output, Elam, Ravel & Sieber 2002 tables):
  * ``mu_rho[element, energy]``: total mu/rho in cm^2/g, coherent scattering
    included (xraydb.mu_elam(kind="total")), float64, at the integer energies
    1..150 keV (``energies_keV``), which are the centres of the tube-spectrum
    bins, so every simulation is answered from the table exactly;
  * ``density_g_cm3[element]``: xraydb.atomic_density;
  * absorption edges inside 1..150 keV, for interpolating off the grid without
    xraydb: ``edge_element`` (row in ``symbols``), ``edge_keV`` (the energy of
    the discontinuity in Elam's photoabsorption table) and the total mu/rho
    just below and just above it (``edge_mu_rho_below`` / ``_above``);
  * metadata (0-d string arrays): units, source, xraydb version, command.

Elements: every element of the built-in materials of attenuation.py, plus all
of H..Zn and the heavier elements used as filters, implants, contrast agents
or shielding (EXTRA_HEAVY below).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "Resources" / "Physics" / "mass_attenuation_elements.npz"

E_MIN_KEV, E_MAX_KEV = 1, 150
# Heavier than Zn: filters (Mo, Rh, Ag, Sn, Gd, Er, W, Pb), implants and
# devices (Zr, Nb, Ta, Pt, Ir, Au, Hf), contrast agents (I, Ba, Gd, Xe, Bi,
# Yb, Hf, Ta), detector and shielding materials (Cs, La, Ce, Pb, Bi, U), and
# a few others found in tissue or phantoms (Br, Sr, Y, Cd, Sb, Hg, Re).
EXTRA_HEAVY = ("Br Sr Y Zr Nb Mo Rh Pd Ag Cd Sn Sb I Xe Cs Ba La Ce Gd Er Yb Hf Ta W Re Ir Pt Au "
               "Hg Pb Bi U").split()
UNITS = "mu_rho: cm^2/g (total, coherent included); energies_keV: keV; density_g_cm3: g/cm^3"
# Relative offset from an edge at which the values just below/above it are taken.
EDGE_OFFSET = 1e-9


def _engine_elements() -> set[str]:
    """Elements of the built-in materials of DeepDRRSlicerLib.attenuation."""
    try:
        from DeepDRRSlicerLib import attenuation
    except ImportError:
        sys.path.insert(0, str(REPO / "DeepDRRSlicer"))
        from DeepDRRSlicerLib import attenuation
    return {sym for name in attenuation.available_materials()
            for sym in attenuation.get_material(name).composition}


def _element_order(symbols) -> list[str]:
    import xraydb

    return sorted(set(symbols), key=xraydb.atomic_number)


def _photo_edges_eV(symbol: str) -> list[float]:
    """Energies (eV) of the absorption edges in Elam's photoabsorption table,
    which lists each edge energy twice (the values below and above it)."""
    import xraydb

    row = xraydb.get_xraydb().get_cache("photoabsorption", column="element", value=symbol)[0]
    log_e = np.asarray(json.loads(row.log_energy), dtype=np.float64)
    log_mu = np.asarray(json.loads(row.log_photoabsorption), dtype=np.float64)
    # A repeated energy with a jump in value is an edge. (Every element also
    # repeats 1000.005 eV with equal values, a seam in the table, not an edge.)
    dup = np.flatnonzero((np.diff(log_e) == 0.0) & (np.diff(log_mu) > 0.0))
    return [float(np.exp(log_e[i])) for i in dup]


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def generate(out: Path) -> None:
    import xraydb

    light = [xraydb.atomic_symbol(z) for z in range(1, 31)]  # H..Zn
    symbols = _element_order(set(light) | set(EXTRA_HEAVY) | _engine_elements())
    energies = np.arange(E_MIN_KEV, E_MAX_KEV + 1, dtype=np.float64)
    mu = np.empty((len(symbols), energies.size), dtype=np.float64)
    density = np.empty(len(symbols), dtype=np.float64)
    edge_element, edge_kev, below, above = [], [], [], []
    for i, sym in enumerate(symbols):
        mu[i] = np.asarray(xraydb.mu_elam(sym, energies * 1000.0, kind="total"), dtype=np.float64)
        density[i] = float(xraydb.atomic_density(sym))
        for e_ev in _photo_edges_eV(sym):
            e_kev = e_ev / 1000.0
            if not (E_MIN_KEV < e_kev < E_MAX_KEV):
                continue
            if abs(e_kev - round(e_kev)) < 1e-6:
                raise RuntimeError(f"{sym}: an absorption edge at {e_kev} keV coincides with a grid energy.")
            lo, hi = xraydb.mu_elam(sym, np.array([e_ev * (1 - EDGE_OFFSET), e_ev * (1 + EDGE_OFFSET)]),
                                    kind="total")
            if not hi > lo:
                raise RuntimeError(f"{sym}: mu/rho does not jump up at the edge {e_kev} keV.")
            edge_element.append(i)
            edge_kev.append(e_kev)
            below.append(float(lo))
            above.append(float(hi))
    if not (np.all(np.isfinite(mu)) and np.all(mu > 0) and np.all(density > 0)):
        raise RuntimeError("xraydb returned a non-positive or non-finite value.")

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        symbols=np.array(symbols, dtype=np.str_),
        atomic_number=np.array([xraydb.atomic_number(s) for s in symbols], dtype=np.uint8),
        energies_keV=energies,
        mu_rho=mu,
        density_g_cm3=density,
        edge_element=np.array(edge_element, dtype=np.uint8),
        edge_keV=np.array(edge_kev, dtype=np.float64),
        edge_mu_rho_below=np.array(below, dtype=np.float64),
        edge_mu_rho_above=np.array(above, dtype=np.float64),
        units=np.str_(UNITS),
        source=np.str_("Elam, Ravel & Sieber, Radiat. Phys. Chem. 63 (2002) 121, via xraydb: "
                       "mu_rho = xraydb.mu_elam(symbol, energy_eV, kind='total'); "
                       "density = xraydb.atomic_density(symbol)"),
        energy_note=np.str_("integer energies 1..150 keV, the centres of the 1 keV tube-spectrum bins; "
                            f"edge values at edge_keV * (1 -/+ {EDGE_OFFSET:g})"),
        xraydb_version=np.str_(xraydb.__version__),
        command=np.str_(_command()),
    )
    print(f"wrote {out}: {len(symbols)} elements x {energies.size} energies, {len(edge_kev)} edges, "
          f"{out.stat().st_size} bytes (xraydb {xraydb.__version__})")
    print("elements:", " ".join(symbols))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    args = parser.parse_args(argv)
    try:
        import xraydb  # noqa: F401
    except ImportError:
        parser.error("xraydb is needed to generate the table: pip install xraydb (offline tool only)")
    generate(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
