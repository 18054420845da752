"""The CUDA scatter Monte Carlo (``scatter/transport.cu``) without a GPU: the very source, compiled for the
host through the test-only shim (cuda_shim/), run through the engine's own CUDA path
(``ScatterTransport.run(launcher=...)``), must reproduce the numba kernel bit for bit: same Philox
streams per photon, same arithmetic (no FMA contraction on either side), integer tallies. So every
physics test of the CPU kernel covers the CUDA source too. On a GPU the device's libm rounds differently
in the last bits; Testing/GPU/test_cuda_scatter.py checks the statistical agreement there.
"""

from __future__ import annotations

import numpy as np
import pytest

from DeepDRRSlicerLib.detector import AntiScatterGrid, Detector
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.scatter import ScatterSettings, ScatterTransport, kernel_cuda
from DeepDRRSlicerLib.spectrum import tube_spectrum

from cuda_shim.host_launcher import HostLauncher, host_compiler

pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no C++ compiler (g++, c++ or clang++) on PATH "
                                "to build the CUDA source for the host")


def _geometry(pixels=24, spacing=12.0):
    edge = (pixels - 1) / 2 * spacing
    return DetectorGeometry(source=(0, -530.0, 0), detector_origin=(-edge, 490.0, edge), u=(spacing, 0, 0),
                            v=(0, 0, -spacing), width=pixels, height=pixels)


def _labelled_slab():
    density = np.ones((15, 10, 15), dtype=np.float32)
    matrix = np.diag([20.0, 10.0, 20.0, 1.0])
    matrix[:3, 3] = [-140.0, -45.0, -140.0]
    return MaterialVolume(density, np.ones(density.shape, dtype=np.uint8), ("air", "water"), matrix)


def _mixed_phantom():
    """Soft fractions of three materials with partial volume, an oblique grid, densities 0.3-1.9 g/cm3."""
    rng = np.random.default_rng(3)
    shape = (14, 12, 16)
    k, j, i = np.indices(shape)
    radius = np.sqrt(((i - 7.5) / 6.5) ** 2 + ((j - 5.5) / 5.0) ** 2 + ((k - 6.5) / 6.0) ** 2)
    bone = np.clip(1.5 - 2.0 * radius, 0.0, 1.0) * (rng.random(shape) > 0.3)
    soft = np.clip(1.0 - bone, 0.0, 1.0) * (radius < 1.1)
    air = 1.0 - bone - soft
    fractions = np.stack([air, soft, bone]).astype(np.float32)
    density = (0.0012 * air + 1.05 * soft + 1.9 * bone).astype(np.float32)
    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([9.0, 11.0, 8.0])
    matrix[:3, 3] = -matrix[:3, :3] @ (np.array(shape[::-1]) - 1) / 2
    return MaterialVolume.from_fractions(density, fractions, ("air", "soft tissue", "bone"), matrix)


def _transport(materials, grid=None):
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names, detector=detector)
    return ScatterTransport(materials, model, detector, grid)


def _assert_identical(cpu, shim):
    assert shim.backend == "cuda-host-shim" and cpu.backend == "cpu"
    for key in ("primary_raw", "scatter_raw", "scatter_photons_raw"):
        assert np.array_equal(cpu.per_photon[key], shim.per_photon[key]), key
    assert cpu.bookkeeping == shim.bookkeeping
    assert cpu.scatter.tobytes() == shim.scatter.tobytes()


@pytest.fixture(scope="module")
def host():
    return HostLauncher()


@pytest.mark.parametrize("forced", [False, True])
def test_cuda_source_reproduces_the_cpu_kernel_on_labels(host, forced):
    transport = _transport(_labelled_slab())
    settings = ScatterSettings(photons=30_000, seed=5, forced_detection=forced)
    cpu = transport.run(_geometry(), settings, threads=2)
    shim = transport.run(_geometry(), settings, launcher=host)
    _assert_identical(cpu, shim)
    assert shim.bookkeeping["compton"] > 1000 and shim.bookkeeping["scatter_at_detector"] > 100


@pytest.mark.parametrize("forced", [False, True])
def test_cuda_source_reproduces_the_cpu_kernel_on_fractions_with_a_grid(host, forced):
    materials = _mixed_phantom()
    assert materials.fractions is not None
    transport = _transport(materials, AntiScatterGrid(ratio=10.0, strips_per_cm=60.0))
    settings = ScatterSettings(photons=20_000, seed=2**40 + 7, forced_detection=forced)
    window = (2.0, 19.5, 4.0, 21.0)
    cpu = transport.run(_geometry(), settings, threads=3, beam_window=window)
    shim = transport.run(_geometry(), settings, launcher=host, beam_window=window)
    _assert_identical(cpu, shim)
    assert shim.bookkeeping["virtual_collisions"] > 0 and shim.bookkeeping["rayleigh"] > 0


def test_results_do_not_depend_on_the_launch_shape_or_batches(host, monkeypatch):
    transport = _transport(_labelled_slab())
    settings = ScatterSettings(photons=9_000, seed=8)
    wide = transport.run(_geometry(), settings, launcher=host)
    monkeypatch.setattr(kernel_cuda, "BLOCKS_PER_MULTIPROCESSOR", 1)
    monkeypatch.setattr(kernel_cuda, "THREADS_PER_BLOCK", 7)
    narrow = transport.run(_geometry(), settings, launcher=host)
    for key in ("primary_raw", "scatter_raw"):
        assert np.array_equal(wide.per_photon[key], narrow.per_photon[key]), key


def test_a_changed_seed_changes_the_result(host):
    transport = _transport(_labelled_slab())
    one = transport.run(_geometry(), ScatterSettings(photons=5_000, seed=1), launcher=host)
    two = transport.run(_geometry(), ScatterSettings(photons=5_000, seed=2), launcher=host)
    assert not np.array_equal(one.per_photon["scatter_raw"], two.per_photon["scatter_raw"])


def test_device_choice_without_a_gpu(monkeypatch):
    """``cuda`` says why no GPU can be used; ``auto`` falls back to the CPU; a bad name is an InputError."""
    from DeepDRRSlicerLib.cuda import CudaUnavailable
    from DeepDRRSlicerLib.cuda import probe
    from DeepDRRSlicerLib.errors import InputError

    monkeypatch.setenv(probe.ENVIRONMENT_VARIABLE, "none")
    probe.forget()
    try:
        transport = _transport(_labelled_slab())
        settings = ScatterSettings(photons=2_000, seed=1)
        with pytest.raises(CudaUnavailable, match="disabled"):
            transport.run(_geometry(), settings, device="cuda")
        assert transport.run(_geometry(), settings, device="auto").backend == "cpu"
        with pytest.raises(InputError, match="scatter device"):
            transport.run(_geometry(), settings, device="gpu")
    finally:
        monkeypatch.delenv(probe.ENVIRONMENT_VARIABLE)
        probe.forget()


def test_a_failing_gpu_falls_back_to_the_cpu_under_auto_and_raises_under_cuda():
    """A launcher whose compiler fails (e.g. NVRTC missing): ``auto`` says so in the result's notes and runs
    the CPU kernel (same images as a CPU run); ``cuda`` raises the launcher's error."""
    from DeepDRRSlicerLib.cuda import probe

    class BrokenCompiler(HostLauncher):
        name = "broken-for-test"

        def compile(self, source, name, options=()):
            raise RuntimeError("nvrtc: cannot load libnvrtc.so (test)")

    transport = _transport(_labelled_slab())
    settings = ScatterSettings(photons=3_000, seed=4)
    try:
        fallback = transport.run(_geometry(), settings, device="auto", launcher=BrokenCompiler())
        assert fallback.backend == "cpu"
        assert any("CUDA Monte Carlo failed through broken-for-test" in note and "libnvrtc" in note
                   for note in fallback.notes), fallback.notes
        cpu = transport.run(_geometry(), settings, device="cpu")
        assert np.array_equal(fallback.per_photon["scatter_raw"], cpu.per_photon["scatter_raw"])
        with pytest.raises(RuntimeError, match="libnvrtc"):
            transport.run(_geometry(), settings, device="cuda", launcher=BrokenCompiler())
    finally:
        probe.forget()


def test_release_device_memory_frees_the_tables_and_the_next_run_uploads_again(host):
    from DeepDRRSlicerLib import cuda

    transport = _transport(_labelled_slab())
    settings = ScatterSettings(photons=4_000, seed=9)
    before = transport.run(_geometry(), settings, launcher=host)
    tables = transport._device_tables[id(host)]
    assert tables.buffers is not None
    uploaded = host.uploaded_bytes
    cuda.release_device_memory()
    assert tables.buffers is None
    after = transport.run(_geometry(), settings, launcher=host)
    assert host.uploaded_bytes > uploaded + transport.density.nbytes   # the voxels went up again
    assert np.array_equal(before.per_photon["scatter_raw"], after.per_photon["scatter_raw"])
