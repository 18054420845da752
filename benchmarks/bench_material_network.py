#!/usr/bin/env python3
"""Evidence for the material segmentation network (issue 9), printed as tables and saved as JSON.

    python benchmarks/bench_material_network.py            # all sections, ~5-10 min on 2 CPU cores
    python benchmarks/bench_material_network.py --quick    # fewer poses, no timing repeats

Sections (data: tools/material_data.py, fetched from PyPI, cached in tools/.cache/):

1. held-out bone Dice, network vs DeepDRR's thresholds (HU > 350), on the CT grid;
2. contrast: share of the aortic lumen called bone in the thorax CTA with a valve prosthesis
   (region: TotalSegmentator's aorta mask for that CT from the totalsegmentator 2.18.0 sdist,
   eroded by one voxel, voxels >= 150 HU, more than 10 mm from metal);
3. metal: the valve and the bundled pelvis CT's screw are metal after decomposition, not bone;
   the chest CT's undiluted contrast bolus is reported too (a known limit of the rule);
4. DRR level: bone line-integral images (density by DeepDRR's fit x bone fraction, g/cm2) from the
   ground-truth labels, the network and the thresholds, at >= 10 C-arm poses on the held-out volumes;
   mean absolute error against the labels;
5. inference time of the network decomposition of the whole chest CT (512 x 512 x 133) on this machine;
6. an unseen patient: the lumbar spine sample in the tptbox 1.1.0 wheel (1.5 mm, labels for L2-L4 only),
   share of the labelled vertebra voxels called bone (recall) and Dice, network vs thresholds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "DeepDRRSlicer"))

import material_data  # noqa: E402
from DeepDRRSlicerLib import material_network as mn  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm  # noqa: E402
from DeepDRRSlicerLib.materials import SOFT_TISSUE_MAX_HU, MaterialVolume, class_probabilities, decompose  # noqa: E402
from DeepDRRSlicerLib.hu_calibration import deepdrr_density  # noqa: E402
from DeepDRRSlicerLib.metal import metal_mask  # noqa: E402
from DeepDRRSlicerLib.projector import project  # noqa: E402
from DeepDRRSlicerLib.volume import Volume, load_volume  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def network_classes(hu, ijk_to_ras):
    """The class probabilities the decomposition uses (network, cleaned; thresholds near implants)."""
    return class_probabilities(Volume.from_array(hu, ijk_to_ras), "network", device="cpu"), {}


def section_dice(held_out) -> dict:
    rows = {}
    for ct in held_out:
        probabilities, _ = network_classes(ct.hu, ct.ijk_to_ras)
        truth = ct.classes() == 2
        rows[ct.name] = {"network": dice(probabilities.argmax(0) == 2, truth),
                         "threshold": dice(ct.hu > SOFT_TISSUE_MAX_HU, truth),
                         "bone_voxels": int(truth.sum())}
    return rows


def _erode(mask, iterations=1):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryErode(image, [iterations] * 3)).astype(bool)


def _distance_mm(mask, spacing):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                                               useImageSpacing=True))


def section_contrast(files) -> dict:
    cta = load_volume(material_data.CACHE / "extracted" / "totalsegmentator" / "tests" / "reference_files" /
                      "aorta_report" / "test_result" / "models" / "ct_cropped.nii.gz")
    aorta = material_data._label_array(files["aorta_mask"], cta.ijk_to_ras, cta.hu.shape) > 0
    hu = np.asarray(cta.hu)
    spacing = np.linalg.norm(cta.ijk_to_ras[:3, :3], axis=0)[::-1]
    metal = metal_mask(hu, cta.ijk_to_ras)
    far_from_metal = _distance_mm(metal, spacing) > 10.0 if metal.any() else np.ones(hu.shape, bool)
    lumen = _erode(aorta) & (hu >= 150) & far_from_metal
    probabilities, _ = network_classes(hu, cta.ijk_to_ras)
    network_bone = probabilities.argmax(0) == 2
    return {"region_voxels": int(lumen.sum()), "region_mean_hu": float(hu[lumen].mean()),
            "region_p95_hu": float(np.percentile(hu[lumen], 95)),
            "network_bone_share": float(network_bone[lumen].mean()),
            "network_mean_bone_probability": float(probabilities[2][lumen].mean()),
            "threshold_bone_share": float((hu[lumen] > SOFT_TISSUE_MAX_HU).mean())}


def section_metal(files, chest_ct) -> dict:
    rows = {}
    cta = load_volume(material_data.CACHE / "extracted" / "totalsegmentator" / "tests" / "reference_files" /
                      "aorta_report" / "test_result" / "models" / "ct_cropped.nii.gz")
    pelvis = material_data.pelvis_full(files)
    chest = Volume.from_array(chest_ct.hu, chest_ct.ijk_to_ras)
    for name, volume in (("thorax CTA valve prosthesis", cta), ("pelvis CT screw", pelvis),
                         ("chest CT (contrast bolus, no implant)", chest)):
        hu = np.asarray(volume.hu)
        materials = decompose(volume, "network", metal="titanium", device="cpu")
        high = hu >= 2500
        is_metal = (materials.fractions[-1] == 1.0) if materials.names[-1] == "titanium_alloy" else np.zeros_like(high)
        bone = materials.fractions[materials.names.index("bone")]
        rows[name] = {"voxels_at_or_above_2500_hu": int(high.sum()), "metal_voxels": int(is_metal.sum()),
                      "metal_share_of_those": float(is_metal[high].mean()) if high.any() else None,
                      "bone_fraction_max_in_metal": float(bone[is_metal].max()) if is_metal.any() else None}
    return rows


def bone_line_integrals(volume_hu, ijk_to_ras, bone_fraction, geometries) -> np.ndarray:
    """Line integrals (g/cm2) of DeepDRR-fit density x bone fraction, one image per geometry."""
    density = deepdrr_density(volume_hu) * np.asarray(bone_fraction, dtype=np.float32)
    one = MaterialVolume(density=density.astype(np.float32), labels=np.zeros(density.shape, np.uint8),
                         names=("bone",), ijk_to_ras=ijk_to_ras, method="evaluation")
    return np.stack([project(one, g, algorithm="siddon", device="cpu").line_integrals[0] for g in geometries])


def section_drr(held_out, poses) -> dict:
    rows = {}
    for ct in held_out:
        volume = Volume.from_array(ct.hu, ct.ijk_to_ras)
        centre = tuple(volume.center_ras())
        geometries = [CArm(alpha_deg=a, beta_deg=b, isocenter_ras=centre, width=160, height=160,
                           pixel_spacing_mm=2.5).geometry() for a, b in poses]
        probabilities, _ = network_classes(ct.hu, ct.ijk_to_ras)
        truth = bone_line_integrals(ct.hu, ct.ijk_to_ras, ct.classes() == 2, geometries)
        network = bone_line_integrals(ct.hu, ct.ijk_to_ras, probabilities[2], geometries)
        threshold = bone_line_integrals(ct.hu, ct.ijk_to_ras, ct.hu > SOFT_TISSUE_MAX_HU, geometries)
        seen = np.zeros(truth.shape, bool)
        for index, g in enumerate(geometries):   # pixels whose ray crosses the CT
            all_matter = bone_line_integrals(ct.hu, ct.ijk_to_ras, np.ones(ct.hu.shape), [g])[0]
            seen[index] = all_matter > 0
        mae_network = float(np.abs(network - truth)[seen].mean())
        mae_threshold = float(np.abs(threshold - truth)[seen].mean())
        rows[ct.name] = {"poses": len(geometries), "mean_bone_line_integral_g_cm2": float(truth[seen].mean()),
                         "mae_network_g_cm2": mae_network, "mae_threshold_g_cm2": mae_threshold,
                         "ratio_network_over_threshold": mae_network / mae_threshold}
    return rows


def section_unseen_spine() -> dict:
    volume, vertebrae = material_data.unseen_spine(quiet=True)
    hu = np.asarray(volume.hu)
    probabilities, _ = network_classes(hu, volume.ijk_to_ras)
    rows = {"ct_shape": list(hu.shape), "labelled_vertebra_voxels": int(vertebrae.sum()),
            "labelled_median_hu": float(np.median(hu[vertebrae]))}
    for name, bone in (("network", probabilities.argmax(0) == 2), ("threshold", hu > SOFT_TISSUE_MAX_HU)):
        rows[name] = {"recall": float(bone[vertebrae].mean()), "dice": dice(bone, vertebrae),
                      "bone_voxels_outside_the_labels": int((bone & ~vertebrae).sum())}
    return rows


def section_timing(chest_ct, repeats: int) -> dict:
    import torch

    volume = Volume.from_array(chest_ct.hu, chest_ct.ijk_to_ras)
    mn.load_model(device="cpu")   # loading once per session is not part of a decomposition
    network, total = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        working = mn.segment_working(volume.hu, volume.ijk_to_ras, device="cpu")
        network.append(time.perf_counter() - start)
        start = time.perf_counter()
        decompose(volume, "network", device="cpu", network_output=working)
        total.append(network[-1] + time.perf_counter() - start)
    return {"ct_shape": list(volume.hu.shape), "working_shape": working.info["working_shape"],
            "torch_threads": torch.get_num_threads(), "network_seconds_median": float(np.median(network)),
            "decomposition_seconds_median": float(np.median(total)), "repeats": repeats,
            "cuda_available": bool(torch.cuda.is_available())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("dice", "contrast", "metal", "drr", "timing", "spine"),
                        help="run one section (its figures are printed, the JSON is not rewritten)")
    args = parser.parse_args(argv)
    files = material_data.fetch(quiet=True)
    files["aorta_mask"] = material_data.extract_extra(
        "tests/reference_files/aorta_report/test_result/models/aorta.nii.gz")
    material_data.extract_extra("tests/reference_files/aorta_report/test_result/models/ct_cropped.nii.gz")
    chest = material_data.chest(files)
    _, chest_held_out = material_data.split_chest(chest)
    held_out = [chest_held_out, material_data.pelvis_labelled(files)]
    weights = mn.load_model(device="cpu")
    report = {"weights": str(weights.path), "weights_sha256": weights.sha256}
    poses = [(a, b) for b in (-20, 0, 20) for a in ((-45, 0, 45) if args.quick else (-60, -30, 0, 30, 60))]
    sections = [("held-out bone Dice", lambda: section_dice(held_out)),  # keys: below
                ("contrast-filled aorta called bone", lambda: section_contrast(files)),
                ("metal", lambda: section_metal(files, chest)),
                ("DRR-level bone line integrals", lambda: section_drr(held_out, poses)),
                ("inference time, whole chest CT", lambda: section_timing(chest, 1 if args.quick else 3)),
                ("unseen patient: lumbar vertebrae L2-L4 (tptbox 1.1.0)", section_unseen_spine)]
    keys = ("dice", "contrast", "metal", "drr", "timing", "spine")
    if args.only:
        sections = [sections[keys.index(args.only)]]
    for title, run in sections:
        start = time.perf_counter()
        report[title] = run()
        print(f"\n== {title} ({time.perf_counter() - start:.0f} s)")
        print(json.dumps(report[title], indent=2))
    if args.only:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "material_network.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
