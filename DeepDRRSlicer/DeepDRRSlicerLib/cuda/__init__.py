"""The CUDA backend of the projector: one kernel source (``projector.cu``), two launchers (CuPy, pycuda).

``projector.py`` and the scatter Monte Carlo (``scatter/``) call into this package; nothing else knows
which backend ran. See ``probe`` (which launcher works and why not), ``backend`` (memory planning, slabs, batches) and
``launcher`` (``DeviceArray``: results left on the GPU, shared through DLPack).
"""

from __future__ import annotations

import threading

from .launcher import DeviceArray, DeviceMemoryError
from .probe import CudaStatus, CudaUnavailable, cuda_status, get_launcher, install_hint, mark_broken

__all__ = ["CudaStatus", "CudaUnavailable", "DeviceArray", "DeviceMemoryError", "cuda_status", "install_hint",
           "projector_for", "release_device_memory", "mark_broken"]

_projectors: dict = {}
_lock = threading.Lock()


def projector_for(launcher=None):
    """The ``backend.CudaProjector`` of ``launcher`` (default: the working one; CudaUnavailable if none)."""
    from .backend import CudaProjector

    launcher = launcher if launcher is not None else get_launcher()
    with _lock:
        projector = _projectors.get(id(launcher))
        if projector is None or projector.launcher is not launcher:
            projector = _projectors[id(launcher)] = CudaProjector(launcher)
        return projector


def release_device_memory() -> None:
    """Free the volumes kept on the GPU between renders, the projector's and the scatter Monte Carlo's
    (they are uploaded again when needed)."""
    from ..scatter import kernel_cuda as scatter_tables

    scatter_tables.release_all()
    with _lock:
        for projector in _projectors.values():
            projector.release()
            release_pool = getattr(projector.launcher, "release_pool", None)
            if release_pool is not None:
                release_pool()
