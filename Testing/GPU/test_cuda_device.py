"""GPU layer: tests that need a working CUDA device. Without one, each test skips and says why.

This layer is real but young: the device probe below checks that a CUDA device
can be reached and can run a kernel, and that the projector's own report
(``projector.cuda_status``) agrees. The CUDA projector's accuracy and speed
tests join this folder with the CUDA backend.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from DeepDRRSlicerLib.projector import cuda_status


def _launcher():
    """(name, module) of the first CUDA launcher that imports and sees a device, else skip with the reason."""
    reasons = []
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if count > 0:
            return "cupy", cupy
        reasons.append("cupy sees no CUDA device")
    except ImportError:
        reasons.append("cupy is not installed")
    except Exception as error:  # noqa: BLE001 - CUDA driver errors come in many types
        reasons.append(f"cupy cannot reach a CUDA device ({type(error).__name__}: {error})")
    try:
        import pycuda.driver as driver

        driver.init()
        if driver.Device.count() > 0:
            return "pycuda", driver
        reasons.append("pycuda sees no CUDA device")
    except ImportError:
        reasons.append("pycuda is not installed")
    except Exception as error:  # noqa: BLE001
        reasons.append(f"pycuda cannot reach a CUDA device ({type(error).__name__}: {error})")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        reasons.append("no NVIDIA driver (nvidia-smi not found)")
    else:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        reasons.append(f"nvidia-smi -L: {(listing.stdout or listing.stderr).strip() or 'no devices'}")
    pytest.skip("no usable CUDA device: " + "; ".join(reasons))


@pytest.mark.gpu
def test_a_cuda_device_runs_a_kernel():
    name, module = _launcher()
    values = np.arange(1 << 20, dtype=np.float32)
    if name == "cupy":
        result = module.asnumpy(module.asarray(values) * 2.0 + 1.0)
    else:
        from pycuda.compiler import SourceModule
        import pycuda.autoinit  # noqa: F401 - creates the context
        import pycuda.gpuarray as gpuarray

        kernel = SourceModule("__global__ void axpb(float *x, int n) { int i = blockIdx.x * blockDim.x + "
                              "threadIdx.x; if (i < n) x[i] = 2.0f * x[i] + 1.0f; }").get_function("axpb")
        device_values = gpuarray.to_gpu(values)
        kernel(device_values, np.int32(values.size), block=(256, 1, 1), grid=((values.size + 255) // 256, 1))
        result = device_values.get()
    assert np.array_equal(result, values * 2.0 + 1.0)


@pytest.mark.gpu
def test_projector_runs_on_the_device_it_reports():
    _launcher()
    available, why = cuda_status()
    if not available:
        pytest.skip(f"a CUDA device works, but the projector reports no CUDA backend: {why}")
    from DeepDRRSlicerLib.geometry import CArm
    from DeepDRRSlicerLib.materials import decompose
    from DeepDRRSlicerLib.projector import project
    from DeepDRRSlicerLib.volume import Volume

    hu = np.full((24, 24, 24), -1000.0, np.float32)
    hu[6:18, 6:18, 6:18] = 300.0
    volume = Volume.from_array(hu, spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0))
    geometry = CArm(width=32, height=32, pixel_spacing_mm=2.0).geometry()
    on_device = project(decompose(volume), geometry, device="auto")
    on_cpu = project(decompose(volume), geometry, device="cpu")
    assert on_device.backend.startswith("cuda"), on_device.backend
    assert np.allclose(on_device.line_integrals, on_cpu.line_integrals, rtol=1e-3, atol=1e-6)
