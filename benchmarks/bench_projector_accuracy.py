"""Projector accuracy on sharp-edged partial-volume phantoms: every algorithm against exact line integrals.

Phantoms (Testing/Python/sharp_phantoms.py): uniform ellipsoids and finite
cylinders with sharp edges, densities from HU on both branches of the density
fit, box-filtered onto the voxel grid (boundary voxels supersampled 5x5x5),
as soft mass fractions (a segmentation network's output) unless said. The
oracle is the closed-form chord length through each body.

Cases:
- four single bodies (ellipsoids 40 and -100 HU, cylinders 700 and 1200 HU,
  20-34 mm semi-axes) and a torso (a 68 x 52 x 58 mm body holding lung, fat,
  fluid and two bones);
- grids: axial 1 mm isotropic, and oblique anisotropic 0.7 x 0.8 x 1.0 mm
  rotated (12, -20, 33) degrees;
- poses: two oblique C-arm views (alpha, beta) = (25, -15) and (-63, 24), and
  three views exactly along the grid's axes i, j, k (SID 1020, SOD 530 mm);
- rays whose chord through the phantom exceeds 30 mm; relative error of the
  total line integral (median and 95th percentile, in %);
- per material on a two-material phantom (a 700 HU bone cylinder inside a
  soft-tissue ellipsoid): bone and soft-tissue line integrals on rays whose
  chord through that material exceeds 30 mm, from soft fractions and from
  hard (most probable) labels.

Algorithms: the shipped ``joseph`` (default), ``siddon`` and ``trilinear``
(step = smallest voxel spacing), ``trilinear`` at 0.05 mm (the exact integral
of the trilinear interpolant, for reference), and two candidates from
candidate_projectors.py (``voxel_step``, ``siddon_midpoint``).

    .venv/bin/python benchmarks/bench_projector_accuracy.py            # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_projector_accuracy.py --quick    # fewer cases

Writes benchmarks/results/bench_projector_accuracy.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "Testing" / "Python"))
sys.path.insert(0, str(BENCH_DIR))

from candidate_projectors import project_candidate  # noqa: E402
from phantoms import oblique_matrix  # noqa: E402
from sharp_phantoms import (centred_grid, single_bodies, test_views, torso_phantom, two_material_phantom,  # noqa: E402
                            two_material_volumes)

from DeepDRRSlicerLib.materials import MaterialVolume  # noqa: E402
from DeepDRRSlicerLib.projector import project  # noqa: E402

ALGORITHMS = ("joseph", "siddon", "trilinear", "trilinear 0.05 mm", "voxel_step", "siddon_midpoint")
#: Not a projector: the exact line integral of the phantom blurred by one voxel box, which is what the
#: partial-volume voxels sample. Its error is the part of every projector's error the data impose.
BOX_FILTERED = "box-filtered phantom"
CHORD_MM = 30.0


def grids() -> dict:
    return {"axial 1 mm": np.diag([1.0, 1.0, 1.0, 1.0]),
            "oblique 0.7x0.8x1.0 mm": oblique_matrix((0.7, 0.8, 1.0), (12.0, -20.0, 33.0), (0.0, 0.0, 0.0))}


def run_algorithm(materials, geometry, name: str) -> np.ndarray:
    if name in ("voxel_step", "siddon_midpoint"):
        return project_candidate(materials, geometry, name)
    if name == "trilinear 0.05 mm":
        return project(materials, geometry, algorithm="trilinear", step_mm=0.05).line_integrals
    return project(materials, geometry, algorithm=name).line_integrals


def errors(measured, exact, rays) -> dict:
    relative = np.abs(measured[rays] - exact[rays]) / exact[rays]
    return {"median_pct": float(np.median(relative) * 100), "p95_pct": float(np.percentile(relative, 95) * 100),
            "rays": int(rays.sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two single bodies, the torso, no candidates")
    parser.add_argument("--pixels", type=int, default=80)
    parser.add_argument("--supersample", type=int, default=5)
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)

    algorithms = ALGORITHMS[:3] if args.quick else ALGORITHMS
    phantoms = single_bodies()
    if args.quick:
        phantoms = {k: phantoms[k] for k in ("ellipsoid 40 HU", "cylinder 700 HU")}
    phantoms["torso"] = torso_phantom()
    for phantom in (*phantoms.values(), two_material_phantom()):
        phantom.check_tree()
    results = {"algorithms": list(algorithms), "chord_mm": CHORD_MM, "supersample": args.supersample,
               "total": [], "per_material": []}
    start = time.perf_counter()
    for grid_name, grid_matrix in grids().items():
        for phantom_name, phantom in phantoms.items():
            half = 75.0 if phantom_name == "torso" else 52.0
            matrix, shape = centred_grid(grid_matrix, half)
            density, fractions = phantom.voxelise(shape, matrix, supersample=args.supersample)
            materials = MaterialVolume.from_fractions(density, fractions, phantom.materials, matrix)
            spacing = 2 * half * 1020.0 / 530.0 / args.pixels
            for pose_name, geometry in test_views(matrix, args.pixels, spacing).items():
                exact, _, chord = phantom.exact(geometry.source, geometry.pixel_centers())
                rays = chord > CHORD_MM
                row = {"grid": grid_name, "phantom": phantom_name, "pose": pose_name}
                for name in algorithms:
                    row[name] = errors(run_algorithm(materials, geometry, name).sum(axis=0), exact, rays)
                row[BOX_FILTERED] = errors(phantom.box_filtered(geometry.source, geometry.pixel_centers(), matrix),
                                           exact, rays)
                results["total"].append(row)
                print(f"{grid_name:24s} {phantom_name:18s} {pose_name:14s} "
                      + "  ".join(f"{n} {row[n]['median_pct']:.3f}/{row[n]['p95_pct']:.3f}"
                                  for n in (*algorithms, BOX_FILTERED)), flush=True)
        # per material, soft fractions and hard labels
        soft, hard, matrix, phantom = two_material_volumes(grid_matrix, args.supersample)
        spacing = 2 * 52.0 * 1020.0 / 530.0 / args.pixels
        for pose_name, geometry in test_views(matrix, args.pixels, spacing).items():
            _, per_material, _ = phantom.exact(geometry.source, geometry.pixel_centers())
            ends = geometry.pixel_centers()
            bone_chord = phantom.bodies[1].chord_mm(np.broadcast_to(geometry.source, ends.shape), ends)
            soft_chord = phantom.bodies[0].chord_mm(np.broadcast_to(geometry.source, ends.shape), ends) - bone_chord
            for composition, materials in (("fractions", soft), ("labels", hard)):
                row = {"grid": grid_name, "pose": pose_name, "composition": composition}
                for name in algorithms:
                    measured = run_algorithm(materials, geometry, name)
                    row[name] = {"bone": errors(measured[2], per_material[2], bone_chord > CHORD_MM),
                                 "soft_tissue": errors(measured[1], per_material[1], soft_chord > CHORD_MM)}
                results["per_material"].append(row)
                print(f"{grid_name:24s} two materials ({composition:9s}) {pose_name:14s} " + "  ".join(
                    f"{n} bone {row[n]['bone']['median_pct']:.3f}/{row[n]['bone']['p95_pct']:.3f} "
                    f"soft {row[n]['soft_tissue']['median_pct']:.3f}/{row[n]['soft_tissue']['p95_pct']:.3f}"
                    for n in algorithms), flush=True)
    results["seconds"] = time.perf_counter() - start

    print("\nTotal line integral, relative error median / p95 (%), rays with chord > 30 mm\n")
    columns = (*algorithms, BOX_FILTERED)
    print("| grid | phantom | pose | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for row in results["total"]:
        print(f"| {row['grid']} | {row['phantom']} | {row['pose']} | " + " | ".join(
            f"{row[n]['median_pct']:.3f} / {row[n]['p95_pct']:.3f}" for n in columns) + " |")
    print("\nPer material (two-material phantom), median / p95 (%), rays with chord > 30 mm through the material\n")
    print("| grid | composition | pose | material | " + " | ".join(algorithms) + " |")
    print("|---|---|---|---|" + "---|" * len(algorithms))
    for row in results["per_material"]:
        for material in ("bone", "soft_tissue"):
            print(f"| {row['grid']} | {row['composition']} | {row['pose']} | {material} | " + " | ".join(
                f"{row[n][material]['median_pct']:.3f} / {row[n][material]['p95_pct']:.3f}" for n in algorithms) + " |")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "bench_projector_accuracy.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
