"""The pycuda launcher: ``projector.cu`` compiled by nvcc through ``pycuda.compiler.SourceModule``.

pycuda is an sdist built against the machine's CUDA, so it needs nvcc when installed and when a
kernel variant is first compiled (pycuda caches the binaries on disk). It runs in the device's
primary context, the one CuPy and torch use, so arrays pass between them through DLPack.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import dlpack
from .launcher import Launcher
from .source import KERNEL_NAME, defines, kernel_source

__all__ = ["PycudaLauncher"]


class PycudaLauncher(Launcher):
    name = "pycuda"

    def __init__(self, ordinal: int = 0):
        import pycuda.driver as driver

        driver.init()
        if driver.Device.count() < 1:
            raise RuntimeError("pycuda sees no CUDA device")
        self.driver = driver
        self.ordinal = ordinal
        self.device = driver.Device(ordinal)
        self.context = self.device.retain_primary_context()
        self._kernels = {}
        self._modules = []

    @contextlib.contextmanager
    def active(self):
        """Make the primary context current for the duration (pycuda needs one on this thread)."""
        self.context.push()
        try:
            yield
        finally:
            self.driver.Context.pop()

    def device_name(self) -> str:
        return self.device.name()

    def memory_info(self) -> tuple[int, int]:
        with self.active():
            free, total = self.driver.mem_get_info()
        return int(free), int(total)

    def kernel(self, n_materials: int, labels: bool):
        key = (n_materials, labels)
        if key not in self._kernels:
            from pycuda.compiler import SourceModule

            with self.active():
                module = SourceModule(kernel_source(), options=defines(n_materials, labels), no_extern_c=True)
                self._modules.append(module)
                self._kernels[key] = module.get_function(KERNEL_NAME)
        return self._kernels[key]

    def compile(self, source: str, name: str, options: tuple = ()):
        key = (source, name, tuple(options))
        if key not in self._kernels:
            from pycuda.compiler import SourceModule

            with self.active():
                module = SourceModule(source, options=list(options), no_extern_c=True)
                self._modules.append(module)
                self._kernels[key] = module.get_function(name)
        return self._kernels[key]

    def multiprocessors(self) -> int:
        return int(self.device.get_attribute(self.driver.device_attribute.MULTIPROCESSOR_COUNT))

    def upload(self, array: np.ndarray):
        import pycuda.gpuarray as gpuarray

        with self.active():
            return gpuarray.to_gpu(np.ascontiguousarray(array))

    def empty(self, shape, dtype):
        import pycuda.gpuarray as gpuarray

        with self.active():
            return gpuarray.empty(shape, dtype=dtype)

    def launch(self, kernel, grid, block, arguments) -> None:
        with self.active():
            kernel(*arguments, block=tuple(int(n) for n in block), grid=tuple(int(n) for n in grid))

    def download(self, buffer) -> np.ndarray:
        with self.active():
            return buffer.get()

    def synchronize(self) -> None:
        with self.active():
            self.driver.Context.synchronize()

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, self.driver.MemoryError) or (
            isinstance(error, self.driver.Error) and "out of memory" in str(error).lower())

    def dlpack(self, buffer, stream=None):
        self.synchronize()   # our work is on the legacy default stream; finish it before anyone reads
        return dlpack.dlpack_capsule(int(buffer.gpudata), buffer.shape, buffer.dtype, dlpack.CUDA, self.ordinal,
                                     buffer)

    def dlpack_device(self, buffer) -> tuple:
        return (dlpack.CUDA, self.ordinal)

    def index(self, buffer, key):
        with self.active():
            return buffer[key]
