"""Materials in the MRML logic: network by default, caching per node and voxel time, segmentation overrides."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib import material_network  # noqa: E402
from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic  # noqa: E402
from DeepDRRSlicerLib.mrml.material_overrides import material_for_segment_name  # noqa: E402
from DeepDRRSlicerLib.mrml.panel_parameters import simulation_settings  # noqa: E402
from DeepDRRSlicerLib.pipeline import SimulationSettings  # noqa: E402
from mrml_helpers import carm_at  # noqa: E402

torch = pytest.importorskip("torch", reason="the network needs PyTorch (pip install '.[network]')")


def test_network_is_the_default_and_cached_per_node_and_voxels(scene, ct_node):
    logic = DeepDRRLogic(scene)
    first = logic.materials_for(ct_node)
    assert first.method == "network, calibrated density" and "titanium_alloy" in first.names
    assert logic.materials_for(ct_node) is first
    assert logic.stats["network_runs"] == 1 and logic.stats["decompositions"] == 1
    # Another density model or metal reuses the network's output.
    deepdrr = logic.materials_for(ct_node, replace(SimulationSettings(), density_model="deepdrr", metal="steel"))
    assert deepdrr.names == ("air", "soft_tissue", "bone", "stainless_steel")
    assert logic.stats["network_runs"] == 1 and logic.stats["decompositions"] == 2
    # New voxels: the network runs again.
    array = slicer.util.arrayFromVolume(ct_node)
    array[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(ct_node)
    logic.materials_for(ct_node)
    assert logic.stats["network_runs"] == 2


def test_segments_named_after_a_material_override_it(scene, ct_node):
    """slicer-core cannot hold segments (its segmentation has no labelmap converters) nor export them,
    so a stand-in with the segmentation node's interface and a stand-in exporter drive the logic here;
    inside Slicer, slicer.util.arrayFromSegmentBinaryLabelmap exports the segments."""
    logic = DeepDRRLogic(scene)
    segmentation = _StandInSegmentation({"screw": "Screw (steel)", "segment_2": "Segment_2"})
    mask = np.zeros(slicer.util.arrayFromVolume(ct_node).shape, dtype=np.uint8)
    mask[40:44, 50:54, 60:64] = 1
    exported = []

    def export(segmentation_node, segment_id, reference):
        assert segmentation_node is segmentation and reference is ct_node
        exported.append(segment_id)
        return mask if segment_id == "screw" else np.ones_like(mask)

    logic.segment_exporter = export
    before = logic.materials_for(ct_node, "threshold")
    logic.set_material_overrides(ct_node, segmentation)
    after = logic.materials_for(ct_node, "threshold")
    steel = after.names.index("stainless_steel")
    inside = mask.astype(bool)
    assert np.all(after.fractions[steel][inside] == 1.0) and np.all(after.density[inside] == pytest.approx(8.0))
    assert np.all(after.fractions[steel][~inside] == 0.0)
    assert np.array_equal(after.density[~inside], before.density[~inside])
    assert exported == ["screw"]   # "Segment_2" names no material: not exported, not applied
    assert any("override" in note for note in logic.material_notes(ct_node, replace(logic.settings,
                                                                                      materials="threshold")))
    logic.set_material_overrides(ct_node, None)
    assert "stainless_steel" not in logic.materials_for(ct_node, "threshold").names


class _StandInSegmentation:
    """The part of vtkMRMLSegmentationNode the overrides read: ID, name, modified time, segments' IDs and names."""

    def __init__(self, segments: dict):
        self._segments = segments
        self._mtime = 1

    def GetID(self):
        return "vtkMRMLSegmentationNode1"

    def GetName(self):
        return "implants"

    def GetMTime(self):
        return self._mtime

    def GetSegmentation(self):
        return self

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetNthSegmentID(self, index):
        return list(self._segments)[index]

    def GetSegment(self, segment_id):
        return SimpleNamespace(GetName=lambda: self._segments[segment_id])


def test_without_torch_the_logic_uses_thresholds_and_says_so(scene, ct_node, monkeypatch):
    monkeypatch.setattr(material_network, "torch_status", lambda: (False, "PyTorch is not available (test)"))
    logic = DeepDRRLogic(scene)
    materials = logic.materials_for(ct_node)
    assert materials.method.startswith("threshold")
    assert any("used HU thresholds instead" in note for note in logic.material_notes(ct_node))
    # the panel's Materials section shows these from the render's output
    output = logic.simulate(ct_node, carm_at(logic.volume_for(ct_node).center_ras()), stages="primary")
    assert any("used HU thresholds instead" in note for note in output.notes)


def test_panel_material_parameters_reach_the_settings():
    parameters = SimpleNamespace(kvp=90.0, smoothInterpolation=False, materials="threshold", densityModel="deepdrr",
                                 metal="cocr")
    settings = simulation_settings(parameters)
    assert (settings.materials, settings.density_model, settings.metal) == ("threshold", "deepdrr", "cocr")
    older = SimpleNamespace(kvp=90.0, smoothInterpolation=True)   # a parameter node saved before these fields
    settings = simulation_settings(older)
    assert (settings.materials, settings.density_model, settings.metal) == ("network", "calibrated", "titanium")


@pytest.mark.parametrize("name, material", [("Screw (steel)", "stainless_steel"), ("titanium rod", "titanium_alloy"),
                                            ("CoCr stem", "cobalt_chromium"), ("pedicle screw", "titanium_alloy"),
                                            ("Fat", "adipose"), ("Segment_1", None), ("S", None)])
def test_segment_names_map_to_materials(name, material):
    assert material_for_segment_name(name) == material
