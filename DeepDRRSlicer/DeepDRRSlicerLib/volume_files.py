"""Checks on CT files that the image reader (ITK) does not make, run before it reads them.

ITK reads some broken files without a word: a truncated or corrupt gzip stream
(``.nii.gz``, gzip-encoded NRRD) or zlib stream (compressed MetaImage) comes back
with part of the voxels set to 0, a truncated ``.nii`` is padded with zeros,
NaN/inf voxels of a NIfTI file become 0, and a negative spacing in a MetaImage
header silently mirrors the volume. :func:`check_ct_file` reads the header and
streams the data once (compressed streams are decompressed and their checksums
verified, nothing is kept in memory) and raises :class:`InputError` naming the
problem. Formats it does not know pass unchecked to ITK.
"""

from __future__ import annotations

import bz2
import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError

# Small enough that a stream ending early still tells how much it held (a read that hits the end is lost).
CHUNK_BYTES = 1 << 20

_READ_FIX = ("The file is damaged (a download or copy that stopped early, or a full disk). "
             "Copy or export the CT again, then check it opens in another viewer (e.g. 3D Slicer).")

# NIfTI datatype code -> numpy dtype character (only the floating types can hold NaN/inf).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def check_ct_file(path: Path) -> None:
    """Raise InputError if the CT file ``path`` is truncated, corrupt, has a negative spacing
    in its header, or holds NaN/inf voxels that the reader would hide."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if head[:2] == b"\x1f\x8b":
        if _is_nifti(_gzip_head(path)):
            _check_nifti(path)  # streams the whole gzip file, CRC included
        else:
            _check_gzip_file(path)
    elif _is_nifti(head):
        _check_nifti(path)
    elif head.startswith(b"NRRD000"):
        _check_nrrd(path)
    elif _looks_like_metaimage(head):
        _check_metaimage(path)


# ---- gzip (whole file) -----------------------------------------------------------------------------

def _gzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(1024)
    except (OSError, EOFError, zlib.error):
        return b""


def _check_gzip_file(path: Path) -> int:
    """Decompress the whole gzip file once, verifying its CRC and length; returns the decompressed size."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                total += len(chunk)
    except EOFError:
        raise InputError(f"CT file {path} is truncated: its gzip stream ends after {total:,} bytes of data, "
                         "before the end-of-stream marker, so part of the volume is missing.", _READ_FIX) from None
    except (OSError, zlib.error) as error:
        raise InputError(f"CT file {path} is corrupt: its gzip data fails to decompress ({error}).",
                         _READ_FIX) from None
    return total


# ---- NIfTI -----------------------------------------------------------------------------------------

def _is_nifti(head: bytes) -> bool:
    if len(head) >= 348:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
    if len(head) >= 540:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def _nifti_header(head: bytes) -> dict:
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            return {"endian": endian, "version": 1, "dims": dims,
                    "datatype": struct.unpack(endian + "h", head[70:72])[0],
                    "bitpix": struct.unpack(endian + "h", head[72:74])[0],
                    "pixdim": struct.unpack(endian + "8f", head[76:108]),
                    "vox_offset": struct.unpack(endian + "f", head[108:112])[0],
                    "sform_code": struct.unpack(endian + "h", head[254:256])[0],
                    "srow": np.array(struct.unpack(endian + "12f", head[280:328]), dtype=np.float64).reshape(3, 4),
                    "single_file": head[344:347] == b"n+1"}
        if size == 540:
            return {"endian": endian, "version": 2, "dims": struct.unpack(endian + "8q", head[16:80]),
                    "datatype": struct.unpack(endian + "h", head[12:14])[0],
                    "bitpix": struct.unpack(endian + "h", head[14:16])[0],
                    "pixdim": struct.unpack(endian + "8d", head[104:168]),
                    "vox_offset": struct.unpack(endian + "q", head[168:176])[0],
                    "sform_code": struct.unpack(endian + "i", head[348:352])[0],
                    "srow": np.array(struct.unpack(endian + "12d", head[400:496]), dtype=np.float64).reshape(3, 4),
                    "single_file": head[4:7] == b"n+2"}
    raise AssertionError("not a NIfTI header")


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _check_nifti(path: Path) -> None:
    with _open_maybe_gzip(path) as stream:
        head = stream.read(540)
    header = _nifti_header(head)
    dims = header["dims"]
    rank = int(dims[0])
    if not 1 <= rank <= 7:
        return  # ITK reports a malformed header itself
    spatial = min(rank, 3)
    spacing = header["pixdim"][1:1 + spatial]
    if any(value < 0 for value in spacing):
        raise InputError(f"CT file {path} has a negative voxel spacing in its header "
                         f"(pixdim {[round(float(s), 6) for s in spacing]} mm); readers disagree on whether that "
                         "mirrors the volume, so the patient's left and right cannot be trusted.",
                         "Fix the header (spacings must be positive; orientation belongs in the qform/sform), "
                         "e.g. re-save the CT from 3D Slicer or dcm2niix.")
    if header["sform_code"] > 0 and rank >= 3:
        _refuse_sheared(path, header["srow"][:, :3], "sform")
    data_path = path
    if not header["single_file"]:
        data_path = _nifti_pair_data(path)
        if data_path is None:
            return  # ITK reports the missing .img
        offset = 0
    else:
        offset = int(header["vox_offset"])
    count = math.prod(int(d) for d in dims[1:rank + 1])
    expected = count * max(int(header["bitpix"]), 0) // 8
    dtype = _NIFTI_FLOAT_TYPES.get(int(header["datatype"]))
    _scan_data(data_path, offset, expected, None if dtype is None else np.dtype(header["endian"] + dtype))


def _nifti_pair_data(path: Path) -> Path | None:
    name = path.name
    for suffix in (".hdr.gz", ".hdr"):
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            for candidate in (stem + ".img", stem + ".img.gz", stem + ".IMG"):
                if (path.parent / candidate).exists():
                    return path.parent / candidate
    return None


def _refuse_sheared(path: Path, linear: np.ndarray, what: str) -> None:
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms <= 0):
        return  # zero spacing: reported by the volume checks with its own message
    axes = linear / norms
    cosines = [abs(float(axes[:, a] @ axes[:, b])) for a, b in ((0, 1), (0, 2), (1, 2))]
    worst = max(cosines)
    if worst > SHEAR_TOLERANCE:
        angle = math.degrees(math.acos(min(1.0, worst)))
        raise InputError(f"CT file {path}: the voxel axes in its {what} matrix are not perpendicular "
                         f"(two axes meet at {angle:.2f} degrees instead of 90), i.e. the grid is sheared, "
                         "as a gantry-tilted scan stored without tilt correction is.",
                         "Resample the CT onto a rectangular grid first: load the DICOM series with "
                         "deepdrr-slicer (it corrects gantry tilt), convert it with dcm2niix (which writes a "
                         "tilt-corrected file), or resample it in 3D Slicer.")


# Largest |cos| between two voxel axes that still counts as perpendicular (0.006 degrees off).
SHEAR_TOLERANCE = 1e-4


def _scan_data(path: Path, offset: int, expected: int, float_dtype: np.dtype | None) -> None:
    """Stream ``expected`` bytes of voxels from ``offset``: refuse when fewer are there or any float is not finite."""
    got = 0
    bad = 0
    remainder = b""
    try:
        with _open_maybe_gzip(path) as stream:
            skipped = stream.read(offset) if offset > 0 else b""
            if len(skipped) < offset:
                raise InputError(f"CT file {path} is truncated: it ends inside its header.", _READ_FIX)
            while got < expected:
                chunk = stream.read(min(CHUNK_BYTES, expected - got))
                if not chunk:
                    break
                got += len(chunk)
                if float_dtype is not None:
                    data = remainder + chunk
                    usable = len(data) - len(data) % float_dtype.itemsize
                    values = np.frombuffer(data[:usable], dtype=float_dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    remainder = data[usable:]
            if got == expected and isinstance(stream, gzip.GzipFile):
                while stream.read(CHUNK_BYTES):  # to the end, so that gzip verifies the CRC and length
                    pass
    except EOFError:
        got = min(got, expected)
        raise InputError(f"CT file {path} is truncated: its gzip stream breaks off before the end, after "
                         f"{got:,} or a little more of the {expected:,} bytes of voxel data its header announces; "
                         "the reader would fill the rest with zeros.", _READ_FIX) from None
    except (OSError, zlib.error) as error:
        raise InputError(f"CT file {path} is corrupt: its compressed data fail to decompress ({error}).",
                         _READ_FIX) from None
    if got < expected:
        raise InputError(f"CT file {path} is truncated: it holds {got:,} of the {expected:,} bytes of voxel data "
                         f"its header announces ({100.0 * got / max(expected, 1):.1f} %); the reader would fill "
                         "the rest with zeros.", _READ_FIX)
    if bad:
        raise InputError(f"CT file {path} contains {bad:,} NaN or infinite voxel value(s) (the NIfTI reader would "
                         "silently turn them into 0).",
                         "Replace them, e.g. with -1000 HU (air), and save the CT again.")


# ---- NRRD ------------------------------------------------------------------------------------------

def _text_header(path: Path, stop) -> tuple[list[str], int]:
    """Header lines up to (excluding) the line where ``stop(line)`` is true, and the byte offset after it."""
    lines, offset = [], 0
    with open(path, "rb") as handle:
        for raw in handle:
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            if stop(line):
                return lines, offset
            lines.append(line)
            if len(lines) > 10000:
                break
    return lines, -1


_NRRD_TYPE_BYTES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
    "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
    "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}


def _check_nrrd(path: Path) -> None:
    lines, offset = _text_header(path, lambda line: line == "")
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    spacings = _numbers(fields.get("spacings", ""))
    if any(value < 0 for value in spacings):
        raise InputError(f"CT file {path} has a negative voxel spacing in its header (spacings: "
                         f"{fields['spacings']}); readers disagree on whether that mirrors the volume.",
                         "Fix the header: spacings must be positive; put the orientation in 'space directions'.")
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("gzip", "gz", "bzip2", "bz2"):
        return  # raw data: ITK itself refuses a short file
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if " " in data_file.strip() or data_file.strip().upper().startswith("LIST"):
            return  # several data files: left to ITK
        data_path, data_offset = path.parent / data_file.strip(), 0
    else:
        if offset < 0:
            return
        data_path, data_offset = path, offset
    sizes = [int(v) for v in _numbers(fields.get("sizes", ""))]
    item = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    expected = math.prod(sizes) * item if sizes and item else None
    if not data_path.is_file():
        return
    got = _decompressed_size(path, data_path, data_offset, "bzip2" if encoding.startswith("bz") else "gzip")
    skip = int(fields.get("byte skip", "0") or 0) if fields.get("byte skip", "0").lstrip("-").isdigit() else 0
    if expected is not None and got < expected + max(skip, 0):
        raise InputError(f"CT file {path} is truncated: its compressed data hold {got:,} of the "
                         f"{expected:,} bytes of voxels the header announces.", _READ_FIX)


def _decompressed_size(path: Path, data_path: Path, offset: int, kind: str) -> int:
    """Decompress a gzip/bzip2 stream starting at ``offset`` of ``data_path``, verifying it; returns its size."""
    total = 0
    try:
        with open(data_path, "rb") as handle:
            handle.seek(offset)
            if kind == "gzip":
                with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                    while chunk := stream.read(CHUNK_BYTES):
                        total += len(chunk)
            else:
                decompressor = bz2.BZ2Decompressor()
                while not decompressor.eof and (block := handle.read(CHUNK_BYTES)):
                    total += len(decompressor.decompress(block))
                if not decompressor.eof:
                    raise EOFError("the bzip2 stream ends early")
    except EOFError:
        raise InputError(f"CT file {path} is truncated: its {kind} data stream ends early, after {total:,} bytes, "
                         "so part of the volume is missing.", _READ_FIX) from None
    except (OSError, zlib.error) as error:
        raise InputError(f"CT file {path} is corrupt: its {kind} data fail to decompress ({error}).",
                         _READ_FIX) from None
    return total


def _numbers(text: str) -> list[float]:
    values = []
    for token in re.split(r"[\s,()]+", text.strip()):
        try:
            values.append(float(token))
        except ValueError:
            continue
    return values


# ---- MetaImage -------------------------------------------------------------------------------------

def _looks_like_metaimage(head: bytes) -> bool:
    text = head.decode("latin-1", errors="replace")
    return bool(re.match(r"\s*(ObjectType|NDims|Comment|ObjectSubType|TransformType)\s*=", text))


_MET_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                   "MET_DOUBLE": 8}


def _check_metaimage(path: Path) -> None:
    lines, offset = _text_header(path, lambda line: line.strip().lower().startswith("elementdatafile"))
    fields = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    for key in ("elementspacing", "elementsize"):
        values = _numbers(fields.get(key, ""))
        if any(value < 0 for value in values):
            name = "ElementSpacing" if key == "elementspacing" else "ElementSize"
            raise InputError(f"CT file {path} has a negative voxel spacing in its header ({name} = "
                             f"{fields[key]}); ITK would silently mirror the volume along that axis.",
                             "Fix the header: spacings must be positive; put a flip in TransformMatrix "
                             "(the direction cosines) instead.")
    if fields.get("compresseddata", "false").lower() != "true" or offset < 0:
        return
    with open(path, "rb") as handle:
        handle.seek(0)
        header_bytes = b"".join(handle.readline() for _ in range(len(lines) + 1))
    data_line = header_bytes.decode("latin-1").splitlines()[-1]
    data_file = data_line.partition("=")[2].strip()
    if data_file.upper() == "LOCAL":
        data_path, data_offset = path, len(header_bytes)
    elif " " in data_file or data_file.upper().startswith("LIST") or "%" in data_file:
        return
    else:
        data_path, data_offset = path.parent / data_file, 0
    if not data_path.is_file():
        return
    sizes = [int(v) for v in _numbers(fields.get("dimsize", ""))]
    item = _MET_TYPE_BYTES.get(fields.get("elementtype", "").upper())
    channels = int(_numbers(fields.get("elementnumberofchannels", "1"))[0] or 1) if fields.get(
        "elementnumberofchannels") else 1
    expected = math.prod(sizes) * item * channels if sizes and item else None
    total = 0
    decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # zlib or gzip header
    try:
        with open(data_path, "rb") as handle:
            handle.seek(data_offset)
            while not decompressor.eof and (block := handle.read(CHUNK_BYTES)):
                total += len(decompressor.decompress(block))
    except zlib.error as error:
        raise InputError(f"CT file {path} is corrupt: its compressed voxel data fail to decompress ({error}).",
                         _READ_FIX) from None
    if not decompressor.eof:
        raise InputError(f"CT file {path} is truncated: its compressed voxel data end early, after {total:,} "
                         "bytes, so part of the volume is missing.", _READ_FIX)
    if expected is not None and total < expected:
        raise InputError(f"CT file {path} is truncated: its compressed data hold {total:,} of the {expected:,} "
                         "bytes of voxels the header announces.", _READ_FIX)
