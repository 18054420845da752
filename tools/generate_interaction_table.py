#!/usr/bin/env python3
"""Generate the photon interaction table shipped for the Monte Carlo scatter stage.

Offline tool: it needs xraydb and xraylib (pip install xraydb xraylib). At run
time DeepDRRSlicerLib.interactions reads the table; xraydb/xraylib are imported
only for elements outside it. Run from the repository root:

    python tools/generate_interaction_table.py   # -> Resources/Physics/photon_interactions.npz

Content, per element (the same elements as mass_attenuation_elements.npz):
  * ``photo``, ``coherent``, ``incoherent`` [element, energy]: partial mass
    attenuation coefficients in cm^2/g from the Elam, Ravel & Sieber tables via
    ``xraydb.mu_elam(kind='photo' | 'coh' | 'incoh')`` on 1..150 keV in 0.5 keV
    steps (their sum is xraydb's total mu/rho, which the primary uses);
  * the photoabsorption edges in 1..150 keV with the photo values just below
    and above them (``edge_*``), so that run-time interpolation never crosses
    an edge;
  * ``form_factor[element, x]``: the atomic form factor F(x, Z) at momentum
    transfer x = sin(theta/2) / lambda (1/Angstrom). xraydb's ``f0``
    (Waasmaier & Kirfel 1995) is used where it is valid, x <= 6 / Angstrom;
    above, xraydb has no data and xraylib's ``FF_Rayl`` (Hubbell & Overbo 1979)
    is used;
  * ``incoherent_function[element, x]``: the incoherent scattering function
    S(x, Z) from xraylib's ``SF_Compt`` (Hubbell et al. 1975). xraydb has no
    incoherent scattering function;
  * ``atomic_mass`` (g/mol) and ``atomic_number``.
The tool also prints how closely the integral of Klein-Nishina x S over the
sphere reproduces Elam's incoherent cross-section, and Thomson x F^2 the
coherent one (the Monte Carlo takes the totals from Elam and only the angular
shapes from F and S).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "Resources" / "Physics" / "photon_interactions.npz"
ATTENUATION_TABLE = REPO / "Resources" / "Physics" / "mass_attenuation_elements.npz"

E_MIN_KEV, E_MAX_KEV, E_STEP_KEV = 1.0, 150.0, 0.5
X_MAX = 15.0            # 1/Angstrom; 150 keV backscatter is x = 12.1
X_POINTS = 400          # quadratic spacing: fine near x = 0 where F falls fastest
F0_VALID_MAX_X = 6.0    # Waasmaier-Kirfel parameterisation range
EDGE_OFFSET = 1e-9
XRAYLIB_SF_MIN_X = 1e-3
HC_KEV_ANGSTROM = 12.398419843320026
ELECTRON_REST_KEV = 510.99895
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13
AVOGADRO = 6.02214076e23


def _photo_edges_eV(symbol: str) -> list[float]:
    import xraydb

    row = xraydb.get_xraydb().get_cache("photoabsorption", column="element", value=symbol)[0]
    log_e = np.asarray(json.loads(row.log_energy), dtype=np.float64)
    log_mu = np.asarray(json.loads(row.log_photoabsorption), dtype=np.float64)
    dup = np.flatnonzero((np.diff(log_e) == 0.0) & (np.diff(log_mu) > 0.0))
    return [float(np.exp(log_e[i])) for i in dup]


def x_grid() -> np.ndarray:
    return X_MAX * (np.arange(X_POINTS, dtype=np.float64) / (X_POINTS - 1)) ** 2


def form_factor(symbol: str, x: np.ndarray) -> np.ndarray:
    import xraydb
    import xraylib

    z = xraydb.atomic_number(symbol)
    low = x <= F0_VALID_MAX_X
    out = np.empty_like(x)
    out[low] = np.asarray(xraydb.f0(symbol, x[low]), dtype=np.float64)
    out[~low] = [xraylib.FF_Rayl(z, float(q)) for q in x[~low]]
    out[0] = float(z)  # F(0) = Z exactly
    return np.clip(out, 0.0, None)


def incoherent_function(symbol: str, x: np.ndarray) -> np.ndarray:
    import xraydb
    import xraylib

    z = xraydb.atomic_number(symbol)
    # xraylib's table starts at x = 0.001/A; below it S(x) grows as x^2 (S(0) = 0).
    first = XRAYLIB_SF_MIN_X
    s_first = xraylib.SF_Compt(z, first)
    return np.array([s_first * (q / first) ** 2 if q < first else xraylib.SF_Compt(z, float(q)) for q in x],
                    dtype=np.float64)


def integrated_cross_sections(energy_keV, x, f, s, atomic_mass):
    """sigma_coh and sigma_incoh (cm^2/g) from Thomson x F^2 and Klein-Nishina x S (for the printed check)."""
    mu = np.linspace(-1.0, 1.0, 20001)
    k = energy_keV / HC_KEV_ANGSTROM
    q = k * np.sqrt((1.0 - mu) / 2.0)
    per_gram = AVOGADRO / atomic_mass
    thomson = 0.5 * CLASSICAL_ELECTRON_RADIUS_CM ** 2 * (1.0 + mu ** 2)
    coh = 2 * np.pi * np.trapezoid(thomson * np.interp(q, x, f) ** 2, mu) * per_gram
    alpha = energy_keV / ELECTRON_REST_KEV
    p = 1.0 / (1.0 + alpha * (1.0 - mu))
    kn = 0.5 * CLASSICAL_ELECTRON_RADIUS_CM ** 2 * p * p * (p + 1.0 / p - (1.0 - mu ** 2))
    incoh = 2 * np.pi * np.trapezoid(kn * np.interp(q, x, s), mu) * per_gram
    return coh, incoh


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def generate(out: Path) -> None:
    import xraydb
    import xraylib

    with np.load(ATTENUATION_TABLE, allow_pickle=False) as z:
        symbols = [str(s) for s in z["symbols"]]
    energies = np.arange(E_MIN_KEV, E_MAX_KEV + E_STEP_KEV / 2, E_STEP_KEV)
    x = x_grid()
    n = len(symbols)
    photo = np.empty((n, energies.size))
    coherent = np.empty((n, energies.size))
    incoherent = np.empty((n, energies.size))
    ff = np.empty((n, x.size))
    sf = np.empty((n, x.size))
    edge_element, edge_kev, edge_below, edge_above = [], [], [], []
    worst = {"coh": (0.0, ""), "incoh": (0.0, "")}
    for i, sym in enumerate(symbols):
        ev = energies * 1000.0
        photo[i] = xraydb.mu_elam(sym, ev, kind="photo")
        coherent[i] = xraydb.mu_elam(sym, ev, kind="coh")
        incoherent[i] = xraydb.mu_elam(sym, ev, kind="incoh")
        for e_ev in _photo_edges_eV(sym):
            e_kev = e_ev / 1000.0
            if not (E_MIN_KEV < e_kev < E_MAX_KEV):
                continue
            lo, hi = xraydb.mu_elam(sym, np.array([e_ev * (1 - EDGE_OFFSET), e_ev * (1 + EDGE_OFFSET)]), kind="photo")
            edge_element.append(i)
            edge_kev.append(e_kev)
            edge_below.append(float(lo))
            edge_above.append(float(hi))
        ff[i] = form_factor(sym, x)
        sf[i] = incoherent_function(sym, x)
        mass = float(xraydb.atomic_mass(sym))
        for e in (30.0, 60.0, 100.0):
            coh, incoh = integrated_cross_sections(e, x, ff[i], sf[i], mass)
            j = int(round((e - E_MIN_KEV) / E_STEP_KEV))
            for key, value, ref in (("coh", coh, coherent[i, j]), ("incoh", incoh, incoherent[i, j])):
                deviation = abs(value / ref - 1.0)
                if deviation > worst[key][0]:
                    worst[key] = (deviation, f"{sym} at {e:g} keV")
    if not all(np.all(np.isfinite(a)) and np.all(a >= 0) for a in (photo, coherent, incoherent, ff, sf)):
        raise RuntimeError("xraydb/xraylib returned negative or non-finite values")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        symbols=np.array(symbols, dtype=np.str_),
        atomic_number=np.array([xraydb.atomic_number(s) for s in symbols], dtype=np.uint8),
        atomic_mass=np.array([xraydb.atomic_mass(s) for s in symbols], dtype=np.float64),
        energies_keV=energies,
        photo=photo,
        coherent=coherent,
        incoherent=incoherent,
        edge_element=np.array(edge_element, dtype=np.uint8),
        edge_keV=np.array(edge_kev, dtype=np.float64),
        edge_photo_below=np.array(edge_below, dtype=np.float64),
        edge_photo_above=np.array(edge_above, dtype=np.float64),
        x_per_angstrom=x,
        form_factor=ff.astype(np.float32),
        incoherent_function=sf.astype(np.float32),
        units=np.str_("photo/coherent/incoherent: cm^2/g; energies_keV: keV; x_per_angstrom: "
                      "sin(theta/2)/lambda in 1/Angstrom; form_factor, incoherent_function: electrons per atom"),
        source=np.str_("cross-sections: Elam, Ravel & Sieber (2002) via xraydb.mu_elam(kind=photo|coh|incoh); "
                       f"form factor: xraydb.f0 (Waasmaier & Kirfel 1995) for x <= {F0_VALID_MAX_X:g}/A, "
                       "xraylib.FF_Rayl (Hubbell & Overbo 1979) above; incoherent scattering function: "
                       "xraylib.SF_Compt (Hubbell et al. 1975)"),
        xraydb_version=np.str_(xraydb.__version__),
        xraylib_version=np.str_(getattr(xraylib, "__version__", "unknown")),
        command=np.str_(_command()),
    )
    print(f"wrote {out}: {n} elements, {energies.size} energies, {len(edge_kev)} edges, {x.size} x values, "
          f"{out.stat().st_size} bytes")
    print(f"largest deviation of integral Thomson*F^2 from Elam coherent: {100 * worst['coh'][0]:.1f} % "
          f"({worst['coh'][1]}); of Klein-Nishina*S from Elam incoherent: {100 * worst['incoh'][0]:.1f} % "
          f"({worst['incoh'][1]})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    args = parser.parse_args(argv)
    try:
        import xraydb  # noqa: F401
        import xraylib  # noqa: F401
    except ImportError:
        parser.error("xraydb and xraylib are needed to generate the table: pip install xraydb xraylib")
    generate(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
