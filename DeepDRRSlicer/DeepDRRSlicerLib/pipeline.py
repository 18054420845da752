"""The simulation pipeline: CT -> materials -> projector -> primary, with every stage kept.

``Simulator`` decomposes a CT once and then renders any number of poses, which
is what the Slicer module's live view and dataset sweeps need.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputError
from .geometry import DetectorGeometry
from .landmarks import ProjectedLandmark, project_landmarks
from .materials import DEFAULT_DENSITY_MODEL, DEFAULT_METHOD, MaterialVolume, decompose
from .primary import PrimaryModel
from .projector import ALGORITHMS, project
from .spectrum import tabulated_kvp_range, tube_spectrum
from .volume import Volume

MODES = ("polychromatic", "line-integral")
# DeepDRR's default spectrum: 90 kV with 4.0 mm Al in total (0.7 mm inherent + 3.3 mm added).
DEFAULT_KVP = 90.0
DEFAULT_FILTRATION = {"Al": 3.3}


@dataclass
class SimulationSettings:
    kvp: float = DEFAULT_KVP
    filtration: dict = field(default_factory=lambda: dict(DEFAULT_FILTRATION))
    mode: str = "polychromatic"
    materials: str = DEFAULT_METHOD            # "network" or "threshold"
    device: str = "auto"
    algorithm: str = "siddon"
    density_model: str = DEFAULT_DENSITY_MODEL  # "calibrated" or "deepdrr"
    metal: str = "titanium"                    # "titanium", "steel", "cocr" or "none"
    materials_cache: str | None = None         # folder caching the network's output per CT

    def validate(self) -> None:
        low, high = tabulated_kvp_range()
        if not isinstance(self.kvp, (int, float)) or not np.isfinite(self.kvp) or not low <= self.kvp <= high:
            raise InputError(f"Tube voltage {self.kvp} kVp is outside the supported {low:.0f}-{high:.0f} kVp.",
                             f"Give --kvp between {low:.0f} and {high:.0f} (typical fluoroscopy: 60-120).")
        if self.mode not in MODES:
            raise InputError(f"Unknown mode {self.mode!r}.", f"Use --mode {' or '.join(MODES)}.")
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"Unknown projector algorithm {self.algorithm!r}.", f"Use one of {', '.join(ALGORITHMS)}.")
        for name, thickness in self.filtration.items():
            if not isinstance(thickness, (int, float)) or not np.isfinite(thickness) or thickness < 0:
                raise InputError(f"Filter thickness for {name} is {thickness!r} mm.",
                                 "Give non-negative thicknesses in mm, e.g. --filtration Al=2.5,Cu=0.1.")


@dataclass
class SimulationResult:
    geometry: DetectorGeometry
    stages: dict                  # stage name -> (H, W) float32
    material_names: tuple
    landmarks: list | None
    timings: dict                 # seconds per stage
    backend: str
    notes: list
    settings: SimulationSettings
    warnings: list = field(default_factory=list)
    spectrum_summary: dict | None = None

    def summary(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "stages": {name: {"shape": list(image.shape), "min": float(image.min()), "max": float(image.max()),
                              "mean": float(image.mean())} for name, image in self.stages.items()},
            "materials": list(self.material_names),
            "timings_s": {k: round(v, 6) for k, v in self.timings.items()},
            "backend": self.backend,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "spectrum": self.spectrum_summary,
            "landmarks_visible": None if self.landmarks is None else int(sum(p.visible for p in self.landmarks)),
        }


class Simulator:
    """Materials and spectrum prepared once for one CT; ``render`` projects one pose."""

    def __init__(self, volume: Volume, settings: SimulationSettings | None = None,
                 materials: MaterialVolume | None = None, progress=None):
        """``progress(fraction)`` follows the material decomposition and may raise SimulationCancelled."""
        self.settings = settings or SimulationSettings()
        self.settings.validate()
        self.volume = volume
        self.timings: dict = {}
        self.notes: list = []
        start = time.perf_counter()
        if materials is None:
            materials = decompose(volume, self.settings.materials, density_model=self.settings.density_model,
                                  metal=self.settings.metal, device=self.settings.device,
                                  cache_dir=self.settings.materials_cache, notes=self.notes, progress=progress)
        self.materials = materials
        self.timings["materials"] = time.perf_counter() - start
        self.primary_model = None
        self.spectrum_summary = None
        if self.settings.mode == "polychromatic":
            start = time.perf_counter()
            spectrum = _spectrum(self.settings)
            self.primary_model = PrimaryModel.for_spectrum(spectrum, self.materials.names)
            self.timings["spectrum"] = time.perf_counter() - start
            self.spectrum_summary = {"kvp": spectrum.kvp, "added_filtration_mm": dict(spectrum.filtration),
                                     "mean_energy_keV": round(spectrum.mean_energy_keV, 3),
                                     "fluence_photons_per_mAs_mm2_at_1m": spectrum.total_fluence}

    def render(self, geometry: DetectorGeometry, landmarks=None, progress=None) -> SimulationResult:
        """Project one pose. ``progress(fraction)`` may raise SimulationCancelled to stop."""
        timings = dict(self.timings)
        projection = project(self.materials, geometry, primary_model=self.primary_model,
                             device=self.settings.device, algorithm=self.settings.algorithm, progress=progress)
        timings["projector"] = projection.seconds
        warnings = []
        if not np.any(projection.line_integrals):
            warnings.append("no ray crosses the CT: the image is blank. Check the isocentre and angles "
                            "(the isocentre should lie inside the patient).")
        stages = {}
        if projection.primary is not None:
            stages["primary"] = projection.primary
        else:
            stages["line_integral"] = projection.total_line_integral
        for name, image in zip(projection.material_names, projection.line_integrals):
            stages[f"line_integral_{name}"] = image
        projected = None
        if landmarks is not None:
            start = time.perf_counter()
            projected = project_landmarks(landmarks, geometry)
            timings["landmarks"] = time.perf_counter() - start
        return SimulationResult(geometry=geometry, stages=stages, material_names=projection.material_names,
                                landmarks=projected, timings=timings, backend=projection.backend,
                                notes=list(self.notes) + list(projection.notes), settings=self.settings,
                                warnings=warnings,
                                spectrum_summary=self.spectrum_summary)


def simulate(volume: Volume, geometry: DetectorGeometry, settings: SimulationSettings | None = None,
             landmarks=None, progress=None) -> SimulationResult:
    """One-shot: decompose ``volume`` and render ``geometry``."""
    return Simulator(volume, settings).render(geometry, landmarks=landmarks, progress=progress)


def _spectrum(settings: SimulationSettings):
    from .attenuation import AttenuationDataUnavailable

    try:
        return tube_spectrum(settings.kvp, settings.filtration)
    except AttenuationDataUnavailable as error:
        raise InputError(f"Cannot build the tube spectrum: {error}",
                         "Install xraydb (pip install xraydb) for filters outside the bundled table.") from None
    except ValueError as error:
        raise InputError(f"Cannot build the tube spectrum: {error}",
                         "Use --kvp in 40-150 and filters such as --filtration Al=2.5,Cu=0.1.") from None


__all__ = ["MODES", "SimulationSettings", "SimulationResult", "Simulator", "simulate", "ProjectedLandmark"]
