"""The GPU side of ``projector.project``: try the CUDA backend, or say why the CPU must do it.

``device='auto'`` falls back to the CPU with a one-line note (no driver, no launcher, a compile
error) or, when the GPU runs out of memory, a warning; ``device='cuda'`` raises an InputError that
names what is missing and how to install it instead.
"""

from __future__ import annotations

from . import cuda
from .cuda.source import pose_array
from .errors import InputError, SimulationCancelled
from .projector import DEFAULT_ALGORITHM, LOG2E, _ray_frame

__all__ = ["project_on_gpu"]


def project_on_gpu(materials, geometries, primary_model, device, algorithm, progress, keep_on_device,
                   memory_limit, notes, warnings):
    """(line integrals, primary, backend) from the GPU, or None after noting why the CPU must do it."""
    if algorithm != DEFAULT_ALGORITHM:
        if device == "cuda":
            raise InputError(f"The CUDA projector implements the {DEFAULT_ALGORITHM} algorithm only, not {algorithm}.",
                             f"Use --algorithm {DEFAULT_ALGORITHM} on the GPU, or --device cpu for {algorithm}.")
        notes.append(f"the CUDA projector implements {DEFAULT_ALGORITHM} only; {algorithm} ran on the CPU")
        return None
    try:
        projector = cuda.projector_for()
    except cuda.CudaUnavailable as error:
        if device == "cuda":
            raise InputError(f"--device cuda: no CUDA launcher works here: {error}.", cuda.install_hint()) from None
        notes.append(f"no CUDA: {error}; used the CPU")
        return None
    layout = materials.projector_layout()
    poses = pose_array([(*_ray_frame(materials, g), g.source, g.detector_origin, g.u, g.v) for g in geometries])
    mu_log2 = weights = None
    if primary_model is not None:
        mu_log2, weights = primary_model.mu * LOG2E, primary_model.weights
    launcher = projector.launcher
    try:
        line_integrals, primary = projector.render(layout, poses, geometries[0].shape, mu_log2=mu_log2,
                                                   weights=weights, keep_on_device=keep_on_device,
                                                   memory_limit=memory_limit, progress=progress)
    except SimulationCancelled:
        raise
    except cuda.DeviceMemoryError as error:
        if device == "cuda":
            raise InputError(f"{error}.", "Close other programs that use the GPU, render fewer poses per batch or "
                             "fewer pixels, or use --device cpu.") from None
        warnings.append(f"{error}: rendered on the CPU instead")
        return None
    except Exception as error:  # noqa: BLE001 - compiler and driver errors come in many types
        if device == "cuda":
            raise
        why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        cuda.mark_broken(launcher.name, why)
        notes.append(f"the CUDA projector failed through {launcher.name} ({why}); used the CPU")
        return None
    try:
        notes.append(f"rendered on {launcher.device_name()} (CUDA through {launcher.name})")
    except Exception:  # noqa: BLE001 - the name is only for the report
        notes.append(f"rendered with CUDA through {launcher.name}")
    return line_integrals, primary, f"cuda-{launcher.name}"
