"""The simulation pipeline: CT -> materials -> projector -> primary -> scatter -> noise -> display.

``Simulator`` decomposes a CT once and then renders any number of poses, which
is what the Slicer module's live view and dataset sweeps need. This file only
wires the stages (each lives in its own module, data flows one way):

* projector.py: per-material line integrals (g/cm2);
* primary.py + detector.py: the absorbed energy of primary photons per pixel
  (spectrum, K-edge-split bins, air, inverse square and obliquity, CsI
  absorption, grid), and the flat field (no patient);
* scatter/: Monte Carlo scatter in the same units;
* noise.py: compound-Poisson quantum noise, light spread, electronic noise;
* display: ``final`` = -log of the flat-field-corrected noisy image, windowed.

Stages (every image is (rows, cols) float32): ``primary``, ``scatter`` and
``total`` are expected signals divided by the flat field (I/I0 units; scatter
is the scatter signal over the open-field primary signal); ``noisy`` is one
noisy detector image divided by the flat field; ``final`` is in [0, 1];
``spr`` = scatter / primary and ``scatter_relative_error`` come with scatter;
``line_integral_<material>`` in g/cm2.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .detector import AntiScatterGrid, Detector, pixel_geometry
from .errors import InputError, as_number, describe
from .geometry import CArm, DetectorGeometry, rays_cross_box
from .landmarks import ProjectedLandmark, project_landmarks
from .materials import DEFAULT_DENSITY_MODEL, DEFAULT_METHOD, THRESHOLD_MATERIALS, MaterialVolume, decompose
from .memory import MemoryContext, MemoryItem, estimate_memory, register_memory_term, warn_if_large
from .noise import EXPOSURE_PRESETS, add_noise, final_image, validate_mas
from .primary import PrimaryModel
from .projector import ALGORITHMS, DEFAULT_ALGORITHM, DEVICES, check_device, numba_status, project
from .spectrum import tabulated_kvp_range, tube_spectrum
from .truncation import truncation_mask
from .volume import Volume, implausible_hu_message

MODES = ("polychromatic", "line-integral")
# DeepDRR's default spectrum: 90 kV with 4.0 mm Al in total (0.7 mm inherent + 3.3 mm added).
DEFAULT_KVP = 90.0
DEFAULT_FILTRATION = {"Al": 3.3}
#: The stages a user chooses from (``--stages``); line integrals are always computed.
STAGES = ("primary", "scatter", "total", "noisy", "final")
DEFAULT_STAGES = STAGES
# Monte Carlo photons per image unless set: 2e5 gives ~3 % (1 sigma) per smoothed scatter pixel on the
# bundled CT. DEEPDRR_SCATTER_PHOTONS overrides the default everywhere (CLI, API, Slicer), e.g. for CI.
DEFAULT_SCATTER_PHOTONS = int(os.environ.get("DEEPDRR_SCATTER_PHOTONS", "200000"))
DEFAULT_SCATTER_SMOOTHING_MM = 15.0


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
    stages: tuple = DEFAULT_STAGES
    mas: float = EXPOSURE_PRESETS["fluoroscopy"]         # per image
    seed: int = 0
    detector_thickness_mm: float = 0.6                   # CsI:Tl
    electronic_noise_keV: float = Detector.electronic_noise_keV   # per native 0.194 mm pixel
    detector_blur_mm: float | None = None                # light spread sigma; None: 0.2 x thickness
    grid: bool = False
    grid_ratio: float = AntiScatterGrid.ratio
    grid_lines_per_cm: float = AntiScatterGrid.strips_per_cm
    scatter_photons: int = DEFAULT_SCATTER_PHOTONS
    scatter_smoothing_mm: float = DEFAULT_SCATTER_SMOOTHING_MM
    air: bool = True

    def detector(self) -> Detector:
        return Detector(scintillator_mm=float(self.detector_thickness_mm), light_spread_sigma_mm=self.detector_blur_mm,
                        electronic_noise_keV=float(self.electronic_noise_keV))

    def anti_scatter_grid(self) -> AntiScatterGrid | None:
        if not self.grid:
            return None
        return AntiScatterGrid(ratio=float(self.grid_ratio), strips_per_cm=float(self.grid_lines_per_cm))

    def scatter_settings(self):
        from .scatter import ScatterSettings

        return ScatterSettings(photons=int(self.scatter_photons), seed=int(self.seed),
                               smoothing_mm=float(self.scatter_smoothing_mm))

    def wants_scatter(self) -> bool:
        return self.mode == "polychromatic" and bool({"scatter", "total"} & set(self.stages))

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
        if isinstance(self.stages, str):
            self.stages = tuple(s.strip() for s in self.stages.split(",") if s.strip())
        self.stages = tuple(self.stages)
        unknown = [name for name in self.stages if name not in STAGES]
        if unknown or not self.stages:
            raise InputError(f"Unknown or no stages: {', '.join(unknown) or '(none)'}.",
                             f"Choose stages among {', '.join(STAGES)} (e.g. --stages primary,final).")
        validate_mas(self.mas)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2 ** 63:
            raise InputError(f"Seed {self.seed!r} is not a non-negative integer.", "Give --seed 0, 1, 2, ...")
        self.detector().validate()
        grid = self.anti_scatter_grid()
        if grid is not None:
            grid.validate()
        if self.wants_scatter():
            self.scatter_settings().validate()


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
    metrics: dict = field(default_factory=dict)      # SPR, photons per pixel, detector dose, scatter run
    masks: dict = field(default_factory=dict)   # mask name -> (H, W) float32 0/1, e.g. "truncation"

    def summary(self) -> dict:
        return {
            "metrics": self.metrics,
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

    #: Scatter runs kept per pose (the live view re-renders the same pose often).
    scatter_cache_size = 4

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
        # every result repeats these (a GUI shows the result, not the console where Python warns)
        self.warnings: list = [message] if (message := implausible_hu_message(volume.value_range)) else []
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
        self.spectrum = None
        self.spectrum_summary = None
        self.detector = self.settings.detector()
        self.grid = self.settings.anti_scatter_grid()
        self._scatter_transport = None
        self._scatter_cache: dict = {}
        self._last_scatter = None    # (geometry, scatter / flat) of the last full render, for previews
        if self.settings.mode == "polychromatic":
            start = time.perf_counter()
            spectrum = _spectrum(self.settings)
            _check_beam_gets_through(spectrum, self.settings)
            self.spectrum = spectrum
            self.primary_model = PrimaryModel.for_spectrum(spectrum, self.materials.names, detector=self.detector)
            self.timings["spectrum"] = time.perf_counter() - start
            self.spectrum_summary = {"kvp": spectrum.kvp, "added_filtration_mm": dict(spectrum.filtration),
                                     "mean_energy_keV": round(spectrum.mean_energy_keV, 3),
                                     "fluence_photons_per_mAs_mm2_at_1m": spectrum.total_fluence,
                                     **self.primary_model.summary()}

    def memory_context(self, detector_shape, *, materials_ready: bool = True, writing: bool = False,
                       landmarks: bool = False) -> MemoryContext:
        """What :func:`memory.estimate_memory` needs to size a render of ``detector_shape`` (rows, columns)."""
        return render_memory_context(self.volume, self.settings, detector_shape,
                                     materials=getattr(self, "materials", None),
                                     primary_model=getattr(self, "primary_model", None),
                                     materials_ready=materials_ready, writing=writing, landmarks=landmarks)

    def render(self, geometry: DetectorGeometry, landmarks=None, progress=None, preview: bool = False,
               scatter_progress=None) -> SimulationResult:
        """Project one pose. ``progress(fraction)`` may raise SimulationCancelled to stop; so may
        ``scatter_progress(fraction)``, called during the scatter Monte Carlo.

        ``geometry`` is a DetectorGeometry (or a CArm, whose geometry() is used). ``preview``: a quick
        image for live dragging; scatter is not simulated but taken from the last full render (resampled
        to this detector grid) and the result says so in its notes.
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
        settings = self.settings
        # Line integrals only: the spectral sums need per-pixel air and several moments (primary.py).
        projection = project(self.materials, geometry,
                             device=settings.device, algorithm=settings.algorithm, progress=progress)
        timings["projector"] = projection.seconds
        warnings = list(projection.warnings)
        notes = list(projection.notes)
        if not np.any(projection.line_integrals):
            if rays_cross_box(geometry, self.materials.ijk_to_ras, self.materials.density.shape):
                warnings.append("the rays cross only air (no material denser than 0 g/cm3 on their path): the "
                                "image is blank. Check that the CT holds the patient and its values are HU.")
            else:
                warnings.append("no ray crosses the CT: the image is blank. Check the isocentre and angles "
                                "(the isocentre should lie inside the patient).")
        stages = {}
        metrics = {}
        if self.primary_model is not None:
            stages, metrics = self._detector_stages(geometry, projection.line_integrals, timings, notes, preview,
                                                    scatter_progress)
        else:
            stages["line_integral"] = projection.total_line_integral
        for name, image in zip(projection.material_names, projection.line_integrals):
            stages[f"line_integral_{name}"] = image
        start = time.perf_counter()
        truncated = truncation_mask(self.materials, geometry)
        timings["truncation"] = time.perf_counter() - start
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
                                notes=list(self.notes) + notes, settings=self.settings,
                                warnings=list(self.warnings) + warnings,
                                spectrum_summary=self.spectrum_summary, metrics=metrics,
                                masks={"truncation": truncated})

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

    # ------------------------------------------------------------------ stages after the projector
    def _spectral_sums(self, geometry, line_integrals):
        """Pixel geometry and the spectral sums (signal, second moment, photons) of the patient and of the
        flat field, per mAs per mm2 at 1 m, with the air each ray crosses outside the CT."""
        model = self.primary_model
        pixels = pixel_geometry(geometry, self.materials.ijk_to_ras, self.materials.density.shape)
        air = pixels.air_outside_box_g_cm2() if self.settings.air else np.zeros(geometry.shape)
        air_flat = pixels.air_flat_g_cm2() if self.settings.air else np.zeros(geometry.shape)
        weights = model.signal_weights()
        sums = model.spectral_sums(line_integrals, air, weights)
        flat = model.flat_field_sums(air_flat, weights)
        return pixels, sums, flat

    def primary_image(self, geometry: DetectorGeometry, line_integrals) -> np.ndarray:
        """The flat-field-corrected primary (I/I0, float32 (H, W)) of one pose's line integrals (M, H, W),
        exactly as ``render`` computes it (detector absorption, K-edge bins, air outside the CT)."""
        if self.primary_model is None:
            raise InputError("primary_image needs the polychromatic mode.", "Use SimulationSettings(mode='polychromatic').")
        _, sums, flat = self._spectral_sums(geometry, np.asarray(line_integrals, dtype=np.float32))
        return (sums[0] / flat[0]).astype(np.float32)

    def _detector_stages(self, geometry, line_integrals, timings, notes, preview, scatter_progress):
        settings = self.settings
        start = time.perf_counter()
        pixels, sums, flat = self._spectral_sums(geometry, line_integrals)   # per mAs per mm2 at 1 m
        grid_primary = self.grid.open_fraction if self.grid is not None else 1.0
        factor = pixels.fluence_factor * grid_primary                               # mm2 x geometry x grid
        primary_keV = sums[0] * factor                                              # keV per mAs per pixel
        flat_keV = flat[0] * factor
        primary = (sums[0] / flat[0]).astype(np.float32)
        timings["primary"] = time.perf_counter() - start
        wanted = set(settings.stages)
        stages = {"primary": primary}
        metrics = {"mas": settings.mas, "seed": settings.seed, "detector": self.detector.summary(),
                   "grid": self.grid.summary() if self.grid is not None else None, "air": settings.air}
        body = primary < 0.95
        scatter_keV = np.zeros(geometry.shape)
        scatter_second = np.zeros(geometry.shape)
        scatter_available, why_not = numba_status()
        if settings.wants_scatter() and not scatter_available:
            notes.append("scatter not simulated: the Monte Carlo needs numba (" + why_not.split(";")[0]
                         + "); install the accelerators")
        if settings.wants_scatter() and scatter_available:
            start = time.perf_counter()
            scatter_norm, scatter_keV, scatter_second, rel, scatter_summary = self._scatter(
                geometry, flat_keV, primary_keV, preview, notes, scatter_progress)
            timings["scatter"] = time.perf_counter() - start
            stages["scatter"] = scatter_norm.astype(np.float32)
            stages["total"] = (primary + scatter_norm).astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                spr = np.where(primary > 0, scatter_norm / np.where(primary > 0, primary, 1.0), 0.0)
            stages["spr"] = spr.astype(np.float32)
            if rel is not None:
                stages["scatter_relative_error"] = rel.astype(np.float32)
            rows, cols = geometry.shape
            centre = (slice(max(0, rows // 2 - 2), rows // 2 + 2), slice(max(0, cols // 2 - 2), cols // 2 + 2))
            metrics["spr_center"] = float(np.mean(scatter_norm[centre]) / max(np.mean(primary[centre]), 1e-30))
            metrics["spr_mean_in_body"] = float(np.mean(spr[body])) if np.any(body) else None
            metrics["scatter"] = scatter_summary
        elif scatter_available:
            notes.append("scatter not simulated (ask for the scatter or total stage)")
        total_keV = primary_keV + scatter_keV
        mas = float(settings.mas)
        photons_open = mas * flat[2] * factor
        photons = mas * (sums[2] * factor)
        rows, cols = geometry.shape
        metrics["photons_per_pixel_open_field_center"] = float(photons_open[rows // 2, cols // 2])
        metrics["photons_per_pixel_median_in_body"] = float(np.median(photons[body])) if np.any(body) else None
        metrics["detector_air_kerma_open_field_uGy"] = (
            mas * self.spectrum.air_kerma_uGy_per_mAs(geometry.source_to_detector_mm) * grid_primary)
        if {"noisy", "final"} & wanted:
            start = time.perf_counter()
            second = mas * (sums[1] * factor + scatter_second)
            noisy_keV = add_noise(mas * total_keV, second, seed=int(settings.seed),
                                  blur_sigma_mm=self.detector.blur_sigma_mm, pixel_spacing_mm=geometry.pixel_spacing,
                                  electronic_sigma_keV=self.detector.electronic_sigma_keV(pixels.pixel_area_mm2))
            noisy = (noisy_keV / (mas * flat_keV)).astype(np.float32)
            stages["noisy"] = noisy
            final, window = final_image(noisy, reference=primary)
            stages["final"] = final
            metrics["final_window"] = window
            metrics["noise_signal"] = "primary + scatter" if "scatter" in stages else "primary only"
            timings["noise"] = time.perf_counter() - start
        keep = [name for name in ("primary", "scatter", "total", "noisy", "final") if name in wanted]
        keep = [name for name in keep if name in stages]
        extras = [name for name in ("spr", "scatter_relative_error") if name in stages]
        return {name: stages[name] for name in keep + extras}, metrics

    def scatter_ready(self, geometry: DetectorGeometry) -> bool:
        """Whether the scatter of this pose is cached (a render of it will not run the Monte Carlo)."""
        return _geometry_key(geometry) in self._scatter_cache

    def prepare_scatter(self, geometry: DetectorGeometry, progress=None):
        """Run (or take from the cache) the scatter Monte Carlo of one pose; safe to call from a worker
        thread (the kernel releases the GIL), e.g. to refresh a live view after the C-arm stops."""
        from .scatter import ScatterTransport

        key = _geometry_key(geometry)
        cached = self._scatter_cache.get(key)
        if cached is None:
            if self._scatter_transport is None:
                self._scatter_transport = ScatterTransport(self.materials, self.primary_model, self.detector, self.grid)
            # the Monte Carlo runs where the projector may: device auto takes the GPU when one works
            cached = self._scatter_transport.run(geometry, self.settings.scatter_settings(), progress=progress,
                                                 device=self.settings.device)
            self._scatter_cache[key] = cached
            while len(self._scatter_cache) > self.scatter_cache_size:
                self._scatter_cache.pop(next(iter(self._scatter_cache)))
        return cached

    def _scatter(self, geometry, flat_keV, primary_keV, preview, notes, progress):
        cached = self._scatter_cache.get(_geometry_key(geometry))
        if cached is None and preview and self._last_scatter is not None:
            _, ratio = self._last_scatter
            resampled = _resample(ratio, geometry.shape)
            notes.append("preview: scatter taken from the last full render")
            scatter_norm = resampled
            scatter_keV = resampled * flat_keV
            return scatter_norm, scatter_keV, np.zeros(geometry.shape), None, {"source": "previous render (preview)"}
        if cached is None:
            cached = self.prepare_scatter(geometry, progress=progress)
        result = cached
        notes.extend(note for note in result.notes if note not in notes)
        scatter_norm = result.scatter / flat_keV
        self._last_scatter = (geometry, scatter_norm)
        summary = result.summary()
        summary["relative_error_center"] = float(result.relative_error[geometry.height // 2, geometry.width // 2])
        summary["relative_error_median"] = float(np.median(result.relative_error))
        # Built-in self-check: the MC primary against the analytic primary, over the tally grid.
        block = result.tally_block
        analytic = _bin_mean(primary_keV, block)
        total_mc, total_analytic = float(result.mc_primary.sum()), float(analytic.sum())
        if total_mc > 0 and total_analytic > 0:
            ratio = total_mc / total_analytic
            sigma = float(np.sqrt(result.mc_primary_variance.sum())) / total_mc
            summary["mc_primary_over_analytic"] = round(ratio, 5)
            summary["mc_primary_over_analytic_sigma"] = round(sigma, 5)
            if abs(ratio - 1.0) > max(0.01, 4.0 * sigma):
                notes.append(f"scatter self-check: the Monte Carlo primary is {ratio:.3f} x the analytic primary "
                             f"(statistical sigma {sigma:.3f})")
        return scatter_norm, result.scatter, result.scatter_second_moment, result.relative_error, summary


def _geometry_key(geometry: DetectorGeometry) -> bytes:
    parts = [geometry.source, geometry.detector_origin, geometry.u, geometry.v,
             np.array([geometry.width, geometry.height], dtype=np.float64)]
    return b"".join(np.round(np.asarray(p, dtype=np.float64), 9).tobytes() for p in parts)


def _bin_mean(image: np.ndarray, block: int) -> np.ndarray:
    if block == 1:
        return image
    rows, cols = image.shape
    sums = np.add.reduceat(np.add.reduceat(image, np.arange(0, rows, block), axis=0), np.arange(0, cols, block), axis=1)
    counts = np.add.reduceat(np.add.reduceat(np.ones_like(image), np.arange(0, rows, block), axis=0),
                             np.arange(0, cols, block), axis=1)
    return sums / counts


def _resample(image: np.ndarray, shape: tuple) -> np.ndarray:
    """Bilinear resampling between detector grids that cover the same area."""
    rows_in, cols_in = image.shape
    rows, cols = shape
    r = (np.arange(rows) + 0.5) * rows_in / rows - 0.5
    c = (np.arange(cols) + 0.5) * cols_in / cols - 0.5
    along = np.stack([np.interp(c, np.arange(cols_in), line) for line in image])
    return np.stack([np.interp(r, np.arange(rows_in), along[:, j]) for j in range(cols)], axis=1)



def simulate(volume: Volume, geometry: DetectorGeometry, settings: SimulationSettings | None = None,
             landmarks=None, progress=None) -> SimulationResult:
    """One-shot: decompose ``volume`` and render ``geometry``."""
    return Simulator(volume, settings).render(geometry, landmarks=landmarks, progress=progress)


def _detector_stage_memory(c: MemoryContext) -> list:
    """Memory of the stages after the projector, per detector pixel, when the context lists the stages
    (``render_memory_context`` does): spectral sums and flat field (float64, three moments each), pixel
    geometry, air paths and keV images are held; with scatter or noise their full-resolution images too;
    noise and pixel-geometry temporaries are transient. Measured: 293 bytes per pixel in all, every
    stage, 2048^2 (Testing/Python/test_memory.py)."""
    stages = set(c.stage_names)
    if c.mode != "polychromatic" or "primary" not in stages:
        return []
    p = c.pixels
    items = [MemoryItem("spectral sums, flat field, pixel geometry (float64)", 112 * p, step="detector")]
    if stages & {"scatter", "total", "noisy", "final"}:
        items.append(MemoryItem("scatter, noise and final images", 64 * p, step="detector"))
        items.append(MemoryItem("noise and pixel geometry working memory (temporary)", 130 * p, held=False,
                                step="detector"))
    else:
        items.append(MemoryItem("pixel geometry working memory (temporary)", 60 * p, held=False, step="detector"))
    return items


register_memory_term(_detector_stage_memory)


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
        stage_names=_stage_names(settings, n_materials), writing=writing, landmarks=landmarks,
        extra={"network": materials is None and settings.materials == "network"})


def _stage_names(settings: SimulationSettings, n_materials: int) -> tuple:
    materials = tuple(f"line_integral_{m}" for m in range(n_materials))
    if settings.mode != "polychromatic":
        return ("line_integral",) + materials
    stages = tuple(settings.stages) if not isinstance(settings.stages, str) else tuple(settings.stages.split(","))
    extras = ("spr", "scatter_relative_error") if {"scatter", "total"} & set(stages) else ()
    return ("primary",) + tuple(s for s in stages if s != "primary") + extras + materials


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


def check_spectrum(settings: SimulationSettings) -> None:
    """Raise InputError now if ``settings``' tube spectrum cannot be built or its filtration stops the beam."""
    _check_beam_gets_through(_spectrum(settings), settings)


def _check_beam_gets_through(spectrum, settings: SimulationSettings) -> None:
    """Refuse a filtration that leaves (next to) no photons: the noisy and final images would be noise
    divided by ~0 (values of 1e21), and the primary a ratio of vanishing numbers."""
    if not settings.filtration:
        return
    unfiltered = tube_spectrum(settings.kvp, {}).total_fluence
    if not spectrum.total_fluence > 1e-6 * unfiltered:
        filters = ", ".join(f"{mm:g} mm {material}" for material, mm in dict(settings.filtration).items())
        raise InputError(f"The added filtration ({filters}) lets {spectrum.total_fluence:.3g} photons/mAs/mm2 at 1 m "
                         f"through at {settings.kvp:g} kVp, {spectrum.total_fluence / unfiltered:.1e} of the beam "
                         "without it: no usable image.",
                         "Use a realistic filtration, e.g. --filtration Al=2.5 or Al=2.5,Cu=0.1 (C-arms add up to "
                         "about 1 mm Cu).")


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


__all__ = ["MODES", "STAGES", "DEFAULT_STAGES", "SimulationSettings", "SimulationResult", "Simulator", "simulate", "ProjectedLandmark"]
