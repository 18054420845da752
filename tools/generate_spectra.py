#!/usr/bin/env python3
"""Generate the tube spectra table (and a test fixture) with SpekPy.

Offline tool: SpekPy (Poludniowski et al., Med. Phys. 48, 2021; pip install
spekpy) is NOT a runtime dependency of DeepDRRSlicerLib. Run from the
repository root:

    python tools/generate_spectra.py              # -> Resources/Physics/tube_spectra.npz
    python tools/generate_spectra.py --reference  # -> Testing/Data/spekpy_reference_spectra.npz

Table model (SpekPy defaults except where stated):
  * tungsten reflection anode, anode angle 12 degrees, SpekPy physics model
    "casim" (SpekPy v2 default) with its default attenuation data ("pene");
  * on the central axis, focus-to-point distance 100 cm, 1 mAs;
  * inherent filtration 0.7 mm Al (a typical tube-housing value, standing in
    for glass envelope + oil + port); no air;
  * tube potentials 40..150 kV in 1 kV steps;
  * energy bins 1 keV wide centred at integer energies 1..150 keV, i.e. bin
    n covers [n - 0.5, n + 0.5) keV (the 1 keV bin also takes nothing below
    1 keV because SpekPy starts there). SpekPy is run with 0.25 keV bins and
    these are summed exactly into the 1 keV bins;
  * value per bin: photons per mAs per mm^2 at 1 m (SpekPy's photons per cm^2
    per mAs per keV at 100 cm, times the bin width in keV, divided by 100).

The reference fixture holds SpekPy's own spectra for a few (kVp, added
filtration) cases, filtered by SpekPy with its own attenuation data, plus its
total fluence, mean energy, air kerma and first HVL. The runtime applies the
added filtration with xraydb data instead, so the two can be compared.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "Resources" / "Physics" / "tube_spectra.npz"
DEFAULT_REFERENCE_OUT = REPO / "Testing" / "Data" / "spekpy_reference_spectra.npz"

ANODE_ANGLE_DEG = 12.0
INHERENT_FILTRATION = {"Al": 0.7}  # mm
FINE_DK_KEV = 0.25
E_MAX_KEV = 150
UNITS = "photons / (mAs * mm^2) at 1 m per 1 keV energy bin"

# SpekPy material names for the filters used in the reference cases.
SPEKPY_MATERIAL = {"Al": "Al", "Cu": "Cu", "water": "Water, Liquid", "Ti": "Ti"}

# (kVp, added filtration in mm) cases for the reference fixture.
REFERENCE_CASES = [
    (60.0, {"Al": 3.5}),
    (90.0, {"Al": 4.0}),
    (120.0, {"Al": 4.3}),
    (80.0, {"Al": 2.5, "Cu": 0.1}),
    (100.0, {"Cu": 0.3}),
    (70.0, {"water": 50.0}),
    (90.5, {"Al": 2.5}),
    (40.0, {}),
    (150.0, {"Al": 2.0, "Cu": 0.2}),
]


def _spek(kvp: float, added: dict[str, float]):
    import spekpy

    s = spekpy.Spek(kvp=kvp, th=ANODE_ANGLE_DEG, dk=FINE_DK_KEV, z=100.0, mas=1.0)
    for symbol, mm in INHERENT_FILTRATION.items():
        s.filter(SPEKPY_MATERIAL[symbol], mm)
    for name, mm in added.items():
        if mm > 0:
            s.filter(SPEKPY_MATERIAL[name], mm)
    return s


def _rebinned(s) -> tuple[np.ndarray, np.ndarray]:
    """SpekPy's fine bins summed into 1 keV bins centred at 1..E_MAX_KEV.

    Returns (energies_keV, photons per mAs per mm^2 at 1 m per bin)."""
    k, per_bin_cm2 = s.get_spectrum(edges=False, flu=True, diff=False)  # photons/cm^2/mAs per fine bin
    k = np.asarray(k, dtype=np.float64)
    per_bin_cm2 = np.asarray(per_bin_cm2, dtype=np.float64)
    # Fine bin [k - dk/2, k + dk/2] lies inside the 1 keV bin centred at round(k).
    lo = k - FINE_DK_KEV / 2
    hi = k + FINE_DK_KEV / 2
    idx = np.floor(k + 0.5).astype(int)
    if not np.all(np.floor(lo + 0.5 + 1e-9) == np.floor(hi + 0.5 - 1e-9)):
        raise RuntimeError("SpekPy fine bins straddle a 1 keV bin edge; check dk and the energy grid.")
    energies = np.arange(1, E_MAX_KEV + 1, dtype=np.float64)
    fluence = np.zeros(E_MAX_KEV, dtype=np.float64)
    np.add.at(fluence, idx - 1, per_bin_cm2)
    total_fine = per_bin_cm2.sum()
    if not np.isclose(fluence.sum(), total_fine, rtol=1e-12):
        raise RuntimeError("Rebinning lost fluence.")
    if not np.isclose(total_fine, s.get_flu(), rtol=1e-9):
        raise RuntimeError("Sum of SpekPy's per-bin spectrum differs from its get_flu().")
    return energies, fluence / 100.0  # per cm^2 -> per mm^2 (at 100 cm = 1 m)


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def _common_metadata() -> dict:
    import spekpy

    state = spekpy.Spek(kvp=80, th=ANODE_ANGLE_DEG, dk=FINE_DK_KEV).state.model_parameters
    return {
        "units": np.str_(UNITS),
        "spekpy_version": np.str_(spekpy.__version__),
        "spekpy_physics": np.str_(state.physics),
        "spekpy_mu_data_source": np.str_(state.mu_data_source),
        "target": np.str_("W"),
        "anode_angle_deg": np.float32(ANODE_ANGLE_DEG),
        "inherent_filtration": np.str_(json.dumps(INHERENT_FILTRATION)),
        "inherent_filtration_note": np.str_(
            "0.7 mm Al: a typical X-ray tube housing inherent filtration, included in every spectrum; "
            "no air attenuation"
        ),
        "energy_bin_note": np.str_(
            "bins 1 keV wide centred at integer energies_keV: bin n covers [n-0.5, n+0.5) keV; "
            f"made by summing SpekPy {FINE_DK_KEV} keV bins"
        ),
        "distance_mm": np.float32(1000.0),
        "command": np.str_(_command()),
    }


def generate_table(out: Path, kvp_min: int, kvp_max: int) -> None:
    kvps = np.arange(kvp_min, kvp_max + 1, dtype=np.float64)
    table = np.zeros((kvps.size, E_MAX_KEV), dtype=np.float64)
    energies = None
    mean_energy = np.zeros(kvps.size)
    for i, kvp in enumerate(kvps):
        s = _spek(float(kvp), {})
        energies, table[i] = _rebinned(s)
        mean_energy[i] = s.get_emean()
        print(f"{kvp:5.0f} kV: total {table[i].sum():.4e} photons/mAs/mm^2 at 1 m, "
              f"mean {mean_energy[i]:.2f} keV", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        kvp=kvps.astype(np.float32),
        energies_keV=energies.astype(np.float32),
        fluence=table.astype(np.float32),
        spekpy_mean_energy_keV=mean_energy.astype(np.float32),
        **_common_metadata(),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def generate_reference(out: Path) -> None:
    kvps, filters, spectra = [], [], []
    flu, emean, kerma, hvl = [], [], [], []
    for kvp, added in REFERENCE_CASES:
        s = _spek(kvp, added)
        energies, spectrum = _rebinned(s)
        kvps.append(kvp)
        filters.append(json.dumps(added))
        spectra.append(spectrum)
        flu.append(s.get_flu() / 100.0)
        emean.append(s.get_emean())
        kerma.append(s.get_kerma())
        hvl.append(s.get_hvl1(matl="Al"))
        print(f"{kvp:6.1f} kV + {added}: total {flu[-1]:.4e} /mAs/mm^2, mean {emean[-1]:.3f} keV, "
              f"kerma {kerma[-1]:.3f} uGy/mAs, HVL1 {hvl[-1]:.4f} mm Al", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        kvp=np.array(kvps, dtype=np.float64),
        added_filtration_json=np.array(filters, dtype=np.str_),
        energies_keV=energies.astype(np.float32),
        fluence=np.array(spectra, dtype=np.float32),
        total_fluence=np.array(flu, dtype=np.float64),
        mean_energy_keV=np.array(emean, dtype=np.float64),
        air_kerma_uGy_per_mAs=np.array(kerma, dtype=np.float64),
        hvl1_mm_al=np.array(hvl, dtype=np.float64),
        **_common_metadata(),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", action="store_true",
                        help="write the small SpekPy reference fixture for the tests instead of the table")
    parser.add_argument("--out", type=Path, default=None, help="output .npz path")
    parser.add_argument("--kvp-min", type=int, default=40)
    parser.add_argument("--kvp-max", type=int, default=150)
    args = parser.parse_args(argv)
    if not (10 <= args.kvp_min < args.kvp_max <= E_MAX_KEV):
        parser.error(f"need 10 <= --kvp-min < --kvp-max <= {E_MAX_KEV}")
    try:
        import spekpy  # noqa: F401
    except ImportError:
        parser.error("SpekPy is needed to generate spectra: pip install spekpy (offline tool only)")
    if args.reference:
        generate_reference(args.out or DEFAULT_REFERENCE_OUT)
    else:
        generate_table(args.out or DEFAULT_OUT, args.kvp_min, args.kvp_max)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
