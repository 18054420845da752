"""The material segmentation network: contracts, determinism, behaviour on real CT, bad weights, no torch.

Real data: the bundled abdomen-pelvis CT (3 mm), which the network never saw
in training (see Resources/Models/README.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DeepDRRSlicerLib import material_network as mn
from DeepDRRSlicerLib.errors import SimulationCancelled
from DeepDRRSlicerLib.materials import class_probabilities, decompose
from DeepDRRSlicerLib.metal import metal_mask
from DeepDRRSlicerLib.resources import sample_ct_path
from DeepDRRSlicerLib.volume import Volume, load_volume

torch = pytest.importorskip("torch", reason="the network tests need PyTorch (pip install '.[network]')")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pelvis():
    return load_volume(sample_ct_path())


@pytest.fixture(scope="module")
def pelvis_probabilities(pelvis):
    probabilities, info = mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu")
    return probabilities, info


def outside_body(hu: np.ndarray) -> np.ndarray:
    """Air connected to the volume's side faces (outside the patient), eroded by one voxel from tissue."""
    import SimpleITK as sitk

    air = (hu < -500).astype(np.uint8)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(air)))
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(),
                                       labels[:, :, -1].ravel()]))
    outside = np.isin(labels, border[border > 0])
    tissue_near = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray((~outside).astype(np.uint8)),
                                                           [1, 1, 1]))
    return outside & (tissue_near == 0)


def test_weights_are_small_and_safe():
    path = mn.default_weights_path()
    assert path.exists() and path.stat().st_size <= 10 * 1024 * 1024
    payload = torch.load(path, map_location="cpu", weights_only=True)   # a plain state dict, no pickled code
    assert payload["format"] == mn.WEIGHTS_FORMAT and payload["class_names"] == list(mn.CLASS_NAMES)


def test_probabilities_shape_dtype_and_sum(pelvis, pelvis_probabilities):
    probabilities, info = pelvis_probabilities
    assert probabilities.shape == (3, *pelvis.hu.shape) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert probabilities.min() >= 0.0 and info["device"] == "cpu"


def test_same_input_gives_identical_output(pelvis, pelvis_probabilities):
    again, _ = mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu")
    assert np.array_equal(again.argmax(0), pelvis_probabilities[0].argmax(0))
    assert np.array_equal(again, pelvis_probabilities[0])


def test_output_does_not_depend_on_the_callers_torch_threads(pelvis, pelvis_probabilities):
    """DataLoader workers run torch with 1 thread, Slicer and the CLI with several; convolutions round
    differently per thread count, so inference fixes its own (same machine, same bits)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        again, _ = mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    assert np.array_equal(again, pelvis_probabilities[0])


def test_cortical_bone_in_the_pelvis_is_bone(pelvis):
    """HU > 700 in the pelvic half of the bundled CT (metal excluded) is labelled bone at >= 95 %.

    Labels as the decomposition uses them: the network's, with the thresholds within 10 mm of the screw
    (materials.METAL_ARTEFACT_MM; the network alone gets 73 % there, see the model card)."""
    hu = np.asarray(pelvis.hu)
    pelvic = np.zeros(hu.shape, dtype=bool)
    inferior_axis = 0 if pelvis.ijk_to_ras[2, 2] > 0 else None
    assert inferior_axis == 0, "the bundled CT's slice index runs inferior -> superior"
    pelvic[: hu.shape[0] // 2] = True   # the lower half: sacrum, iliac wings, acetabula, femoral heads
    cortical = pelvic & (hu > 700) & ~metal_mask(hu, pelvis.ijk_to_ras)
    assert cortical.sum() > 1000
    labels = class_probabilities(pelvis, "network", device="cpu").argmax(0)
    assert (labels[cortical] == 2).mean() >= 0.95


def test_air_outside_the_body_is_air(pelvis, pelvis_probabilities):
    outside = outside_body(np.asarray(pelvis.hu))
    assert outside.sum() > 10000
    labels = pelvis_probabilities[0].argmax(0)
    assert (labels[outside] == 0).mean() >= 0.99


def test_the_screw_is_metal_not_bone(pelvis):
    materials = decompose(pelvis, "network", metal="titanium", device="cpu")
    assert materials.names[-1] == "titanium_alloy"
    hu = np.asarray(pelvis.hu)
    core = hu >= 3000
    assert core.sum() > 50
    metal_fraction = materials.fractions[-1]
    assert np.all(metal_fraction[core] == 1.0)
    assert materials.fractions[materials.names.index("bone")][core].max() == 0.0
    assert np.all(materials.density[core] == pytest.approx(4.43))
    # Only the screw: the metal voxels sit in one compact region.
    k, j, i = np.nonzero(metal_fraction == 1.0)
    extent_mm = (np.ptp(k) + 1) * 3.0, (np.ptp(j) + 1) * 3.0, (np.ptp(i) + 1) * 3.0
    assert max(extent_mm) < 120


def test_any_axis_order_gives_the_same_result(pelvis, pelvis_probabilities):
    """The same patient stored with permuted and flipped axes is segmented identically."""
    hu = np.asarray(pelvis.hu)
    permuted = np.ascontiguousarray(np.flip(hu.transpose(1, 0, 2), axis=2))   # [j, k, i], i reversed
    n_i = hu.shape[2]
    # New index (i', j', k') = (n_i - 1 - i, k, j): the matrix maps it to the same RAS point.
    reorder = np.zeros((4, 4))
    reorder[0, 0], reorder[0, 3] = -1.0, n_i - 1
    reorder[2, 1] = 1.0
    reorder[1, 2] = 1.0
    reorder[3, 3] = 1.0
    matrix = pelvis.ijk_to_ras @ reorder
    probabilities, _ = mn.segment(permuted, matrix, device="cpu")
    back = np.flip(probabilities, axis=3).transpose(0, 2, 1, 3)
    assert np.array_equal(back, pelvis_probabilities[0])


def test_sliding_windows_blend_like_one_window(pelvis, pelvis_probabilities):
    tiled, _ = mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu", max_window=64)
    whole = pelvis_probabilities[0]
    assert np.mean(np.abs(tiled - whole)) < 0.01
    assert (tiled.argmax(0) == whole.argmax(0)).mean() > 0.995


def test_finer_anisotropic_ct_is_resampled(pelvis, pelvis_probabilities):
    """The same CT at 1.5 x 1.5 x 6 mm (finer in-plane, thicker slices) is segmented consistently."""
    from scipy import ndimage

    hu = np.asarray(pelvis.hu)
    fine = ndimage.zoom(hu, (0.5, 2.0, 2.0), order=1).astype(np.float32)
    scale = np.diag([1.5, 1.5, 6.0, 1.0])
    matrix = pelvis.ijk_to_ras @ np.diag([1 / 3.0, 1 / 3.0, 1 / 3.0, 1.0]) @ scale
    matrix[:3, 3] = pelvis.ijk_to_ras[:3, 3]
    probabilities = class_probabilities(Volume.from_array(fine, matrix), "network", device="cpu")
    assert probabilities.shape == (3, *fine.shape)
    cortical = fine > 700
    assert (probabilities.argmax(0)[cortical] == 2).mean() >= 0.9


def test_progress_reaches_one_and_cancel_stops(pelvis):
    seen = []
    mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu", progress=seen.append, max_window=64)
    assert seen and seen[-1] == pytest.approx(1.0) and all(b >= a for a, b in zip(seen, seen[1:]))

    def cancel(fraction):
        if fraction > 0.2:
            raise SimulationCancelled()

    with pytest.raises(SimulationCancelled):
        mn.segment(pelvis.hu, pelvis.ijk_to_ras, device="cpu", progress=cancel, max_window=64)


def test_network_fractions_feed_the_material_contract(pelvis):
    materials = decompose(pelvis, "network", device="cpu")
    fractions = materials.material_fractions()
    assert fractions.dtype == np.float32 and fractions.shape == (len(materials.names), *pelvis.hu.shape)
    assert np.allclose(fractions.sum(axis=0), 1.0, atol=1e-5)
    assert materials.labels.dtype == np.uint8 and materials.method == "network, calibrated density"


# --------------------------------------------------------------------------- bad weights

def _copy_weights(tmp_path: Path) -> Path:
    source = mn.default_weights_path()
    target = tmp_path / source.name
    shutil.copy(source, target)
    shutil.copy(source.with_suffix(".json"), target.with_suffix(".json"))
    return target


def test_missing_weights_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "material_unet.pt"
    with pytest.raises(mn.ModelWeightsError) as error:
        mn.load_model(missing)
    assert str(missing) in str(error.value) and "train_material_network.py" in error.value.fix


def test_truncated_weights_name_the_file_and_the_fix(tmp_path):
    path = _copy_weights(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_suffix(".json").unlink()   # no checksum to compare: reading the file itself must fail
    with pytest.raises(mn.ModelWeightsError) as error:
        mn.load_model(path)
    assert str(path) in str(error.value) and "cannot be read" in str(error.value)


def test_corrupt_weights_are_caught_by_their_checksum(tmp_path):
    path = _copy_weights(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mn.ModelWeightsError) as error:
        mn.load_model(path)
    assert str(path) in str(error.value) and "corrupt" in str(error.value)


def test_weights_of_another_format_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something-else", "state_dict": {}}, path)
    with pytest.raises(mn.ModelWeightsError) as error:
        mn.load_model(path)
    assert "format" in str(error.value)


# --------------------------------------------------------------------------- without torch

def test_without_torch_the_cli_falls_back_to_thresholds_and_says_so(tmp_path):
    """torch made unimportable in a fresh interpreter: the default --materials network still simulates."""
    code = ("import sys; sys.modules['torch'] = None; "
            "from DeepDRRSlicerLib.cli import main; "
            f"sys.exit(main(['simulate', '--size', '32', '32', '--out', {str(tmp_path / 'out')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO / "DeepDRRSlicer")})
    assert run.returncode == 0, run.stderr
    assert "used HU thresholds instead" in run.stderr and "pip install" in run.stderr
    assert (tmp_path / "out" / "primary.npy").exists()


def test_materials_cache_reuses_the_network_output(tmp_path, pelvis):
    notes_first, notes_second = [], []
    first = decompose(pelvis, "network", device="cpu", cache_dir=tmp_path, notes=notes_first)
    second = decompose(pelvis, "network", device="cpu", cache_dir=tmp_path, notes=notes_second)
    assert any("stored in" in n for n in notes_first) and any("read from" in n for n in notes_second)
    assert len(list(tmp_path.glob("materials-*.npz"))) == 1
    # The cache keeps float16 probabilities: the same decomposition up to rounding.
    assert np.allclose(first.fractions, second.fractions, atol=2e-3)
    assert (first.labels == second.labels).mean() > 0.999
    # Another CT (one voxel changed) misses the cache.
    changed = np.array(pelvis.hu)
    changed[0, 0, 0] += 1.0
    notes_third = []
    decompose(Volume.from_array(changed, pelvis.ijk_to_ras), "network", device="cpu", cache_dir=tmp_path,
              notes=notes_third)
    assert any("stored in" in n for n in notes_third)


def _hide_simpleitk(monkeypatch):
    """Make ``import SimpleITK`` fail, as in an environment without it."""
    import builtins

    real_import = builtins.__import__

    def no_simpleitk(name, *args, **kwargs):
        if name == "SimpleITK":
            raise ImportError("SimpleITK hidden by the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_simpleitk)


def test_metal_components_without_simpleitk_match_simpleitk(monkeypatch):
    """Metal detection's connected components: the SciPy route (trimmed environments) labels the same
    26-connected components as SimpleITK: diagonal neighbours join, a lone small blob is dropped."""
    import DeepDRRSlicerLib.metal as metal

    hu = np.full((12, 12, 12), 0.0, dtype=np.float32)
    hu[2:5, 2:5, 2:5] = 3000.0                   # 27 voxels
    hu[5, 5, 5] = 3000.0                         # joined to it through a corner only
    hu[9, 9, 9] = 3000.0                         # alone: below the size limit
    hu[8:11, 1, 1] = 3000.0                      # 3 voxels in a line
    ijk_to_ras = np.eye(4)
    with_sitk = metal.metal_mask(hu, ijk_to_ras, min_volume_mm3=3.0)
    _hide_simpleitk(monkeypatch)
    with_scipy = metal.metal_mask(hu, ijk_to_ras, min_volume_mm3=3.0)
    assert np.array_equal(with_sitk, with_scipy)
    assert with_scipy[5, 5, 5] and not with_scipy[9, 9, 9] and with_scipy[8:11, 1, 1].all()
    assert with_scipy.sum() == 27 + 1 + 3


def test_near_mask_without_simpleitk_matches_simpleitk(monkeypatch):
    """The margin around implants: SciPy's distance map (trimmed environments) equals SimpleITK's on an
    anisotropic grid, a blob and a point."""
    from DeepDRRSlicerLib.materials import near_mask

    mask = np.zeros((20, 24, 22), dtype=bool)
    mask[8:11, 5:9, 6:8] = True
    mask[15, 20, 3] = True
    ijk_to_ras = np.diag([0.7, 0.9, 2.5, 1.0])
    with_sitk = near_mask(mask, ijk_to_ras, 4.0)
    _hide_simpleitk(monkeypatch)
    with_scipy = near_mask(mask, ijk_to_ras, 4.0)
    assert mask.sum() < with_scipy.sum() < mask.size
    assert np.array_equal(with_sitk, with_scipy), int((with_sitk != with_scipy).sum())


def test_near_mask_maps_only_the_box_around_the_mask_and_loses_nothing():
    """The cropped distance map equals a distance map of the whole volume (here computed directly) for
    masks at the volume's edges and corners, on an anisotropic grid."""
    from scipy import ndimage

    from DeepDRRSlicerLib.materials import near_mask

    rng = np.random.default_rng(5)
    shape = (30, 40, 36)
    ijk_to_ras = np.diag([0.8, 1.1, 3.0, 1.0])
    sampling = (3.0, 1.1, 0.8)
    for points in ([(0, 0, 0)], [(29, 39, 35), (15, 2, 30)], [tuple(rng.integers(0, n) for n in shape)]):
        mask = np.zeros(shape, dtype=bool)
        for point in points:
            mask[point] = True
        whole = ndimage.distance_transform_edt(~mask, sampling=sampling) <= 7.5
        assert np.array_equal(near_mask(mask, ijk_to_ras, 7.5), whole), points
    assert not near_mask(np.zeros(shape, dtype=bool), ijk_to_ras, 7.5).any()
