"""Render one planned image into a sample: chosen stages and every label, from the engine.

Everything here calls the engine's public API: ``pipeline.Simulator.render``
for the stages, line integrals and landmarks, and ``projector.project`` for
the label path lengths (the same projector, with unit density on the label
map's structures, so a structure's path length in mm is 10 x its "line
integral" in g/cm2).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, SimulationCancelled
from .plan import Item, Plan, effective_pose, geometry_misses_volume, item_geometry, load_ct_entry, settings_for

CM_TO_MM = 10.0
NO_RAY = "no ray through the CT: the image would be blank"


class ItemFailed(Exception):
    """This image cannot be made (the run goes on; the report lists it)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Sample:
    key: str
    arrays: dict        # member name (e.g. "primary") -> ndarray, in write order
    geometry: dict
    meta: dict

    def members(self) -> list[tuple[str, bytes]]:
        """(member suffix, bytes) in write order; the meta JSON (with sha256 of the others) is last."""
        members = [(f"{name}.npy", npy_bytes(array)) for name, array in self.arrays.items()]
        members.append(("geometry.json", json_bytes(self.geometry)))
        meta = dict(self.meta)
        meta["sha256"] = {suffix: hashlib.sha256(data).hexdigest() for suffix, data in members}
        members.append(("json", json_bytes(meta)))
        return members


def npy_bytes(array: np.ndarray) -> bytes:
    """The bytes np.save writes (format 1.0 header + C-order data), without copying through a stream."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue() + array.tobytes()


def json_bytes(data) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, allow_nan=False, default=_json_default) + "\n").encode()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def available_stages(settings, material_names) -> list[str]:
    """Stage names the pipeline can produce with ``settings`` (plus the line integrals)."""
    from .. import pipeline

    names = None
    if callable(getattr(pipeline, "available_stages", None)):
        names = list(pipeline.available_stages(settings))
    elif getattr(pipeline, "STAGES", None):
        names = list(pipeline.STAGES)
    if names is None:
        names = ["primary"] if settings.mode == "polychromatic" else ["line_integral"]
    extra = ["line_integral", *(f"line_integral_{name}" for name in material_names)]
    return [*names, *(name for name in extra if name not in names)]


def check_stages(plan: Plan) -> None:
    settings = settings_for(plan.config, {})
    known = available_stages(settings, plan.material_names)
    missing = [stage for stage in plan.config.stages if stage not in known]
    if missing:
        later = {"scatter", "total", "noisy", "final"} & set(missing)
        hint = (" (scatter and noise stages come with a newer engine)" if later else "")
        raise InputError(f"Stage(s) {', '.join(missing)} are not available{hint}.",
                         f"Choose --stages from: {', '.join(known)}.")


class SampleRenderer:
    """Renders planned items; keeps the current CT, its materials and simulators in memory."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config
        self._ct = None
        self._simulators: dict = {}
        self._render_takes_stages = "stages" in inspect.signature(_simulator_class().render).parameters

    def _load(self, ct: int):
        if self._ct is not None and self._ct[0] == ct:
            return self._ct[1]
        from ..materials import MaterialVolume, decompose

        self._ct = None
        self._simulators = {}
        info = self.plan.cts[ct]
        try:
            volume, landmarks, labels = load_ct_entry(self.config.cts[ct])
        except InputError as error:
            raise ItemFailed(f"CT {info.path} could not be read at render time: {error.problem}") from None
        materials = decompose(volume, self.config.materials, density_model=self.config.density_model,
                              metal=self.config.metal, device=self.config.device)
        label_materials = None
        if self.plan.structures:
            lookup = {label: n + 1 for n, (label, _) in enumerate(self.plan.structures)}
            indices = np.zeros(labels.shape if labels is not None else volume.hu.shape, dtype=np.uint8)
            if labels is not None:
                for label, index in lookup.items():
                    indices[labels == label] = index
            label_materials = MaterialVolume(
                density=np.ones(volume.hu.shape, dtype=np.float32), labels=indices,
                names=("background", *(name for _, name in self.plan.structures)),
                ijk_to_ras=volume.ijk_to_ras, method="label map")
        state = {"volume": volume, "materials": materials, "landmarks": landmarks, "labels": label_materials,
                 "has_labels": labels is not None}
        self._ct = (ct, state)
        return state

    def _simulator(self, state, physics: dict):
        key = json.dumps({k: v for k, v in sorted(physics.items()) if k not in ("sid", "sod")})
        simulator = self._simulators.get(key)
        if simulator is None:
            settings = settings_for(self.config, physics)
            simulator = _simulator_class()(state["volume"], settings, materials=state["materials"])
            if len(self._simulators) > 64:
                self._simulators.clear()
            self._simulators[key] = simulator
        return simulator

    def render(self, item: Item, cancel=None) -> Sample:
        from ..projector import project

        info = self.plan.cts[item.ct]
        geometry = item_geometry(item, self.config)
        if geometry_misses_volume(geometry, info.corners_ras):
            raise ItemFailed(NO_RAY)
        state = self._load(item.ct)
        simulator = self._simulator(state, item.physics)
        if "seed" in {f for f in asdict(simulator.settings)}:
            simulator.settings.seed = item.seed

        def progress(_fraction):
            if cancel is not None and cancel():
                raise SimulationCancelled()

        kwargs = {"landmarks": state["landmarks"], "progress": progress}
        if self._render_takes_stages:
            kwargs["stages"] = list(self.config.stages)
        try:
            result = simulator.render(geometry, **kwargs)
        except InputError as error:
            raise ItemFailed(f"{error.problem}") from None
        names = tuple(result.material_names)
        line_integrals = np.stack([result.stages[f"line_integral_{name}"] for name in names]).astype(np.float32)
        if not np.any(line_integrals):
            raise ItemFailed(NO_RAY)
        arrays = {}
        for stage in self.config.stages:
            if stage in result.stages:
                arrays[stage] = np.asarray(result.stages[stage], dtype=np.float32)
            elif stage == "line_integral":
                arrays[stage] = line_integrals.sum(axis=0)
            else:
                raise InputError(f"The pipeline did not produce stage {stage!r} (it made {', '.join(result.stages)}).",
                                 "Choose --stages among those.")
        arrays["line_integrals"] = line_integrals
        for name, mask in sorted(getattr(result, "masks", {}).items()):   # e.g. the truncation mask
            arrays[name if name not in arrays else f"{name}_mask"] = (np.asarray(mask) > 0).astype(np.uint8)
        height, width = geometry.shape
        if self.plan.landmark_labels:
            points = landmark_array(result.landmarks or [], self.plan.landmark_labels)
            arrays["landmarks"] = points
            if self.config.heatmap_sigma_px > 0:
                arrays["heatmaps"] = gaussian_heatmaps(points, width, height, self.config.heatmap_sigma_px)
        if state["labels"] is not None:
            projection = project(state["labels"], geometry, device=simulator.settings.device,
                                 algorithm=self.config.mask_algorithm, progress=progress)
            path_lengths = (projection.line_integrals[1:] * CM_TO_MM).astype(np.float32)
            arrays["masks"] = (path_lengths > 0).astype(np.uint8)
            arrays["path_lengths"] = path_lengths
        meta = {
            "key": item.key,
            "index": item.index,
            "ct": {"index": item.ct, "path": info.path, "sha256": info.sha256},
            "pose": effective_pose(item),
            "physics": item.physics,
            "seed": item.seed,
            "settings": _plain(asdict(simulator.settings)),
            "stages": list(self.config.stages),
            "material_names": list(names),
            "landmark_labels": list(self.plan.landmark_labels),
            "structures": [{"id": label, "name": name} for label, name in self.plan.structures],
            # a CT without a label map still gets (all-zero) masks so batches stack: mask its loss out
            "labelled": bool(state["has_labels"]),
            "arrays": {name: {"dtype": str(a.dtype), "shape": list(a.shape)} for name, a in arrays.items()},
            "backend": result.backend,
            "warnings": list(result.warnings),
        }
        return Sample(key=item.key, arrays=arrays, geometry=geometry.to_dict(), meta=meta)


def _simulator_class():
    from ..pipeline import Simulator

    return Simulator


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def landmark_array(projected, labels) -> np.ndarray:
    """(L, 4) float32 [u, v, depth_mm, visible] in the dataset's label order; NaN for a label
    this CT lacks (visible 0)."""
    result = np.full((len(labels), 4), np.nan, dtype=np.float32)
    result[:, 3] = 0.0
    position = {label: n for n, label in enumerate(labels)}
    for point in projected:
        n = position.get(point.label)
        if n is not None:
            result[n] = (point.u, point.v, point.depth_mm, 1.0 if point.visible else 0.0)
    return result


def gaussian_heatmaps(points: np.ndarray, width: int, height: int, sigma_px: float) -> np.ndarray:
    """(L, H, W) float16 Gaussians of peak 1 at each visible landmark's (u, v); zero when not visible."""
    maps = np.zeros((len(points), height, width), dtype=np.float16)
    columns = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)
    for n, (u, v, _depth, visible) in enumerate(points):
        if visible > 0:
            gx = np.exp(-0.5 * ((columns - u) / sigma_px) ** 2)
            gy = np.exp(-0.5 * ((rows - v) / sigma_px) ** 2)
            maps[n] = np.outer(gy, gx).astype(np.float16)
    return maps


__all__ = ["Sample", "SampleRenderer", "ItemFailed", "available_stages", "check_stages", "landmark_array",
           "gaussian_heatmaps", "npy_bytes", "json_bytes", "NO_RAY"]
