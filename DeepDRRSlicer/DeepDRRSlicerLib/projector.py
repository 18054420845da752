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
from .volume import point_in_voxel_box

if TYPE_CHECKING:
    from .primary import PrimaryModel

# joseph: the default (smooth, accurate, fastest; see README "Projector" and benchmarks/);
# siddon: exact paths through the nearest-voxel model; trilinear: fixed-step march (DeepDRR's).
ALGORITHMS = ("joseph", "siddon", "trilinear")
DEFAULT_ALGORITHM = "joseph"
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
    if point_in_voxel_box(geometry.source, materials.ijk_to_ras, materials.density.shape):
        raise InputError(f"The X-ray source {np.round(geometry.source, 1).tolist()} (RAS mm) lies inside the CT volume.",
                         "Move the source out of the patient: increase SOD (--sod) or move the isocentre.")


def numba_status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels can run, and why not."""
    try:
        import numba  # noqa: F401
    except ImportError as error:
        return False, f"numba is not installed ({error}); using the slower pure-numpy projector"
    return True, ""


def project(materials: MaterialVolume, geometry: DetectorGeometry, *, primary_model: "PrimaryModel | None" = None,
            device: str = "auto", algorithm: str = DEFAULT_ALGORITHM, step_mm: float | None = None,
            progress=None, rows_per_chunk: int | None = None, cpu_kernel: str = "auto") -> Projection:
    """Cast one ray per pixel centre from the source through the materials.

    ``algorithm``: ``joseph`` (default), ``siddon`` or ``trilinear`` (``step_mm``,
    default the smallest voxel spacing). Soft material fractions are
    interpolated like densities by every algorithm. ``progress(fraction)`` is
    called between row blocks; raise SimulationCancelled from it to stop.
    ``cpu_kernel`` is ``auto`` (numba when importable), ``numba`` or ``numpy``
    (the fallback, which implements the default algorithm only).
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
    use_numba = cpu_kernel == "numba"
    if cpu_kernel == "auto":
        use_numba, why = numba_status()
        if not use_numba:
            notes.append(why)
    if step_mm is None:
        step_mm = float(np.min(np.linalg.norm(materials.ijk_to_ras[:3, :3], axis=0)))
    layout = materials.projector_layout()
    start = time.perf_counter()
    if use_numba:
        line_integrals, primary = _project_numba(materials, layout, geometry, primary_model, algorithm, step_mm,
                                                 progress, rows_per_chunk)
        backend = "cpu"
    else:
        if algorithm != DEFAULT_ALGORITHM:
            notes.append(f"the numpy fallback has no {algorithm} kernel; used {DEFAULT_ALGORITHM}")
            algorithm = DEFAULT_ALGORITHM
        line_integrals, primary = _project_numpy(materials, layout, geometry, primary_model, progress)
        backend = "cpu-numpy"
    return Projection(line_integrals=line_integrals, material_names=tuple(materials.names), primary=primary,
                      backend=backend, algorithm=algorithm, seconds=time.perf_counter() - start, notes=notes)


def _ray_frame(materials: MaterialVolume, geometry: DetectorGeometry):
    """Source, pixel (0, 0) and pixel steps in continuous voxel-index coordinates."""
    ras_to_ijk = np.linalg.inv(materials.ijk_to_ras)
    linear, offset = ras_to_ijk[:3, :3], ras_to_ijk[:3, 3]
    return (linear @ geometry.source + offset, linear @ geometry.detector_origin + offset,
            linear @ geometry.u, linear @ geometry.v)


# Rays per kernel launch: each launch wakes the threads (milliseconds on a busy machine), so small
# images (the 96^2 live-drag preview) take one launch; large ones report progress ~every 64k rays.
_RAYS_PER_LAUNCH = 65536


def _rows_per_launch(height: int, width: int) -> int:
    return max(8, min(height, -(-_RAYS_PER_LAUNCH // max(1, width))))


def _project_numba(materials, layout, geometry, primary_model, algorithm, step_mm, progress, rows_per_chunk):
    import numba

    from . import projector_cpu

    source_ijk, origin_ijk, u_ijk, v_ijk = _ray_frame(materials, geometry)
    height, width = geometry.shape
    line_integrals = np.zeros((len(materials.names), height, width), dtype=np.float32)
    if primary_model is not None:
        mu, weights = primary_model.mu * projector_cpu.LOG2E, primary_model.weights
        primary = np.zeros((height, width), dtype=np.float32)
    else:
        mu, weights = np.zeros((len(materials.names), 0)), np.zeros(0)
        primary = np.zeros((1, 1), dtype=np.float32)
    voxels = (layout.packed, layout.channels, layout.kind == "labels", layout.label_mask, layout.mixed_flag,
              *layout.shape_kji)
    chunk = rows_per_chunk or _rows_per_launch(height, width)
    for row_start in range(0, height, chunk):
        row_stop = min(height, row_start + chunk)
        rays = (source_ijk, origin_ijk, u_ijk, v_ijk, geometry.source, geometry.detector_origin, geometry.u,
                geometry.v, row_start, row_stop, mu, weights, line_integrals, primary)
        # one row per work item: rows differ in cost (short rays at the edges), so static halves
        # would leave a thread idle
        with numba.parallel_chunksize(1):
            if algorithm == "joseph":
                projector_cpu.joseph_rows(*voxels, *rays)
            elif algorithm == "siddon":
                projector_cpu.siddon_rows(*voxels, *rays)
            else:
                projector_cpu.trilinear_rows(*voxels, *rays, float(step_mm))
        if progress is not None:
            progress(row_stop / height)
    return line_integrals, (primary if primary_model is not None else None)


def _project_numpy(materials, layout, geometry, primary_model, progress):
    from . import projector_numpy

    ras_to_ijk = np.linalg.inv(materials.ijk_to_ras)
    source_ijk = ras_to_ijk[:3, :3] @ geometry.source + ras_to_ijk[:3, 3]
    centers = geometry.pixel_centers()
    height, width = geometry.shape
    line_integrals = np.zeros((len(materials.names), height, width), dtype=np.float32)
    chunk = max(1, height // 16)
    for row_start in range(0, height, chunk):
        rows = slice(row_start, min(height, row_start + chunk))
        ends_ras = centers[rows].reshape(-1, 3)
        ends_ijk = ends_ras @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
        lengths = np.linalg.norm(ends_ras - geometry.source, axis=1)
        values = projector_numpy.joseph_rays(layout, source_ijk, ends_ijk, lengths)
        line_integrals[:, rows, :] = values.T.reshape(len(materials.names), -1, width)
        if progress is not None:
            progress(rows.stop / height)
    primary = None
    if primary_model is not None:
        primary = primary_model.transmission(line_integrals).astype(np.float32)
    return line_integrals, primary


__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "Projection", "project", "cuda_status", "numba_status", "check_source_outside", "SimulationCancelled"]
