"""Experiment (issue 7): does a wider in-slice kernel than Joseph's bilinear one lower the error?

Joseph samples each slice of a ray's dominant axis and interpolates it bilinearly: in-slice
kernel tent = box_1 * box_1 per axis. experiment_prefilter.py tried a sharper kernel (the error
in oblique views rose). This tries softer ones, box_w * box_1 per in-slice axis (a trapezoid;
w = 1 is Joseph's tent), trading interpolation aliasing for blur, on the sharp partial-volume
phantoms of bench_projector_accuracy.py (total line integral; rays with chord > 30 mm).

The kernel here is a plain numpy re-implementation; with w = 1 it must reproduce the shipped
projector (the script prints the largest relative difference on the rays scored), which checks it. Also printed: the error of
the box-filtered phantom itself (what the partial-volume voxels permit; see
sharp_phantoms.SharpPhantom.box_filtered).

    PYTHONPATH=$PWD/DeepDRRSlicer:$PWD/Testing/Python .venv/bin/python benchmarks/experiment_inslice_kernel.py \
        [--widths 1 1.5 2] [--pixels 64]

Result (64 x 64 pixels; see benchmarks/README.md): w = 1.5 and 2 lower the median in some oblique
C-arm views (e.g. axial ellipsoid -100 HU at (-63, +24): 0.164 -> 0.077 %) but raise it along the
grid axes (0.06 -> 0.09-0.13 %) and raise the 95th percentile in most cases (cylinder 1200 HU along
i: 0.90 -> 1.27-1.74 %). Joseph's bilinear kernel is the best compromise of the family; no width
meets median < 0.1 % / p95 < 0.3 % everywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "Testing" / "Python"))

from phantoms import oblique_matrix  # noqa: E402
from sharp_phantoms import centred_grid, single_bodies, test_views, torso_phantom  # noqa: E402

from DeepDRRSlicerLib.materials import MaterialVolume  # noqa: E402
from DeepDRRSlicerLib.projector import project  # noqa: E402

CHORD_MM = 30.0
PADDING = 3


def trapezoid(offset, width):
    """box_width * box_1 at ``offset`` voxels: the overlap of [offset -+ width/2] with [-1/2, 1/2], / width."""
    low = np.maximum(offset - width / 2, -0.5)
    high = np.minimum(offset + width / 2, 0.5)
    return np.clip(high - low, 0.0, None) / width


def joseph_with_kernel(density_kji, ijk_to_ras, geometry, width):
    """Total line integral (g/cm2): one sample per slice plane of the dominant axis, in-slice kernel
    ``trapezoid(., width)`` on both in-slice axes, voxels clamped at the faces. The phantoms sit in
    air with margin, so the partial end cells Joseph treats specially hold no density here."""
    volume = np.pad(np.transpose(density_kji, (2, 1, 0)).astype(np.float64), PADDING, mode="edge")  # [i, j, k]
    counts = density_kji.shape[::-1]
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    source = ras_to_ijk[:3, :3] @ geometry.source + ras_to_ijk[:3, 3]
    ends_ras = geometry.pixel_centers().reshape(-1, 3)
    direction = ends_ras @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3] - source
    length_mm = np.linalg.norm(ends_ras - geometry.source, axis=1)
    dominant = np.argmax(np.abs(direction), axis=1)   # ties go to the lower axis, as in the projector
    taps = np.arange(-int(np.ceil((1 + width) / 2)), int(np.ceil((1 + width) / 2)) + 1)
    total = np.zeros(len(direction))
    for a in range(3):
        rays = np.nonzero(dominant == a)[0]
        b, c = (axis for axis in range(3) if axis != a)
        e = direction[rays]
        for n in range(counts[a]):
            t = (n - source[a]) / e[:, a]
            inside = (t > 0) & (t < 1)
            yb, yc = source[b] + t * e[:, b], source[c] + t * e[:, c]
            nb, nc = np.floor(yb + 0.5).astype(int), np.floor(yc + 0.5).astype(int)
            sample = np.zeros(len(rays))
            for tb in taps:
                weight_b = trapezoid(yb - (nb + tb), width)
                index_b = np.clip(nb + tb, -PADDING, counts[b] - 1 + PADDING) + PADDING
                for tc in taps:
                    weight_c = trapezoid(yc - (nc + tc), width)
                    index_c = np.clip(nc + tc, -PADDING, counts[c] - 1 + PADDING) + PADDING
                    index = [None, None, None]
                    index[a], index[b], index[c] = n + PADDING, index_b, index_c
                    sample += weight_b * weight_c * volume[index[0], index[1], index[2]]
            total[rays] += np.where(inside, sample, 0.0) / np.abs(e[:, a])
    return (total * length_mm * 0.1).reshape(geometry.shape)


def summary(measured, exact, rays) -> str:
    relative = np.abs(measured[rays] - exact[rays]) / exact[rays]
    return f"{np.median(relative) * 100:.3f}/{np.percentile(relative, 95) * 100:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--pixels", type=int, default=64)
    args = parser.parse_args(argv)
    grids = {"axial 1 mm": np.eye(4),
             "oblique 0.7x0.8x1.0 mm": oblique_matrix((0.7, 0.8, 1.0), (12.0, -20.0, 33.0), (0.0, 0.0, 0.0))}
    phantoms = single_bodies()
    phantoms["torso"] = torso_phantom()
    print("median / p95 relative error (%) of the total line integral, rays with chord > 30 mm")
    for grid_name, grid_matrix in grids.items():
        for phantom_name, phantom in phantoms.items():
            half = 75.0 if phantom_name == "torso" else 52.0
            matrix, shape = centred_grid(grid_matrix, half)
            density, fractions = phantom.voxelise(shape, matrix, supersample=5)
            materials = MaterialVolume.from_fractions(density, fractions, phantom.materials, matrix)
            for pose_name, geometry in test_views(matrix, args.pixels, 2 * half * 1020 / 530 / args.pixels).items():
                exact, _, chord = phantom.exact(geometry.source, geometry.pixel_centers())
                rays = chord > CHORD_MM
                shipped = project(materials, geometry).line_integrals.sum(axis=0)
                columns = [f"joseph {summary(shipped, exact, rays)}"]
                for width in args.widths:
                    measured = joseph_with_kernel(density, matrix, geometry, width)
                    columns.append(f"w={width:g} {summary(measured, exact, rays)}")
                    if width == 1.0:
                        difference = np.abs(measured - shipped)[rays] / exact[rays]
                        columns[-1] += f" (vs joseph {difference.max():.0e})"
                box = phantom.box_filtered(geometry.source, geometry.pixel_centers(), matrix)
                columns.append(f"box-filtered {summary(box, exact, rays)}")
                print(f"{grid_name:24s} {phantom_name:18s} {pose_name:14s} " + "  ".join(columns), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
