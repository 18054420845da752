"""GPU layer: the CUDA projector through each launcher (CuPy, pycuda), on a real device.

Each test runs once per launcher and skips, saying why, where that launcher cannot reach a device.
The CT is the chest CT when ``DEEPDRR_CHEST_CT`` names its ``.npz`` (``benchmarks/gpu_check.sh``
prepares it: ``hu`` int16 [k, j, i] and ``ijk_to_ras``), else the bundled pelvis CT.

- the device agrees with the CPU default (numba) to 1e-3 relative, and with the same source compiled
  for the host (the CI's host shim) to 1e-5: the device computes what CI tests;
- slab-split renders equal the unsplit one bit for bit, batches equal single poses;
- results left on the device are shared with torch / CuPy without a copy (same device pointer);
- too little memory gives DeviceMemoryError with the sizes, and ``device='auto'`` falls back to the CPU.

``DEEPDRR_GPU_LOG`` (a folder) receives ``gpu_accuracy_<launcher>.json`` with the measured errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from DeepDRRSlicerLib import projector
from DeepDRRSlicerLib.cuda.backend import CudaProjector
from DeepDRRSlicerLib.cuda.launcher import DeviceArray, DeviceMemoryError
from DeepDRRSlicerLib.cuda.source import pose_array
from DeepDRRSlicerLib.geometry import CArm
from DeepDRRSlicerLib.materials import decompose
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.spectrum import tube_spectrum
from DeepDRRSlicerLib.volume import Volume

pytestmark = pytest.mark.gpu
GPU_VS_CPU = 1e-3
GPU_VS_HOST_SHIM = 1e-5
FLOOR = 1e-3


def _launcher(name: str):
    try:
        if name == "cupy":
            from DeepDRRSlicerLib.cuda.cupy_launcher import CupyLauncher

            return CupyLauncher()
        from DeepDRRSlicerLib.cuda.pycuda_launcher import PycudaLauncher

        return PycudaLauncher()
    except ImportError as error:
        pytest.skip(f"{name} is not installed ({error})")
    except Exception as error:  # noqa: BLE001 - driver errors come in many types
        pytest.skip(f"{name} cannot reach a CUDA device ({type(error).__name__}: {error})")


@pytest.fixture(scope="module", params=["cupy", "pycuda"])
def launcher(request):
    return _launcher(request.param)


def load_test_ct():
    """(Volume, name): the chest CT when DEEPDRR_CHEST_CT names its .npz, else the bundled pelvis CT."""
    path = os.environ.get("DEEPDRR_CHEST_CT")
    if path:
        data = np.load(path)
        return Volume.from_array(data["hu"].astype(np.float32), ijk_to_ras=data["ijk_to_ras"], source=path), \
            "chest CT"
    from DeepDRRSlicerLib.resources import sample_ct_path
    from DeepDRRSlicerLib.volume import load_volume

    return load_volume(sample_ct_path()), "bundled pelvis CT"


@pytest.fixture(scope="module")
def chest():
    volume, name = load_test_ct()
    materials = decompose(volume)
    center = tuple(volume.center_ras())
    geometries = [CArm(alpha_deg=a, beta_deg=b, isocenter_ras=center, width=256, height=256,
                       pixel_spacing_mm=298.0 / 256).geometry() for a, b in ((0, 0), (30, 10), (90, -15))]
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names)
    return name, materials, geometries, model


def _poses(materials, geometries):
    return pose_array([(*projector._ray_frame(materials, g), g.source, g.detector_origin, g.u, g.v)
                       for g in geometries])


def _render(launcher, materials, geometries, model, **options):
    gpu = CudaProjector(launcher)
    return gpu.render(materials.projector_layout(), _poses(materials, geometries), geometries[0].shape,
                      mu_log2=model.mu * projector.LOG2E, weights=model.weights, **options) + (gpu,)


def _worst_relative(measured, reference):
    reference = np.asarray(reference, dtype=np.float64)
    peak = np.abs(reference).max(axis=(-2, -1), keepdims=True)
    scale = np.maximum(np.abs(reference), FLOOR * np.maximum(peak, 1e-30))
    return float((np.abs(np.asarray(measured, dtype=np.float64) - reference) / scale).max())


def _log(launcher, prefix="gpu_accuracy", **values):
    """Merge ``values`` into DEEPDRR_GPU_LOG/<prefix>_<launcher>.json (when that folder is set)."""
    folder = os.environ.get("DEEPDRR_GPU_LOG")
    if folder:
        path = Path(folder) / f"{prefix}_{launcher.name}.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        previous.update(values)
        path.write_text(json.dumps(previous, indent=2))


def test_device_matches_the_cpu_default_and_the_host_shim(launcher, chest):
    name, materials, geometries, model = chest
    integrals, primary, _ = _render(launcher, materials, geometries, model)
    cpu = [projector.project(materials, g, primary_model=model, device="cpu") for g in geometries]
    assert cpu[0].backend == "cpu"
    errors = {"ct": name, "device": launcher.device_name(),
              "line_integrals_vs_cpu": _worst_relative(integrals, np.stack([c.line_integrals for c in cpu])),
              "primary_vs_cpu": _worst_relative(primary, np.stack([c.primary for c in cpu]))}
    try:
        from cuda_shim.host_launcher import HostLauncher, host_compiler
    except ImportError:
        host_compiler = None
    if host_compiler is not None and host_compiler() is not None:
        shim_integrals, shim_primary, _ = _render(HostLauncher(), materials, geometries, model)
        errors["line_integrals_vs_host_shim"] = _worst_relative(integrals, shim_integrals)
        errors["primary_vs_host_shim"] = _worst_relative(primary, shim_primary)
    _log(launcher, **errors)
    assert errors["line_integrals_vs_cpu"] <= GPU_VS_CPU and errors["primary_vs_cpu"] <= GPU_VS_CPU, errors
    if "line_integrals_vs_host_shim" in errors:
        assert errors["line_integrals_vs_host_shim"] <= GPU_VS_HOST_SHIM, errors
        assert errors["primary_vs_host_shim"] <= GPU_VS_HOST_SHIM, errors


def test_slabs_on_the_device_equal_the_whole_volume(launcher, chest):
    _, materials, geometries, model = chest
    whole, whole_primary, _ = _render(launcher, materials, geometries, model)
    layout = materials.projector_layout()
    per_pose = (len(materials.names) + 1) * 256 * 256 * 4 + 24 * 8
    limit = len(geometries) * per_pose + layout.nbytes // 3
    split, split_primary, gpu = _render(launcher, materials, geometries, model, memory_limit=limit,
                                        keep_on_device=True)
    assert gpu.last_plan.split and len(gpu.last_plan.slabs) >= 3
    assert np.array_equal(split.get(), whole) and np.array_equal(split_primary.get(), whole_primary)


def test_a_batch_equals_single_poses(launcher, chest):
    _, materials, geometries, model = chest
    batch, batch_primary, gpu = _render(launcher, materials, geometries, model)
    for index, geometry in enumerate(geometries):
        one, one_primary = gpu.render(materials.projector_layout(), _poses(materials, [geometry]), geometry.shape,
                                      mu_log2=model.mu * projector.LOG2E, weights=model.weights)
        assert np.array_equal(one[0], batch[index]) and np.array_equal(one_primary[0], batch_primary[index])


def test_results_are_shared_with_torch_and_cupy_without_a_copy(launcher, chest):
    _, materials, geometries, model = chest
    integrals, primary, _ = _render(launcher, materials, geometries, model, keep_on_device=True)
    assert isinstance(primary, DeviceArray) and primary.shape == (3, 256, 256)
    host = primary.get()
    pointer = int(primary.buffer.data.ptr) if launcher.name == "cupy" else int(primary.buffer.gpudata)
    shared = 0
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        tensor = torch.from_dlpack(primary)
        assert tensor.is_cuda and tensor.data_ptr() == pointer
        assert np.array_equal(tensor.cpu().numpy(), host)
        shared += 1
    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is not None:
        array = cupy.from_dlpack(integrals[1])
        assert array.shape == integrals.shape[1:] and np.array_equal(cupy.asnumpy(array), integrals.get()[1])
        shared += 1
    if not shared:
        pytest.skip("neither torch (with CUDA) nor cupy is installed to import the DLPack export")


def test_too_little_memory_is_reported_and_auto_falls_back(launcher, chest):
    _, materials, geometries, model = chest
    with pytest.raises(DeviceMemoryError, match="MiB is free|within the device memory limit"):
        _render(launcher, materials, geometries, model, memory_limit=1024, keep_on_device=True)
    projection = projector.project(materials, geometries[0], primary_model=model, device="auto",
                                   device_memory_limit=1024)
    if projection.backend.startswith("cuda"):
        pytest.skip("the probe picked another launcher than this one")
    assert projection.backend == "cpu" and any("rendered on the CPU instead" in w for w in projection.warnings)


def test_auto_and_cuda_pick_the_gpu(chest):
    _, materials, geometries, model = chest
    available, why = projector.cuda_status()
    if not available:
        pytest.skip(f"no launcher works: {why}")
    auto = projector.project(materials, geometries[0], primary_model=model, device="auto")
    cuda = projector.project(materials, geometries[0], primary_model=model, device="cuda")
    assert auto.backend.startswith("cuda-") and cuda.backend == auto.backend
    assert any(note.startswith("rendered on ") for note in auto.notes)
    assert np.array_equal(auto.primary, cuda.primary)
