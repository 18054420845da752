"""The module works in a stock Slicer, which has neither numba nor xraydb (the self-test's situation)."""

from __future__ import annotations

import sys

import numpy as np

from conftest import require_slicer_core

slicer = require_slicer_core()

from mrml_helpers import carm_at  # noqa: E402


def _clear_attenuation_caches():
    from DeepDRRSlicerLib import attenuation, spectrum

    for module in (attenuation, spectrum):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


def test_simulation_without_numba_and_xraydb(monkeypatch, logic, ct_node, landmarks_node, ct_center):
    compiled = logic.simulate(ct_node, carm_at(ct_center, alpha=20.0, pixels=48), landmarks_node, show=False)
    _clear_attenuation_caches()
    monkeypatch.setitem(sys.modules, "numba", None)   # "import numba" now fails, as in a stock Slicer
    monkeypatch.setitem(sys.modules, "xraydb", None)
    try:
        logic.clear_cache()
        stock = logic.simulate(ct_node, carm_at(ct_center, alpha=20.0, pixels=48), landmarks_node, show=False)
    finally:
        _clear_attenuation_caches()
    assert stock.result.backend == "cpu-numpy"
    assert any("numba is not installed" in note for note in stock.result.notes)
    primary = slicer.util.arrayFromVolume(stock.node("primary"))[0]
    reference = slicer.util.arrayFromVolume(compiled.node("primary"))[0]
    assert primary.shape == (48, 48) and np.all((primary > 0) & (primary <= 1))
    # the numpy fallback computes the default algorithm's numbers
    assert np.corrcoef(np.log(primary).ravel(), np.log(reference).ravel())[0, 1] > 0.99
    assert [p.label for p in stock.result.landmarks] == [p.label for p in compiled.result.landmarks]
