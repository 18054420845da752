"""Forward projection: per-material line integrals (g/cm2) and the primary image.

One call, several engines: ``device='auto'`` uses CUDA when a working device
and launcher exist, else the compiled CPU kernel, and reports which it used.
Nothing outside this file knows which backend ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, SimulationCancelled
from .geometry import DetectorGeometry
from .materials import MaterialVolume

if TYPE_CHECKING:
    from .primary import PrimaryModel

ALGORITHMS = ("siddon", "trilinear")
DEVICES = ("auto", "cpu")


@dataclass
class Projection:
    line_integrals: np.ndarray          # (M, H, W) float32, g/cm2
    material_names: tuple
    primary: np.ndarray | None          # (H, W) float32 I/I0, or None
    backend: str
    algorithm: str
    seconds: float
    notes: list = field(default_factory=list)

    @property
    def total_line_integral(self) -> np.ndarray:
        return self.line_integrals.sum(axis=0)


def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA backend can run here, and why not."""
    return False, "the CUDA projector is not part of this build yet; using the CPU kernel"


def check_source_outside(materials: MaterialVolume, geometry: DetectorGeometry) -> None:
    ijk = np.linalg.inv(materials.ijk_to_ras) @ np.append(geometry.source, 1.0)
    k, j, i = materials.density.shape
    if np.all(ijk[:3] > -0.5) and np.all(ijk[:3] < np.array([i, j, k]) - 0.5):
        raise InputError(f"The X-ray source {np.round(geometry.source, 1).tolist()} (RAS mm) lies inside the CT volume.",
                         "Move the source out of the patient: increase SOD (--sod) or move the isocentre.")


def project(materials: MaterialVolume, geometry: DetectorGeometry, *, primary_model: "PrimaryModel | None" = None,
            device: str = "auto", algorithm: str = "siddon", step_mm: float | None = None,
            progress=None, rows_per_chunk: int | None = None) -> Projection:
    """Cast one ray per pixel centre from the source through the materials.

    ``progress(fraction)`` is called between row blocks; raise
    SimulationCancelled from it to stop.
    """
    if device not in DEVICES:
        raise InputError(f"Unknown device {device!r}.", "Use --device auto or --device cpu.")
    if algorithm not in ALGORITHMS:
        raise InputError(f"Unknown projector algorithm {algorithm!r}.", f"Use one of {', '.join(ALGORITHMS)}.")
    if primary_model is not None and tuple(primary_model.material_names) != tuple(materials.names):
        raise ValueError("primary model and materials list different materials")
    check_source_outside(materials, geometry)
    notes = []
    if device == "auto":
        available, why = cuda_status()
        if not available:
            notes.append(why)
    start = time.perf_counter()
    from . import projector_cpu

    ras_to_ijk = np.linalg.inv(materials.ijk_to_ras)
    linear, offset = ras_to_ijk[:3, :3], ras_to_ijk[:3, 3]
    source_ijk = linear @ geometry.source + offset
    origin_ijk = linear @ geometry.detector_origin + offset
    u_ijk = linear @ geometry.u
    v_ijk = linear @ geometry.v

    height, width = geometry.shape
    line_integrals = np.zeros((len(materials.names), height, width), dtype=np.float32)
    if primary_model is not None:
        mu, weights = primary_model.mu * projector_cpu.LOG2E, primary_model.weights
        primary = np.zeros((height, width), dtype=np.float32)
    else:
        mu, weights = np.zeros((len(materials.names), 0)), np.zeros(0)
        primary = np.zeros((1, 1), dtype=np.float32)

    if step_mm is None:
        step_mm = float(np.min(np.linalg.norm(materials.ijk_to_ras[:3, :3], axis=0)))
    chunk = rows_per_chunk or max(8, height // 16)
    for row_start in range(0, height, chunk):
        row_stop = min(height, row_start + chunk)
        rays = (source_ijk, origin_ijk, u_ijk, v_ijk, geometry.source, geometry.detector_origin, geometry.u,
                geometry.v, row_start, row_stop, mu, weights, line_integrals, primary)
        if algorithm == "siddon":
            projector_cpu.siddon_rows(materials.packed_for_cpu(), *materials.density.shape, *rays)
        else:
            projector_cpu.trilinear_rows(materials.density, materials.labels, *rays, float(step_mm))
        if progress is not None:
            progress(row_stop / height)
    return Projection(line_integrals=line_integrals, material_names=tuple(materials.names),
                      primary=primary if primary_model is not None else None, backend="cpu",
                      algorithm=algorithm, seconds=time.perf_counter() - start, notes=notes)


__all__ = ["Projection", "project", "cuda_status", "check_source_outside", "SimulationCancelled"]
