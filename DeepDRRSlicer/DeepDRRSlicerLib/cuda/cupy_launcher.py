"""The CuPy launcher: ``projector.cu`` compiled by NVRTC through ``cupy.RawModule`` (no nvcc needed).

CuPy comes as a wheel per CUDA major version (``cupy-cuda12x``, ``cupy-cuda13x``); NVRTC is found in
the CUDA toolkit or in the ``nvidia-cuda-nvrtc`` wheel (``pip install "cupy-cuda13x[ctk]"``). Compiled
modules are cached by CuPy on disk (``~/.cupy/kernel_cache``), so only the first render compiles.
"""

from __future__ import annotations

import numpy as np

from .launcher import Launcher
from .source import KERNEL_NAME, defines, kernel_source

__all__ = ["CupyLauncher"]


class CupyLauncher(Launcher):
    name = "cupy"

    def __init__(self):
        import cupy

        self.cupy = cupy
        count = cupy.cuda.runtime.getDeviceCount()   # raises without a driver or device
        if count < 1:
            raise RuntimeError("cupy sees no CUDA device")
        self.device = cupy.cuda.Device()
        self._kernels = {}

    def device_name(self) -> str:
        name = self.cupy.cuda.runtime.getDeviceProperties(self.device.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def memory_info(self) -> tuple[int, int]:
        free, total = self.cupy.cuda.runtime.memGetInfo()
        # blocks CuPy's pool keeps for reuse are free to us
        return int(free) + int(self.cupy.get_default_memory_pool().free_bytes()), int(total)

    def kernel(self, n_materials: int, labels: bool):
        key = (n_materials, labels)
        if key not in self._kernels:
            module = self.cupy.RawModule(code=kernel_source(), options=tuple(defines(n_materials, labels)))
            self._kernels[key] = module.get_function(KERNEL_NAME)
        return self._kernels[key]

    def compile(self, source: str, name: str, options: tuple = ()):
        key = (source, name, tuple(options))
        if key not in self._kernels:
            module = self.cupy.RawModule(code=source, options=tuple(options))
            self._kernels[key] = module.get_function(name)
        return self._kernels[key]

    def multiprocessors(self) -> int:
        return int(self.cupy.cuda.runtime.getDeviceProperties(self.device.id)["multiProcessorCount"])

    def upload(self, array: np.ndarray):
        return self.cupy.asarray(np.ascontiguousarray(array))

    def empty(self, shape, dtype):
        return self.cupy.empty(shape, dtype=dtype)

    def launch(self, kernel, grid, block, arguments) -> None:
        kernel(tuple(int(n) for n in grid), tuple(int(n) for n in block), tuple(arguments))

    def download(self, buffer) -> np.ndarray:
        return self.cupy.asnumpy(buffer)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def is_out_of_memory(self, error: BaseException) -> bool:
        if isinstance(error, self.cupy.cuda.memory.OutOfMemoryError):
            return True
        runtime_error = getattr(self.cupy.cuda.runtime, "CUDARuntimeError", ())
        return isinstance(error, runtime_error) and "memory" in str(error).lower()

    def dlpack(self, buffer, stream=None):
        return buffer.__dlpack__(stream=stream)

    def dlpack_device(self, buffer) -> tuple:
        return tuple(buffer.__dlpack_device__())

    def release_pool(self) -> None:
        """Give the pool's cached blocks back to the driver (after a large job)."""
        self.cupy.get_default_memory_pool().free_all_blocks()
