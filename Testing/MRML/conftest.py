"""Fixtures for the MRML layer: a real vtkMRMLScene from the slicer-core wheel.

No fake ``slicer`` module is used anywhere. Each test module starts with
``pytest.importorskip("slicer")`` (and checks that it is slicer-core), so
without the wheel the whole layer is skipped with the reason. The bundled CT
and landmarks are read with Slicer's own readers (see ``mrml_helpers``).
"""

from __future__ import annotations

import os

os.environ.setdefault("DEEPDRR_SCATTER_PHOTONS", "5000")   # few Monte Carlo photons in CI
import pytest


def require_slicer_core():
    """The ``slicer`` package of the slicer-core wheel, or skip the calling module."""
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (real MRML without Qt) is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core (it has no vtkMRMLScene)",
                    allow_module_level=True)
    return slicer


@pytest.fixture
def scene():
    slicer = require_slicer_core()
    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(1)


@pytest.fixture
def ct_node(scene):
    from mrml_helpers import read_ct

    return read_ct(scene)


@pytest.fixture
def landmarks_node(scene):
    from mrml_helpers import read_landmarks

    return read_landmarks(scene)


@pytest.fixture
def scheduler():
    from DeepDRRSlicerLib.mrml.scheduler import ManualScheduler

    return ManualScheduler()


@pytest.fixture
def logic(scene, scheduler):
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic

    from DeepDRRSlicerLib.pipeline import SimulationSettings

    # few Monte Carlo photons: every stage is computed, fast (the scatter physics is tested in Testing/Python)
    logic = DeepDRRLogic(scene, scheduler, settings=SimulationSettings(scatter_photons=5_000))
    yield logic
    logic.stop_live()


@pytest.fixture
def ct_center(logic, ct_node):
    return logic.volume_for(ct_node).center_ras()
