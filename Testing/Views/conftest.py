"""Fixtures of the views layer: the module's Fluoro layout rendered by Slicer's own view classes.

Each test module starts with ``views_helpers.require_views()``: without the
slicer-core wheel, or where no offscreen OpenGL context can be made, the module
is skipped and the reason printed (``-ra``). In CI the layer is required
(``Testing/run_pytest_layer.py --required-in-ci``), so a skip there fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("DEEPDRR_SCATTER_PHOTONS", "5000")   # few Monte Carlo photons in CI
import pytest


@pytest.fixture
def views():
    """The Fluoro layout (3D view "1" + the Fluoro slice view) on a new scene; small views keep it quick."""
    from slicer_views import FluoroLayout

    layout = FluoroLayout(fluoro_size=(320, 320), three_d_size=(360, 360))
    yield layout
    layout.close()
    layout.scene.Clear(1)


@pytest.fixture
def scheduler():
    from DeepDRRSlicerLib.mrml.scheduler import ManualScheduler

    return ManualScheduler()


@pytest.fixture
def logic(views, scheduler):
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic

    from DeepDRRSlicerLib.pipeline import SimulationSettings

    # few Monte Carlo photons: every stage is computed, fast (the scatter physics is tested in Testing/Python)
    logic = DeepDRRLogic(views.scene, scheduler, settings=SimulationSettings(scatter_photons=5_000))
    yield logic
    logic.stop_live()


@pytest.fixture
def ct_node(views):
    from mrml_helpers import read_ct

    node = read_ct(views.scene)
    node.CreateDefaultDisplayNodes()  # as Slicer's "Add data" does
    return node


@pytest.fixture
def landmarks_node(views):
    from mrml_helpers import read_landmarks

    return read_landmarks(views.scene)
