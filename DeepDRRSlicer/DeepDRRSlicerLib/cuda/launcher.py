"""What the CUDA projector asks of a launcher, and the device arrays it returns.

A launcher compiles ``projector.cu`` and moves buffers; everything else (slabs, batches, memory
planning, the finish) is the backend's, shared by every launcher. Two ship: CuPy (``RawModule``, NVRTC)
and pycuda (``SourceModule``, nvcc). The test suite adds a third that runs the same source on the host.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Launcher", "DeviceArray", "DeviceMemoryError"]


class DeviceMemoryError(MemoryError):
    """The GPU cannot hold what a render needs."""

    def __init__(self, needed: int, free: int, what: str):
        self.needed, self.free, self.what = int(needed), int(free), what
        super().__init__(f"{what} needs {needed / 2**20:.0f} MiB of GPU memory, {free / 2**20:.0f} MiB is free")


class Launcher:
    """One way to run the kernel on one device. Buffers are the launcher's own array type."""

    name = "abstract"

    def device_name(self) -> str:
        raise NotImplementedError

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        raise NotImplementedError

    def kernel(self, n_materials: int, labels: bool):
        """The compiled kernel for this variant (compiled once per process, then cached)."""
        raise NotImplementedError

    def compile(self, source: str, name: str, options: tuple = ()):
        """Another kernel (the scatter Monte Carlo's): ``name`` from ``source``, cached per process."""
        raise NotImplementedError

    def multiprocessors(self) -> int:
        """Streaming multiprocessors, to size grid-stride launches."""
        return 1

    def upload(self, array: np.ndarray):
        raise NotImplementedError

    def empty(self, shape, dtype):
        raise NotImplementedError

    def launch(self, kernel, grid: tuple, block: tuple, arguments: list) -> None:
        """Launch; ``arguments`` are buffers and numpy scalars in the kernel's order."""
        raise NotImplementedError

    def download(self, buffer) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, MemoryError)

    # DLPack sharing of a buffer (see DeviceArray)
    def dlpack(self, buffer, stream=None):
        raise NotImplementedError

    def dlpack_device(self, buffer) -> tuple:
        raise NotImplementedError

    def index(self, buffer, key):
        return buffer[key]


class DeviceArray:
    """A result left on the GPU.

    Share it with no copy through DLPack: ``torch.from_dlpack(x)``, ``cupy.from_dlpack(x)``,
    ``jax.dlpack.from_dlpack(x)``. ``x.get()`` (or ``numpy.asarray(x)``) copies it to the host once.
    ``x[i]`` is the i-th image of a batch, still on the device. ``x.buffer`` is the launcher's own
    array (a ``cupy.ndarray`` or a ``pycuda.gpuarray.GPUArray``).
    """

    def __init__(self, launcher: Launcher, buffer, shape, dtype):
        self.launcher = launcher
        self.buffer = buffer
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def backend(self) -> str:
        return f"cuda-{self.launcher.name}"

    def get(self) -> np.ndarray:
        """A host (numpy) copy."""
        return self.launcher.download(self.buffer).reshape(self.shape)

    def __array__(self, dtype=None, copy=None):
        array = self.get()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        if copy:
            raise BufferError("this array is exported without copies; copy it after import if needed")
        return self.launcher.dlpack(self.buffer, stream=stream)

    def __dlpack_device__(self) -> tuple:
        return self.launcher.dlpack_device(self.buffer)

    def __getitem__(self, key) -> "DeviceArray":
        if not isinstance(key, (int, np.integer)):
            raise TypeError("index a device array by an integer (one image of a batch); use .get() for more")
        index = int(key)
        if not -self.shape[0] <= index < self.shape[0]:
            raise IndexError(f"index {index} out of range for {self.shape[0]} images")
        index %= self.shape[0]
        return DeviceArray(self.launcher, self.launcher.index(self.buffer, index), self.shape[1:], self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, on {self.launcher.device_name()})"
