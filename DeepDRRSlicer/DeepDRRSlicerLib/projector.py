"""Forward projection: per-material line integrals (g/cm2) and the primary image.

One call, several engines: ``device='auto'`` uses CUDA (``cuda/``: one kernel
source, launched by CuPy or pycuda) when a working device and launcher exist,
else the compiled CPU kernel, and reports which it used and why. ``'cuda'``
insists on the GPU and fails with what is missing; ``'cpu'`` never tries it.
Nothing outside this file knows which backend ran. ``project_batch`` renders
many poses of one volume in one launch and can leave the results on the GPU
(``cuda.DeviceArray``, shared with torch or CuPy through DLPack).
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
DEVICES = ("auto", "cpu", "cuda")
LOG2E = 1.4426950408889634


@dataclass
class Projection:
    line_integrals: np.ndarray          # (M, H, W) float32, g/cm2
    material_names: tuple
    primary: np.ndarray | None          # (H, W) float32 I/I0, or None
    backend: str
    algorithm: str
    seconds: float
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def total_line_integral(self) -> np.ndarray:
        return self.line_integrals.sum(axis=0)


@dataclass
class BatchProjection:
    """Many poses of one volume. Arrays are numpy, or ``cuda.DeviceArray`` when left on the GPU."""

    line_integrals: object              # (N, M, H, W) float32, g/cm2
    material_names: tuple
    primary: object                     # (N, H, W) float32 I/I0, or None
    backend: str
    algorithm: str
    seconds: float
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.line_integrals.shape[0])

    def __getitem__(self, index: int) -> Projection:
        """Pose ``index`` as a Projection of numpy arrays (one copy back per array if on the GPU)."""
        line_integrals = np.asarray(self.line_integrals[index])
        primary = None if self.primary is None else np.asarray(self.primary[index])
        return Projection(line_integrals=line_integrals, material_names=self.material_names, primary=primary,
                          backend=self.backend, algorithm=self.algorithm, seconds=self.seconds / max(1, len(self)),
                          notes=list(self.notes), warnings=list(self.warnings))


def cuda_status() -> tuple[bool, str]:
    """Whether the CUDA backend can run here: (True, "<launcher> on <GPU>") or (False, why not)."""
    from . import cuda

    status = cuda.cuda_status()
    if status.available:
        return True, f"{status.launcher} on {status.device}"
    return False, status.reason


def describe_backend(backend: str) -> str:
    """Words for a Projection's ``backend``, e.g. "GPU (CUDA through CuPy)"."""
    names = {"cuda-cupy": "GPU (CUDA through CuPy)", "cuda-pycuda": "GPU (CUDA through pycuda)",
             "cpu": "CPU (numba)", "cpu-numpy": "CPU (numpy fallback)"}
    return names.get(backend, backend)


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
            progress=None, rows_per_chunk: int | None = None, cpu_kernel: str = "auto",
            device_memory_limit: int | None = None) -> Projection:
    """Cast one ray per pixel centre from the source through the materials.

    ``algorithm``: ``joseph`` (default), ``siddon`` or ``trilinear`` (``step_mm``,
    default the smallest voxel spacing). Soft material fractions are
    interpolated like densities by every algorithm. ``progress(fraction)`` is
    called between row blocks; raise SimulationCancelled from it to stop.
    ``device``: ``auto`` (CUDA when it works, else the CPU, with the reason in
    ``notes``), ``cuda`` (the GPU or an InputError naming what is missing) or
    ``cpu``. The GPU runs the default algorithm; ``device_memory_limit`` (bytes)
    caps what it may use (a larger CT is then projected in slabs).
    ``cpu_kernel`` is ``auto`` (numba when importable), ``numba`` or ``numpy``
    (the fallback, which implements the default algorithm only).
    """
    _check_options(device, algorithm)
    if primary_model is not None and tuple(primary_model.material_names) != tuple(materials.names):
        raise ValueError("primary model and materials list different materials")
    check_source_outside(materials, geometry)
    notes, warnings = [], []
    if device != "cpu":
        start = time.perf_counter()
        on_gpu = _cuda_or_none(materials, [geometry], primary_model, device, algorithm, progress, False,
                               device_memory_limit, notes, warnings)
        if on_gpu is not None:
            line_integrals, primary, backend = on_gpu
            return Projection(line_integrals=line_integrals[0], material_names=tuple(materials.names),
                              primary=None if primary is None else primary[0], backend=backend,
                              algorithm=algorithm, seconds=time.perf_counter() - start, notes=notes,
                              warnings=warnings)
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
                      backend=backend, algorithm=algorithm, seconds=time.perf_counter() - start, notes=notes,
                      warnings=warnings)


def project_batch(materials: MaterialVolume, geometries, *, primary_model: "PrimaryModel | None" = None,
                  device: str = "auto", algorithm: str = DEFAULT_ALGORITHM, keep_on_device: bool = False,
                  device_memory_limit: int | None = None, progress=None) -> BatchProjection:
    """Project many poses of one volume (same detector size): on the GPU in one launch per batch.

    ``keep_on_device``: leave the arrays on the GPU as ``cuda.DeviceArray`` (share them with
    ``torch.from_dlpack`` / ``cupy.from_dlpack``; ``.get()`` copies to the host). On the CPU, or
    when the GPU cannot be used, the arrays are numpy (which also supports DLPack).
    """
    _check_options(device, algorithm)
    geometries = list(geometries)
    if not geometries:
        raise InputError("No geometry to render.", "Pass a list of one or more DetectorGeometry poses.")
    shapes = {tuple(g.shape) for g in geometries}
    if len(shapes) > 1:
        raise InputError(f"A batch needs one detector size; got {sorted(shapes)} (rows, columns).",
                         "Render poses with different detector sizes in separate batches.")
    if primary_model is not None and tuple(primary_model.material_names) != tuple(materials.names):
        raise ValueError("primary model and materials list different materials")
    for geometry in geometries:
        check_source_outside(materials, geometry)
    notes, warnings = [], []
    start = time.perf_counter()
    if device != "cpu":
        on_gpu = _cuda_or_none(materials, geometries, primary_model, device, algorithm, progress, keep_on_device,
                               device_memory_limit, notes, warnings)
        if on_gpu is not None:
            line_integrals, primary, backend = on_gpu
            return BatchProjection(line_integrals, tuple(materials.names), primary, backend, algorithm,
                                   time.perf_counter() - start, notes, warnings)
    projections = []
    for index, geometry in enumerate(geometries):
        step = None if progress is None else (lambda f, i=index: progress((i + f) / len(geometries)))
        projections.append(project(materials, geometry, primary_model=primary_model, device="cpu",
                                   algorithm=algorithm, progress=step))
    first = projections[0]
    primary = None if first.primary is None else np.stack([p.primary for p in projections])
    return BatchProjection(np.stack([p.line_integrals for p in projections]), tuple(materials.names), primary,
                           first.backend, first.algorithm, time.perf_counter() - start,
                           notes + [n for n in first.notes if n not in notes], warnings)


def check_device(device: str, algorithm: str = DEFAULT_ALGORITHM) -> None:
    """Raise now the InputError a render would raise for this device and algorithm (``cuda`` that
    cannot run, an unknown name), so callers can fail before slow preparation."""
    _check_options(device, algorithm)
    if device == "cuda":
        from .projector_cuda import require_cuda

        require_cuda(algorithm)


def _cuda_or_none(*args):
    from .projector_cuda import project_on_gpu

    return project_on_gpu(*args)


def _check_options(device, algorithm) -> None:
    if device not in DEVICES:
        raise InputError(f"Unknown device {device!r}.", "Use --device auto, --device cpu or --device cuda.")
    if algorithm not in ALGORITHMS:
        raise InputError(f"Unknown projector algorithm {algorithm!r}.", f"Use one of {', '.join(ALGORITHMS)}.")


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
    load_width = projector_cpu.vector_width(layout)
    chunk = rows_per_chunk or _rows_per_launch(height, width)
    for row_start in range(0, height, chunk):
        row_stop = min(height, row_start + chunk)
        rays = (source_ijk, origin_ijk, u_ijk, v_ijk, geometry.source, geometry.detector_origin, geometry.u,
                geometry.v, row_start, row_stop, mu, weights, line_integrals, primary)
        # one row per work item: rows differ in cost (short rays at the edges), so static halves
        # would leave a thread idle
        with numba.parallel_chunksize(1):
            if algorithm == "joseph":
                projector_cpu.joseph_rows(*voxels, *rays, load_width)
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


__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "DEVICES", "Projection", "BatchProjection", "project", "project_batch",
           "cuda_status", "describe_backend", "numba_status", "check_source_outside", "SimulationCancelled"]
