"""The CUDA kernel source, compiled for the host and run through the engine's own CUDA backend.

``cuda_shim/`` compiles ``DeepDRRSlicerLib/cuda/projector.cu`` with g++ and a test-only header that maps
the CUDA built-ins (thread and block indices, ``__ldg``, bit casts); ``HostLauncher`` stands in for
CuPy or pycuda under ``cuda.backend.CudaProjector``, so memory planning, slabs, batches and the finish
are the ones a GPU runs. The oracle is the numba default (``projector_cpu.joseph_rows``), computed in
float64 with its own ray stepping, on sharp analytic phantoms (with their closed-form integrals as a
sanity bound) and on the bundled CT: every pixel agrees to 1e-4 relative. Slab-split renders equal the
unsplit one bit for bit.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from cuda_shim.host_launcher import HostLauncher, host_compiler
from DeepDRRSlicerLib import projector
from DeepDRRSlicerLib.cuda import dlpack
from DeepDRRSlicerLib.cuda.backend import CudaProjector, plan_device_memory
from DeepDRRSlicerLib.cuda.launcher import DeviceArray, DeviceMemoryError
from DeepDRRSlicerLib.cuda.source import pose_array
from DeepDRRSlicerLib.geometry import CArm
from DeepDRRSlicerLib.materials import MaterialVolume, decompose
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.resources import sample_ct_path
from DeepDRRSlicerLib.spectrum import tube_spectrum
from DeepDRRSlicerLib.volume import load_volume
from phantoms import oblique_matrix
from sharp_phantoms import centred_grid, test_views, torso_phantom

pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no C++ compiler (g++, c++ or clang++) on PATH "
                                "to build the host shim of the CUDA kernel")

RELATIVE = 1e-4
# pixels far below an image's peak (a ray grazing a bone) are compared at 1e-3 of that peak
FLOOR = 1e-3


def _poses(materials, geometries):
    return pose_array([(*projector._ray_frame(materials, g), g.source, g.detector_origin, g.u, g.v)
                       for g in geometries])


def _shim(materials, geometries, primary_model=None, launcher=None, **options):
    launcher = launcher or HostLauncher()
    spectrum = {}
    if primary_model is not None:
        spectrum = {"mu_log2": primary_model.mu * projector.LOG2E, "weights": primary_model.weights}
    gpu = CudaProjector(launcher)
    integrals, primary = gpu.render(materials.projector_layout(), _poses(materials, geometries), geometries[0].shape,
                                    **spectrum, **options)
    return integrals, primary, gpu


def _numba(materials, geometries, primary_model=None):
    runs = [projector.project(materials, g, primary_model=primary_model, device="cpu", cpu_kernel="numba")
            for g in geometries]
    primary = None if primary_model is None else np.stack([r.primary for r in runs])
    return np.stack([r.line_integrals for r in runs]), primary


def _worst_relative(measured, reference):
    """Largest |measured - reference| / max(|reference|, FLOOR * peak), per image (last two axes)."""
    peak = np.abs(reference).max(axis=(-2, -1), keepdims=True)
    scale = np.maximum(np.abs(reference), FLOOR * np.maximum(peak, 1e-30))
    return float((np.abs(measured.astype(np.float64) - reference) / scale).max())


@pytest.fixture(scope="module")
def torso():
    """The torso phantom (soft tissue, lung, fat, two bones, fluid) on an oblique anisotropic grid."""
    phantom = torso_phantom()
    matrix, shape = centred_grid(oblique_matrix((1.4, 1.5, 1.7), (12.0, -20.0, 33.0), (0.0, 0.0, 0.0)), 75.0)
    density, fractions = phantom.voxelise(shape, matrix, supersample=3)
    soft = MaterialVolume.from_fractions(density, fractions, phantom.materials, matrix)
    hard = MaterialVolume(density=soft.density, labels=np.argmax(soft.fractions, axis=0).astype(np.uint8),
                          names=soft.names, ijk_to_ras=matrix)
    views = test_views(matrix, 48, 2 * 75.0 * 1020.0 / 530.0 / 48)
    return phantom, soft, hard, list(views.values())


@pytest.fixture(scope="module")
def pelvis():
    materials = decompose(load_volume(sample_ct_path()))
    center = tuple(np.asarray(materials.ijk_to_ras[:3, :3]) @ ((np.array(materials.density.shape[::-1]) - 1) / 2)
                   + materials.ijk_to_ras[:3, 3])
    geometries = [CArm(alpha_deg=a, beta_deg=b, isocenter_ras=center, width=96, height=80,
                       pixel_spacing_mm=3.2).geometry() for a, b in ((0, 0), (37, 12), (90, -20), (-135, 30))]
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names)
    return materials, geometries, model


@pytest.mark.parametrize("layout", ["labels", "fractions"])
def test_kernel_matches_the_numba_default_on_a_sharp_phantom(torso, layout):
    phantom, soft, hard, geometries = torso
    materials = hard if layout == "labels" else soft
    assert materials.projector_layout().kind == layout
    model = PrimaryModel.for_spectrum(tube_spectrum(80.0, {"Al": 2.5}), materials.names)
    integrals, primary, _ = _shim(materials, geometries, model)
    reference, reference_primary = _numba(materials, geometries, model)
    assert np.isfinite(integrals).all() and np.isfinite(primary).all()
    assert _worst_relative(integrals, reference) <= RELATIVE
    assert _worst_relative(primary, reference_primary) <= RELATIVE
    # and both are the phantom: total line integral within the partial-volume floor of the exact one
    for geometry, image in zip(geometries, integrals.sum(axis=1)):
        exact, _, chord = phantom.exact(geometry.source, geometry.pixel_centers())
        rays = chord > 30.0
        assert rays.sum() > 200
        assert np.median(np.abs(image[rays] - exact[rays]) / exact[rays]) < 0.01


def test_kernel_matches_the_numba_default_on_the_bundled_ct(pelvis):
    materials, geometries, model = pelvis
    integrals, primary, gpu = _shim(materials, geometries, model)
    assert not gpu.last_plan.split and gpu.last_plan.poses_per_chunk == len(geometries)
    reference, reference_primary = _numba(materials, geometries, model)
    assert reference.max() > 10.0   # the CT is really there
    assert _worst_relative(integrals, reference) <= RELATIVE
    assert _worst_relative(primary, reference_primary) <= RELATIVE


@pytest.mark.parametrize("layout", ["labels", "fractions"])
def test_slab_split_equals_the_whole_volume_bit_for_bit(torso, pelvis, layout):
    if layout == "labels":
        materials, geometries, model = pelvis
    else:
        _, materials, _, geometries = torso
        model = PrimaryModel.for_spectrum(tube_spectrum(80.0, {"Al": 2.5}), materials.names)
    whole, whole_primary, _ = _shim(materials, geometries, model)
    nk, nj, ni = materials.density.shape
    plane = (ni + 2) * (nj + 2) * 4 * (1 if layout == "labels" else len(materials.names))
    outputs = len(geometries) * (len(materials.names) + 1) * geometries[0].width * geometries[0].height * 4 + 1024
    for owned in (1, 2, 7, nk // 2):
        launcher = HostLauncher()
        split, split_primary, gpu = _shim(materials, geometries, model, launcher=launcher,
                                          memory_limit=outputs + (owned + 1) * plane, keep_on_device=True)
        plan = gpu.last_plan
        assert plan.split and len(plan.slabs) == -(-(nk + 1) // owned), (owned, plan.slabs)
        # every plane owned exactly once, in ascending order
        assert [first for first, _ in plan.slabs] == list(range(0, nk + 1, owned))
        assert plan.slabs[-1][1] == nk + 1
        assert len({(g, f, s) for g, f, s, _ in launcher.launches}) == len(plan.slabs)
        assert np.array_equal(split.get(), whole) and np.array_equal(split_primary.get(), whole_primary)


def test_a_batch_equals_its_poses_rendered_one_by_one(pelvis):
    materials, geometries, model = pelvis
    batch, batch_primary, _ = _shim(materials, geometries, model)
    launcher = HostLauncher()
    gpu = CudaProjector(launcher)
    layout = materials.projector_layout()
    for index, geometry in enumerate(geometries):
        one, one_primary = gpu.render(layout, _poses(materials, [geometry]), geometry.shape,
                                      mu_log2=model.mu * projector.LOG2E, weights=model.weights)
        assert np.array_equal(one[0], batch[index]) and np.array_equal(one_primary[0], batch_primary[index])
    # the volume went up once and stayed for every pose
    assert launcher.uploaded_bytes < 2 * layout.nbytes


def test_pose_chunks_when_outputs_do_not_fit_at_once(pelvis):
    materials, geometries, model = pelvis
    whole, whole_primary, _ = _shim(materials, geometries, model)
    per_pose = 4 * 96 * 80 * 4 + 24 * 8
    limit = materials.projector_layout().nbytes + 2 * per_pose   # room for two poses besides the volume
    chunked, chunked_primary, gpu = _shim(materials, geometries, model, memory_limit=limit)
    assert gpu.last_plan.poses_per_chunk == 2 and not gpu.last_plan.split
    assert np.array_equal(chunked, whole) and np.array_equal(chunked_primary, whole_primary)


def test_line_integrals_only_when_no_spectrum_is_given(pelvis):
    materials, geometries, model = pelvis
    integrals, primary, _ = _shim(materials, geometries[:2])
    with_spectrum, _, _ = _shim(materials, geometries[:2], model)
    assert primary is None and np.array_equal(integrals, with_spectrum)


def test_four_materials_and_rays_that_miss_the_volume():
    """Another compile-time material count, and pixels whose rays miss the box entirely (zero, I/I0 = 1)."""
    rng = np.random.default_rng(3)
    density = rng.uniform(0.0, 2.0, (20, 24, 28)).astype(np.float32)
    labels = rng.integers(0, 4, density.shape).astype(np.uint8)
    matrix = oblique_matrix((2.0, 2.5, 3.0), (5.0, 10.0, -8.0), (-30.0, -30.0, -30.0))
    materials = MaterialVolume(density=density, labels=labels, names=("air", "soft_tissue", "bone", "iodine_contrast"),
                               ijk_to_ras=matrix)
    center = tuple(matrix[:3, :3] @ (np.array([27, 23, 19]) / 2) + matrix[:3, 3])
    geometries = [CArm(alpha_deg=a, isocenter_ras=center, width=40, height=30, pixel_spacing_mm=6.0).geometry()
                  for a in (10.0, 80.0)]
    model = PrimaryModel.for_spectrum(tube_spectrum(100.0, {"Al": 3.0}), materials.names)
    integrals, primary, _ = _shim(materials, geometries, model)
    reference, reference_primary = _numba(materials, geometries, model)
    assert integrals.shape == (2, 4, 30, 40)
    missed = reference.sum(axis=1) == 0
    assert missed.any() and (~missed).any()
    assert np.all(integrals.sum(axis=1)[missed] == 0) and np.allclose(primary[missed], 1.0, rtol=1e-6)
    assert _worst_relative(integrals, reference) <= RELATIVE
    assert _worst_relative(primary, reference_primary) <= RELATIVE


def test_results_left_on_the_device_are_shared_through_dlpack(pelvis):
    materials, geometries, model = pelvis
    integrals, primary, _ = _shim(materials, geometries, model, keep_on_device=True)
    assert isinstance(integrals, DeviceArray) and isinstance(primary, DeviceArray)
    assert integrals.shape == (4, 3, 80, 96) and primary.shape == (4, 80, 96)
    host = primary.get()
    shared = np.from_dlpack(primary)
    assert np.shares_memory(shared, primary.buffer) and np.array_equal(shared, host)
    one = primary[2]
    assert isinstance(one, DeviceArray) and one.shape == (80, 96)
    assert np.array_equal(np.asarray(one), host[2])
    torch = pytest.importorskip("torch", reason="torch is not installed; numpy checked the DLPack export")
    tensor = torch.from_dlpack(integrals)
    assert tuple(tensor.shape) == integrals.shape and np.array_equal(tensor.numpy(), integrals.get())
    del tensor, shared
    gc.collect()


def test_plan_refuses_with_the_memory_needed_and_free():
    with pytest.raises(DeviceMemoryError) as raised:
        plan_device_memory(plane_bytes=4 * 514 * 514, plane_elements=514 * 514, n_planes=610, n_poses=64,
                           bytes_per_pose=4 * 1024 * 1024 * 4, free_bytes=600 * 2**20, total_bytes=8 * 2**30,
                           already_resident=False, keep_on_device=True)
    error = raised.value
    assert error.needed > error.free and error.free == 600 * 2**20
    assert "MiB of GPU memory" in str(error) and "600 MiB is free" in str(error)


def test_plan_splits_a_large_ct_and_keeps_a_small_one():
    large = dict(plane_bytes=4 * 514 * 514, plane_elements=514 * 514, n_planes=610, n_poses=8,
                 bytes_per_pose=4 * 512 * 512 * 4, total_bytes=2 * 2**30, already_resident=False,
                 keep_on_device=False)
    # DeepDRR's out-of-memory case: a 608 x 512 x 512 CT (644 MB packed) on a card with 600 MB free
    plan = plan_device_memory(free_bytes=600 * 2**20, **large)
    assert plan.split and not plan.resident and plan.slabs[0][0] == 0 and plan.slabs[-1][1] == 609
    assert all(a[1] == b[0] for a, b in zip(plan.slabs, plan.slabs[1:]))
    plan = plan_device_memory(free_bytes=2 * 2**30, **large)
    assert not plan.split and plan.resident and plan.poses_per_chunk == 8
    # a limit given by the caller is respected even with plenty free
    plan = plan_device_memory(free_bytes=64 * 2**30, memory_limit=300 * 2**20, **large)
    assert plan.split


def test_out_of_memory_during_a_render_says_needed_and_free(pelvis):
    materials, geometries, model = pelvis

    class Full(HostLauncher):
        def empty(self, shape, dtype):
            raise MemoryError("out of memory")

    with pytest.raises(DeviceMemoryError, match="MiB is free"):
        _shim(materials, geometries, model, launcher=Full())


def test_exported_tensors_are_released_once():
    before = dlpack.live_exports()
    array = np.arange(6, dtype=np.float32)
    for _ in range(3):
        capsule = dlpack.dlpack_capsule(array.ctypes.data, array.shape, array.dtype, dlpack.CPU, 0, array)
        del capsule   # never consumed: the capsule's destructor releases it
    imported = np.from_dlpack(_Exporter(array))
    assert dlpack.live_exports() == before + 1 and np.shares_memory(imported, array)
    del imported
    gc.collect()
    assert dlpack.live_exports() == before


class _Exporter:
    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None, **_):
        return dlpack.dlpack_capsule(self.array.ctypes.data, self.array.shape, self.array.dtype, dlpack.CPU, 0,
                                     self.array)

    def __dlpack_device__(self):
        return (dlpack.CPU, 0)
