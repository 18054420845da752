"""Named detector presets (geometry.DETECTOR_PRESETS) and the CLI's --detector option."""

import json

import numpy as np
import pytest

from DeepDRRSlicerLib.cli import main
from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import DEFAULT_DETECTOR, DETECTOR_PRESETS, DetectorGeometry, detector_preset
from DeepDRRSlicerLib.landmarks import load_landmarks
from DeepDRRSlicerLib.resources import sample_landmarks_path


def test_presets_describe_the_named_panels():
    mobile, angio, radiography = (DETECTOR_PRESETS[n] for n in ("mobile-carm-30", "angio-30x40", "radiography-43"))
    assert DEFAULT_DETECTOR == "mobile-carm-30"
    assert mobile.width_mm == pytest.approx(298.0, abs=0.1) and mobile.height_mm == mobile.width_mm
    assert (mobile.sid_mm, mobile.sod_mm) == (1020.0, 530.0)          # DeepDRR's MobileCArm
    assert angio.width_mm == pytest.approx(381.9, abs=0.1) and angio.height_mm == pytest.approx(295.7, abs=0.1)
    assert np.hypot(angio.width_mm, angio.height_mm) == pytest.approx(483, abs=1)   # a 48 cm diagonal
    assert radiography.width_mm == pytest.approx(427, abs=1) and radiography.height_mm == radiography.width_mm
    for preset in DETECTOR_PRESETS.values():
        assert 0 < preset.sod_mm < preset.sid_mm


def test_sampling_keeps_the_panel_area_and_square_pixels():
    width, height, spacing = DETECTOR_PRESETS["angio-30x40"].sampled(512)
    assert (width, height) == (512, 396)
    assert width * spacing == pytest.approx(381.92, abs=0.01) and height * spacing == pytest.approx(295.7, abs=0.5)
    assert DETECTOR_PRESETS["mobile-carm-30"].sampled(4096) == (1536, 1536, 0.194)   # never upsampled
    with pytest.raises(InputError, match="Unknown detector preset"):
        detector_preset("bucky-99")


def _geometry(tmp_path, *arguments):
    code = main(["simulate", "--out", str(tmp_path), "--quiet", "--mode", "line-integral", *arguments])
    assert code == 0
    return DetectorGeometry.from_dict(json.loads((tmp_path / "geometry.json").read_text()))


def test_cli_detector_preset_sets_panel_and_distances(tmp_path):
    geometry = _geometry(tmp_path, "--detector", "angio-30x40", "--size", "64", "50")
    # the largest square pixels that fit 64 x 50 on the 381.9 x 295.7 mm panel
    spacing = min(2480 * 0.154 / 64, 1920 * 0.154 / 50)
    assert geometry.shape == (50, 64) and np.allclose(geometry.pixel_spacing, spacing)
    assert geometry.source_to_detector_mm == pytest.approx(1200.0)
    # without --ct the bundled landmarks' centroid is the isocentre, 785 mm from the source
    centroid = np.mean([p.position_ras for p in load_landmarks(sample_landmarks_path())], axis=0)
    assert np.linalg.norm(geometry.source - centroid) == pytest.approx(785.0)


def test_cli_distances_override_the_preset(tmp_path):
    geometry = _geometry(tmp_path, "--detector", "radiography-43", "--size", "32", "32", "--sid", "1150")
    assert geometry.source_to_detector_mm == pytest.approx(1150.0)
    assert np.allclose(geometry.pixel_spacing, 3072 * 0.139 / 32)


def test_cli_refuses_a_preset_with_a_geometry_file(tmp_path, capsys):
    geometry = _geometry(tmp_path / "first", "--size", "16", "16")
    assert np.allclose(geometry.pixel_spacing, 1536 * 0.194 / 16)      # the default: the mobile C-arm panel
    code = main(["simulate", "--quiet", "--out", str(tmp_path / "second"), "--geometry",
                 str(tmp_path / "first" / "geometry.json"), "--detector", "angio-30x40"])
    assert code == 2 and "together with C-arm options" in capsys.readouterr().err
