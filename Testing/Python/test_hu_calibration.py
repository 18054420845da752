"""The calibrated HU -> density/composition model against xraydb and ICRU compositions.

Oracle: ICRU-44 compositions as tabulated in NIST SRD 126 Table 2 (typed
again here, independently of attenuation.py), elemental mu/rho straight from
xraydb (mu_elam), the mixture rule, Beer-Lambert over the tube spectrum,
scored like the pipeline's energy-integrating 600 um CsI detector (absorbed
energy per photon E x (1 - exp(-mu_CsI t))) with the air on the ray. The
pipeline side goes through decompose -> projector -> primary.
"""

from __future__ import annotations

import numpy as np
import pytest
import xraydb

from DeepDRRSlicerLib import hu_calibration
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.materials import decompose
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator
from DeepDRRSlicerLib.spectrum import tube_spectrum
from DeepDRRSlicerLib.volume import Volume

# NIST SRD 126 Table 2 (ICRU-44 tissues), mass fractions; density g/cm3.
ICRU = {
    "water": ({"H": 0.111898, "O": 0.888102}, 1.0),
    "lung": ({"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003, "Cl": 0.003,
              "K": 0.002}, 1.05),
    "adipose": ({"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001}, 0.95),
    "bone": ({"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003,
              "Ca": 0.225}, 1.92),
}
KVPS = (60, 90, 120)
pytestmark = pytest.mark.filterwarnings("ignore::DeepDRRSlicerLib.volume.ImplausibleCTWarning")


def oracle_mu_rho(composition: dict, energies_keV) -> np.ndarray:
    energies_ev = np.asarray(energies_keV, dtype=float) * 1000.0
    return sum(w * np.asarray(xraydb.mu_elam(el, energies_ev, kind="total")) for el, w in composition.items())


def oracle_hu(composition: dict, density: float) -> float:
    """HU the calibration assumes a CT reads: attenuation relative to water at 70 keV."""
    e = hu_calibration.CALIBRATION_KEV
    return float(1000.0 * (oracle_mu_rho(composition, [e])[0] * density
                           / oracle_mu_rho(ICRU["water"][0], [e])[0] - 1.0))


# NIST SRD 126 Table 2: dry air and caesium iodide (mass fractions, g/cm3).
AIR = ({"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, 1.205e-3)
CSI = ({"Cs": 0.511534, "I": 0.488466}, 4.51)
CSI_THICKNESS_CM = 0.06
SOURCE_TO_DETECTOR_CM = 300.0   # the geometry of slab_transmission


def oracle_transmission(composition: dict, density: float, length_cm: float, kvp: float) -> float:
    """Detector signal behind ``length_cm`` of the material over the open-field signal (air only)."""
    spectrum = tube_spectrum(kvp, {"Al": 3.3})
    energies = np.asarray(spectrum.energies_keV, dtype=float)
    absorbed = 1.0 - np.exp(-oracle_mu_rho(CSI[0], energies) * CSI[1] * CSI_THICKNESS_CM)
    weights = np.asarray(spectrum.fluence, dtype=float) * energies * absorbed
    mu = oracle_mu_rho(composition, energies) * density
    mu_air = oracle_mu_rho(AIR[0], energies) * AIR[1]
    behind = np.exp(-mu * length_cm - mu_air * (SOURCE_TO_DETECTOR_CM - length_cm))
    open_field = np.exp(-mu_air * SOURCE_TO_DETECTOR_CM)
    return float(np.dot(weights, behind) / np.dot(weights, open_field))


def slab_transmission(hu_value: float, thickness_mm: float, kvp: float, density_model="calibrated",
                      cylinder=False):
    """Transmission along the i axis through a slab (or a cylinder along k) of one HU value, in air.

    Returns (I/I0 at the central pixel, material path length in cm along that ray).
    """
    spacing = 1.0
    n = int(round(thickness_mm / spacing)) + 8
    hu = np.full((5, 5, n), -1000.0, dtype=np.float32)   # [k, j, i]: the slab spans i = 4 .. n-5
    if cylinder:
        hu = np.full((5, n, n), -1000.0, dtype=np.float32)
        jj, ii = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centre = (n - 1) / 2.0
        inside = (jj - centre) ** 2 + (ii - centre) ** 2 <= (thickness_mm / 2.0 / spacing) ** 2
        hu[:, inside] = hu_value
        row = n // 2
        length_cm = float(inside[row].sum()) * spacing / 10.0
    else:
        hu[:, :, 4:n - 4] = hu_value
        row = 2
        length_cm = (n - 8) * spacing / 10.0
    volume = Volume.from_array(hu, spacing=(spacing, spacing, spacing))
    k_centre = 2.0
    # A ray along +i through the voxel centres of row ``row`` at slice 2: source far on -i, detector past +i.
    y = float(row) * spacing
    source = np.array([-1000.0, y, k_centre])
    geometry = DetectorGeometry(source=source, detector_origin=np.array([2000.0, y - 1.0, k_centre - 1.0]),
                                u=np.array([0.0, 1.0, 0.0]), v=np.array([0.0, 0.0, 1.0]), width=3, height=3)
    settings = SimulationSettings(kvp=kvp, filtration={"Al": 3.3}, materials="threshold", density_model=density_model,
                                  metal="none")
    result = Simulator(volume, settings).render(geometry)
    return float(result.stages["primary"][1, 1]), length_cm


@pytest.mark.parametrize("kvp", KVPS)
def test_water_cylinder_transmission_matches_xraydb_water(kvp):
    measured, length_cm = slab_transmission(0.0, 200.0, kvp, cylinder=True)
    expected = oracle_transmission(*ICRU["water"], length_cm, kvp)
    assert abs(measured / expected - 1.0) < 0.005, (measured, expected)


def test_deepdrr_density_model_is_kept_and_differs_for_water():
    """DeepDRR's fit puts 0 HU at 1.03 g/cm3: 20 cm of water transmits several per cent less than water."""
    measured, length_cm = slab_transmission(0.0, 200.0, 90, density_model="deepdrr", cylinder=True)
    expected = oracle_transmission(*ICRU["water"], length_cm, 90)
    assert measured / expected < 0.95


@pytest.mark.parametrize("tissue, density, thickness_mm", [
    ("lung", 0.26, 100.0),        # inflated lung: ICRU lung tissue at about a quarter of its density
    ("adipose", 0.95, 100.0),
    ("bone", 1.92, 30.0),
])
@pytest.mark.parametrize("kvp", KVPS)
def test_tissue_slab_transmission_matches_icru_composition(tissue, density, thickness_mm, kvp):
    composition = ICRU[tissue][0]
    hu_value = oracle_hu(composition, density)
    measured, length_cm = slab_transmission(hu_value, thickness_mm, kvp)
    expected = oracle_transmission(composition, density, length_cm, kvp)
    assert abs(measured / expected - 1.0) < 0.01, (tissue, hu_value, measured, expected)


def test_water_is_one_gram_per_cm3_and_composition_varies_with_hu():
    curves = hu_calibration.calibrated_curves()
    tissue = curves["tissue"].evaluate(np.array([0.0, -60.0, 30.0], dtype=np.float32))
    assert tissue[:, 0].sum() == pytest.approx(1.0, abs=1e-6)
    basis = hu_calibration.CALIBRATED_BASIS
    assert tissue[basis.index("water"), 0] == pytest.approx(1.0, abs=1e-6)
    # Inside the soft-tissue class the composition changes with HU: fat-rich below 0, muscle-like above.
    fat_share = tissue[basis.index("adipose")] / tissue.sum(axis=0)
    assert fat_share[1] > 0.5 and fat_share[2] == 0.0
    # Inside the bone class: more cortical bone by mass as HU rises (marrow -> cortical bone).
    bone = curves["bone"].evaluate(np.array([150.0, 400.0, 900.0], dtype=np.float32))
    share = bone[basis.index("bone")] / bone.sum(axis=0)
    assert np.all(np.diff(share) > 0.1)


def test_density_is_monotonic_and_continuous_in_hu():
    hu = np.linspace(-1024, 3000, 8049, dtype=np.float32)
    for curve in hu_calibration.calibrated_curves().values():
        density = curve.evaluate(hu).sum(axis=0)
        assert np.all(np.diff(density) >= -1e-6)
        assert np.max(np.abs(np.diff(density))) < 0.01   # no jump larger than a 0.5 HU step allows


def test_network_probabilities_mix_class_curves_by_volume():
    """A voxel half soft tissue, half bone gets the mean density of both readings of its HU."""
    hu = np.full((1, 1, 2), 400.0, dtype=np.float32)
    probabilities = np.zeros((3, 1, 1, 2), dtype=np.float32)
    probabilities[1, 0, 0, 0] = 1.0
    probabilities[1:, 0, 0, 1] = 0.5
    density, fractions, names = hu_calibration.compose(hu, probabilities)
    curves = hu_calibration.calibrated_curves()
    soft = curves["tissue"].evaluate(np.array([400.0], dtype=np.float32)).sum()
    bone = curves["bone"].evaluate(np.array([400.0], dtype=np.float32)).sum()
    assert density[0, 0, 0] == pytest.approx(soft, rel=1e-5)
    assert density[0, 0, 1] == pytest.approx(0.5 * (soft + bone), rel=1e-5)
    assert np.allclose(fractions.sum(axis=0), 1.0, atol=1e-5)
    assert fractions[names.index("bone"), 0, 0, 0] == 0.0 and fractions[names.index("bone"), 0, 0, 1] > 0.1


def test_threshold_deepdrr_without_metal_is_deepdrrs_decomposition():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 2000, (6, 7, 8)).astype(np.float32)
    volume = Volume.from_array(hu, spacing=(1, 1, 1))
    materials = decompose(volume, "threshold", density_model="deepdrr", metal="none")
    assert materials.fractions is None and materials.names == ("air", "soft_tissue", "bone")
    expected_density = np.maximum(np.minimum(0.001029 * hu + 1.030, 0.0005886 * hu + 1.03), 0)
    assert np.allclose(materials.density, expected_density, rtol=1e-6)
    assert np.array_equal(materials.labels, np.where(hu <= -800, 0, np.where(hu <= 350, 1, 2)))


def test_overrides_put_the_implant_at_its_density_and_leave_the_rest():
    from DeepDRRSlicerLib.materials import MaterialOverride, override_materials

    hu = np.full((6, 6, 6), 40.0, dtype=np.float32)
    hu[:, :, :2] = -1000.0
    volume = Volume.from_array(hu, spacing=(1, 1, 1))
    base = decompose(volume, "threshold", metal="none")
    before = base.fractions.copy()
    mask = np.zeros(hu.shape, dtype=bool)
    mask[2:4, 2:4, 2:4] = True
    out = override_materials(base, [MaterialOverride(mask, "stainless_steel"),
                                    MaterialOverride(mask & (np.indices(hu.shape)[0] == 3), "bone", density="ct")])
    steel, bone = out.names.index("stainless_steel"), out.names.index("bone")
    first = mask & (np.indices(hu.shape)[0] == 2)
    assert np.all(out.fractions[steel][first] == 1.0) and np.all(out.density[first] == pytest.approx(8.0))
    later = mask & (np.indices(hu.shape)[0] == 3)   # the later override wins, with the CT's density
    assert np.all(out.fractions[bone][later] == 1.0) and np.allclose(out.density[later], base.density[later])
    assert np.array_equal(out.density[~mask], base.density[~mask])
    assert np.array_equal(base.fractions, before)   # the input is not modified
    with pytest.raises(Exception, match="unobtainium"):
        override_materials(base, [MaterialOverride(mask, "unobtainium")])


@pytest.mark.parametrize("model", ["calibrated", "deepdrr"])
def test_compiled_compose_equals_the_numpy_path_bit_for_bit(model, monkeypatch):
    """The numba pass over the voxels (hu_calibration_cpu) and the numpy path (stock Slicer without numba)
    give the same density and fractions, bit for bit: soft probabilities with and without bone, hard labels,
    metal, HU at and beyond every calibration point, and empty voxels."""
    from DeepDRRSlicerLib import hu_calibration

    rng = np.random.default_rng(0)
    n = 300_000
    hu = rng.uniform(-1100, 3200, n).astype(np.float32)
    points = np.concatenate([hu_calibration.calibrated_curves()["tissue"].hu,
                             hu_calibration.calibrated_curves()["bone"].hu, [-2048, -1024, 0, 3071, 5000]])
    hu[: points.size] = points.astype(np.float32)
    soft = rng.dirichlet([0.3, 0.3, 0.3], n).T.astype(np.float32)
    soft[2, : n // 3] = 0.0
    soft[:, : n // 3] /= soft[:, : n // 3].sum(axis=0)
    labels = rng.integers(0, 3, n).astype(np.uint8)
    metal = np.zeros(n, dtype=bool)
    metal[5000:5100] = True
    assert hu_calibration._compiled_kernels() is not None
    for probabilities in (soft, labels):
        compiled = hu_calibration.compose(hu, probabilities, model, metal_mask=metal, metal_material="titanium")
        with monkeypatch.context() as patch:
            patch.setattr(hu_calibration, "_compiled_kernels", lambda: None)
            plain = hu_calibration.compose(hu, probabilities, model, metal_mask=metal, metal_material="titanium")
        assert compiled[2] == plain[2]
        assert np.array_equal(compiled[0], plain[0])
        assert np.array_equal(compiled[1], plain[1])
        assert (compiled[0] <= 0).any() and (compiled[0] > 1.5).any()   # empty and dense voxels were covered
