"""The simulation pipeline: CT -> materials -> projector -> primary, with every stage kept.

``Simulator`` decomposes a CT once and then renders any number of poses, which
is what the Slicer module's live view and dataset sweeps need.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputError, as_number, describe
from .geometry import CArm, DetectorGeometry, rays_cross_box
from .landmarks import ProjectedLandmark, project_landmarks
from .materials import DEFAULT_DENSITY_MODEL, DEFAULT_METHOD, THRESHOLD_MATERIALS, MaterialVolume, decompose
from .memory import MemoryContext, estimate_memory, warn_if_large
from .primary import PrimaryModel
from .projector import ALGORITHMS, DEFAULT_ALGORITHM, DEVICES, check_device, numba_status, project
from .spectrum import tabulated_kvp_range, tube_spectrum
from .truncation import truncation_mask
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
    algorithm: str = DEFAULT_ALGORITHM
    density_model: str = DEFAULT_DENSITY_MODEL  # "calibrated" or "deepdrr"
    metal: str = "titanium"                    # "titanium", "steel", "cocr" or "none"
    materials_cache: str | None = None         # folder caching the network's output per CT

    def validate(self) -> None:
        """Raise InputError naming the first setting that cannot be used."""
        low, high = tabulated_kvp_range()
        self.kvp = as_number(self.kvp, "kvp", f"Give the tube voltage as a number of kV between {low:.0f} and "
                             f"{high:.0f}, e.g. kvp=90 (--kvp 90; typical fluoroscopy: 60-120).")
        if not low <= self.kvp <= high:
            raise InputError(f"Tube voltage {self.kvp:g} kVp is outside the supported {low:.0f}-{high:.0f} kVp.",
                             f"Give --kvp between {low:.0f} and {high:.0f} (typical fluoroscopy: 60-120).")
        if not isinstance(self.materials, str):
            raise InputError(f"materials must be the name of a decomposition method, got {describe(self.materials)}.",
                             "Use materials='threshold' (--materials threshold).")
        for name, allowed in (("mode", MODES), ("algorithm", ALGORITHMS), ("device", DEVICES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                shown = repr(value) if isinstance(value, str) else describe(value)
                raise InputError(f"Unknown {name} {shown}.", f"Use {name} = {' or '.join(map(repr, allowed))}.")
        self.filtration = _checked_filtration(self.filtration)


def _checked_filtration(filtration) -> dict:
    fix = ("Give filtration as a dict {material or element: thickness in mm}, e.g. {'Al': 2.5, 'Cu': 0.1} "
           "(--filtration Al=2.5,Cu=0.1); {} for no added filter.")
    if not isinstance(filtration, Mapping):
        raise InputError(f"filtration must be a dict of filter thicknesses, got {describe(filtration)}.", fix)
    checked, seen = {}, {}
    for name, thickness in filtration.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"filtration has a key {describe(name)}; keys are material names.", fix)
        key = name.strip().lower()
        if key in seen:
            raise InputError(f"Filter {name!r} is given twice in filtration ({seen[key]!r} and {name!r}); "
                             "it is not clear which thickness is meant.",
                             "Give each filter once, with the total thickness, e.g. Al=3 instead of Al=1,Al=2.")
        seen[key] = name
        value = as_number(thickness, f"Filter thickness for {name}", fix, unit="mm")
        if value < 0:
            raise InputError(f"Filter thickness for {name} is {value:g} mm.",
                             "Give non-negative thicknesses in mm, e.g. --filtration Al=2.5,Cu=0.1.")
        checked[name] = value
    return checked


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
    masks: dict = field(default_factory=dict)   # mask name -> (H, W) float32 0/1, e.g. "truncation"

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
            "masks": {name: {"fraction_of_pixels": float(mask.mean())} for name, mask in self.masks.items()},
        }


class Simulator:
    """Materials and spectrum prepared once for one CT; ``render`` projects one pose."""

    def __init__(self, volume: Volume, settings: SimulationSettings | None = None,
                 materials: MaterialVolume | None = None, progress=None):
        """``progress(fraction)`` follows the material decomposition and may raise SimulationCancelled."""
        if not isinstance(volume, Volume):
            hint = {str: "load it first: Simulator(load_volume(path))",
                    np.ndarray: "wrap it first: Simulator(Volume.from_array(hu, spacing=(si, sj, sk)))"}
            how = next((text for kind, text in hint.items() if isinstance(volume, kind)),
                       "build it with load_volume(path) or Volume.from_array(hu, ijk_to_ras)")
            raise InputError(f"volume must be a Volume, got {describe(volume)}.", f"Pass a CT Volume; {how}.")
        if settings is None:
            settings = SimulationSettings()
        elif isinstance(settings, dict):
            raise InputError(f"settings must be a SimulationSettings, got a dict {settings!r}.",
                             "Pass SimulationSettings(**your_dict), e.g. SimulationSettings(kvp=90).")
        elif not isinstance(settings, SimulationSettings):
            raise InputError(f"settings must be a SimulationSettings or None, got {describe(settings)}.",
                             "Pass SimulationSettings(kvp=..., filtration=...), or nothing for the defaults.")
        if materials is not None and (not isinstance(materials, MaterialVolume)
                                      or materials.density.shape != volume.hu.shape):
            raise InputError(f"materials must be a MaterialVolume on the CT's grid {volume.hu.shape}, got "
                             f"{describe(materials) if not isinstance(materials, MaterialVolume) else materials.density.shape}.",
                             "Pass materials built from this volume (e.g. decompose(volume)), or nothing.")
        self.settings = settings
        self.settings.validate()
        check_device(self.settings.device, self.settings.algorithm)  # before the (slow) decomposition
        self.volume = volume
        self.timings: dict = {}
        self.notes: list = []
        warn_if_large(estimate_memory(render_memory_context(volume, self.settings, (1, 1), materials=materials)),
                      "Decomposing this CT")
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

    def memory_context(self, detector_shape, *, materials_ready: bool = True, writing: bool = False,
                       landmarks: bool = False) -> MemoryContext:
        """What :func:`memory.estimate_memory` needs to size a render of ``detector_shape`` (rows, columns)."""
        return render_memory_context(self.volume, self.settings, detector_shape,
                                     materials=getattr(self, "materials", None),
                                     primary_model=getattr(self, "primary_model", None),
                                     materials_ready=materials_ready, writing=writing, landmarks=landmarks)

    def render(self, geometry: DetectorGeometry, landmarks=None, progress=None) -> SimulationResult:
        """Project one pose. ``progress(fraction)`` may raise SimulationCancelled to stop.

        ``geometry`` is a DetectorGeometry (or a CArm, whose geometry() is used).
        """
        geometry = _checked_geometry(geometry)
        if landmarks is not None and (isinstance(landmarks, (str, bytes)) or not hasattr(landmarks, "__iter__")):
            raise InputError(f"landmarks must be a list of Landmark objects or None, got {describe(landmarks)}.",
                             "Read them with load_landmarks(path), or build [Landmark(label, (R, A, S)), ...].")
        if progress is not None and not callable(progress):
            raise InputError(f"progress must be a function progress(fraction) or None, got {describe(progress)}.",
                             "Pass a callable, e.g. progress=lambda fraction: print(f'{fraction:.0%}').")
        warn_if_large(estimate_memory(self.memory_context(geometry.shape, landmarks=landmarks is not None)),
                      f"Rendering {geometry.width} x {geometry.height} pixels")
        timings = dict(self.timings)
        projection = project(self.materials, geometry, primary_model=self.primary_model,
                             device=self.settings.device, algorithm=self.settings.algorithm, progress=progress)
        timings["projector"] = projection.seconds
        warnings = list(projection.warnings)
        if not np.any(projection.line_integrals):
            if rays_cross_box(geometry, self.materials.ijk_to_ras, self.materials.density.shape):
                warnings.append("the rays cross only air (no material denser than 0 g/cm3 on their path): the "
                                "image is blank. Check that the CT holds the patient and its values are HU.")
            else:
                warnings.append("no ray crosses the CT: the image is blank. Check the isocentre and angles "
                                "(the isocentre should lie inside the patient).")
        stages = {}
        if projection.primary is not None:
            stages["primary"] = projection.primary
        else:
            stages["line_integral"] = projection.total_line_integral
        for name, image in zip(projection.material_names, projection.line_integrals):
            stages[f"line_integral_{name}"] = image
        start = time.perf_counter()
        truncated = truncation_mask(self.materials, geometry)
        timings["truncation"] = time.perf_counter() - start
        notes = list(projection.notes)
        if truncated.any():
            notes.append(f"{100 * truncated.mean():.1f} % of the pixels are truncated: their rays cross tissue "
                         "where the CT ends (the truncation mask, hatched on the overlay); move the isocentre "
                         "or narrow the field to stay inside the scanned part")
        projected = None
        if landmarks is not None:
            start = time.perf_counter()
            projected = project_landmarks(landmarks, geometry)
            timings["landmarks"] = time.perf_counter() - start
        return SimulationResult(geometry=geometry, stages=stages, material_names=projection.material_names,
                                landmarks=projected, timings=timings, backend=projection.backend,
                                notes=list(self.notes) + notes, settings=self.settings, warnings=warnings,
                                spectrum_summary=self.spectrum_summary, masks={"truncation": truncated})

    def render_batch(self, geometries, *, landmarks=None, keep_on_device: bool = False,
                     device_memory_limit: int | None = None, progress=None):
        """Project many poses (one detector size) in one call; on the GPU, in one launch per batch.

        Returns a ``batch.BatchResult``: ``.primary`` (N, H, W) and ``.line_integrals`` (N, M, H, W),
        numpy arrays or, with ``keep_on_device`` on the GPU, ``cuda.DeviceArray`` shared through DLPack
        (``torch.from_dlpack(batch.primary)``); ``.result(i)`` is pose i as a SimulationResult.
        ``device_memory_limit`` (bytes) caps the GPU memory used (larger CTs go in slabs).
        """
        from .batch import render_batch

        return render_batch(self, geometries, landmarks=landmarks, keep_on_device=keep_on_device,
                            device_memory_limit=device_memory_limit, progress=progress)


def simulate(volume: Volume, geometry: DetectorGeometry, settings: SimulationSettings | None = None,
             landmarks=None, progress=None) -> SimulationResult:
    """One-shot: decompose ``volume`` and render ``geometry``."""
    return Simulator(volume, settings).render(geometry, landmarks=landmarks, progress=progress)


def render_memory_context(volume: Volume, settings: SimulationSettings, detector_shape, *, materials=None,
                          primary_model=None, materials_ready: bool | None = None, writing: bool = False,
                          landmarks: bool = False) -> MemoryContext:
    """The memory context of rendering ``volume`` with ``settings`` onto ``detector_shape`` (rows, columns),
    before or after the materials exist."""
    if materials is not None:
        n_materials, soft = len(materials.names), materials.fractions is not None
    else:   # before decomposing: what the settings will make (+1 for an implant metal)
        from .hu_calibration import CALIBRATED_BASIS

        soft = not (settings.materials == "threshold" and settings.density_model == "deepdrr")
        n_materials = 1 + (len(CALIBRATED_BASIS) if settings.density_model == "calibrated"
                           else len(THRESHOLD_MATERIALS))
    return MemoryContext(
        volume_shape=tuple(volume.hu.shape), detector_shape=tuple(detector_shape), n_materials=n_materials,
        mode=settings.mode, kernel=_cpu_kernel(),
        n_energies=len(primary_model.energies_keV) if primary_model is not None else 300,
        soft_fractions=soft,
        materials_ready=materials is not None if materials_ready is None else materials_ready,
        packed_ready=materials is not None and "_projector_layout" in materials.__dict__,
        writing=writing, landmarks=landmarks, extra={"network": materials is None and settings.materials == "network"})


@functools.lru_cache(maxsize=1)
def _cpu_kernel() -> str:
    """The CPU kernel the projector will use (numba or the numpy fallback); asked once per process."""
    return "numba" if numba_status()[0] else "numpy"


def _checked_geometry(geometry) -> DetectorGeometry:
    if isinstance(geometry, DetectorGeometry):
        return geometry
    if isinstance(geometry, CArm):
        return geometry.geometry()
    if isinstance(geometry, dict):
        raise InputError("geometry must be a DetectorGeometry (or a CArm), got a dict.",
                         "Convert it: DetectorGeometry.from_dict(d) for source/detector_origin/u/v/width/height, "
                         "or CArm(**d).geometry() for C-arm angles.")
    raise InputError(f"geometry must be a DetectorGeometry (or a CArm), got {describe(geometry)}.",
                     "Pass CArm(alpha_deg=..., isocenter_ras=...).geometry() or DetectorGeometry.load(path).")


def _spectrum(settings: SimulationSettings):
    from .attenuation import AttenuationDataUnavailable

    try:
        return tube_spectrum(settings.kvp, settings.filtration)
    except AttenuationDataUnavailable as error:
        raise InputError(f"Cannot build the tube spectrum: {error}",
                         "Install xraydb (pip install xraydb) for filters outside the bundled table.") from None
    except ValueError as error:
        if str(error).startswith("Unknown filter"):
            raise InputError(f"Cannot build the tube spectrum: {error}",
                             "Name filters by element symbol (Al, Cu, Sn, ...) or a known material, e.g. "
                             "--filtration Al=2.5,Cu=0.1.") from None
        raise InputError(f"Cannot build the tube spectrum: {error}",
                         "Use --kvp in 40-150 and filters such as --filtration Al=2.5,Cu=0.1.") from None


__all__ = ["MODES", "SimulationSettings", "SimulationResult", "Simulator", "simulate", "ProjectedLandmark"]
