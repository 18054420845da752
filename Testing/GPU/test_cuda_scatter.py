"""GPU layer: the scatter Monte Carlo (``scatter/transport.cu``) through each launcher, on a real device.

CI runs the same source on the host and checks it equals the numba kernel bit for bit
(Testing/Python/test_scatter_cuda.py). On a GPU, log/exp/sin/cos round differently in the last bits, so
a rare history takes another branch: device and CPU must agree statistically, and the device must be
exact in what does not depend on rounding: energy and photon bookkeeping, and the same images for the
same seed whatever the launch shape.

``DEEPDRR_GPU_LOG`` (a folder) receives ``gpu_scatter_<launcher>.json`` with the measured figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from DeepDRRSlicerLib.detector import Detector
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.materials import MaterialVolume
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.scatter import ScatterSettings, ScatterTransport, kernel_cuda
from DeepDRRSlicerLib.spectrum import tube_spectrum

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "Python"))   # the engine layer's bookkeeping check
from test_cuda_projector import _launcher, load_test_ct  # noqa: E402
from test_cuda_projector import _log as log  # noqa: E402
from test_scatter import analytic_primary_per_tally_pixel, assert_bookkeeping_balances  # noqa: E402

pytestmark = pytest.mark.gpu
NAMES = ("air", "water")


@pytest.fixture(scope="module", params=["cupy", "pycuda"])
def launcher(request):
    return _launcher(request.param)


@pytest.fixture(scope="module")
def water_20cm():
    """20 cm of water (labels) between a 90 kV source at 530 mm and a CsI panel 490 mm beyond the centre."""
    thickness, half, voxel = 200.0, 150.0, 10.0
    n_lat, n_ax = int(2 * half / voxel), int(thickness / voxel)
    density = np.ones((n_lat, n_ax, n_lat), dtype=np.float32)
    matrix = np.diag([voxel, voxel, voxel, 1.0])
    matrix[:3, 3] = [-half + voxel / 2, -thickness / 2 + voxel / 2, -half + voxel / 2]
    materials = MaterialVolume(density, np.ones(density.shape, dtype=np.uint8), NAMES, matrix)
    pixels, spacing = 32, 300.0 / 32
    edge = (pixels - 1) / 2 * spacing
    geometry = DetectorGeometry(source=(0, -530.0, 0), detector_origin=(-edge, 490.0, edge), u=(spacing, 0, 0),
                                v=(0, 0, -spacing), width=pixels, height=pixels)
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), NAMES, detector=detector)
    return ScatterTransport(materials, model, detector), geometry


def _log(launcher, **values):
    log(launcher, prefix="gpu_scatter", **values)


@pytest.mark.parametrize("forced", [False, True])
def test_device_bookkeeping_balances_exactly(launcher, water_20cm, forced):
    transport, geometry = water_20cm
    result = transport.run(geometry, ScatterSettings(photons=300_000, seed=5, forced_detection=forced),
                           launcher=launcher)
    assert result.backend == f"cuda-{launcher.name}"
    book = result.bookkeeping
    assert_bookkeeping_balances(book, 300_000)
    assert book["compton"] > book["rayleigh"] > 0 and book["photoelectric"] > 0


def test_same_seed_same_images_for_any_launch_shape(launcher, water_20cm, monkeypatch):
    transport, geometry = water_20cm
    settings = ScatterSettings(photons=200_000, seed=11)
    first = transport.run(geometry, settings, launcher=launcher)
    again = transport.run(geometry, settings, launcher=launcher)
    monkeypatch.setattr(kernel_cuda, "BLOCKS_PER_MULTIPROCESSOR", 1)
    narrow = transport.run(geometry, settings, launcher=launcher)
    other = transport.run(geometry, ScatterSettings(photons=200_000, seed=12), launcher=launcher)
    for key in ("primary_raw", "scatter_raw", "scatter_photons_raw"):
        assert np.array_equal(first.per_photon[key], again.per_photon[key]), key
        assert np.array_equal(first.per_photon[key], narrow.per_photon[key]), key
    assert first.bookkeeping == narrow.bookkeeping
    assert not np.array_equal(first.per_photon["scatter_raw"], other.per_photon["scatter_raw"])


@pytest.mark.parametrize("forced", [False, True])
def test_device_agrees_with_the_cpu_within_statistics(launcher, water_20cm, forced):
    """Independent seeds on device and CPU: totals within 3 sigma, 4 x 4 blocks of the scatter and primary
    images within 4.5 sigma (16 blocks, two images)."""
    transport, geometry = water_20cm
    photons = 2_000_000 if forced else 4_000_000
    gpu = transport.run(geometry, ScatterSettings(photons=photons, seed=101, forced_detection=forced),
                        launcher=launcher)
    cpu = transport.run(geometry, ScatterSettings(photons=photons // 4, seed=202, forced_detection=forced),
                        device="cpu")
    worst = {}
    for name, image, variance in (("scatter", "raw_scatter", "scatter_variance_raw"),
                                  ("primary", "mc_primary", "mc_primary_variance")):
        a, b = getattr(gpu, image), getattr(cpu, image)
        va, vb = getattr(gpu, variance), getattr(cpu, variance)
        total_z = (a.sum() - b.sum()) / np.sqrt(va.sum() + vb.sum())
        assert abs(total_z) < 3.0, (name, total_z)
        n = 4
        size = a.shape[0] // n
        blocks = lambda x: x[:n * size, :n * size].reshape(n, size, n, size).sum(axis=(1, 3))  # noqa: E731
        z = (blocks(a) - blocks(b)) / np.sqrt(blocks(va) + blocks(vb))
        assert np.abs(z).max() < 4.5, (name, np.round(z, 2))
        worst[name] = float(np.abs(z).max())
    spr = gpu.raw_scatter.sum() / gpu.mc_primary.sum()
    _log(launcher, **{f"water_20cm_{'forced' if forced else 'analog'}": {
        "photons_gpu": photons, "photons_cpu": photons // 4, "gpu_seconds": gpu.seconds, "cpu_seconds": cpu.seconds,
        "gpu_photons_per_second": gpu.photons_per_second, "cpu_photons_per_second": cpu.photons_per_second,
        "worst_block_z": worst, "spr_whole_field_gpu": float(spr),
        "spr_whole_field_cpu": float(cpu.raw_scatter.sum() / cpu.mc_primary.sum())}})


def test_device_mc_primary_matches_the_analytic_primary_on_the_chest_ct(launcher):
    """The built-in self-check on real CT, on the device: 2e7 photons, tally pixel by tally pixel."""
    from scipy.stats import chi2

    from DeepDRRSlicerLib.geometry import CArm
    from DeepDRRSlicerLib.materials import decompose

    volume, _ = load_test_ct()
    materials = decompose(volume, method="threshold")
    detector = Detector()
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names, detector=detector)
    geometry = CArm(isocenter_ras=tuple(volume.center_ras()), width=24, height=24, pixel_spacing_mm=12.0).geometry()
    result = ScatterTransport(materials, model, detector).run(
        geometry, ScatterSettings(photons=20_000_000, seed=41, forced_detection=False, tally_pixel_mm=12.0),
        launcher=launcher)
    analytic, _ = analytic_primary_per_tally_pixel(materials, model, volume, 24, 12.0)
    mc, var = result.mc_primary, result.mc_primary_variance
    enough = mc > 0
    statistic = float(np.sum((mc[enough] - analytic[enough]) ** 2 / var[enough]))
    ratio = mc.sum() / analytic.sum()
    sigma = np.sqrt(var.sum()) / mc.sum()
    _log(launcher, chest_mc_primary={"ratio": float(ratio), "sigma": float(sigma),
                                     "chi2_per_dof": statistic / int(enough.sum()), "seconds": result.seconds,
                                     "photons_per_second": result.photons_per_second})
    assert chi2.sf(statistic, df=int(enough.sum())) > 1e-3, statistic / enough.sum()
    assert abs(ratio - 1.0) < max(0.01, 3 * sigma), (ratio, sigma)
