"""Test-only: run ``projector.cu`` on the host, through the engine's own CUDA backend.

``HostLauncher`` implements the launcher interface (``DeepDRRSlicerLib.cuda.launcher.Launcher``) with
numpy arrays as "device" buffers and the kernel compiled by the host C++ compiler (g++, with
``cuda_host_shim.h`` mapping the CUDA built-ins), called through ctypes. So the backend's memory
planning, slabs, batches and finish run exactly as on a GPU; only the launcher differs. Its
``free_bytes`` is set by the test, to make the planner split a volume into slabs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import DeepDRRSlicerLib.scatter
from DeepDRRSlicerLib.cuda import dlpack
from DeepDRRSlicerLib.cuda.launcher import Launcher
from DeepDRRSlicerLib.cuda.source import KERNEL_FILE, defines

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "cuda_host_shim.h", HERE / "host_launch.cpp", KERNEL_FILE)
MC_KERNEL_FILE = Path(DeepDRRSlicerLib.scatter.__file__).with_name("transport.cu")
MC_SOURCES = (HERE / "cuda_host_shim.h", HERE / "host_transport.cpp", MC_KERNEL_FILE)


def host_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _flags(openmp: bool) -> list:
    flags = ["-O2", "-std=c++17", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
             "-Wno-unused-parameter", "-ffp-contract=off"]
    return flags + (["-fopenmp"] if openmp else [])


def build(n_materials: int, labels: bool, *, cache_dir: Path | None = None) -> Path:
    """Compile the kernel variant for the host (cached by the sources' hash); return the .so path."""
    return _build(SOURCES, HERE / "host_launch.cpp", KERNEL_FILE.parent, defines(n_materials, labels), cache_dir)


def build_transport(*, cache_dir: Path | None = None) -> Path:
    """Compile the scatter Monte Carlo's transport.cu for the host; return the .so path."""
    return _build(MC_SOURCES, HERE / "host_transport.cpp", MC_KERNEL_FILE.parent, [], cache_dir)


def _build(sources, main: Path, include: Path, variant: list, cache_dir: Path | None) -> Path:
    compiler = host_compiler()
    if compiler is None:
        raise FileNotFoundError("no C++ compiler (g++, c++ or clang++) on PATH")
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    digest.update(" ".join(variant).encode())
    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "deepdrr-cuda-host-shim")
    cache_dir.mkdir(parents=True, exist_ok=True)
    library = cache_dir / f"drr_{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library
    errors = []
    for openmp in (True, False):
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        command = [compiler, *_flags(openmp), f"-I{HERE}", f"-I{include}", *variant, str(main), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(partial, library)
            return library
        errors.append(f"$ {' '.join(command)}\n{result.stderr}")
    raise RuntimeError("the host shim does not compile:\n" + "\n".join(errors))


class _Kernel:
    def __init__(self, library: Path):
        self.library = ctypes.CDLL(str(library))
        function = self.library.shim_drr_joseph
        u32, i32, ptr = ctypes.c_uint32, ctypes.c_int32, ctypes.c_void_p
        function.argtypes = [u32, u32, u32, u32, u32, ptr, u32, u32, i32, i32, i32, i32, i32, ptr, i32, i32,
                             ptr, ptr, i32, ptr, ptr, i32]
        function.restype = None
        self.function = function


class _TransportKernel:
    def __init__(self, library: Path):
        self.library = ctypes.CDLL(str(library))
        function = self.library.shim_mc_transport
        function.argtypes = [ctypes.c_uint32, ctypes.c_uint32] + [ctypes.c_void_p] * 22
        function.restype = None
        self.function = function


class HostLauncher(Launcher):
    """The launcher interface on the host: buffers are numpy arrays, launches are ctypes calls."""

    name = "host-shim"

    def __init__(self, free_bytes: int = 8 * 2**30, total_bytes: int | None = None):
        self.free_bytes = int(free_bytes)
        self.total_bytes = int(total_bytes if total_bytes is not None else free_bytes)
        self._kernels = {}
        self.launches = []       # (grid, plane_first, plane_stop, flags) of every launch
        self.uploaded_bytes = 0

    def device_name(self) -> str:
        return "host (C++ shim)"

    def memory_info(self):
        return self.free_bytes, self.total_bytes

    def kernel(self, n_materials, labels):
        key = (n_materials, labels)
        if key not in self._kernels:
            self._kernels[key] = _Kernel(build(n_materials, labels))
        return self._kernels[key]

    def compile(self, source, name, options=()):
        if name != "mc_transport":
            raise ValueError(f"the host shim builds projector.cu and transport.cu only, not {name}")
        if "transport" not in self._kernels:
            self._kernels["transport"] = _TransportKernel(build_transport())
        return self._kernels["transport"]

    def multiprocessors(self):
        return max(1, os.cpu_count() or 1)

    def upload(self, array):
        copy = np.array(array, copy=True, order="C")
        self.uploaded_bytes += copy.nbytes
        return copy

    def empty(self, shape, dtype):
        return np.full(shape, np.nan, dtype=dtype)   # NaN: a pixel the kernel forgets shows up

    def launch(self, kernel, grid, block, arguments):
        if isinstance(kernel, _TransportKernel):
            assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arguments)
            kernel.function(int(grid[0]), int(block[0]), *[a.ctypes.data for a in arguments])
            return
        values = []
        for argument in arguments:
            if isinstance(argument, np.ndarray) and argument.ndim > 0:
                assert argument.flags.c_contiguous
                values.append(argument.ctypes.data)
            else:
                values.append(argument.item() if isinstance(argument, np.generic) else argument)
        self.launches.append((tuple(grid), values[6], values[7], values[16]))
        kernel.function(*[int(n) for n in grid], int(block[0]), int(block[1]), *values)

    def download(self, buffer):
        return np.array(buffer, copy=True)

    def synchronize(self):
        pass

    def dlpack(self, buffer, stream=None):
        return dlpack.dlpack_capsule(buffer.ctypes.data, buffer.shape, buffer.dtype, dlpack.CPU, 0, buffer)

    def dlpack_device(self, buffer):
        return (dlpack.CPU, 0)
