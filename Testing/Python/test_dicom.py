"""DICOM series: the shipped real series, and edge cases derived from it (see dicom_series.py).

The oracle for positions is DICOM's own definition (PS3.3 C.7.6.2.1.1): pixel (row r, column c)
of a slice lies at ImagePositionPatient + c * column spacing * row direction + r * row spacing *
column direction. Every check maps such positions through the loaded volume's IJK->RAS matrix.
"""

from __future__ import annotations

import copy
import math
import shutil
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

import dicom_series as ds_tools
from DeepDRRSlicerLib.dicom import DicomWarning
from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.volume import LPS_TO_RAS, load_volume

pydicom = ds_tools.pydicom()


def _load(path, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load_volume(path, **options)
    return volume, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _lps_to_ijk(volume, points_lps):
    points = np.atleast_2d(points_lps)
    ras = points * np.array([-1.0, -1.0, 1.0])
    homogeneous = np.hstack([ras, np.ones((len(ras), 1))])
    return (homogeneous @ np.linalg.inv(volume.ijk_to_ras).T)[:, :3]


def test_shipped_series_reads_with_every_voxel_in_place():
    volume, messages = _load(ds_tools.SERIES)
    assert messages == []
    assert volume.hu.shape == (20, 512, 512)
    assert volume.hu.min() < -900 and volume.hu.max() > 1000  # HU with RescaleIntercept applied
    assert np.allclose(volume.spacing, [ds_tools.PIXEL_MM, ds_tools.PIXEL_MM, ds_tools.STEP_MM])
    for k, ds in enumerate(ds_tools.sorted_slices()):
        ijk = _lps_to_ijk(volume, [ds_tools.pixel_lps(ds, 100, 300), ds_tools.pixel_lps(ds, 400, 20)])
        assert np.allclose(ijk, [[300, 100, k], [20, 400, k]], atol=1e-6)
        assert np.array_equal(volume.hu[k], ds_tools.hu_of(ds))


def test_regular_series_matches_itk_series_reader():
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ds_tools.SERIES)))
    image = reader.Execute()
    volume, _ = _load(ds_tools.SERIES)
    expected = np.eye(4)
    expected[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * image.GetSpacing()
    expected[:3, 3] = image.GetOrigin()
    assert np.allclose(volume.ijk_to_ras, LPS_TO_RAS @ expected, atol=1e-6)
    assert np.array_equal(volume.hu, sitk.GetArrayFromImage(image).astype(np.float32))


def test_gantry_tilt_of_whole_pixels_puts_every_voxel_in_its_place(tmp_path):
    # 2 mm table steps with slices tilted by asin(pixel / 2 mm): each slice sits one pixel further along its
    # column axis, so the corrected grid holds the scanner's own values, uninterpolated.
    degrees = math.degrees(math.asin(ds_tools.PIXEL_MM / ds_tools.STEP_MM))
    slices = ds_tools.tilted(tmp_path / "tilted", degrees)
    volume, messages = _load(tmp_path / "tilted")
    assert any("gantry tilt of 29.23 degrees" in m for m in messages), messages
    rng = np.random.default_rng(1)
    for k, ds in enumerate(slices):
        original = ds_tools.hu_of(ds)
        rows, columns = rng.integers(0, 512, 50), rng.integers(0, 512, 50)
        ijk = _lps_to_ijk(volume, np.array([ds_tools.pixel_lps(ds, r, c) for r, c in zip(rows, columns)]))
        assert np.allclose(ijk, np.rint(ijk), atol=1e-6), "tilted slices must land on whole voxels"
        i, j, kk = np.rint(ijk).astype(int).T
        assert np.all(kk == k)
        assert np.array_equal(volume.hu[kk, j, i], original[rows, columns])


def test_gantry_tilt_of_15_degrees_keeps_each_slice_where_the_scanner_put_it(tmp_path):
    slices = ds_tools.tilted(tmp_path / "tilted", 15.0)
    volume, messages = _load(tmp_path / "tilted")
    assert any("gantry tilt of 15.00 degrees" in m and "9.8 mm" in m for m in messages), messages
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "tilted")))
    naive = reader.Execute()  # ITK's own reading: one orientation, one spacing, no shear
    fill = float(volume.hu.min())
    worst_ours, worst_itk = 0.0, 0.0
    for k, ds in enumerate(slices):
        original = ds_tools.hu_of(ds)
        weights = original - fill
        rows, columns = np.indices(original.shape)
        # weighted centroid of the slice, in LPS, from the DICOM header (bilinear shifts preserve it)
        centroid_r = float((weights * rows).sum() / weights.sum())
        centroid_c = float((weights * columns).sum() / weights.sum())
        truth = ds_tools.pixel_lps(ds, centroid_r, centroid_c)
        ours_weights = volume.hu[k] - fill
        jj, ii = np.indices(ours_weights.shape)
        ours_ijk = [float((ours_weights * ii).sum() / ours_weights.sum()),
                    float((ours_weights * jj).sum() / ours_weights.sum()), k, 1.0]
        ours = (LPS_TO_RAS @ volume.ijk_to_ras @ ours_ijk)[:3]
        worst_ours = max(worst_ours, float(np.linalg.norm(ours - truth)))
        itk = np.array(naive.TransformContinuousIndexToPhysicalPoint((centroid_c, centroid_r, float(k))))
        worst_itk = max(worst_itk, float(np.linalg.norm(itk - truth)))
    assert worst_ours < 0.01
    assert worst_itk > 5.0  # what the plain series reader gets wrong, for the record


def test_missing_slice_is_refused_with_its_position(tmp_path):
    slices = ds_tools.sorted_slices()
    ds_tools.write(slices[:7] + slices[8:], tmp_path / "gap")
    with pytest.raises(InputError) as error:
        load_volume(tmp_path / "gap")
    assert "1 slice(s) missing" in error.value.problem and "4 mm" in error.value.problem
    before_gap = f"{float(slices[6].ImagePositionPatient[2]):.2f}) mm LPS and"
    assert before_gap in error.value.problem
    assert "Export the complete series" in error.value.fix


def test_two_slices_at_one_position_are_refused(tmp_path):
    slices = ds_tools.sorted_slices()
    extra = copy.deepcopy(slices[5])
    extra.SOPInstanceUID = pydicom.uid.generate_uid()
    ds_tools.write(slices + [extra], tmp_path / "doubled")
    with pytest.raises(InputError, match="at the position of another"):
        load_volume(tmp_path / "doubled")


def test_series_in_nested_folders_is_found(tmp_path):
    slices = ds_tools.sorted_slices()
    ds_tools.write(slices[:8], tmp_path / "patient" / "study" / "a")
    ds_tools.write(slices[8:], tmp_path / "patient" / "study" / "b", names=[f"x{i}" for i in range(12)])
    volume, messages = _load(tmp_path / "patient")
    reference, _ = _load(ds_tools.SERIES)
    assert messages == []
    assert np.array_equal(volume.hu, reference.hu) and np.allclose(volume.ijk_to_ras, reference.ijk_to_ras)


def test_the_same_files_copied_twice_are_read_once(tmp_path):
    shutil.copytree(ds_tools.SERIES, tmp_path / "top" / "copy1")
    shutil.copytree(ds_tools.SERIES, tmp_path / "top" / "copy2")
    volume, messages = _load(tmp_path / "top")
    assert volume.hu.shape == (20, 512, 512)
    assert any("second copies" in m for m in messages)


def _two_series(tmp_path, first, second):
    ds_tools.write(ds_tools.new_series(first, "CT Body 3.0", 1), tmp_path / "study" / "one")
    ds_tools.write(ds_tools.new_series(second, "CT second", 2), tmp_path / "study" / "two")
    return tmp_path / "study"


def test_several_series_use_the_largest_ct_and_list_them(tmp_path):
    slices = ds_tools.sorted_slices()
    study = _two_series(tmp_path, slices, slices[:10])
    volume, messages = _load(study)
    assert volume.hu.shape == (20, 512, 512)
    [message] = [m for m in messages if "holds 2 DICOM series" in m]
    assert "the CT volume with the most voxels" in message and "largest" not in message
    assert "512 x 512 x 20" in message and "512 x 512 x 10" in message and "--series" in message
    chosen, _ = _load(study, series=2)
    assert chosen.hu.shape == (10, 512, 512)


def test_equal_series_are_refused_with_a_listing_and_chosen_by_number_or_uid(tmp_path):
    slices = ds_tools.sorted_slices()
    second = ds_tools.new_series(slices[10:], "CT second", 2)
    ds_tools.write(ds_tools.new_series(slices[:10], "CT Body 3.0", 1), tmp_path / "study" / "one")
    ds_tools.write(second, tmp_path / "study" / "two")
    with pytest.raises(InputError) as error:
        load_volume(tmp_path / "study")
    assert "equally large" in error.value.problem and "largest" not in error.value.problem
    assert "1. 'CT Body 3.0'" in error.value.problem and "2. 'CT second'" in error.value.problem
    assert second[0].SeriesInstanceUID in error.value.problem
    assert "--series" in error.value.fix
    by_number, _ = _load(tmp_path / "study", series="2")
    by_uid_tail, _ = _load(tmp_path / "study", series=second[0].SeriesInstanceUID[-8:])
    expected_z = float(slices[10].ImagePositionPatient[2])
    for volume in (by_number, by_uid_tail):
        assert volume.hu.shape == (10, 512, 512)
        assert (volume.ijk_to_ras @ [0, 0, 0, 1])[2] == pytest.approx(expected_z)
    with pytest.raises(InputError, match="matches none"):
        load_volume(tmp_path / "study", series="7")


def test_non_ct_modality_is_refused(tmp_path):
    slices = ds_tools.sorted_slices()
    for ds in slices:
        ds.Modality = "MR"
    ds_tools.write(slices, tmp_path / "mr")
    with pytest.raises(InputError) as error:
        load_volume(tmp_path / "mr")
    assert "modality MR, not CT" in error.value.problem and "Hounsfield" in error.value.problem


def test_ct_without_rescale_tags_is_refused_when_values_are_not_hu(tmp_path):
    slices = ds_tools.sorted_slices()
    for ds in slices:
        del ds.RescaleIntercept
        del ds.RescaleSlope
    ds_tools.write(slices, tmp_path / "raw")
    with pytest.raises(InputError) as error:
        load_volume(tmp_path / "raw")
    assert "no RescaleSlope/RescaleIntercept" in error.value.problem and "not Hounsfield" in error.value.problem


def test_ct_without_rescale_tags_but_hu_values_warns_and_reads(tmp_path):
    slices = ds_tools.sorted_slices()
    expected = []
    for ds in slices:
        hu = ds_tools.hu_of(ds).astype(np.int16)
        expected.append(hu)
        ds.set_pixel_data(hu, "MONOCHROME2", 16)  # uncompressed, signed, stored as HU
        del ds.RescaleIntercept
        del ds.RescaleSlope
    ds_tools.write(slices, tmp_path / "hu")
    volume, messages = _load(tmp_path / "hu")
    assert any("no RescaleSlope/RescaleIntercept" in m and "used as stored" in m for m in messages)
    assert np.array_equal(volume.hu, np.stack(expected).astype(np.float32))


def test_a_single_dicom_file_reads_its_whole_series(tmp_path):
    volume, messages = _load(sorted(ds_tools.SERIES.iterdir())[3])
    assert volume.hu.shape == (20, 512, 512)
    assert any("reading the whole series" in m for m in messages)


def test_series_option_with_a_file_is_refused(tmp_path):
    from DeepDRRSlicerLib.resources import sample_ct_path

    with pytest.raises(InputError, match="single file, not a DICOM folder"):
        load_volume(sample_ct_path(), series="1")


def test_a_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="No DICOM series found.*subfolders searched"):
        load_volume(tmp_path)


def test_a_folder_holding_volume_files_and_a_dicom_subfolder_says_which_it_read(tmp_path):
    ds_tools.write(ds_tools.sorted_slices(), tmp_path / "series")
    (tmp_path / "ct.nii.gz").write_bytes(b"not read")
    volume, messages = _load(tmp_path)
    assert volume.hu.shape[0] == 20
    assert any("ct.nii.gz" in text and "series" in text and "Pass the file itself" in text for text in messages)
