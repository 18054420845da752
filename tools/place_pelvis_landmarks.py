#!/usr/bin/env python
"""Place the bundled pelvic landmarks on the sample CT (developer tool).

Writes ``Resources/SampleData/pelvis_ct_3mm_landmarks.mrk.json`` (Slicer markups,
LPS millimetres) and, with ``--check-dir``, PNG slices with the points drawn so
that a person can check every point by eye.

These are semi-automatic developer placements, not expert annotations:

* femoral-head centres: least-squares sphere fit to the head/acetabulum cortical
  rim, found by casting rays from a seed inside each head (the head and the
  acetabular surface are concentric, so either rim gives the same centre);
  rays that meet metal (the left hip has a screw) or find no rim are dropped,
  outliers are trimmed, and the median over seven nearby seeds is kept. The
  fitted radius (about 28 mm) is that of the acetabular subchondral shell, not
  of the head; at 3 mm voxels expect about one voxel of error;
* pubic symphysis (superior point): the highest bone voxel in a thin midline
  strip in front of the bladder, at the bottom of the pelvis;
* anterior superior iliac spines: the most anterior bone voxel of each ilium
  above the acetabulum;
* sacral promontory and L5 body centre: read off a mid-sagittal slab by the
  developer (the constants below); the promontory is then snapped along the
  anterior-posterior line to the last bone sample of S1, and the L5 centre is
  the mean of the body's four endplate corners. Both lie on the midline
  halfway between the femoral-head centres.

The seeds are voxel indices (i, j, k) of the sample CT, chosen by looking at
axial, coronal and mid-sagittal slices. Usage::

    python tools/place_pelvis_landmarks.py [--ct CT.nii.gz] [--out FILE] [--check-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CT = REPO / "Resources" / "SampleData" / "pelvis_ct_3mm.nii.gz"
DEFAULT_OUT = REPO / "Resources" / "SampleData" / "pelvis_ct_3mm_landmarks.mrk.json"
SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
          "Resources/Schema/markups-schema-v1.0.3.json#")

BONE_HU = 200.0
METAL_HU = 1800.0

# Seeds (voxel index i, j, k) picked on slices of the sample CT. In that file the
# index axes run toward patient right (i), anterior (j) and superior (k).
SEED_RIGHT_FEMORAL_HEAD = (86, 44, 12)
SEED_LEFT_FEMORAL_HEAD = (34, 43, 13)
# Read off a 5-voxel mid-sagittal slab: the anterior end of the S1 superior
# endplate (j, k), and the four corners (j, k) of the L5 body (posterior-superior,
# anterior-superior, posterior-inferior, anterior-inferior); the L5/S1 disc is thin.
SEED_PROMONTORY_JK = (40, 38)
L5_ENDPLATE_CORNERS_JK = [(38, 55), (49, 50), (35, 48), (44, 42)]

PROVENANCE = ("Semi-automatic, by a developer-written script tools/place_pelvis_landmarks.py "
              "({method}) checked visually; not expert annotations.")


class Ct:
    def __init__(self, path: Path):
        self.image = sitk.ReadImage(str(path))
        self.hu = sitk.GetArrayFromImage(self.image).astype(np.float32)  # (k, j, i)
        self.spacing = np.array(self.image.GetSpacing())  # (i, j, k)
        direction = np.array(self.image.GetDirection()).reshape(3, 3)
        ras_direction = np.diag([-1.0, -1.0, 1.0]) @ direction
        # The seeds above assume the index axes point to +R, +A, +S.
        if not np.allclose(ras_direction, np.eye(3), atol=1e-3):
            raise SystemExit("This tool expects the sample CT's axis-aligned R/A/S index axes.")

    def lps(self, ijk) -> np.ndarray:
        return np.array(self.image.TransformContinuousIndexToPhysicalPoint([float(x) for x in ijk]))

    def sample(self, ijk_points: np.ndarray) -> np.ndarray:
        """Trilinear HU at continuous (N, 3) indices (i, j, k); -1000 outside."""
        coords = np.asarray(ijk_points, dtype=np.float64)[:, ::-1].T
        return ndimage.map_coordinates(self.hu, coords, order=1, mode="constant", cval=-1000.0)


def fibonacci_directions(count: int) -> np.ndarray:
    index = np.arange(count) + 0.5
    z = 1.0 - 2.0 * index / count
    radius = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * index
    return np.column_stack([radius * np.cos(phi), radius * np.sin(phi), z])


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere: |p|^2 = 2 c.p + (r^2 - |c|^2)."""
    design = np.column_stack([2.0 * points, np.ones(len(points))])
    target = np.sum(points * points, axis=1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    center = solution[:3]
    radius = float(np.sqrt(solution[3] + center @ center))
    return center, radius


def _sphere_from_seed(ct: Ct, metal: np.ndarray, seed_mm: np.ndarray, radii: np.ndarray,
                     directions: np.ndarray, iterations: int):
    centre_mm = seed_mm
    for _ in range(iterations):
        rims = []
        for direction in directions:
            samples = (centre_mm + radii[:, None] * direction) / ct.spacing
            if ndimage.map_coordinates(metal, samples[:, ::-1].T, order=0, mode="nearest").any():
                continue  # the ray touches the metal screw or its halo
            profile = ct.sample(samples)
            if profile.max() < BONE_HU + 200:
                continue  # no cortical rim on this ray
            rims.append(centre_mm + radii[int(np.argmax(profile))] * direction)
        rims = np.array(rims)
        keep = np.ones(len(rims), dtype=bool)
        for _ in range(8):  # trim outliers (rays along the neck, into the pelvis)
            centre_fit, radius = fit_sphere(rims[keep])
            residual = np.abs(np.linalg.norm(rims - centre_fit, axis=1) - radius)
            keep = residual < 2.5 * (1.4826 * np.median(residual[keep]) + 0.5)
        centre_mm = centre_fit
    return centre_mm, radius, int(keep.sum())


def femoral_head_centre(ct: Ct, seed_ijk, r_min_mm=15.0, r_max_mm=32.0, iterations=3):
    """Centre (continuous voxel index) of the sphere fitted to the cortical rim around a head.

    From a point inside the head, rays find the brightest sample between r_min and
    r_max: the subchondral cortex of the head or of the acetabulum, which are
    concentric. A trimmed least-squares sphere is fitted to those points and the fit
    is repeated from its own centre. To be independent of the exact seed, this is
    done from the seed and from six seeds 1.5 voxels away, and the median centre is
    kept; the spread is returned as a check.
    """
    metal = ndimage.binary_dilation(ct.hu >= METAL_HU, iterations=2).astype(np.uint8)
    radii = np.arange(r_min_mm, r_max_mm + 1e-9, 0.5)
    directions = fibonacci_directions(1000)
    offsets = np.vstack([np.zeros(3), 1.5 * np.eye(3), -1.5 * np.eye(3)])
    centres, radii_fit = [], []
    for offset in offsets:
        seed_mm = (np.asarray(seed_ijk, dtype=np.float64) + offset) * ct.spacing
        centre_mm, radius, _ = _sphere_from_seed(ct, metal, seed_mm, radii, directions, iterations)
        centres.append(centre_mm / ct.spacing)
        radii_fit.append(radius)
    centres = np.array(centres)
    centre = np.median(centres, axis=0)
    spread_mm = float(np.max(np.linalg.norm((centres - centre) * ct.spacing, axis=1)))
    return centre, float(np.median(radii_fit)), spread_mm


def bone_mask(ct: Ct) -> np.ndarray:
    """Bone voxels (not metal), opened once to drop isolated specks such as calcifications."""
    return ndimage.binary_opening((ct.hu > BONE_HU) & (ct.hu < METAL_HU), iterations=1)


def symphysis_superior(ct: Ct, bone: np.ndarray, mid_i: float, head_k: float) -> np.ndarray:
    """Highest bone voxel in a 3-voxel midline strip in the anterior half, below the head centres."""
    i0 = int(round(mid_i))
    strip = bone[:, :, i0 - 1:i0 + 2].any(axis=2)  # (k, j)
    anterior = np.arange(bone.shape[1]) >= bone.shape[1] // 2
    strip &= anterior[None, :]
    strip[int(head_k):, :] = False
    ks, js = np.nonzero(strip)
    top = ks.max()
    j_top = js[ks == top].mean()
    return np.array([mid_i, j_top, float(top)])


def anterior_superior_iliac_spine(ct: Ct, bone: np.ndarray, mid_i: float, head_k: float,
                                  side: str) -> np.ndarray:
    """Most anterior bone voxel of one ilium, from 20 to 100 mm above the head centres
    and at least 60 mm lateral of the midline."""
    k_lo = int(np.ceil(head_k + 20.0 / ct.spacing[2]))
    k_hi = int(np.floor(head_k + 100.0 / ct.spacing[2]))
    i = np.arange(bone.shape[2])
    lateral = (i >= mid_i + 60.0 / ct.spacing[0]) if side == "right" else (i <= mid_i - 60.0 / ct.spacing[0])
    region = bone.copy()
    region[:k_lo] = False
    region[k_hi + 1:] = False
    region &= lateral[None, None, :]
    ks, js, is_ = np.nonzero(region)
    front = js.max()
    pick = js == front
    return np.array([is_[pick].mean(), float(front), ks[pick].mean()])


def promontory(ct: Ct, mid_i: float) -> np.ndarray:
    """Anterior end of the S1 superior endplate, at the level read off the mid-sagittal
    slab, snapped along j to the last bone sample (> 150 HU) of that slab row."""
    j_seed, k = SEED_PROMONTORY_JK
    i0 = int(round(mid_i))
    row = ct.hu[k, :, i0 - 2:i0 + 3].mean(axis=1)
    j_edge = max(jj for jj in range(j_seed - 3, j_seed + 4) if row[jj] > 150.0)
    return np.array([mid_i, float(j_edge), float(k)])


def l5_centre(mid_i: float) -> np.ndarray:
    corners = np.array(L5_ENDPLATE_CORNERS_JK, dtype=np.float64)
    return np.array([mid_i, corners[:, 0].mean(), corners[:, 1].mean()])


def place(ct: Ct) -> list[dict]:
    right, r_radius, r_spread = femoral_head_centre(ct, SEED_RIGHT_FEMORAL_HEAD)
    left, l_radius, l_spread = femoral_head_centre(ct, SEED_LEFT_FEMORAL_HEAD)
    print(f"right femoral head: ijk {np.round(right, 2)}, rim sphere radius {r_radius:.1f} mm, "
          f"seed-to-seed spread {r_spread:.1f} mm")
    print(f"left femoral head:  ijk {np.round(left, 2)}, rim sphere radius {l_radius:.1f} mm, "
          f"seed-to-seed spread {l_spread:.1f} mm")
    mid_i = 0.5 * (right[0] + left[0])
    head_k = 0.5 * (right[2] + left[2])
    bone = bone_mask(ct)
    points = [
        ("R femoral head centre", right,
         "sphere fit to the head/acetabulum cortical rim"),
        ("L femoral head centre", left,
         "sphere fit to the head/acetabulum cortical rim, rays through the metal screw dropped"),
        ("Pubic symphysis (superior)", symphysis_superior(ct, bone, mid_i, head_k),
         "highest bone voxel of the midline strip in front of the bladder"),
        ("R ASIS", anterior_superior_iliac_spine(ct, bone, mid_i, head_k, "right"),
         "most anterior bone voxel of the right ilium above the acetabulum"),
        ("L ASIS", anterior_superior_iliac_spine(ct, bone, mid_i, head_k, "left"),
         "most anterior bone voxel of the left ilium above the acetabulum"),
        ("Sacral promontory", promontory(ct, mid_i),
         "anterior end of the S1 superior endplate, read off the mid-sagittal slab and snapped to the anterior bone edge"),
        ("L5 body centre", l5_centre(mid_i),
         "mean of the four L5 endplate corners picked on the mid-sagittal slab"),
    ]
    result = []
    for label, ijk, method in points:
        lps = ct.lps(ijk)
        result.append({"label": label, "ijk": ijk, "lps": lps, "method": method})
        ras = lps * np.array([-1.0, -1.0, 1.0])
        print(f"{label:28s} ijk {np.round(ijk, 2)}  RAS {np.round(ras, 1)}")
    return result


def markups_json(points: list[dict]) -> dict:
    control_points = []
    for index, point in enumerate(points, start=1):
        control_points.append({
            "id": str(index),
            "label": point["label"],
            "description": PROVENANCE.format(method=point["method"]),
            "associatedNodeID": "",
            "position": [round(float(x), 2) for x in point["lps"]],
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": True,
            "visibility": True,
            "positionStatus": "defined",
        })
    return {
        "@schema": SCHEMA,
        "markups": [{
            "type": "Fiducial",
            "coordinateSystem": "LPS",
            "coordinateUnits": "mm",
            "locked": True,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(control_points),
            "controlPoints": control_points,
            "measurements": [],
        }],
    }


def draw_checks(ct: Ct, points: list[dict], out_dir: Path) -> None:
    """Coronal, axial and sagittal slices through each point, displayed radiologically
    (patient right on the image's left, anterior/superior at the top)."""
    from PIL import Image, ImageDraw

    out_dir.mkdir(parents=True, exist_ok=True)
    scale = 4

    def to_image(array, lo=-200.0, hi=1200.0):
        pixels = (np.clip((array - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        image = Image.fromarray(pixels).resize((array.shape[1] * scale, array.shape[0] * scale),
                                               Image.NEAREST)
        return image.convert("RGB")

    n_i, n_j, n_k = ct.hu.shape[2], ct.hu.shape[1], ct.hu.shape[0]
    for number, point in enumerate(points, start=1):
        i, j, k = point["ijk"]
        views = {
            # coronal: rows = superior at top, columns = patient right on the left
            "coronal": (ct.hu[:, int(round(j)), :][::-1, ::-1], (n_i - 1 - i, n_k - 1 - k)),
            # axial: rows = anterior at top, columns = patient right on the left
            "axial": (ct.hu[int(round(k)), :, :][::-1, ::-1], (n_i - 1 - i, n_j - 1 - j)),
            # sagittal: rows = superior at top, columns = anterior on the right
            "sagittal": (ct.hu[:, :, int(round(i))][::-1, :], (j, n_k - 1 - k)),
        }
        tiles = []
        for name, (array, (x, y)) in views.items():
            image = to_image(array)
            draw = ImageDraw.Draw(image)
            cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
            draw.line([(cx - 10, cy), (cx - 3, cy)], fill=(255, 60, 60), width=2)
            draw.line([(cx + 3, cy), (cx + 10, cy)], fill=(255, 60, 60), width=2)
            draw.line([(cx, cy - 10), (cx, cy - 3)], fill=(255, 60, 60), width=2)
            draw.line([(cx, cy + 3), (cx, cy + 10)], fill=(255, 60, 60), width=2)
            draw.text((4, 4), f"{name}: {point['label']}", fill=(255, 255, 0))
            if name != "sagittal":
                draw.text((4, 18), "patient R", fill=(0, 255, 0))
            tiles.append(image)
        width = sum(t.width for t in tiles)
        height = max(t.height for t in tiles)
        sheet = Image.new("RGB", (width, height))
        x = 0
        for tile in tiles:
            sheet.paste(tile, (x, 0))
            x += tile.width
        sheet.save(out_dir / f"landmark_{number}.png")

    # One overview: coronal thick-slab maximum projection with every point.
    mip = ct.hu.max(axis=1)[::-1, ::-1]
    image = to_image(mip, 0.0, 1500.0)
    draw = ImageDraw.Draw(image)
    for number, point in enumerate(points, start=1):
        i, _, k = point["ijk"]
        cx, cy = (n_i - 1 - i + 0.5) * scale, (n_k - 1 - k + 0.5) * scale
        draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=(255, 60, 60), width=2)
        draw.text((cx + 7, cy - 6), f"{number} {point['label']}", fill=(255, 255, 0))
    draw.text((4, 4), "coronal MIP, radiological: patient R on the left", fill=(0, 255, 0))
    image.save(out_dir / "overview_coronal.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check-dir", type=Path, default=None,
                        help="write PNG slices through every point here")
    args = parser.parse_args(argv)
    ct = Ct(args.ct)
    points = place(ct)
    args.out.write_text(json.dumps(markups_json(points), indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.check_dir is not None:
        draw_checks(ct, points, args.check_dir)
        print(f"wrote check images to {args.check_dir}")


if __name__ == "__main__":
    main()
