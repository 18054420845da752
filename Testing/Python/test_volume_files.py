"""File-level checks that ITK does not make (volume_files.py): formats and layouts the catalogue does not reach.

Each damaged file is first shown to be read by ITK without an error (the silent garbage), then refused here.
"""

from __future__ import annotations

import bz2
import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.resources import sample_ct_path
from DeepDRRSlicerLib.volume import load_volume
from DeepDRRSlicerLib.volume_files import check_ct_file

from bad_inputs import phantom_hu, write_image


def _itk_reads(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("name, compress", [("ct.nii.gz", False), ("ct.nii", False), ("ct.nrrd", True),
                                            ("ct.mha", True), ("ct.nrrd", False), ("ct.mha", False)])
def test_sound_files_pass(tmp_path, name, compress):
    path = write_image(tmp_path / name, phantom_hu((12, 14, 16)), compress=compress)
    check_ct_file(path)
    assert np.array_equal(load_volume(path).hu, phantom_hu((12, 14, 16)))


def test_the_bundled_ct_passes():
    check_ct_file(sample_ct_path())


def test_detached_gzip_nrrd_that_is_truncated(tmp_path):
    raw = phantom_hu((30, 30, 30)).astype("<i2").tobytes()
    (tmp_path / "ct.raw.gz").write_bytes(gzip.compress(raw)[:-2000])
    (tmp_path / "ct.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 30 30 30\n"
                                      "spacings: 1 1 1\nendian: little\nencoding: gzip\ndata file: ct.raw.gz\n\n")
    with pytest.raises(InputError, match="truncated"):
        load_volume(tmp_path / "ct.nhdr")


def test_bzip2_nrrd_that_is_cut_short(tmp_path):
    raw = phantom_hu((20, 20, 20)).astype("<i2").tobytes()
    header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 20 20 20\nspacings: 1 1 1\nendian: little\n"
              "encoding: bzip2\n\n").encode()
    (tmp_path / "ct.nrrd").write_bytes(header + bz2.compress(raw)[:-100])
    with pytest.raises(InputError, match="truncated"):
        load_volume(tmp_path / "ct.nrrd")


def test_nifti_pair_with_a_short_image_file(tmp_path):
    write_image(tmp_path / "ct.hdr", phantom_hu())
    image = tmp_path / "ct.img"
    assert image.is_file()
    image.write_bytes(image.read_bytes()[:-800])
    assert (_itk_reads(tmp_path / "ct.hdr") == 0).any()  # ITK: the missing voxels read as 0
    with pytest.raises(InputError, match="truncated: it holds"):
        load_volume(tmp_path / "ct.hdr")


def test_big_endian_nifti_with_nan(tmp_path):
    hu = phantom_hu((6, 6, 6)).astype(">f4")
    hu[2, 2, 2] = np.nan
    header = bytearray(352)
    header[0:4] = struct.pack(">i", 348)
    header[40:56] = struct.pack(">8h", 3, 6, 6, 6, 1, 1, 1, 1)
    header[70:72] = struct.pack(">h", 16)   # float32
    header[72:74] = struct.pack(">h", 32)
    header[76:108] = struct.pack(">8f", 1, 2, 2, 2, 1, 1, 1, 1)
    header[108:112] = struct.pack(">f", 352.0)
    header[112:116] = struct.pack(">f", 1.0)
    header[344:348] = b"n+1\0"
    path = tmp_path / "big_endian.nii"
    path.write_bytes(bytes(header) + hu.tobytes())
    assert not np.isnan(_itk_reads(path)).any()  # ITK: the NaN becomes a number
    with pytest.raises(InputError, match="1 NaN or infinite voxel"):
        load_volume(path)


def test_metaimage_with_detached_compressed_data(tmp_path):
    path = write_image(tmp_path / "ct.mhd", phantom_hu((20, 20, 20)), compress=True)
    data = next(tmp_path.glob("ct.*raw"))
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0x55
    data.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="corrupt|truncated"):
        load_volume(path)
