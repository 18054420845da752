"""Stages after the primary in the API and the CLI: scatter, total, noisy, final; seeds; exposure; grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("numba", reason="the scatter kernel is compiled with numba")

from DeepDRRSlicerLib.cli import main  # noqa: E402
from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm  # noqa: E402
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator  # noqa: E402
from DeepDRRSlicerLib.resources import sample_ct_path  # noqa: E402
from DeepDRRSlicerLib.volume import load_volume  # noqa: E402

SMALL = ["--size", "64", "48", "--scatter-photons", "30000", "--quiet"]


@pytest.fixture(scope="module")
def volume():
    return load_volume(sample_ct_path())


@pytest.fixture(scope="module")
def geometry(volume):
    return CArm(isocenter_ras=tuple(volume.center_ras()), width=48, height=40, pixel_spacing_mm=298 / 48).geometry()


def test_every_stage_from_the_api_with_consistent_units(volume, geometry):
    settings = SimulationSettings(scatter_photons=30_000, seed=3, mas=0.5)
    result = Simulator(volume, settings).render(geometry)
    stages = result.stages
    for name in ("primary", "scatter", "total", "noisy", "final", "spr", "scatter_relative_error"):
        assert stages[name].shape == geometry.shape and stages[name].dtype == np.float32, name
    np.testing.assert_allclose(stages["total"], stages["primary"] + stages["scatter"], rtol=1e-6)
    np.testing.assert_allclose(stages["spr"], stages["scatter"] / stages["primary"], rtol=1e-5)
    assert np.all(stages["scatter"] > 0) and 0 < stages["final"].min() + 1e-9 and stages["final"].max() <= 1
    # the noisy image scatters around the total (blurred) with a spread set by the photon counts
    assert np.mean(stages["noisy"]) == pytest.approx(np.mean(stages["total"]), rel=0.05)
    metrics = result.metrics
    assert metrics["spr_center"] > 0.05 and metrics["photons_per_pixel_median_in_body"] > 10
    assert metrics["scatter"]["photons"] == 30_000 and metrics["scatter"]["bookkeeping"]["emitted"] == 30_000
    assert "mc_primary_over_analytic" in metrics["scatter"]
    from DeepDRRSlicerLib.spectrum import tube_spectrum

    per_mas_at_1m = tube_spectrum(90.0, {"Al": 3.3}).air_kerma_uGy_per_mAs(1000.0)
    assert metrics["detector_air_kerma_open_field_uGy"] == pytest.approx(
        0.5 * per_mas_at_1m * (1000 / geometry.source_to_detector_mm) ** 2, rel=1e-9)


def test_more_mas_means_less_relative_noise(volume, geometry):
    def noise(mas):
        result = Simulator(volume, SimulationSettings(stages=("primary", "noisy"), mas=mas, seed=1,
                                                      electronic_noise_keV=0.0, detector_blur_mm=0.0)).render(geometry)
        ratio = result.stages["noisy"] / result.stages["primary"]
        return np.std(ratio), result.metrics["photons_per_pixel_median_in_body"]

    low, photons_low = noise(0.05)
    high, photons_high = noise(5.0)
    assert photons_high == pytest.approx(100 * photons_low, rel=1e-6)
    assert high == pytest.approx(low / 10, rel=0.25)      # quantum noise ~ 1/sqrt(photons)


def test_same_seed_same_images_and_scatter_is_cached_per_pose(volume, geometry):
    settings = SimulationSettings(scatter_photons=20_000, seed=9)
    simulator = Simulator(volume, settings)
    first = simulator.render(geometry)
    again = simulator.render(geometry)            # cached scatter for this pose
    assert again.timings["scatter"] < first.timings["scatter"]
    fresh = Simulator(volume, SimulationSettings(scatter_photons=20_000, seed=9)).render(geometry)
    other = Simulator(volume, SimulationSettings(scatter_photons=20_000, seed=10)).render(geometry)
    for name in ("scatter", "noisy", "final"):
        assert first.stages[name].tobytes() == fresh.stages[name].tobytes() == again.stages[name].tobytes(), name
        assert not np.array_equal(first.stages[name], other.stages[name]), name


def test_preview_reuses_the_last_scatter_without_running_the_mc(volume, geometry):
    simulator = Simulator(volume, SimulationSettings(scatter_photons=20_000))
    simulator.render(geometry)
    moved = CArm(alpha_deg=5.0, isocenter_ras=tuple(volume.center_ras()), width=24, height=20,
                 pixel_spacing_mm=298 / 24).geometry()
    preview = simulator.render(moved, preview=True)
    assert any("preview" in note for note in preview.notes)
    assert preview.metrics["scatter"]["source"].startswith("previous")
    assert preview.timings["scatter"] < 0.5 and preview.stages["scatter"].shape == (20, 24)


def test_grid_lowers_the_spr(volume, geometry):
    bare = Simulator(volume, SimulationSettings(stages=("scatter",), scatter_photons=30_000)).render(geometry)
    grid = Simulator(volume, SimulationSettings(stages=("scatter",), scatter_photons=30_000, grid=True)).render(geometry)
    assert grid.metrics["spr_center"] < 0.6 * bare.metrics["spr_center"]
    assert grid.metrics["grid"]["primary_transmission"] == pytest.approx(1 - 0.036 * 60 / 10, rel=1e-9)


def test_bad_stage_and_exposure_inputs_are_refused():
    with pytest.raises(InputError, match="stages"):
        SimulationSettings(stages=("primary", "xray")).validate()
    with pytest.raises(InputError, match="mAs"):
        SimulationSettings(mas=0.0).validate()
    with pytest.raises(InputError, match="Scintillator"):
        SimulationSettings(detector_thickness_mm=-1).validate()
    with pytest.raises(InputError, match="photon count"):
        SimulationSettings(scatter_photons=10).validate()


def test_cli_writes_the_chosen_stages_and_is_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["simulate", "--out", str(a), "--seed", "4", "--mas", "0.2", *SMALL]) == 0
    assert main(["simulate", "--out", str(b), "--seed", "4", "--mas", "0.2", *SMALL]) == 0
    for stage in ("primary", "scatter", "total", "noisy", "final"):
        assert (a / f"{stage}.npy").read_bytes() == (b / f"{stage}.npy").read_bytes(), stage
        assert (a / f"{stage}.png").stat().st_size > 500
    summary = json.loads((a / "summary.json").read_text())
    assert summary["settings"]["seed"] == 4 and summary["settings"]["mas"] == 0.2
    assert summary["metrics"]["spr_center"] > 0 and summary["metrics"]["scatter"]["photons"] == 30_000
    only = tmp_path / "only"
    assert main(["simulate", "--out", str(only), "--stages", "primary,final", "--exposure", "radiography",
                 *SMALL]) == 0
    assert (only / "final.npy").exists() and not (only / "scatter.npy").exists()
    summary = json.loads((only / "summary.json").read_text())
    assert summary["settings"]["mas"] == 1.0 and summary["metrics"]["noise_signal"] == "primary only"


def test_cli_rejects_unknown_stages(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path), "--stages", "primary,bogus", "--quiet"]) == 2
    assert "bogus" in capsys.readouterr().err
