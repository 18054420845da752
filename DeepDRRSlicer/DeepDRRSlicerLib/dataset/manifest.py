"""The dataset's index files: manifest.csv (one row per image), dataset.json, and the dataset card."""

from __future__ import annotations

import csv
import io
import json
from importlib import metadata

from .config import FORMAT_NAME, FORMAT_VERSION
from .plan import Item, Plan

BASE_COLUMNS = ("index", "key", "file", "offset", "ct_index", "ct", "alpha_deg", "beta_deg", "roll_deg", "sid_mm",
                "sod_mm", "isocenter_r", "isocenter_a", "isocenter_s", "seed", "landmarks_visible")

MEMBER_DOCS = {
    "line_integrals": ("float32", "(M, H, W)", "g/cm2", "line integral of each material (material_names order)"),
    "landmarks": ("float32", "(L, 4)", "px, px, mm, 0/1",
                  "u (column), v (row), depth along the principal axis, visible; NaN when the CT has no such landmark"),
    "heatmaps": ("float16", "(L, H, W)", "0-1", "Gaussian of peak 1 at each visible landmark (zero if not visible)"),
    "masks": ("uint8", "(S, H, W)", "0/1", "1 where the pixel's ray crosses the structure (path length > 0)"),
    "path_lengths": ("float32", "(S, H, W)", "mm", "length of the pixel's ray inside the structure"),
    "geometry.json": ("JSON", "", "RAS mm", "source, detector_origin, u, v, width, height, projection_matrix P (3x4)"),
    "json": ("JSON", "", "", "key, CT, pose, drawn physics, seed, settings used, sha256 of every other member"),
}


def manifest_row(item: Item, plan: Plan, file: str, offset, landmarks_visible) -> dict:
    pose = item.pose
    geometric = "geometry" not in pose
    row = {
        "index": item.index, "key": item.key, "file": file, "offset": offset, "ct_index": item.ct,
        "ct": plan.cts[item.ct].path,
        "alpha_deg": pose.get("alpha") if geometric else None,
        "beta_deg": pose.get("beta") if geometric else None,
        "roll_deg": pose.get("roll") if geometric else None,
        "sid_mm": item.physics.get("sid", pose.get("sid")) if geometric else None,
        "sod_mm": item.physics.get("sod", pose.get("sod")) if geometric else None,
        "isocenter_r": pose["isocenter"][0] if geometric else None,
        "isocenter_a": pose["isocenter"][1] if geometric else None,
        "isocenter_s": pose["isocenter"][2] if geometric else None,
        "seed": item.seed,
        "landmarks_visible": landmarks_visible,
    }
    for name in sorted(plan.config.randomize):
        row[name] = item.physics[name]
    return row


def manifest_columns(plan: Plan) -> list[str]:
    return [*BASE_COLUMNS, *sorted(plan.config.randomize)]


def manifest_csv(plan: Plan, rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=manifest_columns(plan), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue().encode()


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def package_version() -> str:
    try:
        return metadata.version("DeepDRRSlicerLib")
    except metadata.PackageNotFoundError:
        return "unknown"


def member_table(plan: Plan) -> dict:
    config = plan.config
    height, width = config.height, config.width
    members = {}
    for stage in config.stages:
        unit = "g/cm2" if stage.startswith("line_integral") else "detector units (see the engine's stage docs)"
        if stage == "primary":
            unit = "I/I0"
        members[f"{stage}.npy"] = {"dtype": "float32", "shape": [height, width], "units": unit,
                                   "description": f"stage '{stage}' of the simulation"}
    from ..pipeline import SimulationResult

    if "masks" in getattr(SimulationResult, "__dataclass_fields__", {}):
        members["truncation.npy"] = {
            "dtype": "uint8", "shape": [height, width], "units": "0/1",
            "description": "1 where the pixel's ray enters or leaves the CT through a face that cuts the body "
                           "(the image there does not show the whole patient)"}
    sizes = {"M": len(plan.material_names), "L": len(plan.landmark_labels), "S": len(plan.structures),
             "H": height, "W": width, "4": 4}
    for name, (dtype, shape, units, description) in MEMBER_DOCS.items():
        if name == "landmarks" and not plan.landmark_labels:
            continue
        if name == "heatmaps" and (not plan.landmark_labels or config.heatmap_sigma_px <= 0):
            continue
        if name in ("masks", "path_lengths") and not plan.structures:
            continue
        suffix = name if name.endswith("json") else f"{name}.npy"
        entry = {"dtype": dtype, "units": units, "description": description}
        if shape:
            entry["shape"] = [sizes[s.strip()] for s in shape.strip("()").split(",")]
        members[suffix] = entry
    return members


def dataset_json(plan: Plan, shard_records: list, rows: list, failed: list) -> bytes:
    data = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generator": {"package": "DeepDRRSlicerLib", "version": package_version()},
        "images": len(rows),
        "failed_images": len(failed),
        "shards": [{"file": f"shards/{r['file']}", "images": len(r["images"]), "bytes": r["bytes"],
                    "sha256": r["sha256"]} for r in shard_records],
        "members": member_table(plan),
        "stages": list(plan.config.stages),
        "material_names": list(plan.material_names),
        "landmark_labels": list(plan.landmark_labels),
        "structures": [{"id": label, "name": name} for label, name in plan.structures],
        "plan": plan.to_dict(),
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def dataset_card(plan: Plan, shard_records: list, rows: list, failed: list) -> bytes:
    config = plan.config
    lines = [
        "# Simulated X-ray dataset (DeepDRRSlicer)",
        "",
        f"{len(rows)} simulated fluoroscopy images of {sum(1 for c in plan.cts if c.status == 'ok')} CT(s), "
        f"{config.width} x {config.height} pixels, made by `deepdrr-slicer generate` "
        f"(DeepDRRSlicerLib {package_version()}) from seed {config.seed}. The same command and seed regenerate "
        "these files byte for byte.",
        "",
        "## Contents",
        "",
        f"- `shards/shard-NNNNNN.tar`: {len(shard_records)} tar shard(s) of up to {config.shard_size} images "
        "(WebDataset layout: members `<key>.<suffix>`); `shards/shard-NNNNNN.json` lists each shard's images.",
        "- `manifest.csv`: one row per image (key, shard file and byte offset, CT, pose, drawn physics, seed).",
        "- `dataset.json`: machine-readable description (members, shapes, units, the full plan).",
        "- `report.json`: the last run's report (skipped CTs, failed images, timings); not part of the data.",
        "",
        "Members of each sample:",
        "",
        "| member | dtype | shape | units | meaning |",
        "|---|---|---|---|---|",
    ]
    for suffix, entry in member_table(plan).items():
        shape = " x ".join(str(n) for n in entry.get("shape", [])) or "-"
        lines.append(f"| `<key>.{suffix}` | {entry['dtype']} | {shape} | {entry['units']} | {entry['description']} |")
    lines += [
        "",
        f"Materials: {', '.join(plan.material_names)} ({config.materials} decomposition).",
    ]
    if plan.landmark_labels:
        lines.append(f"Landmarks ({len(plan.landmark_labels)}): {', '.join(plan.landmark_labels)}; heatmap sigma "
                     f"{config.heatmap_sigma_px:g} px.")
    if plan.structures:
        lines.append(f"Structures ({len(plan.structures)}): "
                     + ", ".join(f"{name} (label {label})" for label, name in plan.structures)
                     + f"; path lengths by the `{config.mask_algorithm}` projector.")
    lines += [
        "",
        "## How the images were drawn",
        "",
    ]
    if config.sampling is not None:
        params = ", ".join(f"{k}={v.text()}" for k, v in config.sampling.parameters.items()) or "defaults"
        if config.sampling.is_grid:
            lines.append(f"- Poses: a grid over {params} for every CT.")
        else:
            lines.append(f"- Poses: {config.sampling.count} per CT, uniform in {params} (degrees, mm).")
    else:
        lines.append(f"- Poses: {len(config.poses)} listed in `{config.poses_source}`.")
    if config.jitter.iso_mm or config.jitter.roll_deg:
        lines.append(f"- Jitter: isocentre uniform within +/-{config.jitter.iso_mm:g} mm per axis, "
                     f"roll about the beam within +/-{config.jitter.roll_deg:g} degrees.")
    lines.append("- Isocentre: the landmarks' centroid when a CT has landmarks, else the CT's centre.")
    if config.randomize:
        lines.append("- Physics randomised per image: "
                     + ", ".join(f"{k}={v.text()}" for k, v in sorted(config.randomize.items())) + ".")
    filtration = ", ".join(f"{k} {v:g} mm" for k, v in config.filtration.items()) or "none"
    lines.append(f"- Base settings: {config.kvp:g} kVp, added filtration {filtration}, "
                 f"projector {config.algorithm or 'default'}.")
    lines += ["", "## Source CTs", "", "| # | CT | sha256 | images | status |", "|---|---|---|---|---|"]
    counts: dict = {}
    for row in rows:
        counts[row["ct_index"]] = counts.get(row["ct_index"], 0) + 1
    blind: dict = {}
    for failure in failed:
        if failure["reason"].startswith("no ray"):
            blind[failure["ct_index"]] = blind.get(failure["ct_index"], 0) + 1
    for info in plan.cts:
        status = info.status if info.status == "ok" else f"skipped: {info.reason}"
        if blind.get(info.index):
            status += f"; {blind[info.index]} pose(s) put no ray through it"
        lines.append(f"| {info.index} | `{info.path}` | {(info.sha256 or '-')[:16]} | {counts.get(info.index, 0)} | "
                     f"{status} |")
    lines += [
        "",
        "## Conventions",
        "",
        "World frame: patient RAS in mm. Images are (rows, columns) = (v, u), row 0 at the top, pixel centres at "
        "integer (u, v). `P` maps homogeneous RAS points to depth x (u, v, 1). At alpha = beta = 0 the view is "
        "AP (source posterior), the patient's head at the top and right on the image's left.",
        "",
        "## Loading",
        "",
        "```python",
        "from DeepDRRSlicerLib.dataset.torch_data import ShardDataset",
        "dataset = ShardDataset('.')      # this folder; dataset[i] is a dict of tensors and metadata",
        "```",
        "Any WebDataset or tar reader works too: each `.npy` member is a plain numpy file.",
        "",
        "## Limitations and licence",
        "",
        "Simulated images: physics as modelled by the engine version above (see its README for what each stage "
        "includes). The images derive from the source CTs; their licences and any patient-data terms apply.",
        "",
    ]
    if failed:
        lines[lines.index("## Conventions"):lines.index("## Conventions")] = [
            f"{len(failed)} planned image(s) were not made; `report.json` lists each with the reason.", ""]
    return ("\n".join(lines)).encode()


__all__ = ["manifest_row", "manifest_csv", "manifest_columns", "dataset_json", "dataset_card", "member_table"]
