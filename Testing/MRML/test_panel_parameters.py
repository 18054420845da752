"""The panel's parameters become the logic's inputs (``DeepDRRSlicerLib.mrml.panel_parameters``).

Inside Slicer the parameter node wrapper holds these fields; here a namespace
with the same field names stands in for it (the wrapper itself needs Slicer's
Qt application), and the logic, scene and nodes are the real ones.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.mrml import panel_parameters
from DeepDRRSlicerLib.projector import DEFAULT_ALGORITHM  # noqa: E402
from DeepDRRSlicerLib.mrml.carm_transform import create_carm_transform, pose_from_angles  # noqa: E402
from DeepDRRSlicerLib.mrml.output_nodes import fluoro_display_node  # noqa: E402


class _Stage(enum.Enum):  # the module file's FluoroStage has these values (a test checks its list)
    PRIMARY = "primary"
    LINE_INTEGRAL_BONE = "line_integral_bone"
    FINAL = "final"


def _parameters(**changes):
    fields = dict(ct=None, landmarks=None, carmTransform=None, alpha=0.0, beta=0.0, sid=1020.0, sod=530.0,
                  detectorPixels=48, detectorSize=298.0, kvp=90.0, mas=0.05,
                  detectorThickness=0.6, scatterPhotons=5_000, seed=0, grid=False,
                  stage=_Stage.PRIMARY, livePreview=True)
    fields.update(changes)
    return SimpleNamespace(**fields)


def test_setup_and_settings_follow_the_fields():
    setup = panel_parameters.carm_setup(_parameters(sid=900.0, sod=600.0, detectorPixels=64, detectorSize=200.0))
    assert (setup.sid_mm, setup.sod_mm, setup.detector_pixels, setup.detector_size_mm) == (900.0, 600.0, 64, 200.0)
    assert panel_parameters.simulation_settings(_parameters(kvp=70.0)).kvp == 70.0
    assert panel_parameters.simulation_settings(_parameters()).algorithm == DEFAULT_ALGORITHM == "joseph"
    settings = panel_parameters.simulation_settings(_parameters(mas=1.0, detectorThickness=0.8, scatterPhotons=20_000,
                                                                seed=7, grid=True))
    assert (settings.mas, settings.detector_thickness_mm, settings.scatter_photons, settings.seed, settings.grid) == (
        1.0, 0.8, 20_000, 7, True)


def test_a_still_live_pose_gets_its_scatter_from_a_worker_thread(scene, logic, scheduler, ct_node, ct_center):
    """Moving the C-arm shows the previous scatter at once; the pose's own Monte Carlo runs on a worker
    thread and, when it is done, the pose is shown again with it (one scatter refresh)."""
    transform = create_carm_transform(scene, pose=pose_from_angles(0.0, 0.0, ct_center))
    parameters = _parameters(ct=ct_node, carmTransform=transform, stage=_Stage.FINAL)
    first = panel_parameters.simulate_from_parameters(logic, parameters)
    assert "mc_primary_over_analytic" in first.result.metrics["scatter"]     # the first image ran the MC
    logic.set_carm_angles(transform, 30.0, 0.0)
    scheduler.run_pending()
    assert logic.stats["scatter_jobs"] == 1 and logic.stats["scatter_refreshes"] == 1
    latest = logic.render_now()
    assert "mc_primary_over_analytic" in latest.result.metrics["scatter"]    # its own scatter, from the cache
    assert not any("preview" in note for note in latest.result.notes)


def test_bad_distances_are_explained():
    with pytest.raises(InputError):
        panel_parameters.carm_setup(_parameters(sid=500.0, sod=600.0))


def test_simulate_then_live_updates_from_the_fields(scene, logic, ct_node, landmarks_node, ct_center):
    transform = create_carm_transform(scene, pose=pose_from_angles(0.0, 0.0, ct_center))
    parameters = _parameters(ct=ct_node, landmarks=landmarks_node, carmTransform=transform,
                             stage=_Stage.LINE_INTEGRAL_BONE)
    output = panel_parameters.simulate_from_parameters(logic, parameters)
    assert logic.live and output.display_stage == "line_integral_bone"
    assert output.geometry.shape == (48, 48)
    assert output.landmarks_node is not None

    # The stage selector only re-displays; a new pixel count re-renders at the new size.
    renders = logic.stats["renders"]
    panel_parameters.update_live_from_parameters(logic, _parameters(**{**vars(parameters), "stage": _Stage.PRIMARY}))
    assert logic.stats["renders"] == renders
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetBackgroundVolumeID() == fluoro_display_node(scene, output.node("primary")).GetID()
    panel_parameters.update_live_from_parameters(logic, _parameters(**{**vars(parameters), "detectorPixels": 32}))
    logic.scheduler.run_pending()
    assert logic.stats["renders"] > renders
    image = slicer.util.arrayFromVolume(output.node("primary"))
    assert image.shape == (1, 32, 32) and np.all(np.isfinite(image))


def test_line_integral_mode_shows_the_total_line_integral_and_switching_back_renders_physics(scene, logic, ct_node,
                                                                                             ct_center):
    """The panel's Image choice: line-integral mode computes the total line integral (the Fluoro view falls
    back to it from the default primary stage), and polychromatic renders the physics again."""
    transform = create_carm_transform(scene, pose=pose_from_angles(0.0, 0.0, ct_center))
    parameters = _parameters(ct=ct_node, carmTransform=transform, mode="line-integral")
    assert panel_parameters.simulation_settings(parameters).mode == "line-integral"
    output = panel_parameters.simulate_from_parameters(logic, parameters)
    assert "line_integral" in output.stages and "primary" not in output.stages
    assert output.display_stage == "line_integral"
    total = slicer.util.arrayFromVolume(output.node("line_integral"))[0]
    materials = [slicer.util.arrayFromVolume(output.node(s))[0] for s in output.stages
                 if s.startswith("line_integral_")]
    np.testing.assert_allclose(total, np.sum(materials, axis=0), rtol=1e-5, atol=1e-6)   # the materials' total
    assert total.max() > 1.0   # g/cm2 through the phantom

    panel_parameters.update_live_from_parameters(logic, _parameters(**{**vars(parameters), "mode": "polychromatic"}))
    logic.scheduler.run_pending()
    latest = logic.render_now()
    assert "primary" in latest.stages and "line_integral" not in latest.stages
    assert latest.display_stage == "primary"
    assert panel_parameters.simulation_settings(_parameters()).mode == "polychromatic"   # saved nodes without the field
