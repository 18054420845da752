"""Many poses of one CT in one call: ``Simulator.render_batch`` (dataset generation, training loops).

On the GPU the poses run in one launch and the line integrals can stay on the device
(``keep_on_device=True``): ``batch.line_integrals`` is then a ``cuda.DeviceArray``, shared with
torch or CuPy through DLPack without a copy (``torch.from_dlpack(batch.line_integrals)``).
``batch.primary`` is computed from them on the host with the same detector model as
``Simulator.render`` (numpy, which DLPack also shares), so both APIs give the same numbers.
``batch.result(i)`` gives pose i as a ``SimulationResult`` (numpy, one copy back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, describe
from .landmarks import project_landmarks

__all__ = ["BatchResult", "render_batch"]


@dataclass
class BatchResult:
    geometries: list
    primary: object               # (N, H, W) float32 numpy I/I0 (polychromatic mode), else None
    line_integrals: object        # (N, M, H, W) float32 g/cm2
    material_names: tuple
    landmarks: list | None        # per pose: list of ProjectedLandmark, or None
    timings: dict
    backend: str
    notes: list
    settings: object              # SimulationSettings
    warnings: list = field(default_factory=list)
    spectrum_summary: dict | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def result(self, index: int):
        """Pose ``index`` as a SimulationResult with the stages ``Simulator.render`` gives it."""
        from .pipeline import SimulationResult

        line_integrals = np.asarray(self.line_integrals[index])
        stages = {}
        if self.primary is not None:
            stages["primary"] = np.asarray(self.primary[index])
        else:
            stages["line_integral"] = line_integrals.sum(axis=0)
        for name, image in zip(self.material_names, line_integrals):
            stages[f"line_integral_{name}"] = image
        return SimulationResult(geometry=self.geometries[index], stages=stages, material_names=self.material_names,
                                landmarks=None if self.landmarks is None else self.landmarks[index],
                                timings=dict(self.timings), backend=self.backend, notes=list(self.notes),
                                settings=self.settings, warnings=list(self.warnings),
                                spectrum_summary=self.spectrum_summary)


def render_batch(simulator, geometries, *, landmarks=None, keep_on_device: bool = False,
                 device_memory_limit: int | None = None, progress=None) -> BatchResult:
    """See ``Simulator.render_batch``."""
    from .memory import estimate_memory, warn_if_large
    from .pipeline import _checked_geometry
    from .projector import project_batch

    if isinstance(geometries, (str, bytes)) or not hasattr(geometries, "__iter__"):
        raise InputError(f"geometries must be a list of poses, got {describe(geometries)}.",
                         "Pass [CArm(...).geometry(), ...] or a list of DetectorGeometry.")
    geometries = [_checked_geometry(g) for g in geometries]
    if not geometries:
        raise InputError("render_batch got no geometry.", "Pass a list of one or more poses.")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a function progress(fraction) or None, got {describe(progress)}.",
                         "Pass a callable, e.g. progress=lambda fraction: print(f'{fraction:.0%}').")
    height, width = geometries[0].shape
    if not keep_on_device:   # the outputs land in host memory: size them like one tall detector
        warn_if_large(estimate_memory(simulator.memory_context((height * len(geometries), width))),
                      f"Rendering {len(geometries)} poses of {width} x {height} pixels")
    timings = dict(simulator.timings)
    projection = project_batch(simulator.materials, geometries, device=simulator.settings.device,
                               algorithm=simulator.settings.algorithm, keep_on_device=keep_on_device,
                               device_memory_limit=device_memory_limit, progress=progress)
    timings["projector"] = projection.seconds
    primary = None
    if simulator.primary_model is not None:
        # the same detector model as render() (per-pixel air, flat field): one copy of each pose's
        # line integrals to the host, where the spectral sums run
        start = time.perf_counter()
        primary = np.stack([simulator.primary_image(geometry, np.asarray(projection.line_integrals[index]))
                            for index, geometry in enumerate(geometries)])
        timings["primary"] = time.perf_counter() - start
    projected = None
    if landmarks is not None:
        start = time.perf_counter()
        landmarks = list(landmarks)
        projected = [project_landmarks(landmarks, geometry) for geometry in geometries]
        timings["landmarks"] = time.perf_counter() - start
    return BatchResult(geometries=geometries, primary=primary, line_integrals=projection.line_integrals,
                       material_names=projection.material_names, landmarks=projected, timings=timings,
                       backend=projection.backend, notes=list(projection.notes), settings=simulator.settings,
                       warnings=list(simulator.warnings) + list(projection.warnings),
                       spectrum_summary=simulator.spectrum_summary)
