"""Writing a simulation result to a folder: .npy per stage, PNG previews, JSON metadata."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import InputError
from .pipeline import SimulationResult


def display_image(stage: str, image: np.ndarray) -> np.ndarray:
    """8-bit preview. Detector-signal stages (I/I0) show dense matter dark, as a C-arm
    monitor does; line integrals show more material brighter. Like a C-arm's automatic
    window, the 1-99 percentile range is taken over the central 70 % of the field, from
    the pixels whose rays crossed the patient."""
    image = np.asarray(image, dtype=np.float64)
    if stage == "final":   # already windowed to [0, 1] (see noise.final_image)
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if stage in ("scatter", "spr", "scatter_relative_error"):   # linear, more is brighter
        high = float(np.percentile(image, 99.5))
        high = high if high > 0 else 1.0
        return (np.clip(image / high, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if stage.startswith("line_integral"):
        values = image
        in_body = values > 0.02 * values.max()
    else:
        values = np.log(np.clip(image, 1e-12, None))
        in_body = image < 0.95  # unattenuated air would take the window
    rows, cols = image.shape
    central = np.zeros(image.shape, dtype=bool)
    central[int(0.15 * rows):int(np.ceil(0.85 * rows)), int(0.15 * cols):int(np.ceil(0.85 * cols))] = True
    window_from = values.ravel()
    for region in (in_body & central, in_body):
        if region.sum() > 0.05 * values.size:
            window_from = values[region]
            break
    low, high = np.percentile(window_from, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path, image_uint8: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image_uint8, mode="L").save(path)


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("DeepDRRSlicerLib", "numpy", "numba", "SimpleITK", "xraydb"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


# Files a run may write; stale ones from an earlier run into the same folder are removed first.
_OUTPUT_PATTERNS = ("primary.npy", "primary.png", "line_integral*.npy", "line_integral*.png", "scatter*.npy",
                    "scatter*.png", "total.npy", "total.png", "noisy.npy", "noisy.png", "final.npy", "final.png",
                    "spr.npy", "spr.png", "landmarks.csv",
                    "landmarks.json", "overlay.png", "geometry.json", "summary.json")


def prepare_output_folder(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"Output path {out} exists and is not a folder.", "Give --out a folder (new or existing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot create the output folder {out}: {error.strerror or error}.",
                         "Give --out a folder you can write to.") from None
    for pattern in _OUTPUT_PATTERNS:
        for stale in out.glob(pattern):
            stale.unlink()
    return out


def write_result(result: SimulationResult, out_dir, parameters: dict | None = None) -> list[Path]:
    """Write every stage and the metadata; returns the files written."""
    from .landmarks import draw_overlay, write_landmarks_csv, write_landmarks_json

    out = prepare_output_folder(out_dir)
    written = []
    previews = {stage: display_image(stage, image) for stage, image in result.stages.items()}
    for stage, image in result.stages.items():
        np.save(out / f"{stage}.npy", np.ascontiguousarray(image, dtype=np.float32))
        save_png(out / f"{stage}.png", previews[stage])
        written += [out / f"{stage}.npy", out / f"{stage}.png"]
    result.geometry.save(out / "geometry.json")
    written.append(out / "geometry.json")
    if result.landmarks is not None:
        main_stage = next((s for s in ("final", "primary", "line_integral") if s in result.stages),
                          next(iter(result.stages)))
        write_landmarks_csv(result.landmarks, out / "landmarks.csv")
        write_landmarks_json(result.landmarks, result.geometry, out / "landmarks.json")
        draw_overlay(previews[main_stage], result.landmarks,
                     out / "overlay.png", title=main_stage)
        written += [out / "landmarks.csv", out / "landmarks.json", out / "overlay.png"]
    summary = result.summary()
    summary["parameters"] = parameters or {}
    summary["versions"] = versions()
    summary["geometry"] = result.geometry.to_dict()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    written.append(out / "summary.json")
    return written


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
