"""DiffDRR side of benchmarks/bench_cpu_projector.py (runs in the peers' venv, not ours).

Usage (the benchmark calls it; it needs torch + diffdrr, see benchmarks/README.md):

    python benchmarks/_diffdrr_worker.py --ct CT.nii.gz --geometry GEOM.json --out DIR
        [--n-points 500] [--repeats 3]

GEOM.json is a list of our detector geometries (RAS mm: source, detector_origin,
u, v, width, height), one per detector size. For each, the worker places
DiffDRR's C-arm so that its source and its pixel centres coincide with ours
(checked to a fraction of a micrometre), renders with the "trilinear" renderer,
times warm runs and saves the image as DIR/diffdrr_<H>x<W>.npy. It prints one
JSON line with the timings.

DiffDRR 0.6.1 conventions used here (read from its source, diffdrr/detector.py,
drr.py, data.py):
- ``read()`` keeps the volume's RAS affine but subtracts the volume centre
  (torchio ``get_center()``), so DiffDRR world = RAS - centre.
- In the camera frame the source is at the origin and pixel (row r, column c)
  sits at (x, y, z) = ((c - (W-1)/2) delx, -(r - (H-1)/2) dely, sdd) when
  ``reverse_x_axis=False`` (``True`` mirrors x, a reflection).
- A pose P (4x4) maps camera -> world after the fixed "AP" reorientation R0:
  world = P @ R0 @ camera.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def camera_to_world(geometry: dict, centre: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """4x4 camera -> DiffDRR-world matrix and (sdd, delx, dely) matching one of our geometries."""
    source = np.asarray(geometry["source"], dtype=np.float64)
    origin = np.asarray(geometry["detector_origin"], dtype=np.float64)
    u = np.asarray(geometry["u"], dtype=np.float64)
    v = np.asarray(geometry["v"], dtype=np.float64)
    width, height = int(geometry["width"]), int(geometry["height"])
    centre_pixel = origin + 0.5 * (width - 1) * u + 0.5 * (height - 1) * v
    delx, dely = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    beam = centre_pixel - source
    sdd = float(np.linalg.norm(beam))
    # camera x -> along a row (u), camera y -> up the image (-v), camera z -> beam
    rotation = np.column_stack([u / delx, -v / dely, beam / sdd])
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-9) or np.linalg.det(rotation) < 0:
        raise SystemExit("geometry is not a centred, square-pixel cone beam DiffDRR can represent")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = source - centre
    return matrix, sdd, delx, dely


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", required=True)
    parser.add_argument("--geometry", required=True, help="JSON list of our geometries (RAS)")
    parser.add_argument("--out", required=True, help="folder for the .npy images")
    parser.add_argument("--n-points", type=int, default=500, help="samples per ray (DiffDRR's default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timed warm runs per size (median reported)")
    args = parser.parse_args(argv)

    import diffdrr
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    geometries = json.loads(Path(args.geometry).read_text())

    centre = np.asarray(ScalarImage(args.ct).get_center(), dtype=np.float64)  # RAS, what read() subtracts
    subject = read(args.ct, orientation="AP")
    reorient = subject.reorient.numpy().astype(np.float64)

    results = []
    for geometry in geometries:
        width, height = int(geometry["width"]), int(geometry["height"])
        matrix, sdd, delx, dely = camera_to_world(geometry, centre)
        drr = DRR(subject, sdd=sdd, height=height, width=width, delx=delx, dely=dely,
                  reverse_x_axis=False, renderer="trilinear")
        pose = RigidTransform(torch.tensor(matrix @ np.linalg.inv(reorient), dtype=torch.float32))

        # Alignment check: DiffDRR's rays must start and end where ours do.
        with torch.no_grad():
            source, target = drr.detector(pose, None)
        origin = np.asarray(geometry["detector_origin"], dtype=np.float64)
        u = np.asarray(geometry["u"], dtype=np.float64)
        v = np.asarray(geometry["v"], dtype=np.float64)
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        ours = origin + cols[..., None] * u + rows[..., None] * v - centre
        theirs = target[0].double().numpy().reshape(height, width, 3)
        pixel_error_mm = float(np.abs(theirs - ours).max())
        source_error_mm = float(np.abs(source[0, 0].double().numpy()
                                       - (np.asarray(geometry["source"]) - centre)).max())
        if pixel_error_mm > 0.05 or source_error_mm > 0.05:
            raise SystemExit(f"DiffDRR geometry does not match ours: pixel error {pixel_error_mm} mm, "
                             f"source error {source_error_mm} mm")

        times = []
        with torch.no_grad():
            image = drr(pose, n_points=args.n_points)  # warm-up, untimed
            for _ in range(args.repeats):
                start = time.perf_counter()
                image = drr(pose, n_points=args.n_points)
                times.append(time.perf_counter() - start)
        array = image[0, 0].double().numpy().astype(np.float32)
        np.save(out / f"diffdrr_{height}x{width}.npy", array)
        results.append({"width": width, "height": height, "seconds": statistics.median(times),
                        "all_seconds": times, "n_points": args.n_points,
                        "pixel_error_mm": pixel_error_mm, "source_error_mm": source_error_mm})
        del drr

    print(json.dumps({"diffdrr_version": diffdrr.__version__, "torch_version": torch.__version__,
                      "torch_threads": torch.get_num_threads(), "renderer": "trilinear",
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
