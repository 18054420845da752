"""Which CUDA launcher works here, and if none does, exactly why and how to fix it.

Probed once per process. The NVIDIA driver is checked first, through its library (``libcuda.so.1``,
``nvcuda.dll``) with ctypes, so a machine without one answers in microseconds and never imports CuPy
or pycuda. Then the launchers are tried in order: CuPy first (a wheel, NVRTC, no compiler needed),
then pycuda; ``DEEPDRR_CUDA_LAUNCHER=pycuda`` (or ``cupy``) puts one first, and
``DEEPDRR_CUDA_LAUNCHER=none`` disables the GPU.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass

__all__ = ["CudaStatus", "CudaUnavailable", "cuda_status", "get_launcher", "driver_cuda_version",
           "install_hint", "cupy_requirements", "LAUNCHERS", "forget", "mark_broken"]

LAUNCHERS = ("cupy", "pycuda")
ENVIRONMENT_VARIABLE = "DEEPDRR_CUDA_LAUNCHER"


class CudaUnavailable(RuntimeError):
    """No CUDA launcher works here; the message lists each one's reason."""


@dataclass(frozen=True)
class CudaStatus:
    available: bool
    launcher: str | None = None    # "cupy" or "pycuda"
    device: str | None = None      # the GPU's name
    reason: str = ""               # why no launcher works (empty when one does)

    @property
    def backend(self) -> str | None:
        return f"cuda-{self.launcher}" if self.launcher else None


_lock = threading.RLock()
_launcher = None
_reasons: list | None = None
_broken: dict = {}   # launcher name -> why it failed after the probe (compile or launch error)


def _driver_library_names() -> list:
    if sys.platform.startswith("win"):
        return ["nvcuda.dll"]
    if sys.platform == "darwin":
        return []
    return ["libcuda.so.1", "libcuda.so"]


def _load_driver():
    """(library, None) or (None, why not)."""
    names = _driver_library_names()
    if not names:
        return None, "CUDA does not run on macOS"
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name), None
        except OSError as error:
            errors.append(str(error).split(":")[-1].strip() or name)
    return None, f"no NVIDIA driver ({names[0]} cannot be loaded: {errors[0]})"


def driver_cuda_version() -> tuple | None:
    """The CUDA version the installed driver supports, e.g. (13, 0); None without a driver."""
    library, _ = _load_driver()
    if library is None:
        return None
    version = ctypes.c_int(0)
    try:
        if library.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
    except AttributeError:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def _driver_problem() -> str | None:
    library, why = _load_driver()
    if library is None:
        return why
    try:
        result = library.cuInit(0)
    except AttributeError:
        return "the CUDA driver library has no cuInit (not an NVIDIA driver)"
    if result == 0:
        count = ctypes.c_int(0)
        if library.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value == 0:
            return "the NVIDIA driver sees no GPU"
        return None
    known = {100: "the NVIDIA driver sees no GPU (CUDA_ERROR_NO_DEVICE)",
             34: "only the CUDA toolkit's stub driver library was found, not a real driver (CUDA_ERROR_STUB_LIBRARY)",
             35: "the NVIDIA driver is older than this CUDA needs (CUDA_ERROR_INSUFFICIENT_DRIVER)",
             999: "the NVIDIA driver failed to initialise (CUDA_ERROR_UNKNOWN)"}
    return known.get(result, f"the NVIDIA driver failed to initialise (cuInit error {result})")


def launcher_order() -> tuple:
    wanted = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if wanted in LAUNCHERS:
        return (wanted,) + tuple(name for name in LAUNCHERS if name != wanted)
    return LAUNCHERS


def _make(name: str):
    if name == "cupy":
        from .cupy_launcher import CupyLauncher

        return CupyLauncher()
    from .pycuda_launcher import PycudaLauncher

    return PycudaLauncher()


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _probe() -> None:
    global _launcher, _reasons
    reasons = []
    if os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in ("none", "off", "cpu"):
        _launcher, _reasons = None, [f"the GPU is disabled ({ENVIRONMENT_VARIABLE}="
                                     f"{os.environ[ENVIRONMENT_VARIABLE]})"]
        return
    driver_problem = _driver_problem()
    if driver_problem:
        reasons.append(driver_problem)
    for name in launcher_order():
        if name in _broken:
            reasons.append(f"{name} failed earlier in this session ({_broken[name]})")
            continue
        if not _installed(name):
            reasons.append(f"{name} is not installed")
            continue
        if driver_problem:
            # installed, but useless without a driver; importing it would only cost time
            reasons.append(f"{name} is installed but needs the driver")
            continue
        try:
            _launcher = _make(name)
            _reasons = []
            return
        except ImportError as error:
            reasons.append(f"{name} cannot be imported ({error})")
        except Exception as error:  # noqa: BLE001 - CUDA libraries raise many error types
            reasons.append(f"{name} cannot use the GPU ({type(error).__name__}: {_first_line(error)})")
    _launcher, _reasons = None, reasons


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def get_launcher():
    """The working launcher, or CudaUnavailable naming every reason."""
    with _lock:
        if _reasons is None:
            _probe()
        if _launcher is None:
            raise CudaUnavailable("; ".join(_reasons) or "no CUDA launcher")
        return _launcher


def cuda_status() -> CudaStatus:
    try:
        launcher = get_launcher()
    except CudaUnavailable as error:
        return CudaStatus(False, reason=str(error))
    try:
        device = launcher.device_name()
    except Exception:  # noqa: BLE001
        device = None
    return CudaStatus(True, launcher=launcher.name, device=device)


def mark_broken(name: str, why: str) -> None:
    """A launcher failed after it was picked (e.g. its compiler is missing): do not use it again here."""
    global _launcher, _reasons
    with _lock:
        _broken[name] = why
        if _launcher is not None and _launcher.name == name:
            _launcher, _reasons = None, None


def forget() -> None:
    """Probe again on the next call (after installing CuPy, say)."""
    global _launcher, _reasons
    with _lock:
        _launcher, _reasons = None, None
        _broken.clear()


def cupy_requirements(driver_version: tuple | None = ...) -> list | None:
    """The pip requirements that give this machine's driver a CuPy launcher: CuPy for its CUDA major
    version and NVRTC (which CuPy compiles with; a CUDA toolkit has it too, a bare driver does not).
    None without a usable driver. ``driver_version`` defaults to the installed driver's."""
    version = driver_cuda_version() if driver_version is ... else driver_version
    if version is None or version[0] < 12:
        return None
    if version[0] == 12:
        return ["cupy-cuda12x", "nvidia-cuda-nvrtc-cu12"]
    return ["cupy-cuda13x", "nvidia-cuda-nvrtc>=13,<14"]


def install_hint() -> str:
    """How to get a working launcher on this machine, for error messages."""
    cpu = "Without an NVIDIA GPU, use --device cpu (device='cpu')."
    pycuda = "Or pycuda, which builds with nvcc: pip install 'DeepDRRSlicerLib[pycuda]'."
    requirements = cupy_requirements()
    if requirements is None:
        return ("On a machine with an NVIDIA GPU, install its driver (CUDA 12 or newer), then CuPy and NVRTC for "
                "the CUDA version that `nvidia-smi` shows: pip install cupy-cuda13x 'nvidia-cuda-nvrtc>=13,<14' "
                f"(CUDA 13) or pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12 (CUDA 12); wheels, no compiler. "
                f"{pycuda} {cpu}")
    version = driver_cuda_version()
    quoted = " ".join(f"'{r}'" if "<" in r or ">" in r else r for r in requirements)
    return (f"Install CuPy and NVRTC for this driver (CUDA {version[0]}.{version[1]}): pip install {quoted} "
            f"(wheels, no compiler). {pycuda} {cpu}")
