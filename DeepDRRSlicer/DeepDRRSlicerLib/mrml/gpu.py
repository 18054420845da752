"""The GPU in the module: which backend rendered, and the opt-in CuPy installation.

The live view renders on the GPU whenever a CUDA launcher works (``device='auto'``,
the default). This file tells the panel what to show: the backend of a render, the
reason when the CPU had to do it, and whether to offer "Install CuPy (GPU)...":
only where an NVIDIA driver is present, no launcher works yet and CuPy is
missing. The installation goes through ``dependencies.install`` like the other
accelerators: only when the user asks, confirmed, and with Slicer's numpy pinned.
Nothing here imports CuPy, pycuda or Qt.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..cuda import probe
from ..projector import describe_backend
from . import dependencies

__all__ = ["GpuOffer", "gpu_offer", "install_cupy", "backend_line", "backend_tooltip"]


@dataclass(frozen=True)
class GpuOffer:
    """What "Install CuPy (GPU)..." would install, and why it is offered."""

    requirements: tuple        # pip requirement strings (CuPy and NVRTC for the driver's CUDA)
    driver_cuda: tuple         # (major, minor) the driver supports

    def describe(self) -> str:
        return (f"Your NVIDIA driver supports CUDA {self.driver_cuda[0]}.{self.driver_cuda[1]}, but no CUDA "
                f"launcher is installed, so the projector runs on the CPU. Installing "
                f"{' and '.join(self.requirements)} (wheels of about 160 MB, no compiler needed) lets it run on "
                "the GPU, typically 10-100 times faster. Slicer's numpy is kept as it is.")


def gpu_offer(driver_version: tuple | None = ..., cupy_installed: bool | None = None,
              launcher_works: bool | None = None) -> GpuOffer | None:
    """The CuPy installation to offer here, or None (no NVIDIA driver, a launcher works, or CuPy is there).

    The arguments default to this machine's state; tests pass them to cover other machines.
    """
    version = probe.driver_cuda_version() if driver_version is ... else driver_version
    if version is None:
        return None
    if cupy_installed is None:
        cupy_installed = importlib.util.find_spec("cupy") is not None
    if cupy_installed:
        return None
    if launcher_works is None:
        launcher_works = probe.cuda_status().available
    if launcher_works:
        return None
    requirements = probe.cupy_requirements(version)
    if requirements is None:
        return None
    return GpuOffer(tuple(requirements), tuple(version))


def install_cupy(slicer_module, offer: GpuOffer, confirm=None) -> bool:
    """Install the offer's packages on the user's request; True when the GPU works afterwards."""
    requirements = [dependencies.Requirement.parse(text) for text in offer.requirements]
    installed = dependencies.install(slicer_module, confirm=confirm, requirements=requirements)
    probe.forget()   # look again: the next render may use the GPU
    return installed and probe.cuda_status().available


def backend_line(result) -> str:
    """Where a render ran, in words: "GPU (CUDA through CuPy)" or "CPU (numba)"; the scatter Monte Carlo's
    backend follows when it ran elsewhere (e.g. the projector took the CPU for Siddon)."""
    line = describe_backend(result.backend)
    scatter = (getattr(result, "metrics", None) or {}).get("scatter") or {}
    scatter_backend = scatter.get("backend")
    if scatter_backend and scatter_backend != result.backend:
        line += f"; scatter: {describe_backend(scatter_backend)}"
    return line


def backend_tooltip(result) -> str:
    """The render's notes about its backend (why the CPU ran, which GPU), for a tooltip."""
    keywords = ("CUDA", "GPU", "numba", "numpy")   # also the Monte Carlo's fallback note
    return "\n".join(note for note in result.notes if any(word in note for word in keywords))
