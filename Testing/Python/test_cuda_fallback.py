"""Without a GPU: ``--device auto`` runs on the CPU and says why in one line; ``--device cuda`` fails
naming what is missing and how to install it. These run for real where there is no NVIDIA driver
(CI), nothing is faked; on a machine with a working GPU they skip (the GPU layer covers that case).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from DeepDRRSlicerLib.cli import EXIT_INPUT_ERROR, main
from DeepDRRSlicerLib.cuda import probe
from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.geometry import CArm
from DeepDRRSlicerLib.materials import decompose
from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator
from DeepDRRSlicerLib.projector import cuda_status, describe_backend, project, project_batch
from DeepDRRSlicerLib.volume import Volume

_AVAILABLE, _REASON = cuda_status()
pytestmark = pytest.mark.skipif(_AVAILABLE, reason=f"a CUDA device works here ({_REASON}); the CPU fallback is "
                                                   "tested on machines without one")


@pytest.fixture(scope="module")
def cube():
    hu = np.full((20, 22, 24), -1000.0, np.float32)
    hu[5:15, 6:16, 7:17] = 400.0
    volume = Volume.from_array(hu, spacing=(2.0, 2.0, 2.0), origin=(-23.0, -21.0, -19.0))
    geometry = CArm(width=24, height=20, pixel_spacing_mm=3.0).geometry()
    return volume, decompose(volume), geometry


def test_the_reason_names_the_driver_and_each_launcher():
    status = probe.cuda_status()
    assert not status.available and status.launcher is None
    assert "driver" in status.reason or "GPU" in status.reason
    for launcher in probe.LAUNCHERS:
        assert launcher in status.reason   # installed (needs the driver) or not installed: each one is named
    assert "\n" not in status.reason


def test_auto_runs_on_the_cpu_and_says_why_in_one_line(cube):
    _, materials, geometry = cube
    auto = project(materials, geometry, device="auto")
    cpu = project(materials, geometry, device="cpu")
    assert auto.backend == cpu.backend == "cpu"
    assert np.array_equal(auto.line_integrals, cpu.line_integrals)
    [note] = [n for n in auto.notes if "CUDA" in n]
    assert note.startswith("no CUDA: ") and note.endswith("used the CPU") and _REASON in note
    assert not [n for n in cpu.notes if "CUDA" in n]   # cpu does not even look


def test_cuda_fails_naming_what_is_missing_and_how_to_install_it(cube):
    _, materials, geometry = cube
    with pytest.raises(InputError) as raised:
        project(materials, geometry, device="cuda")
    error = raised.value
    assert error.problem.startswith("--device cuda: no CUDA launcher works here") and _REASON in error.problem
    assert "pip install cupy-cuda" in error.fix and "pycuda" in error.fix and "--device cpu" in error.fix


def test_cuda_with_an_algorithm_the_gpu_lacks_is_refused_before_probing(cube):
    _, materials, geometry = cube
    with pytest.raises(InputError, match="implements the joseph algorithm only"):
        project(materials, geometry, device="cuda", algorithm="siddon")
    projection = project(materials, geometry, device="auto", algorithm="siddon")
    assert projection.backend == "cpu" and any("siddon ran on the CPU" in n for n in projection.notes)


def test_the_gpu_can_be_switched_off(monkeypatch, cube):
    _, materials, geometry = cube
    monkeypatch.setenv(probe.ENVIRONMENT_VARIABLE, "none")
    probe.forget()
    try:
        with pytest.raises(InputError, match=r"the GPU is disabled \(DEEPDRR_CUDA_LAUNCHER=none\)"):
            project(materials, geometry, device="cuda")
    finally:
        monkeypatch.delenv(probe.ENVIRONMENT_VARIABLE)
        probe.forget()


def test_cli_auto_names_the_backend_and_the_reason_in_the_summary(tmp_path, cube):
    code = main(["simulate", "--out", str(tmp_path), "--size", "48", "40", "--device", "auto", "--quiet"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "cpu" and summary["settings"]["device"] == "auto"
    assert any(note.startswith("no CUDA: ") for note in summary["notes"])


def test_cli_cuda_fails_clearly_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["simulate", "--out", str(out), "--size", "48", "40", "--device", "cuda", "--quiet"])
    assert code == EXIT_INPUT_ERROR
    error = capsys.readouterr().err
    assert "error: --device cuda: no CUDA launcher works here" in error
    assert "fix: " in error and "pip install cupy-cuda" in error
    assert not out.exists() or not any(out.iterdir())


def test_batches_on_the_cpu_equal_single_renders(cube):
    volume, materials, _ = cube
    geometries = [CArm(alpha_deg=a, width=24, height=20, pixel_spacing_mm=3.0).geometry() for a in (0, 30, 75)]
    batch = project_batch(materials, geometries, device="auto", keep_on_device=True)
    assert batch.backend == "cpu" and isinstance(batch.line_integrals, np.ndarray) and len(batch) == 3
    assert any(n.startswith("no CUDA: ") for n in batch.notes)
    for index, geometry in enumerate(geometries):
        single = project(materials, geometry, device="cpu")
        assert np.array_equal(batch.line_integrals[index], single.line_integrals)
        assert np.array_equal(batch[index].line_integrals, single.line_integrals)
    with pytest.raises(InputError, match="one detector size"):
        project_batch(materials, [geometries[0], CArm(width=10, height=10).geometry()])


def test_simulator_render_batch_matches_render(cube):
    volume, _, _ = cube
    simulator = Simulator(volume, SimulationSettings())
    geometries = [CArm(alpha_deg=a, width=24, height=20, pixel_spacing_mm=3.0).geometry() for a in (0, 45)]
    batch = simulator.render_batch(geometries)
    assert batch.primary.shape == (2, 20, 24) and batch.line_integrals.shape == (2, 3, 20, 24)
    for index, geometry in enumerate(geometries):
        single = simulator.render(geometry)
        assert np.array_equal(batch.primary[index], single.stages["primary"])
        assert np.array_equal(batch.result(index).stages["primary"], single.stages["primary"])
    assert describe_backend(batch.backend) == "CPU (numba)"


def test_the_readme_batch_example_runs(tmp_path):
    """The README's batch/DLPack example, on the bundled CT (torch: numpy's from_dlpack where torch is absent)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from DeepDRRSlicerLib.resources import sample_ct_path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("**Batches and DLPack.**", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = block.replace('"chest.nii.gz"', repr(str(sample_ct_path())))
    if importlib.util.find_spec("torch") is None:
        code = code.replace("import torch", "import numpy as torch")
    done = subprocess.run([sys.executable, "-c", code + "\nprint(tuple(images.shape), tuple(per_material.shape), "
                           "first.stages['primary'].shape)"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(91, 256, 256) (91, 3, 256, 256) (256, 256)")
