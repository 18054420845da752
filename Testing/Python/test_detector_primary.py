"""The detector and the beam in the primary: CsI absorption, K-edge splitting, air, inverse square, obliquity."""

from __future__ import annotations

import numpy as np
import pytest

from DeepDRRSlicerLib.detector import AIR_DENSITY_G_CM3, Detector, pixel_geometry
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.primary import PrimaryModel, split_bins_at_edges
from DeepDRRSlicerLib.spectrum import tube_spectrum

xraydb = pytest.importorskip("xraydb", reason="the references come from xraydb directly")


def _xraydb_mu(material_fractions, energies_keV):
    return sum(w * xraydb.mu_elam(el, np.asarray(energies_keV) * 1000.0, kind="total")
               for el, w in material_fractions.items())


def test_csi_absorption_matches_beer_lambert_with_xraydb():
    detector = Detector(scintillator_mm=0.6)
    energies = np.array([20.0, 33.0, 34.0, 50.0, 80.0, 120.0])
    cs, i = 132.90545, 126.90447
    mu = _xraydb_mu({"Cs": cs / (cs + i), "I": i / (cs + i)}, energies) * 4.51        # 1/cm
    np.testing.assert_allclose(detector.absorption(energies), 1 - np.exp(-mu * 0.06), rtol=1e-9)
    # thicker panels absorb more; oblique incidence is a longer path
    assert np.all(Detector(scintillator_mm=1.0).absorption(energies) >= detector.absorption(energies))
    assert np.all(detector.absorption(energies, cos_incidence=0.5) > detector.absorption(energies))
    # the caesium and iodine K edges show: 34 keV (above I's edge) absorbs more than 33 keV
    eta = detector.absorption(energies)
    assert eta[2] > eta[1]


def test_energy_integrating_weights_include_the_detector():
    spectrum = tube_spectrum(90.0, {"Al": 3.3})
    ideal = PrimaryModel.for_spectrum(spectrum, ("water",))
    real = PrimaryModel.for_spectrum(spectrum, ("water",), detector=Detector())
    assert np.all(ideal.efficiency == 1.0)
    assert 0.5 < real.efficiency.min() < real.efficiency.max() <= 1.0
    # the CsI panel favours low energies (photoelectric above its K edges) and loses high ones:
    # a thick water layer (hardened beam) transmits relatively less signal than for an ideal detector
    water = np.array([[20.0]])
    assert real.transmission(water[:, :, None])[0, 0] < ideal.transmission(water[:, :, None])[0, 0]


def test_bins_split_exactly_at_absorption_edges():
    energies, fluence, parent = split_bins_at_edges(np.array([32.0, 33.0, 34.0]), np.array([1.0, 2.0, 3.0]),
                                                    [33.17])
    np.testing.assert_allclose(energies, [32.0, (32.5 + 33.17) / 2, (33.17 + 33.5) / 2, 34.0])
    np.testing.assert_allclose(fluence, [1.0, 2.0 * 0.67, 2.0 * 0.33, 3.0])
    assert list(parent) == [0, 1, 1, 2]


def test_iodine_k_edge_is_resolved_by_bin_splitting():
    """Primary through iodinated contrast against a reference that samples every 1 keV bin at 0.01 keV
    (flat fluence within the bin) with xraydb: the split bins agree to 0.05 %; evaluating mu at the bin
    centre (33 keV, below the 33.17 keV edge) would not."""
    spectrum = tube_spectrum(70.0, {"Al": 3.3})
    names = ("water", "iodine_contrast")
    model = PrimaryModel.for_spectrum(spectrum, names)
    assert any(abs(e - 33.17) < 0.01 for e in model.edges_keV)
    integrals = np.array([10.0, 1.5])                       # g/cm2 of water and of 350 mgI/ml contrast
    from DeepDRRSlicerLib import attenuation

    fractions = {name: dict(attenuation.get_material(name).fractions) for name in names}
    centres, weights = spectrum.energies_keV, spectrum.fluence * spectrum.energies_keV
    numerator = denominator = 0.0
    for centre, count in zip(centres, spectrum.fluence):
        if count <= 0:
            continue
        sub = centre - 0.5 + (np.arange(100) + 0.5) / 100
        exponent = sum(_xraydb_mu(fractions[n], sub) * integrals[m] for m, n in enumerate(names))
        numerator += count / 100 * np.sum(sub * np.exp(-exponent))
        denominator += count / 100 * np.sum(sub)
    reference = numerator / denominator
    ours = float(model.transmission(integrals[:, None])[0])
    # evaluating each bin at its centre only (no split) misses the edge
    centre_mu = np.stack([_xraydb_mu(fractions[n], centres) for n in names])
    unsplit = float(np.sum(weights * np.exp(-(centre_mu.T @ integrals))) / np.sum(weights))
    assert ours == pytest.approx(reference, rel=2e-3)    # the rest: mu's curvature within 1 keV bins
    assert abs(unsplit / reference - 1) > 3 * abs(ours / reference - 1)


def test_inverse_square_obliquity_and_air_per_pixel():
    geometry = DetectorGeometry(source=(0, -600, 0), detector_origin=(-200, 400, 200), u=(4, 0, 0), v=(0, 0, -4),
                                width=101, height=101)
    box = np.diag([10.0, 10.0, 10.0, 1.0])
    box[:3, 3] = [-95.0, -95.0, -95.0]                      # a 200 mm cube centred on the origin
    pixels = pixel_geometry(geometry, box, (20, 20, 20))
    sid = 1000.0
    centre = pixels.fluence_factor[50, 50]
    corner = pixels.fluence_factor[0, 0]
    cos_corner = sid / np.sqrt(sid ** 2 + 2 * 200.0 ** 2)
    assert centre == pytest.approx(16.0 * (1000.0 / sid) ** 2, rel=1e-12)      # A (1000/SID)^2 at the centre
    assert corner / centre == pytest.approx(cos_corner ** 3, rel=1e-12)        # cos^3 obliquity
    assert pixels.chord_in_box_mm[50, 50] == pytest.approx(200.0, rel=1e-9)
    ray = np.array([-100.0, 1000.0, 0.0]) / np.linalg.norm([-100.0, 1000.0, 0.0])    # pixel (row 50, col 25)
    assert pixels.chord_in_box_mm[50, 25] == pytest.approx(200.0 / ray[1], rel=1e-9)
    assert pixels.chord_in_box_mm[0, 0] < 1.0                                           # grazes the box
    assert pixels.air_flat_g_cm2()[50, 50] == pytest.approx(AIR_DENSITY_G_CM3 * 100.0, rel=1e-12)
    assert pixels.air_outside_box_g_cm2()[50, 50] == pytest.approx(AIR_DENSITY_G_CM3 * 80.0, rel=1e-12)
    # no CT box: all air
    assert np.all(pixel_geometry(geometry).chord_in_box_mm == 0)


def test_open_field_photons_per_pixel_from_physical_inputs():
    """photons per pixel = fluence per mAs at 1 m x mAs x (1000/SID)^2 x pixel area x exp(-air) x eta."""
    from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator
    from DeepDRRSlicerLib.volume import Volume

    hu = np.full((4, 4, 4), -1000.0, dtype=np.float32)       # an empty (air) CT far from the beam
    matrix = np.diag([1.0, 1.0, 1.0, 1.0])
    matrix[:3, 3] = [500.0, 0.0, 0.0]
    volume = Volume(hu=hu, ijk_to_ras=matrix)
    settings = SimulationSettings(kvp=80.0, filtration={"Al": 3.0}, stages=("primary",), mas=2.0)
    simulator = Simulator(volume, settings)
    geometry = DetectorGeometry(source=(0, -600, 0), detector_origin=(-1.5, 420, 1.5), u=(1, 0, 0), v=(0, 0, -1),
                                width=4, height=4)
    result = simulator.render(geometry)
    spectrum = tube_spectrum(80.0, {"Al": 3.0})
    keep = spectrum.fluence > 0
    # the caesium and iodine K edges split their 1 keV bins (the absorption jumps there)
    e, fluence, _ = split_bins_at_edges(spectrum.energies_keV[keep], spectrum.fluence[keep], [33.1694, 35.9846])
    air = _xraydb_mu(dict(attenuation_air()), e) * AIR_DENSITY_G_CM3 * np.linalg.norm([0.5, 1020.0, 0.5]) / 10
    cs, i = 132.90545, 126.90447
    eta = 1 - np.exp(-_xraydb_mu({"Cs": cs / (cs + i), "I": i / (cs + i)}, e) * 4.51 * 0.06)
    cos_t = 1020.0 / np.linalg.norm([0.5, 1020.0, 0.5])
    expected = 2.0 * np.sum(fluence * np.exp(-air) * eta) * (1000.0 / 1020.0) ** 2 * cos_t ** 3
    assert result.metrics["photons_per_pixel_open_field_center"] == pytest.approx(expected, rel=2e-4)
    assert np.allclose(result.stages["primary"], 1.0, atol=1e-6)      # empty CT: I/I0 = 1 after flat-field


def attenuation_air():
    from DeepDRRSlicerLib import attenuation

    return attenuation.get_material("air").fractions


@pytest.mark.parametrize("source_to_detector_mm, side_mm", [(1020.0, 300.0), (400.0, 430.0)])
def test_flat_field_interpolated_in_air_equals_the_exact_spectral_sum(source_to_detector_mm, side_mm):
    """The flat field is tabulated over the air per pixel and interpolated: it must equal the exact sum."""
    model = PrimaryModel.for_spectrum(tube_spectrum(70.0, {"Al": 2.5}), ("soft_tissue", "bone"), detector=Detector())
    size = 200
    spacing = side_mm / size
    geometry = DetectorGeometry(source=np.array([0.0, -source_to_detector_mm, 0.0]),
                                detector_origin=np.array([-side_mm / 2, 0.0, side_mm / 2]),
                                u=np.array([spacing, 0.0, 0.0]), v=np.array([0.0, 0.0, -spacing]),
                                width=size, height=size)
    air = pixel_geometry(geometry).air_flat_g_cm2()
    assert air.max() - air.min() > 0.002   # the rays' air differs across the panel
    weights = model.signal_weights()
    exact = model.spectral_sums(np.zeros((0, size, size), np.float32), air, weights)
    interpolated = model.flat_field_sums(air, weights)
    assert interpolated.shape == exact.shape
    assert np.max(np.abs(interpolated / exact - 1.0)) < 1e-10
