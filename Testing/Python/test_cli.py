"""The command line, end to end on the bundled CT, and its errors for bad input."""

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from DeepDRRSlicerLib.cli import main
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.resources import sample_ct_path, sample_landmarks_path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    digest = hashlib.sha256(sample_ct_path().read_bytes()).hexdigest()
    code = main(["simulate", "--out", str(out), "--size", "160", "128", "--scatter-photons", "50000", "--quiet"])
    assert code == 0
    assert hashlib.sha256(sample_ct_path().read_bytes()).hexdigest() == digest  # input untouched
    return out


def test_cli_writes_every_stage(demo_run):
    out = demo_run
    stages = ["primary", "scatter", "total", "noisy", "final", "spr", "scatter_relative_error", "line_integral_air",
              "line_integral_soft_tissue", "line_integral_bone"]
    for stage in stages:
        image = np.load(out / f"{stage}.npy")
        assert image.dtype == np.float32 and image.shape == (128, 160)
        assert (out / f"{stage}.png").stat().st_size > 1000
    primary = np.load(out / "primary.npy")
    assert 0 < primary.min() and primary.max() <= 1.0
    # the primary is Beer-Lambert of the saved line integrals, seen by the CsI panel through the air,
    # divided by the flat field
    from DeepDRRSlicerLib.detector import Detector, pixel_geometry
    from DeepDRRSlicerLib.primary import PrimaryModel
    from DeepDRRSlicerLib.spectrum import tube_spectrum
    from DeepDRRSlicerLib.volume import load_volume

    names = tuple(json.loads((out / "summary.json").read_text())["materials"])   # the decomposition's materials
    assert {"air", "soft_tissue", "bone"} <= set(names)
    integrals = np.stack([np.load(out / f"line_integral_{name}.npy") for name in names])
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), names, detector=Detector())
    volume = load_volume(sample_ct_path())
    geometry = DetectorGeometry.load(out / "geometry.json")
    pixels = pixel_geometry(geometry, volume.ijk_to_ras, volume.hu.shape)
    weights = model.signal_weights()[:1]
    expected = (model.spectral_sums(integrals, pixels.air_outside_box_g_cm2(), weights)[0]
                / model.spectral_sums(np.zeros((0, 128, 160), np.float32), pixels.air_flat_g_cm2(), weights)[0])
    assert np.allclose(primary, expected, rtol=1e-5, atol=1e-8)
    # and without air and detector it would differ (the air and CsI terms are not negligible)
    ideal = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), names).transmission(integrals)
    assert np.median(np.abs(ideal / primary - 1)) > 0.005
    assert not (out / "line_integral.npy").exists()


def test_cli_geometry_summary_and_landmarks(demo_run):
    out = demo_run
    geometry_data = json.loads((out / "geometry.json").read_text())
    geometry = DetectorGeometry.from_dict(geometry_data)
    assert (geometry.width, geometry.height) == (160, 128)
    assert np.allclose(geometry_data["projection_matrix"], geometry.projection_matrix())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "cpu"
    assert summary["settings"]["kvp"] == 90.0 and summary["settings"]["mode"] == "polychromatic"
    assert summary["timings_s"]["projector"] > 0 and "materials" in summary["timings_s"]
    assert summary["versions"]["numpy"].startswith("2.")
    with open(out / "landmarks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["label", "u", "v", "depth_mm", "visible"]
    assert len(rows) >= 3
    # every bundled landmark is reported, with the values P gives
    from DeepDRRSlicerLib.landmarks import load_landmarks

    for landmark, row in zip(load_landmarks(sample_landmarks_path()), rows):
        uv, depth = geometry.project(landmark.position_ras[None])
        assert row["label"] == landmark.label
        assert float(row["u"]) == pytest.approx(uv[0, 0], abs=1e-3)
        assert float(row["v"]) == pytest.approx(uv[0, 1], abs=1e-3)
        assert float(row["depth_mm"]) == pytest.approx(depth[0], abs=1e-3)
    assert (out / "overlay.png").stat().st_size > 1000


def test_isocentre_defaults_to_the_landmarks_centroid(demo_run):
    from DeepDRRSlicerLib.landmarks import load_landmarks

    geometry = DetectorGeometry.load(demo_run / "geometry.json")
    centroid = np.mean([p.position_ras for p in load_landmarks(sample_landmarks_path())], axis=0)
    uv, depth = geometry.project(centroid[None])
    assert np.allclose(uv[0], [(160 - 1) / 2, (128 - 1) / 2]) and depth[0] == pytest.approx(530)
    # summary.json says how the pose was given, so the run can be repeated or varied
    carm = json.loads((demo_run / "summary.json").read_text())["parameters"]["carm"]
    assert carm["isocenter_from"] == "the landmarks' centroid" and carm["detector"] == "mobile-carm-30"
    assert np.allclose(carm["isocenter_ras"], centroid) and (carm["alpha_deg"], carm["sod_mm"]) == (0.0, 530.0)


def test_line_integral_mode(tmp_path):
    code = main(["simulate", "--out", str(tmp_path), "--size", "64", "64", "--mode", "line-integral", "--quiet",
                 "--alpha", "30", "--beta", "-10"])
    assert code == 0
    total = np.load(tmp_path / "line_integral.npy")
    materials = json.loads((tmp_path / "summary.json").read_text())["materials"]
    parts = sum(np.load(tmp_path / f"line_integral_{m}.npy") for m in materials)
    assert np.allclose(total, parts, rtol=1e-5)
    assert not (tmp_path / "primary.npy").exists()


def test_geometry_file_reproduces_the_carm_run(tmp_path, demo_run):
    code = main(["simulate", "--out", str(tmp_path), "--geometry", str(demo_run / "geometry.json"), "--quiet"])
    assert code == 0
    assert np.array_equal(np.load(tmp_path / "primary.npy"), np.load(demo_run / "primary.npy"))


def test_console_script_runs(tmp_path):
    script = shutil.which("deepdrr-slicer", path=str(__import__("pathlib").Path(sys.executable).parent))
    if script is None:
        pytest.skip("the deepdrr-slicer console script is not installed in this environment (pip install -e .)")
    done = subprocess.run([script, "simulate", "--out", str(tmp_path), "--size", "32", "32", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote primary" in done.stdout


def _fails(capsys, arguments, message):
    code = main(["simulate", "--quiet", *arguments])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "fix:" in err
    return err


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    _fails(capsys, ["--ct", str(tmp_path / "missing.nii.gz"), "--out", out], "CT file not found")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_text("not an image")
    _fails(capsys, ["--ct", str(garbage), "--out", out], "Cannot read CT")
    _fails(capsys, ["--kvp", "200", "--out", out], "outside the supported 40-150 kVp")
    _fails(capsys, ["--kvp", "20", "--out", out], "outside the supported 40-150 kVp")
    _fails(capsys, ["--size", "0", "512", "--out", out], "zero size")
    _fails(capsys, ["--sod", "30", "--sid", "200", "--out", out], "inside the CT volume")
    _fails(capsys, ["--filtration", "Al2.5", "--out", out], "Cannot read filtration")
    _fails(capsys, ["--filtration", "Unobtainium=1", "--out", out], "spectrum")
    bad_geometry = tmp_path / "geometry.json"
    bad_geometry.write_text('{"source": [0, 0, 0]}')
    _fails(capsys, ["--geometry", str(bad_geometry), "--out", out], "missing field")
    _fails(capsys, ["--geometry", str(bad_geometry), "--alpha", "10", "--out", out], "together with C-arm options")
    bad_landmarks = tmp_path / "marks.csv"
    bad_landmarks.write_text("label,R,A,S\nhead,1,2\n")
    _fails(capsys, ["--landmarks", str(bad_landmarks), "--out", out], "line 2 has 3 columns, expected 4")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    _fails(capsys, ["--out", str(a_file)], "exists and is not a folder")
    assert not (tmp_path / "out" / "primary.npy").exists()


def test_nan_volume_and_flat_volume_are_refused(tmp_path, capsys):
    array = np.full((8, 8, 8), -1000.0, np.float32)
    array[2, 3, 4] = np.nan
    path = tmp_path / "nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    _fails(capsys, ["--ct", str(path), "--out", str(tmp_path / "o")], "NaN or infinite")
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(flat))
    _fails(capsys, ["--ct", str(flat), "--out", str(tmp_path / "o")], "a CT volume needs 3")


def test_zero_spacing_in_a_header_names_the_spacing(tmp_path, capsys):
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 0 3 3\n"
              "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    path = tmp_path / "zero_spacing.mhd"
    path.write_bytes(header.encode() + bytes(128))
    err = _fails(capsys, ["--ct", str(path), "--out", str(tmp_path / "o")], "zero or negative voxel spacing")
    assert "spacing in the file header" in err


def test_a_beam_that_misses_the_ct_warns(tmp_path, capsys):
    code = main(["simulate", "--isocenter", "10000", "0", "0", "--out", str(tmp_path), "--size", "16", "16",
                 "--quiet"])
    assert code == 0
    assert "warning: no ray crosses the CT" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text())["warnings"]


def test_rerun_into_the_same_folder_leaves_no_stale_stage(tmp_path):
    assert main(["simulate", "--out", str(tmp_path), "--size", "16", "16", "--quiet"]) == 0
    assert (tmp_path / "primary.npy").exists()
    assert main(["simulate", "--out", str(tmp_path), "--size", "16", "16", "--mode", "line-integral",
                 "--ct", str(sample_ct_path()), "--quiet"]) == 0
    assert not (tmp_path / "primary.npy").exists() and not (tmp_path / "landmarks.csv").exists()
    assert (tmp_path / "line_integral.npy").exists()


def test_not_ct_warns_but_runs(tmp_path, capsys):
    array = np.random.default_rng(0).uniform(0, 255, (10, 12, 14)).astype(np.float32)
    path = tmp_path / "mri.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    code = main(["simulate", "--ct", str(path), "--out", str(tmp_path / "o"), "--size", "16", "16", "--quiet"])
    assert code == 0
    assert "implausible for a CT" in capsys.readouterr().err


def test_landmarks_behind_the_source_are_reported_not_visible(tmp_path):
    marks = tmp_path / "marks.csv"
    # AP: the source is 530 mm posterior of the isocentre (the CT centre); one point far behind it
    from DeepDRRSlicerLib.volume import load_volume

    centre = load_volume(sample_ct_path()).center_ras()
    marks.write_text("label,R,A,S\n"
                     f"centre,{centre[0]},{centre[1]},{centre[2]}\n"
                     f"behind,{centre[0]},{centre[1] - 900},{centre[2]}\n"
                     f"aside,{centre[0] + 900},{centre[1]},{centre[2]}\n")
    code = main(["simulate", "--landmarks", str(marks), "--out", str(tmp_path / "o"), "--size", "32", "32",
                 "--isocenter", *map(str, centre), "--quiet"])
    assert code == 0
    with open(tmp_path / "o" / "landmarks.csv", newline="") as handle:
        rows = {row["label"]: row for row in csv.DictReader(handle)}
    assert rows["centre"]["visible"] in ("true", "1")
    assert rows["behind"]["visible"] in ("false", "0") and float(rows["behind"]["depth_mm"]) < 0
    assert rows["aside"]["visible"] in ("false", "0")


def test_overwrite_never_replaces_an_input_in_the_output_folder(tmp_path, capsys):
    """--overwrite may replace files the user put in --out, but not the run's own inputs."""
    landmarks = tmp_path / "landmarks.csv"   # the name the result's projected landmarks take
    landmarks.write_text("label,R,A,S\nm,-132.96,119.32,100.30\n")
    ct = tmp_path / "ct.nii.gz"                # an input whose name no result file has
    shutil.copy(sample_ct_path(), ct)
    before = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (landmarks, ct)}
    code = main(["simulate", "--ct", str(ct), "--landmarks", str(landmarks), "--out", str(tmp_path), "--overwrite",
                 "--size", "16", "16", "--stages", "primary", "--quiet"])
    assert code == 2
    error = capsys.readouterr().err
    assert "landmarks.csv" in error and "would replace it" in error
    assert before == {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (landmarks, ct)}
    landmarks.rename(tmp_path / "points.csv")   # under another name the same run writes beside its inputs
    assert main(["simulate", "--ct", str(ct), "--landmarks", str(tmp_path / "points.csv"), "--out", str(tmp_path),
                 "--overwrite", "--size", "16", "16", "--stages", "primary", "--quiet"]) == 0
    assert hashlib.sha256(ct.read_bytes()).hexdigest() == before["ct.nii.gz"]
    assert (tmp_path / "primary.npy").is_file() and (tmp_path / "points.csv").is_file()


def test_a_filtration_that_stops_the_beam_is_refused(tmp_path, capsys):
    code = main(["simulate", "--filtration", "Cu=100", "--out", str(tmp_path / "out"), "--size", "16", "16",
                 "--stages", "primary,noisy", "--quiet"])
    assert code == 2
    error = capsys.readouterr().err
    assert "100 mm Cu" in error and "no usable image" in error and "--filtration" in error
    assert not (tmp_path / "out").exists()
    assert main(["simulate", "--filtration", "Al=2.5,Cu=0.9", "--out", str(tmp_path / "ok"), "--size", "16", "16",
                 "--stages", "primary", "--quiet"]) == 0


def test_stages_are_refused_in_line_integral_mode(tmp_path, capsys):
    code = main(["simulate", "--mode", "line-integral", "--stages", "scatter,noisy", "--out", str(tmp_path / "li"),
                 "--size", "16", "16", "--quiet"])
    assert code == 2 and "does not apply to --mode line-integral" in capsys.readouterr().err
