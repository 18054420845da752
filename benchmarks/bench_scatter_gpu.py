"""GPU benchmark of the scatter Monte Carlo and the material network, on a machine with an NVIDIA GPU.

Run by ``benchmarks/gpu_check.sh`` (see docs/benchmarks.md):

    PYTHONPATH=DeepDRRSlicer python3 benchmarks/bench_scatter_gpu.py --ct .gpu/chest_ct.npz --out OUT_DIR

1. Monte Carlo photons/s on the GPU: 20 cm of water (the CPU benchmark's case), analog and forced
   detection, for each register cap of the kernel (``kernel_cuda.COMPILE_OPTIONS``);
2. the chest CT at 256^2 (materials from the network, the default), forced detection: photons/s, the
   photons needed for < 5 % relative error (95th percentile) per smoothed scatter pixel, and a run of
   that many photons to check it and time it;
3. the material network on the whole chest CT on the GPU (first call: loading and warm-up included;
   then warm calls).
Writes ``OUT/gpu_scatter_benchmark.json`` and prints each figure as it comes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DeepDRRSlicer"))

from DeepDRRSlicerLib.cuda.probe import get_launcher  # noqa: E402
from DeepDRRSlicerLib.detector import Detector  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm, DetectorGeometry  # noqa: E402
from DeepDRRSlicerLib.materials import MaterialVolume, decompose  # noqa: E402
from DeepDRRSlicerLib.primary import PrimaryModel  # noqa: E402
from DeepDRRSlicerLib.scatter import ScatterSettings, ScatterTransport, kernel_cuda  # noqa: E402
from DeepDRRSlicerLib.spectrum import tube_spectrum  # noqa: E402
from DeepDRRSlicerLib.volume import Volume  # noqa: E402

REGISTER_CAPS = (("-maxrregcount=64",),)   # measured 2026-11-30 on an H200: no cap, 96, 48 were slower


def water_slab(thickness_mm=200.0, half_width_mm=150.0, voxel_mm=10.0) -> MaterialVolume:
    n_lat, n_ax = int(round(2 * half_width_mm / voxel_mm)), int(round(thickness_mm / voxel_mm))
    density = np.ones((n_lat, n_ax, n_lat), dtype=np.float32)
    matrix = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    matrix[:3, 3] = [-half_width_mm + voxel_mm / 2, -thickness_mm / 2 + voxel_mm / 2, -half_width_mm + voxel_mm / 2]
    return MaterialVolume(density, np.ones(density.shape, dtype=np.uint8), ("air", "water"), matrix)


def square_detector(pixels=64, side_mm=300.0) -> DetectorGeometry:
    spacing = side_mm / pixels
    edge = (pixels - 1) / 2 * spacing
    return DetectorGeometry(source=(0, -530.0, 0), detector_origin=(-edge, 490.0, edge), u=(spacing, 0, 0),
                            v=(0, 0, -spacing), width=pixels, height=pixels)


def save(report, out: Path):
    (out / "gpu_scatter_benchmark.json").write_text(json.dumps(report, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", required=True, help=".npz with hu [k, j, i] int16 and ijk_to_ras")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0, help="photon counts times this (smoke tests)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    launcher = get_launcher()
    report = {"launcher": launcher.name, "device": launcher.device_name()}
    print(f"launcher {launcher.name} on {launcher.device_name()}", flush=True)

    # 1. water, per register cap
    slab = water_slab()
    geometry = square_detector()
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), slab.names, detector=detector)
    transport = ScatterTransport(slab, model, detector)
    water = {}
    best = (0.0, ())
    for options in REGISTER_CAPS:
        kernel_cuda.COMPILE_OPTIONS = options
        start = time.perf_counter()
        transport.run(geometry, ScatterSettings(photons=max(1000, int(100_000 * args.scale))), launcher=launcher)   # compile + warm up
        compile_seconds = time.perf_counter() - start
        entry = {"compile_and_first_run_s": round(compile_seconds, 2)}
        for label, forced, photons in (("analog", False, int(50_000_000 * args.scale)), ("forced", True, int(10_000_000 * args.scale))):
            result = transport.run(geometry, ScatterSettings(photons=photons, forced_detection=forced, seed=3),
                                   launcher=launcher)
            entry[label] = {"photons": photons, "seconds": round(result.seconds, 3),
                            "photons_per_second": round(result.photons_per_second)}
            print(f"water 20 cm {label} {options or 'no register cap'}: {result.photons_per_second:,.0f} photons/s",
                  flush=True)
            if label == "analog" and result.photons_per_second > best[0]:
                best = (result.photons_per_second, options)
        water[" ".join(options) or "default"] = entry
        report["water_20cm"] = water
        save(report, args.out)
    kernel_cuda.COMPILE_OPTIONS = best[1]
    report["chosen_options"] = list(best[1])

    # 3 first (its decomposition is what section 2 uses): the network on the whole chest CT
    data = np.load(args.ct)
    hu = data["hu"].astype(np.float32)
    volume = Volume.from_array(hu, ijk_to_ras=data["ijk_to_ras"], source=args.ct)
    if not args.skip_network:
        import torch

        from DeepDRRSlicerLib.material_network import segment_working

        times = []
        for _ in range(4):
            start = time.perf_counter()
            segment_working(volume.hu, volume.ijk_to_ras, device="cuda")
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        report["network_chest_ct_gpu"] = {"shape": list(hu.shape), "first_call_s": round(times[0], 3),
                                          "warm_s": [round(t, 3) for t in times[1:]]}
        print(f"network on the chest CT {hu.shape}: first {times[0]:.2f} s, warm {min(times[1:]):.3f} s", flush=True)
        save(report, args.out)
    start = time.perf_counter()
    materials = decompose(volume, device="auto")
    report["decompose_chest_ct_default_s"] = round(time.perf_counter() - start, 3)
    report["chest_materials"] = {"method": materials.method, "names": list(materials.names),
                                 "fractions": materials.fractions is not None}

    # 2. the chest CT at 256^2, forced detection
    chest_geometry = CArm(isocenter_ras=tuple(volume.center_ras()), width=256, height=256,
                          pixel_spacing_mm=700.0 / 256).geometry()
    chest_model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names, detector=detector)
    chest = ScatterTransport(materials, chest_model, detector)
    chest.run(chest_geometry, ScatterSettings(photons=max(1000, int(10_000 * args.scale))), launcher=launcher)
    pilot_n = max(1000, int(2_000_000 * args.scale))
    pilot = chest.run(chest_geometry, ScatterSettings(photons=pilot_n), launcher=launcher)
    analog_n = max(1000, int(20_000_000 * args.scale))
    analog = chest.run(chest_geometry, ScatterSettings(photons=analog_n, forced_detection=False), launcher=launcher)
    p95 = float(np.percentile(pilot.relative_error, 95))
    needed = int(np.ceil(pilot_n * (p95 / 0.05) ** 2))
    chest_report = {"forced": {"photons": pilot_n, "seconds": round(pilot.seconds, 3),
                               "photons_per_second": round(pilot.photons_per_second)},
                    "analog": {"photons": analog_n, "seconds": round(analog.seconds, 3),
                               "photons_per_second": round(analog.photons_per_second)},
                    "pilot_relative_error_p95": round(p95, 4), "photons_needed_p95_below_5pct": needed,
                    "seconds_needed_estimate": round(needed / pilot.photons_per_second, 2)}
    print(f"chest 256^2: forced {pilot.photons_per_second:,.0f} photons/s, analog {analog.photons_per_second:,.0f}; "
          f"{needed:,} photons for < 5 % (p95)", flush=True)
    report["chest_ct_256"] = chest_report
    save(report, args.out)
    if needed <= 200_000_000 * args.scale:
        check = chest.run(chest_geometry, ScatterSettings(photons=needed, seed=1), launcher=launcher)
        chest_report["verified_relative_error_p95"] = round(float(np.percentile(check.relative_error, 95)), 4)
        chest_report["verified_seconds"] = round(check.seconds, 3)
        print(f"  verified: p95 {chest_report['verified_relative_error_p95']:.3f} in {check.seconds:.2f} s", flush=True)
        save(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
