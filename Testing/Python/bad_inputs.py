"""The bad-input catalogue: every case, how it is run, and what must happen.

Each case feeds the CLI (in-process, ``deepdrr-slicer simulate ...``) or the Python API one bad (or
borderline) input and classifies what happened:

- ``refused``: the CLI exits 2 with ``error:`` and ``fix:`` lines, or the API raises ``InputError``;
- ``warned``: it runs, says ``warning: ...`` (a Python warning for the API), and the output is checked;
- ``accepted``: a borderline input that is valid; the output is checked;
- ``cancelled``: an interruption (exit 130); the previous result must be intact;
- ``crashed``: anything else (a traceback, another exit code). Never expected.

``test_bad_inputs.py`` runs every case and compares it with ``Testing/bad_input_catalogue.md``; this
file regenerates that table from the same cases:

    .venv/bin/python Testing/Python/bad_inputs.py
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CATALOGUE = HERE.parent / "bad_input_catalogue.md"


@dataclass
class Outcome:
    kind: str          # refused | warned | accepted | cancelled | crashed
    text: str          # what the user reads (error and fix, or the warnings), temp paths replaced by <tmp>
    code: int | None = None
    stdout: str = ""
    value: object = None


@dataclass
class Case:
    id: str
    area: str
    input: str                       # what was given, for the table
    expect: str                      # the expected Outcome.kind
    run: Callable                    # run(tmp: Path) -> Outcome
    message: str                     # must appear in Outcome.text
    check: Callable | None = None    # check(tmp: Path, outcome) -> None: asserts no garbage, nothing lost
    verified: str = ""               # what check() verifies, for the table


# ---- running -------------------------------------------------------------------------------------

def _clean(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
    # materials other tests registered in this process would change the list
    text = re.sub(r"Known materials: [^;]*;", "Known materials: …;", text)
    return re.sub(r"\s+\n", "\n", text).strip()


def cli(tmp: Path, *arguments, size=("16", "16"), out="out", quiet=True) -> Outcome:
    """``deepdrr-slicer simulate`` in-process, with --size and --out defaults unless given."""
    from DeepDRRSlicerLib.cli import main

    args = ["simulate", *(["--quiet"] if quiet else [])]
    if "--size" not in arguments and "--geometry" not in arguments and size:
        args += ["--size", *size]
    if "--out" not in arguments:
        args += ["--out", str(tmp / out)]
    args += [str(a) for a in arguments]
    return _run_main(tmp, args)


def _run_main(tmp: Path, args) -> Outcome:
    from DeepDRRSlicerLib.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(args)
    except SystemExit as exit_:  # argparse usage errors and --version
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException:  # noqa: BLE001 - anything escaping main is a crash
        return Outcome("crashed", _clean(traceback.format_exc(), tmp), None, stdout.getvalue())
    err = _clean(stderr.getvalue(), tmp)
    if code == 2 and "error:" in err:
        kind = "refused"
    elif code == 0:
        kind = "warned" if "warning:" in err else "accepted"
        if not err and stdout.getvalue().strip():
            # the summary line without its timings and backend, which vary between machines and runs
            err = _clean(stdout.getvalue().strip().splitlines()[0].split(" (")[0], tmp)
    elif code == 130:
        kind = "cancelled"
    else:
        kind = "crashed"
    if kind == "refused" and "fix:" not in err and "usage:" not in err:
        kind = "crashed"  # an error without a fix is not an answer
    return Outcome(kind, err, code, stdout.getvalue())


def api(tmp: Path, function) -> Outcome:
    """Call ``function()``; InputError is 'refused', Python warnings 'warned'."""
    from DeepDRRSlicerLib.errors import InputError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = function()
        except InputError as error:
            return Outcome("refused", _clean(f"InputError: {error.problem}\nfix: {error.fix}", tmp))
        except BaseException:  # noqa: BLE001
            return Outcome("crashed", _clean(traceback.format_exc(), tmp))
    texts = [f"{w.category.__name__}: {w.message}" for w in caught
             if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning)]
    return Outcome("warned" if texts else "accepted", _clean("\n".join(texts), tmp), value=value)


# ---- inputs --------------------------------------------------------------------------------------

def phantom_hu(shape=(20, 20, 20)) -> np.ndarray:
    """A small CT in HU [k, j, i]: air around a water cylinder with a bone rod."""
    k, j, i = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    radius = np.hypot(j - centre[1], i - centre[2])
    hu = np.full(shape, -1000.0, np.float32)
    hu[radius < shape[1] * 0.4] = 0.0
    hu[radius < shape[1] * 0.12] = 1200.0
    return hu


def write_image(path: Path, array, spacing=(3.0, 3.0, 3.0), compress=False) -> Path:
    image = sitk.GetImageFromArray(array)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def phantom(tmp: Path, name="ct.nii.gz", **options) -> Path:
    return write_image(tmp / name, phantom_hu(**options))


def previous_result(tmp: Path, name="out") -> Path:
    """A folder holding a previous run's result (CLI, phantom CT, 16 x 16)."""
    outcome = cli(tmp, "--ct", phantom(tmp, "previous_ct.nii.gz"), out=name)
    assert outcome.kind == "accepted", outcome.text
    return tmp / name


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def nifti_bytes(tmp: Path, array, name="src.nii") -> bytearray:
    return bytearray(write_image(tmp / name, array).read_bytes())


def set_pixdim(raw: bytearray, index: int, value: float) -> bytearray:
    pixdim = list(struct.unpack("<8f", raw[76:108]))
    pixdim[index] = value
    raw[76:108] = struct.pack("<8f", *pixdim)
    return raw


# ---- checks --------------------------------------------------------------------------------------

def nothing_written(tmp: Path, outcome) -> None:
    out = tmp / "out"
    assert not out.exists() or not any(out.iterdir()), f"{out} was written"
    assert not list(tmp.glob(".out.partial-*")), "a staging folder was left behind"


def image_written(tmp: Path, outcome, name="primary") -> np.ndarray:
    image = np.load(tmp / "out" / f"{name}.npy")
    assert np.all(np.isfinite(image))
    return image


def image_shows_the_phantom(tmp: Path, outcome) -> None:
    image = image_written(tmp, outcome)
    assert image.min() < 0.9 * image.max(), "the phantom should attenuate part of the image"


def same_as(reference_args: tuple, stage="primary"):
    """Check: the image equals that of a clean run with ``reference_args``."""
    def check(tmp: Path, outcome) -> None:
        reference = cli(tmp, *reference_args(tmp) if callable(reference_args) else reference_args, out="reference")
        assert reference.kind == "accepted", reference.text
        assert np.array_equal(np.load(tmp / "out" / f"{stage}.npy"), np.load(tmp / "reference" / f"{stage}.npy"))
    return check


# ---- the cases -----------------------------------------------------------------------------------

CASES: list[Case] = []


def case(id, area, input, expect, message, verified="", check=None):
    def register(run):
        CASES.append(Case(id, area, input, expect, run, message, check, verified))
        return run
    return register


# output folder -----------------------------------------------------------------------------------

@case("out-empty", "output", '`--out ""`', "refused", "--out is empty", "nothing written",
      lambda tmp, o: None if not list(tmp.iterdir()) else None)
def _(tmp):
    return cli(tmp, "--out", "")


@case("out-is-a-file", "output", "`--out` names an existing file", "refused", "exists and is not a folder",
      "the file is unchanged", lambda tmp, o: (tmp / "a_file").read_text() == "mine" or _fail("file changed"))
def _(tmp):
    (tmp / "a_file").write_text("mine")
    return cli(tmp, "--out", tmp / "a_file")


@case("out-under-a-file", "output", "`--out FILE/sub` (the parent is a file)", "refused", "is a file, not a folder")
def _(tmp):
    (tmp / "a_file").write_text("mine")
    return cli(tmp, "--out", tmp / "a_file" / "sub")


def _user_files_intact(tmp: Path, outcome) -> None:
    assert (tmp / "out" / "notes.txt").read_text() == "my notes"
    assert (tmp / "out" / "scan.nii.gz").read_bytes() == b"my scan"


def _user_folder(tmp: Path) -> Path:
    out = tmp / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "scan.nii.gz").write_bytes(b"my scan")
    return out


@case("out-foreign-folder", "output", "`--out` is a non-empty folder that holds no previous result", "refused",
      "does not hold a previous deepdrr-slicer result", "the user's files are untouched, nothing added",
      lambda tmp, o: (_user_files_intact(tmp, o), _only(tmp / "out", {"notes.txt", "scan.nii.gz"})))
def _(tmp):
    _user_folder(tmp)
    return cli(tmp, "--ct", phantom(tmp))


@case("out-foreign-overwrite", "output", "the same with `--overwrite`", "accepted", "wrote primary",
      "results written, the user's files kept",
      lambda tmp, o: (_user_files_intact(tmp, o), image_shows_the_phantom(tmp, o)))
def _(tmp):
    _user_folder(tmp)
    return cli(tmp, "--ct", phantom(tmp), "--overwrite")


@case("out-holds-input", "output", "`--landmarks D/landmarks.csv --out D --overwrite`, the user's own file",
      "refused", "the run would replace it")
def _(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "landmarks.csv").write_text("label,R,A,S\nm,0,0,0\n")
    return cli(tmp, "--ct", phantom(tmp, "ct.nii.gz"), "--landmarks", tmp / "out" / "landmarks.csv", "--overwrite")


@case("out-geometry-inside", "output", "`--geometry D/geometry.json --out D`, D a previous result", "accepted",
      "wrote primary", "the saved pose is re-rendered identically", lambda tmp, o: _rerender_identical(tmp))
def _(tmp):
    out = previous_result(tmp)
    shutil.copytree(out, tmp / "before")
    return cli(tmp, "--ct", tmp / "previous_ct.nii.gz", "--geometry", out / "geometry.json")


def _rerender_identical(tmp: Path) -> None:
    assert np.array_equal(np.load(tmp / "out" / "primary.npy"), np.load(tmp / "before" / "primary.npy"))
    assert json.loads((tmp / "out" / "geometry.json").read_text()) == json.loads(
        (tmp / "before" / "geometry.json").read_text())


@case("out-landmarks-inside", "output", "`--landmarks D/marks.csv --out D`, D a previous result plus the user's file",
      "refused", "holds a previous result plus files it did not write", "the previous result and the file are intact",
      lambda tmp, o: _previous_intact(tmp))
def _(tmp):
    out = previous_result(tmp)
    (out / "marks.csv").write_text("label,R,A,S\ncentre,0,0,0\n")
    (tmp / "digest.json").write_text(json.dumps(digest(out)))
    return cli(tmp, "--ct", tmp / "previous_ct.nii.gz", "--landmarks", out / "marks.csv")


def _previous_intact(tmp: Path) -> None:
    assert digest(tmp / "out") == json.loads((tmp / "digest.json").read_text())
    assert not list(tmp.glob(".out.*")), "a staging folder was left behind"


@case("out-landmarks-inside-overwrite", "output", "the same with `--overwrite`", "accepted", "wrote primary",
      "the landmarks file is kept, the overlay drawn",
      lambda tmp, o: ((tmp / "out" / "marks.csv").is_file() or _fail("marks.csv deleted"),
                      (tmp / "out" / "overlay.png").is_file() or _fail("no overlay")))
def _(tmp):
    out = previous_result(tmp)
    (out / "marks.csv").write_text("label,R,A,S\ncentre,0,0,0\n")
    return cli(tmp, "--ct", tmp / "previous_ct.nii.gz", "--landmarks", out / "marks.csv", "--overwrite")


@case("out-rerun", "output", "a second run into a previous result (other mode)", "accepted", "wrote line_integral",
      "the old result is replaced whole: no stale primary.npy",
      lambda tmp, o: (not (tmp / "out" / "primary.npy").exists() or _fail("stale primary.npy"),
                      _only(tmp / "out", set(json.loads((tmp / "out" / "summary.json").read_text())["files"]))))
def _(tmp):
    previous_result(tmp)
    return cli(tmp, "--ct", tmp / "previous_ct.nii.gz", "--mode", "line-integral")


def _interrupt_while_writing(tmp):
    from DeepDRRSlicerLib import output

    real = output._write_files

    def write_half_then_interrupt(result, folder, parameters):
        np.save(folder / "primary.npy", np.zeros(3))
        (folder / "primary.png").write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    out = previous_result(tmp)
    (tmp / "digest.json").write_text(json.dumps(digest(out)))
    with mock.patch.object(output, "_write_files", write_half_then_interrupt):
        outcome = cli(tmp, "--ct", tmp / "previous_ct.nii.gz", "--alpha", "30")
    assert output._write_files is real
    return outcome


case("out-interrupted-writing", "output", "Ctrl-C while the files are being written", "cancelled", "cancelled",
     "the previous result is byte-identical; no partial folder",
     lambda tmp, o: _previous_intact(tmp))(_interrupt_while_writing)


@case("out-interrupted-render", "output", "Ctrl-C during the projection", "cancelled", "cancelled",
      "the previous result is byte-identical; no partial folder", lambda tmp, o: _previous_intact(tmp))
def _(tmp):
    from DeepDRRSlicerLib import pipeline

    out = previous_result(tmp)
    (tmp / "digest.json").write_text(json.dumps(digest(out)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with mock.patch.object(pipeline, "project", interrupted):
        return cli(tmp, "--ct", tmp / "previous_ct.nii.gz")


@case("out-disk-error", "output", "the disk fails while writing (OSError)", "refused", "Cannot write the results",
      "the previous result is byte-identical; no partial folder", lambda tmp, o: _previous_intact(tmp))
def _(tmp):
    from DeepDRRSlicerLib import output

    def disk_full(result, folder, parameters):
        raise OSError(28, "No space left on device")

    out = previous_result(tmp)
    (tmp / "digest.json").write_text(json.dumps(digest(out)))
    with mock.patch.object(output, "_write_files", disk_full):
        return cli(tmp, "--ct", tmp / "previous_ct.nii.gz")


# CT files ----------------------------------------------------------------------------------------

@case("ct-missing", "CT file", "`--ct` names no file", "refused", "CT file not found", "nothing written",
      nothing_written)
def _(tmp):
    return cli(tmp, "--ct", tmp / "missing.nii.gz")


@case("ct-garbage", "CT file", "a text file named `.nrrd`", "refused", "no image reader recognises", "nothing written",
      nothing_written)
def _(tmp):
    (tmp / "garbage.nrrd").write_text("not an image")
    return cli(tmp, "--ct", tmp / "garbage.nrrd")


@case("ct-empty-file", "CT file", "an empty (0-byte) `.nii.gz`", "refused", "it is empty (0 bytes)")
def _(tmp):
    (tmp / "empty.nii.gz").write_bytes(b"")
    return cli(tmp, "--ct", tmp / "empty.nii.gz")


def _bundled_gz() -> bytes:
    from DeepDRRSlicerLib.resources import sample_ct_path

    return sample_ct_path().read_bytes()


@case("ct-truncated-gz", "CT file", "the bundled `.nii.gz` cut in half (half a gzip stream)", "refused",
      "is truncated", "nothing written (ITK alone reads it with half the voxels 0)", nothing_written)
def _(tmp):
    data = _bundled_gz()
    (tmp / "half.nii.gz").write_bytes(data[: len(data) // 2])
    return cli(tmp, "--ct", tmp / "half.nii.gz")


@case("ct-corrupt-gz", "CT file", "one byte flipped in the middle of a `.nii.gz`", "refused", "is corrupt",
      "nothing written", nothing_written)
def _(tmp):
    data = bytearray(_bundled_gz())
    data[len(data) // 2] ^= 0xFF
    (tmp / "flipped.nii.gz").write_bytes(bytes(data))
    return cli(tmp, "--ct", tmp / "flipped.nii.gz")


@case("ct-gz-crc", "CT file", "a `.nii.gz` whose gzip checksum is wrong", "refused", "is corrupt")
def _(tmp):
    data = bytearray(_bundled_gz())
    data[-6] ^= 0xFF
    (tmp / "crc.nii.gz").write_bytes(bytes(data))
    return cli(tmp, "--ct", tmp / "crc.nii.gz")


@case("ct-truncated-nii", "CT file", "an uncompressed `.nii` missing its last 1000 bytes", "refused",
      "is truncated", "nothing written (ITK alone pads it with zeros)", nothing_written)
def _(tmp):
    raw = nifti_bytes(tmp, phantom_hu())
    (tmp / "short.nii").write_bytes(bytes(raw[:-1000]))
    return cli(tmp, "--ct", tmp / "short.nii")


def _nan_phantom(value=np.nan):
    hu = phantom_hu()
    hu[3, 4, 5] = value
    hu[10, 10, 10] = value
    return hu


@case("ct-nan-nifti", "CT file", "NaN voxels in a `.nii.gz`", "refused", "2 NaN or infinite voxel",
      "nothing written (ITK alone turns them into 0)", nothing_written)
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "nan.nii.gz", _nan_phantom()))


@case("ct-inf-nifti", "CT file", "+inf voxels in an uncompressed `.nii`", "refused", "2 NaN or infinite voxel")
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "inf.nii", _nan_phantom(np.inf)))


@case("ct-nan-nrrd", "CT file", "NaN voxels in a `.nrrd`", "refused", "2 NaN or infinite voxel")
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "nan.nrrd", _nan_phantom()))


@case("ct-nan-mha", "CT file", "-inf voxels in a compressed `.mha`", "refused", "2 NaN or infinite voxel")
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "nan.mha", _nan_phantom(-np.inf), compress=True))


@case("ct-nrrd-gzip-corrupt", "CT file", "a gzip-encoded `.nrrd` with a flipped byte", "refused", "is corrupt")
def _(tmp):
    path = write_image(tmp / "ct.nrrd", phantom_hu((30, 30, 30)), compress=True)
    data = bytearray(path.read_bytes())
    data[len(data) - len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    return cli(tmp, "--ct", path)


@case("ct-mha-zlib-corrupt", "CT file", "a compressed `.mha` with a flipped byte", "refused", "corrupt")
def _(tmp):
    path = write_image(tmp / "ct.mha", phantom_hu((30, 30, 30)), compress=True)
    data = bytearray(path.read_bytes())
    data[len(data) - len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    return cli(tmp, "--ct", path)


@case("ct-2d", "CT file", "a 2D image", "refused", "a CT volume needs 3")
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "flat.nrrd", np.zeros((8, 8), np.int16)))


@case("ct-4d", "CT file", "a 4D NIfTI (a time series)", "refused", "a CT volume needs 3")
def _(tmp):
    image = sitk.JoinSeries([sitk.GetImageFromArray(phantom_hu((6, 6, 6)))] * 2)
    sitk.WriteImage(image, str(tmp / "4d.nii.gz"))
    return cli(tmp, "--ct", tmp / "4d.nii.gz")


@case("ct-rgb", "CT file", "a colour (3 components per voxel) volume", "refused", "components per voxel")
def _(tmp):
    image = sitk.GetImageFromArray(np.zeros((6, 6, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(image, str(tmp / "rgb.nrrd"))
    return cli(tmp, "--ct", tmp / "rgb.nrrd")


@case("ct-single-slice", "CT file", "a volume one slice thick", "refused", "single slice")
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "one.nii.gz", phantom_hu((1, 20, 20))))


def _mhd(tmp: Path, spacing: str) -> Path:
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = {spacing}\n"
              "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    path = tmp / "header.mha"
    path.write_bytes(header.encode() + np.full(64, -1000, "<i2").tobytes())
    return path


@case("ct-zero-spacing", "CT file", "`ElementSpacing = 0 3 3` in a MetaImage header", "refused",
      "zero or negative voxel spacing")
def _(tmp):
    return cli(tmp, "--ct", _mhd(tmp, "0 3 3"))


@case("ct-negative-spacing-mha", "CT file", "`ElementSpacing = -1 3 3` in a MetaImage header", "refused",
      "negative voxel spacing in its header", "nothing written (ITK alone mirrors the volume)", nothing_written)
def _(tmp):
    return cli(tmp, "--ct", _mhd(tmp, "-1 3 3"))


@case("ct-negative-pixdim", "CT file", "a negative `pixdim[1]` in a NIfTI header", "refused",
      "negative voxel spacing in its header")
def _(tmp):
    raw = set_pixdim(nifti_bytes(tmp, phantom_hu()), 1, -3.0)
    (tmp / "negative.nii").write_bytes(bytes(raw))
    return cli(tmp, "--ct", tmp / "negative.nii")


@case("ct-negative-nrrd-spacings", "CT file", "`spacings: -1 1 1` in a NRRD header", "refused",
      "negative voxel spacing in its header")
def _(tmp):
    header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nspacings: -1 1 1\nendian: little\n"
              "encoding: raw\n\n")
    (tmp / "negative.nrrd").write_bytes(header.encode() + np.full(64, -1000, "<i2").tobytes())
    return cli(tmp, "--ct", tmp / "negative.nrrd")


@case("ct-sheared-nifti", "CT file", "a NIfTI whose sform shears the voxel axes", "refused",
      "not perpendicular", "the fix names tilt correction or resampling, not another file format",
      lambda tmp, o: "Resample" in o.text or _fail("fix does not say to resample"))
def _(tmp):
    raw = nifti_bytes(tmp, phantom_hu())
    raw[252:254] = struct.pack("<h", 0)      # qform_code 0
    raw[254:256] = struct.pack("<h", 1)      # sform_code 1
    rows = [[-3.0, 1.0, 0.0, 0.0], [0.0, -3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]
    for r, row in enumerate(rows):
        raw[280 + 16 * r:296 + 16 * r] = struct.pack("<4f", *row)
    (tmp / "sheared.nii").write_bytes(bytes(raw))
    return cli(tmp, "--ct", tmp / "sheared.nii")


@case("ct-not-hu", "CT file", "an MR-like volume with values 0-255", "warned", "implausible for a CT",
      "the image is written", image_written)
def _(tmp):
    values = np.random.default_rng(0).uniform(0, 255, (10, 12, 14)).astype(np.float32)
    return cli(tmp, "--ct", write_image(tmp / "mri.nrrd", values))


@case("ct-shifted-1024", "CT file", "a CT stored without its -1024 intercept (values 0-2400)", "warned",
      "shifted by +1024", "the image is written", image_written)
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "shifted.nii.gz", phantom_hu() + 1024))


@case("ct-all-air", "CT file", "a tiny CT that is all air (-1024 HU)", "warned", "the rays cross only air",
      "the warning is true: rays do cross the volume", image_written)
def _(tmp):
    return cli(tmp, "--ct", write_image(tmp / "air.nii.gz", np.full((4, 4, 4), -1024.0, np.float32)))


@case("ct-folder-no-dicom", "CT file", "a folder (with subfolders) holding no DICOM", "refused",
      "No DICOM series found")
def _(tmp):
    (tmp / "folder" / "sub").mkdir(parents=True)
    (tmp / "folder" / "sub" / "readme.txt").write_text("nothing")
    return cli(tmp, "--ct", tmp / "folder")


@case("ct-series-with-file", "CT file", "`--series 2` with a NIfTI file", "refused", "not a DICOM folder")
def _(tmp):
    return cli(tmp, "--ct", phantom(tmp), "--series", "2")


# DICOM -------------------------------------------------------------------------------------------

def _dicom():
    import dicom_series

    dicom_series.pydicom()
    return dicom_series


@case("dicom-nested", "DICOM", "a series spread over nested subfolders", "accepted", "wrote primary",
      "same image as the flat folder", same_as(lambda tmp: ("--ct", _dicom().SERIES)))
def _(tmp):
    d = _dicom()
    slices = d.sorted_slices()
    d.write(slices[:9], tmp / "patient" / "study" / "a")
    d.write(slices[9:], tmp / "patient" / "study" / "b" / "c", names=[f"x{i}" for i in range(11)])
    return cli(tmp, "--ct", tmp / "patient")


@case("dicom-two-series", "DICOM", "a folder with a 20-slice and a 10-slice CT series", "warned",
      "using the CT volume with the most voxels", "the 20-slice series is used",
      same_as(lambda tmp: ("--ct", tmp / "study" / "one")))
def _(tmp):
    d = _dicom()
    slices = d.sorted_slices()
    d.write(d.new_series(slices, "CT Body 3.0", 1), tmp / "study" / "one")
    d.write(d.new_series(slices[:10], "CT second", 2), tmp / "study" / "two")
    return cli(tmp, "--ct", tmp / "study")


def _equal_series(tmp: Path) -> Path:
    d = _dicom()
    slices = d.sorted_slices()
    d.write(d.new_series(slices[:10], "CT upper", 1), tmp / "study" / "one")
    d.write(d.new_series(slices[10:], "CT lower", 2), tmp / "study" / "two")
    return tmp / "study"


@case("dicom-equal-series", "DICOM", "two equally large CT series, no `--series`", "refused", "equally large",
      "both are listed with description, size, modality and UID",
      lambda tmp, o: ("CT upper" in o.text and "CT lower" in o.text and "UID" in o.text and "largest" not in o.text)
      or _fail("listing incomplete"))
def _(tmp):
    return cli(tmp, "--ct", _equal_series(tmp))


@case("dicom-series-chosen", "DICOM", "the same with `--series 2`", "accepted", "wrote primary",
      "the second series is used", same_as(lambda tmp: ("--ct", tmp / "study" / "two")))
def _(tmp):
    return cli(tmp, "--ct", _equal_series(tmp), "--series", "2")


@case("dicom-series-unknown", "DICOM", "`--series 9` with two series", "refused", "matches none")
def _(tmp):
    return cli(tmp, "--ct", _equal_series(tmp), "--series", "9")


@case("dicom-tilt", "DICOM", "a series with 15 degrees gantry tilt", "warned", "gantry tilt of 15.00 degrees",
      "every slice is shifted back in its plane (test_dicom.py checks voxel positions)", image_written)
def _(tmp):
    _dicom().tilted(tmp / "tilted", 15.0)
    return cli(tmp, "--ct", tmp / "tilted")


@case("dicom-missing-slice", "DICOM", "a series with one slice missing", "refused", "1 slice(s) missing",
      "nothing written", nothing_written)
def _(tmp):
    d = _dicom()
    slices = d.sorted_slices()
    d.write(slices[:7] + slices[8:], tmp / "gap")
    return cli(tmp, "--ct", tmp / "gap")


@case("dicom-duplicate-position", "DICOM", "two different slices at one position", "refused",
      "at the position of another")
def _(tmp):
    import copy

    d = _dicom()
    slices = d.sorted_slices()
    extra = copy.deepcopy(slices[5])
    extra.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    d.write(slices + [extra], tmp / "doubled")
    return cli(tmp, "--ct", tmp / "doubled")


@case("dicom-mr", "DICOM", "a series whose Modality is MR", "refused", "modality MR, not CT")
def _(tmp):
    d = _dicom()
    slices = d.sorted_slices()
    for ds in slices:
        ds.Modality = "MR"
    d.write(slices, tmp / "mr")
    return cli(tmp, "--ct", tmp / "mr")


@case("dicom-no-rescale", "DICOM", "a CT series without RescaleSlope/Intercept (raw values)", "refused",
      "no RescaleSlope/RescaleIntercept")
def _(tmp):
    d = _dicom()
    slices = d.sorted_slices()
    for ds in slices:
        del ds.RescaleIntercept
        del ds.RescaleSlope
    d.write(slices, tmp / "raw")
    return cli(tmp, "--ct", tmp / "raw")


@case("dicom-single-file", "DICOM", "`--ct` names one DICOM file of a series", "warned",
      "reading the whole series", "the whole 20-slice series is used", same_as(lambda tmp: ("--ct", tmp / "series")))
def _(tmp):
    shutil.copytree(_dicom().SERIES, tmp / "series")
    return cli(tmp, "--ct", sorted((tmp / "series").iterdir())[0])


# geometry ----------------------------------------------------------------------------------------

def _geometry_file(tmp: Path, **changes) -> Path:
    from DeepDRRSlicerLib.geometry import CArm

    data = CArm(width=16, height=16, pixel_spacing_mm=20.0, isocenter_ras=(0.0, 0.0, 0.0)).geometry().to_dict()
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path = tmp / "geometry.json"
    path.write_text(json.dumps(data))
    return path


@case("geom-missing-file", "geometry", "`--geometry` names no file", "refused", "Geometry file not found")
def _(tmp):
    return cli(tmp, "--geometry", tmp / "nope.json")


@case("geom-not-json", "geometry", "a geometry file that is not JSON", "refused", "is not valid JSON")
def _(tmp):
    (tmp / "g.json").write_text("{source: [0, 0, 0]")
    return cli(tmp, "--geometry", tmp / "g.json")


@case("geom-missing-fields", "geometry", "a geometry JSON without u, v, width, height", "refused", "missing field")
def _(tmp):
    (tmp / "g.json").write_text('{"source": [0, 0, 0], "detector_origin": [0, 100, 0]}')
    return cli(tmp, "--geometry", tmp / "g.json")


@case("geom-and-carm", "geometry", "`--geometry` together with `--alpha`", "refused", "together with C-arm options")
def _(tmp):
    return cli(tmp, "--geometry", _geometry_file(tmp), "--alpha", "10")


@case("geom-parallel-uv", "geometry", "u and v parallel", "refused", "parallel")
def _(tmp):
    return cli(tmp, "--geometry", _geometry_file(tmp, v=[-20.0, 0.0, 0.0], projection_matrix=None))


@case("geom-sheared-uv", "geometry", "u and v at 80 degrees", "warned", "not perpendicular",
      "the image is written, the warning says what it means", image_written)
def _(tmp):
    angle = math.radians(80)
    return cli(tmp, "--ct", phantom(tmp), "--geometry", _geometry_file(
        tmp, u=[-20.0, 0.0, 0.0], v=[-20.0 * math.cos(angle), 0.0, -20.0 * math.sin(angle)], projection_matrix=None))


@case("geom-matrix-disagrees", "geometry", "a projection_matrix that disagrees with the vectors", "refused",
      "disagrees")
def _(tmp):
    return cli(tmp, "--geometry", _geometry_file(tmp, projection_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]))


@case("geom-nan", "geometry", "NaN in `source`", "refused", "NaN or infinity")
def _(tmp):
    path = _geometry_file(tmp)
    data = json.loads(path.read_text())
    data["source"] = [float("nan"), 0.0, 0.0]
    path.write_text(json.dumps(data))
    return cli(tmp, "--geometry", path)


@case("geom-zero-width", "geometry", '`"width": 0` in the geometry', "refused", "zero size")
def _(tmp):
    return cli(tmp, "--geometry", _geometry_file(tmp, width=0, projection_matrix=None))


@case("size-zero", "geometry", "`--size 0 512`", "refused", "zero size")
def _(tmp):
    return cli(tmp, "--size", "0", "512")


@case("geom-units-cm", "geometry", '`"units": "cm"` in the geometry', "refused", "units 'cm'")
def _(tmp):
    return cli(tmp, "--geometry", _geometry_file(tmp, units="cm", projection_matrix=None))


@case("size-too-large", "geometry", "`--size 20000 20000`", "refused", "larger than the 16384 supported")
def _(tmp):
    return cli(tmp, "--size", "20000", "20000")


@case("pixel-spacing-zero", "geometry", "`--pixel-spacing 0`", "refused", "Pixel spacing must be positive")
def _(tmp):
    return cli(tmp, "--pixel-spacing", "0")


@case("sod-beyond-sid", "geometry", "`--sod 1200 --sid 1000`", "refused", "distances are inconsistent")
def _(tmp):
    return cli(tmp, "--sod", "1200", "--sid", "1000")


@case("alpha-nan", "geometry", "`--alpha nan`", "refused", "must be a finite number")
def _(tmp):
    return cli(tmp, "--alpha", "nan")


@case("source-inside-ct", "geometry", "`--sod 30 --sid 200` (the source inside the CT)", "refused",
      "inside the CT volume")
def _(tmp):
    return cli(tmp, "--sod", "30", "--sid", "200")


@case("beam-misses-ct", "geometry", "`--isocenter 10000 0 0` (the beam misses the CT)", "warned",
      "no ray crosses the CT", "the blank image is written and the warning is in summary.json",
      lambda tmp, o: json.loads((tmp / "out" / "summary.json").read_text())["warnings"] or _fail("no warning saved"))
def _(tmp):
    return cli(tmp, "--ct", phantom(tmp), "--isocenter", "10000", "0", "0")


def _with_available_memory(tmp, available, *arguments):
    from DeepDRRSlicerLib import memory

    with mock.patch.object(memory, "available_memory_bytes", lambda: available):
        return cli(tmp, "--ct", phantom(tmp), *arguments)


@case("memory-refused", "resources", "`--size 4096 4096` with 200 MB of memory available", "refused",
      "more than the 200.0 MB of memory available", "refused before any work: nothing written", nothing_written)
def _(tmp):
    return _with_available_memory(tmp, 200 << 20, "--size", "4096", "4096")


@case("memory-warned", "resources", "`--size 512 512` with 150 MB of memory available", "warned",
      "of memory available", "the image is written", image_written)
def _(tmp):
    return _with_available_memory(tmp, 150 << 20, "--size", "512", "512")


# physics -----------------------------------------------------------------------------------------

@case("kvp-high", "physics", "`--kvp 200`", "refused", "outside the supported 40-150 kVp")
def _(tmp):
    return cli(tmp, "--kvp", "200")


@case("kvp-low", "physics", "`--kvp 20`", "refused", "outside the supported 40-150 kVp")
def _(tmp):
    return cli(tmp, "--kvp", "20")


@case("kvp-nan", "physics", "`--kvp nan`", "refused", "must be a finite number")
def _(tmp):
    return cli(tmp, "--kvp", "nan")


@case("kvp-text", "physics", "`--kvp ninety`", "refused", "invalid float value")
def _(tmp):
    return cli(tmp, "--kvp", "ninety")


@case("filtration-garbled", "physics", "`--filtration Al2.5`", "refused", "Cannot read filtration")
def _(tmp):
    return cli(tmp, "--filtration", "Al2.5")


@case("filtration-unknown", "physics", "`--filtration Unobtainium=1`", "refused", "Unknown filter")
def _(tmp):
    return cli(tmp, "--filtration", "Unobtainium=1")


@case("filtration-duplicate", "physics", "`--filtration Al=1,Al=2`", "refused", "names Al twice")
def _(tmp):
    return cli(tmp, "--filtration", "Al=1,Al=2")


@case("filtration-duplicate-case", "physics", "`--filtration Al=1,al=2`", "refused", "names al twice")
def _(tmp):
    return cli(tmp, "--filtration", "Al=1,al=2")


@case("filtration-negative", "physics", "`--filtration Al=-1`", "refused", "Filter thickness for Al is -1 mm")
def _(tmp):
    return cli(tmp, "--filtration", "Al=-1")


@case("filtration-stops-beam", "physics", "`--filtration Cu=100`", "refused", "no usable image")
def _(tmp):
    return cli(tmp, "--filtration", "Cu=100")


@case("filtration-inf", "physics", "`--filtration Cu=inf`", "refused", "must be a finite number")
def _(tmp):
    return cli(tmp, "--filtration", "Cu=inf")


# landmarks ---------------------------------------------------------------------------------------

@case("landmarks-missing", "landmarks", "`--landmarks` names no file", "refused", "not found")
def _(tmp):
    return cli(tmp, "--landmarks", tmp / "nope.csv")


@case("landmarks-columns", "landmarks", "a CSV row with 3 of 4 columns", "refused", "line 2 has 3 columns")
def _(tmp):
    (tmp / "m.csv").write_text("label,R,A,S\nhead,1,2\n")
    return cli(tmp, "--landmarks", tmp / "m.csv")


@case("landmarks-nan", "landmarks", "a landmark at NaN", "refused", "is not finite")
def _(tmp):
    (tmp / "m.csv").write_text("label,R,A,S\nhead,nan,2,3\n")
    return cli(tmp, "--landmarks", tmp / "m.csv")


@case("landmarks-empty", "landmarks", "a markups file with no points", "refused", "no control points")
def _(tmp):
    (tmp / "m.mrk.json").write_text('{"markups": [{"type": "Fiducial", "controlPoints": []}]}')
    return cli(tmp, "--landmarks", tmp / "m.mrk.json")


@case("landmarks-extension", "landmarks", "a landmark file ending in `.txt`", "refused", "unknown extension")
def _(tmp):
    (tmp / "m.txt").write_text("head 1 2 3")
    return cli(tmp, "--landmarks", tmp / "m.txt")


@case("landmarks-unicode", "landmarks", "labels in French, Greek, Russian, with symbols", "accepted",
      "wrote primary", "drawn with a font that has the glyphs (test_outputs.py checks them)",
      lambda tmp, o: (tmp / "out" / "overlay.png").is_file() or _fail("no overlay"))
def _(tmp):
    (tmp / "m.csv").write_text("label,R,A,S\nTête fémorale,0,0,0\nΔ α/β → ✓,5,5,5\nПозвонок L5,-5,0,5\n",
                               encoding="utf-8")
    return cli(tmp, "--ct", phantom(tmp), "--landmarks", tmp / "m.csv")


# command line ------------------------------------------------------------------------------------

@case("cli-version", "CLI", "`deepdrr-slicer --version`", "accepted", "deepdrr-slicer 0.",
      "the version is the package's", lambda tmp, o: _version_matches(o))
def _(tmp):
    return _run_main(tmp, ["--version"])


@case("cli-quiet", "CLI", "`--quiet` (notes such as the CPU fallback)", "accepted", "wrote primary",
      "no `note:` line and no progress bar on stderr",
      lambda tmp, o: "note:" not in o.text or _fail("a note was printed"))
def _(tmp):
    return cli(tmp, "--ct", phantom(tmp))


@case("cli-unknown-option", "CLI", "`--frobnicate`", "refused", "unrecognized arguments")
def _(tmp):
    return cli(tmp, "--frobnicate")


# dataset generation (deepdrr-slicer generate) ----------------------------------------------------

def gen(tmp: Path, *arguments, out="ds") -> Outcome:
    """``deepdrr-slicer generate`` in-process: 16 x 16 images, one pose per CT unless given."""
    args = ["generate", "--quiet", "--size", "16", "16", *arguments]
    if "--sample" not in arguments and "--poses" not in arguments:
        args += ["--sample", "alpha=0:10,n=1"]
    return _run_main(tmp, [*args, "--out", str(tmp / out)])


def _report(tmp: Path) -> dict:
    return json.loads((tmp / "ds" / "report.json").read_text())


@case("gen-unreadable-ct-in-list", "generate", "`--ct-list` naming a corrupt CT and a good one", "warned",
      "skipped CT 0", "the good CT's image is written; report.json lists the skipped CT and why",
      lambda tmp, o: (_report(tmp)["written"] == 1 and _report(tmp)["skipped_cts"][0]["index"] == 0)
      or _fail("the skipped CT is not reported"))
def _(tmp):
    (tmp / "broken.nii.gz").write_bytes(b"not an image")
    (tmp / "cts.txt").write_text(f"broken.nii.gz\n{phantom(tmp).name}\n")
    return gen(tmp, "--ct-list", str(tmp / "cts.txt"))


@case("gen-no-ray", "generate", "poses whose isocentre is 2 m from the CT", "refused",
      "No pose puts a ray through any CT", "nothing is written",
      lambda tmp, o: not (tmp / "ds").exists() or _fail("the output folder was created"))
def _(tmp):
    (tmp / "poses.json").write_text('[{"alpha": 0, "isocenter": [2000, 0, 0]}]')
    return gen(tmp, "--ct", str(phantom(tmp)), "--poses", str(tmp / "poses.json"))


@case("gen-poses-sod-beyond-sid", "generate", "a pose file's pose with `\"sid\": 1000` and `--randomize sod=900:1100`",
      "refused", "pose 0: its sid 1000 mm and --randomize sod=900:1100")
def _(tmp):
    (tmp / "poses.json").write_text('[{"alpha": 0, "sid": 1000}]')
    return gen(tmp, "--ct", str(phantom(tmp)), "--poses", str(tmp / "poses.json"), "--randomize", "sod=900:1100")


@case("gen-stage-unavailable", "generate", "`--stages primary,xray`", "refused", "are not available")
def _(tmp):
    return gen(tmp, "--ct", str(phantom(tmp)), "--stages", "primary,xray")


@case("gen-randomize-unknown", "generate", "`--randomize voltage=70:120`", "refused",
      "not a setting this engine has")
def _(tmp):
    return gen(tmp, "--ct", str(phantom(tmp)), "--randomize", "voltage=70:120")


@case("gen-randomize-kvp-range", "generate", "`--randomize kvp=20:90`", "refused", "outside the supported")
def _(tmp):
    return gen(tmp, "--ct", str(phantom(tmp)), "--randomize", "kvp=20:90")


@case("gen-randomize-unused", "generate", "`--randomize mas=0.1:1:log` with `--stages primary`", "refused",
      "Add noisy or final to --stages")
def _(tmp):
    return gen(tmp, "--ct", str(phantom(tmp)), "--stages", "primary", "--randomize", "mas=0.1:1:log")


@case("gen-foreign-folder", "generate", "`--out` a non-empty folder of other files", "refused",
      "holds no DeepDRRSlicer dataset", "the folder's file is untouched",
      lambda tmp, o: (tmp / "ds" / "notes.txt").read_text() == "mine" or _fail("notes.txt changed"))
def _(tmp):
    (tmp / "ds").mkdir()
    (tmp / "ds" / "notes.txt").write_text("mine")
    return gen(tmp, "--ct", str(phantom(tmp)))


@case("gen-different-dataset", "generate", "`--out` holding a dataset made with another seed", "refused",
      "holds a different dataset", "the existing dataset is unchanged",
      lambda tmp, o: digest(tmp / "ds") == json.loads((tmp / "before.json").read_text())
      or _fail("the dataset changed"))
def _(tmp):
    assert gen(tmp, "--ct", str(phantom(tmp))).kind == "accepted"
    (tmp / "before.json").write_text(json.dumps(digest(tmp / "ds")))
    return gen(tmp, "--ct", str(phantom(tmp)), "--seed", "5")


# Python API --------------------------------------------------------------------------------------

def _volume():
    from DeepDRRSlicerLib.volume import Volume

    return Volume.from_array(phantom_hu(), spacing=(3.0, 3.0, 3.0), origin=(-28.5, -28.5, -28.5))


def _carm():
    from DeepDRRSlicerLib.geometry import CArm

    return CArm(width=16, height=16, pixel_spacing_mm=20.0)


def _simulator(**settings):
    from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator

    return Simulator(_volume(), SimulationSettings(**settings))


@case("api-simulator-none", "API", "`Simulator(None)`", "refused", "volume must be a Volume, got NoneType")
def _(tmp):
    return api(tmp, lambda: _api_simulator(None))


def _api_simulator(volume, settings=None):
    from DeepDRRSlicerLib.pipeline import Simulator

    return Simulator(volume, settings)


@case("api-simulator-array", "API", "`Simulator(numpy array)`", "refused", "Volume.from_array")
def _(tmp):
    return api(tmp, lambda: _api_simulator(phantom_hu()))


@case("api-simulator-path", "API", '`Simulator("ct.nii.gz")`', "refused", "load_volume(path)")
def _(tmp):
    return api(tmp, lambda: _api_simulator("ct.nii.gz"))


@case("api-settings-dict", "API", "`Simulator(volume, {'kvp': 90})`", "refused", "SimulationSettings(**your_dict)")
def _(tmp):
    return api(tmp, lambda: _api_simulator(_volume(), {"kvp": 90}))


@case("api-render-none", "API", "`simulator.render(None)`", "refused", "geometry must be a DetectorGeometry")
def _(tmp):
    return api(tmp, lambda: _simulator().render(None))


@case("api-render-dict", "API", "`simulator.render({...})`", "refused", "DetectorGeometry.from_dict(d)")
def _(tmp):
    return api(tmp, lambda: _simulator().render(_carm().geometry().to_dict()))


@case("api-render-carm", "API", "`simulator.render(CArm(...))`", "accepted", "",
      "the same image as render(CArm(...).geometry())",
      lambda tmp, o: np.array_equal(o.value.stages["primary"],
                                    _simulator().render(_carm().geometry()).stages["primary"]) or _fail("differs"))
def _(tmp):
    return api(tmp, lambda: _simulator().render(_carm()))


@case("api-render-landmarks-text", "API", '`render(geometry, landmarks="marks.csv")`', "refused",
      "landmarks must be a list of Landmark")
def _(tmp):
    return api(tmp, lambda: _simulator().render(_carm().geometry(), landmarks="marks.csv"))


@case("api-render-progress", "API", "`render(geometry, progress=5)`", "refused", "progress must be a function")
def _(tmp):
    return api(tmp, lambda: _simulator().render(_carm().geometry(), progress=5))


@case("api-filtration-none", "API", "`SimulationSettings(filtration=None)`", "refused",
      "filtration must be a dict of filter thicknesses, got NoneType")
def _(tmp):
    return api(tmp, lambda: _simulator(filtration=None))


@case("api-filtration-list", "API", "`SimulationSettings(filtration=['Al', 2])`", "refused",
      "filtration must be a dict of filter thicknesses, got list")
def _(tmp):
    return api(tmp, lambda: _simulator(filtration=["Al", 2]))


@case("api-filtration-duplicate", "API", "`filtration={'Al': 1, 'al': 2}`", "refused", "is given twice")
def _(tmp):
    return api(tmp, lambda: _simulator(filtration={"Al": 1, "al": 2}))


@case("api-kvp-text", "API", '`SimulationSettings(kvp="90")`', "refused", "kvp must be a number, got the text '90'")
def _(tmp):
    return api(tmp, lambda: _simulator(kvp="90"))


@case("api-kvp-bool", "API", "`SimulationSettings(kvp=True)`", "refused", "kvp must be a number, got bool")
def _(tmp):
    return api(tmp, lambda: _simulator(kvp=True))


def _same_as_float_kvp(tmp, outcome):
    reference = _simulator(kvp=90.0).render(_carm().geometry()).stages["primary"]
    assert np.array_equal(outcome.value.stages["primary"], reference)


@case("api-kvp-float32", "API", "`SimulationSettings(kvp=np.float32(90))`", "accepted", "",
      "the same image as kvp=90.0", _same_as_float_kvp)
def _(tmp):
    return api(tmp, lambda: _simulator(kvp=np.float32(90)).render(_carm().geometry()))


@case("api-kvp-int64", "API", "`SimulationSettings(kvp=np.int64(90))`", "accepted", "",
      "the same image as kvp=90.0", _same_as_float_kvp)
def _(tmp):
    return api(tmp, lambda: _simulator(kvp=np.int64(90)).render(_carm().geometry()))


@case("api-mode-unknown", "API", "`SimulationSettings(mode='fast')`", "refused", "Unknown mode 'fast'")
def _(tmp):
    return api(tmp, lambda: _simulator(mode="fast"))


def _load(path):
    from DeepDRRSlicerLib.volume import load_volume

    return load_volume(path)


@case("api-load-none", "API", "`load_volume(None)`", "refused", "path must be a file or folder path, got NoneType")
def _(tmp):
    return api(tmp, lambda: _load(None))


@case("api-load-empty", "API", '`load_volume("")`', "refused", "path is empty")
def _(tmp):
    return api(tmp, lambda: _load(""))


@case("api-load-number", "API", "`load_volume(42)`", "refused", "path must be a file or folder path, got int")
def _(tmp):
    return api(tmp, lambda: _load(42))


def _from_array(array, matrix=None, **options):
    from DeepDRRSlicerLib.volume import Volume

    if matrix is None and "spacing" not in options:
        matrix = np.eye(4)
    return Volume.from_array(array, matrix, **options)


@case("api-array-none", "API", "`Volume.from_array(None, ...)`", "refused", "array is None")
def _(tmp):
    return api(tmp, lambda: _from_array(None))


@case("api-array-object", "API", "`Volume.from_array(object array)`", "refused", "Python objects")
def _(tmp):
    return api(tmp, lambda: _from_array(np.array([[[object()] * 2] * 2] * 2, dtype=object)))


@case("api-array-complex", "API", "`Volume.from_array(complex array)`", "refused", "complex numbers")
def _(tmp):
    return api(tmp, lambda: _from_array(np.zeros((4, 4, 4), np.complex64)))


@case("api-array-bool", "API", "`Volume.from_array(boolean mask)`", "refused", "booleans (a mask, not HU)")
def _(tmp):
    return api(tmp, lambda: _from_array(np.zeros((4, 4, 4), bool)))


@case("api-array-ragged", "API", "`Volume.from_array(ragged nested lists)`", "refused",
      "cannot be read as a numeric array")
def _(tmp):
    return api(tmp, lambda: _from_array([[[0, 1], [2]], [[3, 4], [5, 6]]]))


def _matrix(**cells):
    matrix = np.diag([2.0, 2.0, 2.0, 1.0])
    for key, value in cells.items():
        matrix[int(key[1]), int(key[2])] = value
    return matrix


@case("api-matrix-sheared", "API", "an IJK->RAS matrix whose i and j axes meet at 63 degrees", "refused",
      "is sheared")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), _matrix(m01=1.0)))


@case("api-matrix-projective", "API", "an IJK->RAS matrix with last row [0, 0, 0.01, 1]", "refused", "is projective")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), _matrix(m32=0.01)))


@case("api-matrix-singular", "API", "an IJK->RAS matrix with a zero column", "refused", "singular")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), _matrix(m22=0.0)))


@case("api-matrix-wrong-shape", "API", "a 3x3 IJK->RAS matrix", "refused", "not a finite 4x4 matrix")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), np.eye(3)))


@case("api-spacing-negative", "API", "`Volume.from_array(hu, spacing=(-1, 1, 1))`", "refused",
      "is not three positive numbers")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), spacing=(-1.0, 1.0, 1.0)))


@case("api-matrix-and-spacing", "API", "both `ijk_to_ras` and `spacing`", "refused", "Both ijk_to_ras and spacing")
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), np.eye(4), spacing=(1.0, 1.0, 1.0)))


@case("api-mirrored-matrix", "API", "a left-handed (mirrored) IJK->RAS matrix", "accepted", "",
      "kept as given (a flip is a valid orientation)",
      lambda tmp, o: np.allclose(o.value.ijk_to_ras, np.diag([-2.0, 2.0, 2.0, 1.0])) or _fail("changed"))
def _(tmp):
    return api(tmp, lambda: _from_array(phantom_hu(), np.diag([-2.0, 2.0, 2.0, 1.0])))


@case("api-write-empty-out", "API", '`write_result(result, "")`', "refused", "--out is empty")
def _(tmp):
    from DeepDRRSlicerLib.output import write_result

    return api(tmp, lambda: write_result(_simulator().render(_carm()), ""))


@case("api-write-not-a-result", "API", '`write_result("primary.npy", folder)`', "refused",
      "result must be a SimulationResult")
def _(tmp):
    from DeepDRRSlicerLib.output import write_result

    return api(tmp, lambda: write_result("primary.npy", tmp / "out"))


def _version_matches(outcome) -> None:
    from DeepDRRSlicerLib import __version__

    assert outcome.text == f"deepdrr-slicer {__version__}", outcome.text


def _fail(message: str):
    raise AssertionError(message)


def _only(folder: Path, names: set) -> None:
    present = {p.name for p in folder.iterdir()}
    assert present == names, f"{folder} holds {sorted(present)}, expected {sorted(names)}"


# ---- running a case and the table ----------------------------------------------------------------

def run_case(case: Case, tmp: Path) -> Outcome:
    """Run ``case`` in the empty folder ``tmp`` and verify it; raises AssertionError on a wrong answer."""
    cwd = os.getcwd()
    try:
        os.chdir(tmp)  # nothing may land in the working directory by accident
        outcome = case.run(tmp)
    finally:
        os.chdir(cwd)
    assert outcome.kind == case.expect, f"{case.id}: expected {case.expect}, got {outcome.kind}:\n{outcome.text}"
    assert case.message in outcome.text or case.message in outcome.stdout, (
        f"{case.id}: {case.message!r} not in:\n{outcome.text}")
    if case.check is not None:
        case.check(tmp, outcome)
    return outcome


def table_row(case: Case, outcome: Outcome) -> str:
    text = outcome.text if outcome.text else "(no message; result checked)"
    text = text.replace("|", "\\|").replace("\n", "<br>")
    behaviour = {"refused": "refused" + (" (exit 2)" if case.area not in ("API",) else " (InputError)"),
                 "warned": "warned",
                 "accepted": "accepted", "cancelled": "cancelled (exit 130)"}[outcome.kind]
    if case.verified:
        behaviour += f"; {case.verified}"
    return f"| {case.id} | {case.area} | {case.input} | {behaviour} | {text} |"


HEADER = """# Bad-input catalogue

Generated by `Testing/Python/bad_inputs.py` from the cases that `Testing/Python/test_bad_inputs.py` runs;
regenerate with `.venv/bin/python Testing/Python/bad_inputs.py`. The tests fail when a row here differs
from what the code does. CLI rows run `deepdrr-slicer simulate --quiet --size 16 16 --out <tmp>/out ...`;
`<tmp>` is each case's temporary folder. *refused*: `error:` and `fix:` on stderr and exit code 2 (or
`InputError` from the API) before anything is written; *warned*: the run completes and says `warning:`;
*accepted*: a borderline input that is valid and gives a checked result; *cancelled*: exit 130 with the
previous result intact.

| case | area | input | behaviour | what the user reads |
|---|---|---|---|---|
"""


def footer(outcomes: dict) -> str:
    kinds = [o.kind for o in outcomes.values()]
    counts = {kind: kinds.count(kind) for kind in ("refused", "warned", "accepted", "cancelled", "crashed")}
    return (f"\n{len(kinds)} cases: {counts['refused']} refused, {counts['warned']} warned, "
            f"{counts['accepted']} accepted, {counts['cancelled']} cancelled; {counts['crashed']} uncaught "
            "exceptions; 0 silent garbage (every accepted or warned result is checked).\n")


def read_catalogue(path: Path = CATALOGUE) -> dict:
    """{case id: table row} from the committed catalogue."""
    rows = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("| ") and not line.startswith("| case ") and not line.startswith("|---"):
                rows[line.split(" | ", 1)[0][2:]] = line
    return rows


def main() -> int:
    import tempfile

    outcomes, rows, failures = {}, [], []
    with tempfile.TemporaryDirectory() as root:
        for index, case in enumerate(CASES):
            tmp = Path(root) / f"case{index:03d}"
            tmp.mkdir()
            try:
                outcome = run_case(case, tmp)
            except AssertionError as error:
                failures.append(f"{case.id}: {error}")
                continue
            outcomes[case.id] = outcome
            rows.append(table_row(case, outcome))
            print(f"{case.id}: {outcome.kind}", file=sys.stderr)
    if failures:
        print("not written; these cases do not behave as declared:\n" + "\n\n".join(failures), file=sys.stderr)
        return 1
    CATALOGUE.write_text(HEADER + "\n".join(rows) + "\n" + footer(outcomes), encoding="utf-8")
    print(f"wrote {CATALOGUE} ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
