"""Volume I/O (RAS at the edge, never mutating), materials, and the polychromatic primary."""

import hashlib
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.materials import MaterialVolume, decompose, hu_to_density, threshold_labels
from DeepDRRSlicerLib.primary import PrimaryModel
from DeepDRRSlicerLib.projector import project
from DeepDRRSlicerLib.resources import sample_ct_path
from DeepDRRSlicerLib.spectrum import tube_spectrum
from DeepDRRSlicerLib.volume import ImplausibleCTWarning, Volume, load_volume


def _ct_like(shape=(6, 7, 8)):
    rng = np.random.default_rng(0)
    return rng.uniform(-1000, 1500, shape).astype(np.int16)


def test_nifti_lps_header_becomes_ras(tmp_path):
    array = _ct_like()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, 20.0, 30.0))  # LPS
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path)
    # voxel (i, j, k) = (2, 3, 4) sits at LPS origin + spacing * index; RAS flips the first two axes
    lps = np.array([10 + 0.7 * 2, 20 + 0.8 * 3, 30 + 2.5 * 4])
    ras = (volume.ijk_to_ras @ [2, 3, 4, 1])[:3]
    assert np.allclose(ras, [-lps[0], -lps[1], lps[2]])
    assert volume.hu[4, 3, 2] == array[4, 3, 2]


def test_oblique_direction_is_kept(tmp_path):
    image = sitk.GetImageFromArray(_ct_like())
    angle = np.radians(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((1.0, 2.0, 3.0))
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path)
    point_lps = image.TransformIndexToPhysicalPoint((3, 1, 2))
    assert np.allclose((volume.ijk_to_ras @ [3, 1, 2, 1])[:3], [-point_lps[0], -point_lps[1], point_lps[2]], atol=1e-4)


def test_caller_array_and_file_are_never_modified(tmp_path):
    array = _ct_like()
    before = array.copy()
    matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    volume = Volume.from_array(array, matrix)
    assert not volume.hu.flags.writeable and not volume.ijk_to_ras.flags.writeable
    array[0, 0, 0] = 1234  # the volume holds its own copy
    assert volume.hu[0, 0, 0] == before[0, 0, 0]
    path = sample_ct_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    decompose(load_volume(path), "threshold")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_ijk_order_option():
    array_ijk = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) * 100 - 1000
    volume = Volume.from_array(array_ijk, np.eye(4), index_order="ijk")
    assert volume.shape_ijk == (2, 3, 4)
    assert volume.hu[3, 2, 1] == array_ijk[1, 2, 3]


@pytest.mark.parametrize("array, message", [
    (np.zeros((5, 5), np.float32), "2 dimension"),
    (np.zeros((0, 5, 5), np.float32), "empty"),
    (np.zeros((1, 5, 5), np.float32), "single slice"),
    (np.zeros((2, 3, 4, 5), np.float32), "4 dimension"),
])
def test_not_a_volume_is_refused(array, message):
    with pytest.raises(InputError, match=message):
        Volume.from_array(array, np.eye(4))


def test_nan_and_inf_voxels_are_refused():
    array = _ct_like().astype(np.float32)
    array[1, 2, 3] = np.nan
    array[2, 2, 2] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        Volume.from_array(array, np.eye(4))


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (1.0, -2.0, 1.0)])
def test_zero_or_negative_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        Volume.from_array(_ct_like(), spacing=spacing)


def test_singular_matrix_is_refused():
    matrix = np.eye(4)
    matrix[:3, 2] = 0.0
    with pytest.raises(InputError, match="spacing"):
        Volume.from_array(_ct_like(), matrix)


def test_zero_spacing_in_a_file_header_is_refused(tmp_path):
    raw = _ct_like().astype(np.int16)
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {raw.shape[2]} {raw.shape[1]} {raw.shape[0]}\n"
              "space directions: (1,0,0) (0,0,0) (0,0,2)\nkinds: domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path = tmp_path / "zero_spacing.nrrd"
    path.write_bytes(header.encode() + raw.astype("<i2").tobytes())
    with pytest.raises(InputError, match="spacing") as error:
        load_volume(path)
    assert "spacing" in error.value.fix


def test_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="Cannot read CT"):
        load_volume(garbage)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError, match="No DICOM series"):
        load_volume(empty_dir)


def test_two_dimensional_file_is_refused(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(path))
    with pytest.raises(InputError, match="2 dimension"):
        load_volume(path)


def test_implausible_hu_range_warns():
    mri_like = np.random.default_rng(1).uniform(0, 255, (5, 6, 7))
    with pytest.warns(ImplausibleCTWarning, match="implausible"):
        Volume.from_array(mri_like, np.eye(4))
    shifted = _ct_like().astype(np.float32) + 1024  # stored without RescaleIntercept
    with pytest.warns(ImplausibleCTWarning, match="shifted by \\+1024"):
        Volume.from_array(shifted, np.eye(4))
    mu_per_mm = np.random.default_rng(2).uniform(0.0, 0.09, (5, 6, 7))   # a mu map: [0.0002, 0.09], not "[0, 0]"
    with pytest.warns(ImplausibleCTWarning, match=r"\[0\.000\d+, 0\.0\d+\].*attenuation coefficients"):
        Volume.from_array(mu_per_mm, np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Volume.from_array(_ct_like(), np.eye(4))  # a real HU range gives no warning


def test_density_fits_and_thresholds():
    hu = np.array([-1000.0, -800.0, -799.0, 0.0, 350.0, 351.0, 1000.0, -2048.0])
    density = hu_to_density(hu)
    # DeepDRR's fits: steep below 0 HU, shallow above, continuous at 1.03 g/cm3, never negative
    assert density[3] == pytest.approx(1.030)
    assert density[0] == pytest.approx(0.001029 * -1000 + 1.030, abs=1e-6)
    assert density[6] == pytest.approx(0.0005886 * 1000 + 1.03, abs=1e-6)
    assert density[7] == 0.0
    assert threshold_labels(hu).tolist() == [0, 0, 1, 1, 1, 2, 2, 0]


def test_decomposition_of_the_bundled_ct_is_plausible():
    materials = decompose(load_volume(sample_ct_path()), "threshold", density_model="deepdrr", metal="none")
    mass = dict(zip(materials.names, materials.mass_g()))
    counts = np.bincount(materials.labels.ravel(), minlength=3)
    bone_share_of_body = counts[2] / (counts[1] + counts[2])
    assert 0.2 < counts[1] / counts.sum() < 0.8
    assert 0.01 < bone_share_of_body < 0.2  # abdomen and pelvis: mostly soft tissue, some bone
    assert mass["soft_tissue"] > mass["bone"] > mass["air"]


def _slab_phantom():
    """Water 100 mm then aluminium 10 mm along +A, filling the detector's view."""
    shape = (40, 110, 40)  # k, j, i at 1 mm; j is A
    labels = np.zeros(shape, np.uint8)
    density = np.zeros(shape, np.float32)
    labels[:, :100, :] = 1
    density[:, :100, :] = 1.0
    labels[:, 100:, :] = 2
    density[:, 100:, :] = 2.699
    matrix = np.eye(4)
    matrix[:3, 3] = [-19.5, -54.5, -19.5]  # voxel faces at A = -55 ... 55
    return MaterialVolume(density, labels, ("air", "water", "aluminium"), matrix)


def test_beer_lambert_against_direct_spectral_sum():
    """Primary at a few pixels vs an independent sum over the spectrum with xraydb's own
    material table (xraydb.material_mu), not our mixture code."""
    import xraydb

    materials = _slab_phantom()
    geometry = DetectorGeometry(source=(0, -600, 0), detector_origin=(-6, 100, 6), u=(3, 0, 0), v=(0, 0, -3),
                                width=5, height=5)
    spectrum = tube_spectrum(80.0, {"Al": 2.5, "Cu": 0.1})
    model = PrimaryModel.for_spectrum(spectrum, materials.names)
    primary = project(materials, geometry, primary_model=model).primary
    energies = spectrum.energies_keV
    weights = spectrum.fluence * energies
    mu_water = xraydb.material_mu("water", energies * 1000.0, density=1.0)        # 1/cm
    mu_al = xraydb.material_mu("Al", energies * 1000.0, density=2.699)
    for row, col in [(2, 2), (0, 0), (4, 1)]:
        ray = geometry.pixel_center(col, row) - geometry.source
        stretch = np.linalg.norm(ray) / ray[1]   # path length per mm of A
        water_cm, al_cm = 10.0 * stretch, 1.0 * stretch
        expected = np.sum(weights * np.exp(-mu_water * water_cm - mu_al * al_cm)) / np.sum(weights)
        assert primary[row, col] == pytest.approx(expected, rel=1e-3)


def test_harder_beam_transmits_more():
    materials = _slab_phantom()
    geometry = DetectorGeometry(source=(0, -600, 0), detector_origin=(0, 100, 0), u=(1, 0, 0), v=(0, 0, -1),
                                width=1, height=1)
    transmissions = []
    for kvp, filtration in [(60, {}), (90, {}), (120, {}), (120, {"Cu": 0.3})]:
        model = PrimaryModel.for_spectrum(tube_spectrum(kvp, filtration), materials.names)
        transmissions.append(project(materials, geometry, primary_model=model).primary[0, 0])
    assert all(a < b for a, b in zip(transmissions, transmissions[1:]))
    assert 0 < transmissions[0] and transmissions[-1] < 1
