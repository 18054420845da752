"""The panel's GPU logic (``mrml.gpu``): the backend shown after a render, and when "Install CuPy (GPU)..."
is offered and what it installs. Other machines' drivers are passed in as versions; nothing is faked."""

from __future__ import annotations

import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib.cuda import probe  # noqa: E402
from DeepDRRSlicerLib.geometry import CArm  # noqa: E402
from DeepDRRSlicerLib.mrml import gpu  # noqa: E402
from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic  # noqa: E402


@pytest.mark.parametrize("driver, wheel", [((13, 0), "cupy-cuda13x"), ((12, 4), "cupy-cuda12x"),
                                           ((13, 2), "cupy-cuda13x")])
def test_cupy_is_offered_for_the_drivers_cuda_with_nvrtc(driver, wheel):
    offer = gpu.gpu_offer(driver, cupy_installed=False, launcher_works=False)
    assert offer is not None and offer.requirements[0] == wheel
    assert any(r.startswith("nvidia-cuda-nvrtc") for r in offer.requirements)
    text = offer.describe()
    assert f"CUDA {driver[0]}.{driver[1]}" in text and "numpy is kept" in text


@pytest.mark.parametrize("driver, cupy_installed, launcher_works", [
    (None, False, False),          # no NVIDIA driver: nothing to gain
    ((11, 8), False, False),       # too old for the CuPy wheels we name
    ((13, 0), True, False),        # CuPy is there (the reason lies elsewhere; the tooltip says it)
    ((13, 0), False, True),        # pycuda already works
])
def test_no_offer_where_it_cannot_help(driver, cupy_installed, launcher_works):
    assert gpu.gpu_offer(driver, cupy_installed=cupy_installed, launcher_works=launcher_works) is None


def test_this_machine_gets_an_offer_only_with_a_driver():
    offer = gpu.gpu_offer()
    if probe.driver_cuda_version() is None:
        assert offer is None
    else:
        assert offer is None or offer.requirements


def test_declining_installs_nothing_and_probes_again():
    offer = gpu.GpuOffer(("surely-not-an-installed-package-xyz>=1",), (13, 0))
    asked = []
    assert gpu.install_cupy(slicer, offer, confirm=lambda text: asked.append(text) or False) is False
    assert asked and "surely-not-an-installed-package-xyz" in asked[0]


def test_the_panel_names_the_backend_of_a_render_and_why(scene, ct_node):
    logic = DeepDRRLogic(scene)
    output = logic.simulate(ct_node, CArm(width=32, height=32, pixel_spacing_mm=9.0), show=False)
    line = gpu.backend_line(output.result)
    available, reason = probe.cuda_status().available, probe.cuda_status().reason
    if available:
        assert line.startswith("GPU (CUDA through")
        assert "rendered on" in gpu.backend_tooltip(output.result)
    else:
        assert line in ("CPU (numba)", "CPU (numpy fallback)")
        assert reason in gpu.backend_tooltip(output.result)


def test_the_panel_names_the_scatter_backend_when_it_differs():
    """A render whose projector ran on the CPU (Siddon) and whose Monte Carlo ran on the GPU says both."""
    from types import SimpleNamespace

    both_gpu = SimpleNamespace(backend="cuda-cupy", metrics={"scatter": {"backend": "cuda-cupy"}}, notes=[])
    split = SimpleNamespace(backend="cpu", metrics={"scatter": {"backend": "cuda-pycuda"}}, notes=[])
    no_scatter = SimpleNamespace(backend="cpu", metrics={}, notes=[])
    assert gpu.backend_line(both_gpu) == "GPU (CUDA through CuPy)"
    assert gpu.backend_line(split) == "CPU (numba); scatter: GPU (CUDA through pycuda)"
    assert gpu.backend_line(no_scatter) == "CPU (numba)"
