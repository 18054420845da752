"""The module panel's parameters as the logic's inputs (no Qt).

The module file's parameter node (``DeepDRRSlicerParameterNode``) holds what the
panel shows and saves it with the scene. These functions read its fields by
name, so any object with those attributes works (CI passes a plain namespace),
and turn them into the C-arm set-up and the engine settings. A new panel
parameter that changes the simulation is mapped here, where CI can test it.

Fields read: ``ct``, ``landmarks``, ``carmTransform`` (nodes); ``sid``, ``sod``,
``detectorPixels``, ``detectorSize``, ``kvp``, ``mas``, ``detectorThickness``, ``scatterPhotons``,
``seed``, ``grid``, ``mode``, ``livePreview``; ``stage`` (an enum whose ``value`` is a stage name); ``materials``,
``densityModel``, ``metal`` and ``materialSegmentation``. Optional fields are read with the engine's
defaults, so parameter nodes saved before they existed still work. The projector is the engine's default
(smooth at any CT resolution and the fastest), so the panel has no algorithm choice.
"""

from __future__ import annotations

from ..pipeline import SimulationSettings
from .carm_transform import CArmSetup

__all__ = ["carm_setup", "simulation_settings", "simulate_from_parameters", "update_live_from_parameters",
           "apply_material_segmentation"]


def carm_setup(parameters) -> CArmSetup:
    """Distances and detector grid of the panel."""
    return CArmSetup(sid_mm=float(parameters.sid), sod_mm=float(parameters.sod),
                     detector_pixels=int(parameters.detectorPixels), detector_size_mm=float(parameters.detectorSize))


def simulation_settings(parameters) -> SimulationSettings:
    """The engine's physics settings of the panel."""
    defaults = SimulationSettings()
    return SimulationSettings(kvp=float(parameters.kvp),
                              materials=str(getattr(parameters, "materials", None) or defaults.materials),
                              density_model=str(getattr(parameters, "densityModel", None) or defaults.density_model),
                              metal=str(getattr(parameters, "metal", None) or defaults.metal),
                              mas=float(getattr(parameters, "mas", defaults.mas)),
                              detector_thickness_mm=float(getattr(parameters, "detectorThickness",
                                                                  defaults.detector_thickness_mm)),
                              scatter_photons=int(getattr(parameters, "scatterPhotons", defaults.scatter_photons)),
                              seed=int(getattr(parameters, "seed", defaults.seed)),
                              grid=bool(getattr(parameters, "grid", defaults.grid)),
                              mode=str(getattr(parameters, "mode", None) or defaults.mode))


def apply_material_segmentation(logic, parameters) -> None:
    """Use the panel's segmentation (if any) as material overrides of its CT, mapped by segment names."""
    if getattr(parameters, "ct", None) is None:
        return
    logic.set_material_overrides(parameters.ct, getattr(parameters, "materialSegmentation", None))


def simulate_from_parameters(logic, parameters, progress=None):
    """``logic.simulate`` (a ``DeepDRRLogic``) with the panel's parameters, then following the C-arm live."""
    apply_material_segmentation(logic, parameters)
    return logic.simulate(parameters.ct, None, parameters.landmarks, transformNode=parameters.carmTransform,
                          setup=carm_setup(parameters), settings=simulation_settings(parameters),
                          display_stage=parameters.stage.value, show=True, live=True, progress=progress)


def update_live_from_parameters(logic, parameters) -> None:
    """Pass changed panel parameters to the live view (it re-renders or re-displays as needed)."""
    apply_material_segmentation(logic, parameters)
    logic.update_live(setup=carm_setup(parameters), settings=simulation_settings(parameters),
                      landmarksNode=parameters.landmarks, display_stage=parameters.stage.value,
                      enabled=parameters.livePreview)
