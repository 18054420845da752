"""Command line: ``deepdrr-slicer simulate ...`` (see README, section "CLI")."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError, SimulationCancelled
from .detector import AntiScatterGrid, Detector
from .geometry import DEFAULT_DETECTOR, DETECTOR_PRESETS, CArm, DetectorGeometry, detector_preset
from .noise import EXPOSURE_PRESETS
from .pipeline import DEFAULT_SCATTER_PHOTONS, DEFAULT_SCATTER_SMOOTHING_MM, STAGES
from .projector import ALGORITHMS, DEFAULT_ALGORITHM

EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepdrr-slicer",
        description="Simulate fluoroscopy (DRRs) from CT, after DeepDRR (Unberath et al., MICCAI 2018).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser(
        "simulate", help="render one X-ray image from a CT",
        description="Render one polychromatic X-ray (or a density line integral) of a CT. "
                    "Without --ct, the bundled pelvis CT and its landmarks are used.")
    sim.add_argument("--ct", type=Path, help="CT: NIfTI, NRRD, MetaImage file or DICOM folder, searched "
                                             "recursively (default: bundled pelvis CT)")
    sim.add_argument("--series", metavar="N|UID",
                     help="with a DICOM folder holding several series: the one to use, by its number in the "
                          "listing or its SeriesInstanceUID (or the UID's last digits)")
    sim.add_argument("--landmarks", type=Path, help="landmarks: Slicer .mrk.json / .fcsv, or CSV with label,R,A,S")
    pose = sim.add_argument_group("pose (either --geometry or C-arm parameters)")
    pose.add_argument("--geometry", type=Path, help="geometry JSON (source, detector_origin, u, v, width, height)")
    pose.add_argument("--alpha", type=float, help="orbital angle in degrees, LAO positive (default 0)")
    pose.add_argument("--beta", type=float, help="angulation in degrees, cranial positive (default 0)")
    pose.add_argument("--detector", choices=list(DETECTOR_PRESETS),
                      help=f"detector preset: its panel size and typical SID/SOD (default {DEFAULT_DETECTOR}; "
                           "see the README)")
    pose.add_argument("--sid", type=float, help="source-to-detector distance in mm (default: the preset's)")
    pose.add_argument("--sod", type=float, help="source-to-isocentre distance in mm (default: the preset's)")
    pose.add_argument("--isocenter", type=float, nargs=3, metavar=("R", "A", "S"),
                      help="isocentre in RAS mm (default: centroid of the landmarks if given, else centre of the CT)")
    pose.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                      help="detector pixels (default: the preset's panel at 512 pixels along its longer side; "
                           "ignored with --geometry)")
    pose.add_argument("--pixel-spacing", type=float, metavar="MM",
                      help="detector pixel spacing in mm (default: the largest that fits W x H pixels on the panel)")
    physics = sim.add_argument_group("physics")
    physics.add_argument("--kvp", type=float, default=90.0, help="tube voltage, 40-150 kV (default 90)")
    physics.add_argument("--filtration", default="Al=3.3",
                         help="added filtration, e.g. Al=2.5,Cu=0.1 or 'none' (default Al=3.3, i.e. 4.0 mm Al "
                              "in total with the tube's inherent 0.7 mm)")
    physics.add_argument("--materials", choices=["network", "threshold"], default="network",
                         help="air / soft tissue / bone: the segmentation network (default; needs PyTorch, "
                              "pip install '.[network]'; without it thresholds are used and a note says so) "
                              "or DeepDRR's HU thresholds")
    physics.add_argument("--density-model", choices=["calibrated", "deepdrr"], default="calibrated",
                         help="HU -> density and composition: calibrated (default; water 1.00 g/cm3, composition "
                              "varying with HU after Schneider et al. 2000) or DeepDRR's fits")
    physics.add_argument("--metal", choices=["titanium", "steel", "cocr", "none"], default="titanium",
                         help="material of implants (>= 2500 HU, connected): Ti-6Al-4V (default), 316L steel, "
                              "CoCrMo, or none (keep them bone)")
    physics.add_argument("--materials-cache", type=Path, metavar="DIR",
                         help="cache the network's output per CT in DIR (reused by later runs on the same CT)")
    physics.add_argument("--mode", choices=["polychromatic", "line-integral"], default="polychromatic",
                         help="polychromatic primary image, or the density line integral only")
    physics.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                         help="auto: the GPU (CUDA through CuPy or pycuda) when one works, else the CPU, saying "
                              "why (summary.json names the backend); cuda: the GPU or an error naming what is "
                              "missing; cpu: never the GPU")
    physics.add_argument("--algorithm", choices=list(ALGORITHMS), default=DEFAULT_ALGORITHM,
                         help="ray casting: joseph (default: smooth trilinear model, one sample per voxel slice), "
                              "siddon (exact paths through blocky voxels) or trilinear (fixed-step march)")
    stages = sim.add_argument_group("stages, exposure and detector")
    stages.add_argument("--stages", default=None,
                        help=f"comma-separated stages to compute and write, among {', '.join(STAGES)} "
                             "(default: all; scatter or total runs the Monte Carlo; line integrals are always written)")
    stages.add_argument("--seed", type=int, default=0, help="seed of the scatter Monte Carlo and the noise (default 0)")
    exposure = stages.add_mutually_exclusive_group()
    exposure.add_argument("--mas", type=float,
                          help=f"tube current-time product per image in mAs (default {EXPOSURE_PRESETS['fluoroscopy']:g}, "
                               "a fluoroscopy frame)")
    exposure.add_argument("--exposure", choices=sorted(EXPOSURE_PRESETS),
                          help="preset mAs: " + ", ".join(f"{k} {v:g}" for k, v in EXPOSURE_PRESETS.items()))
    stages.add_argument("--detector-thickness", type=float, default=0.6, metavar="MM",
                        help="CsI:Tl scintillator thickness in mm (default 0.6)")
    stages.add_argument("--electronic-noise", type=float, default=Detector.electronic_noise_keV, metavar="KEV",
                        help="electronic noise sigma per native 0.194 mm pixel, keV of absorbed energy "
                             f"(default {Detector.electronic_noise_keV:g}; 0 = off)")
    stages.add_argument("--detector-blur", type=float, metavar="MM",
                        help="light-spread sigma in mm (default 0.2 x thickness; 0 = off)")
    stages.add_argument("--grid", action="store_true", help="fit a focused anti-scatter grid (off by default)")
    stages.add_argument("--grid-ratio", type=float, default=AntiScatterGrid.ratio, help="grid ratio (default 10)")
    stages.add_argument("--grid-lines", type=float, default=AntiScatterGrid.strips_per_cm,
                        help="grid strip density in lines/cm (default 60)")
    stages.add_argument("--scatter-photons", type=int, default=DEFAULT_SCATTER_PHOTONS,
                        help=f"Monte Carlo photons (default {DEFAULT_SCATTER_PHOTONS:g})")
    stages.add_argument("--scatter-smoothing", type=float, default=DEFAULT_SCATTER_SMOOTHING_MM, metavar="MM",
                        help=f"Gaussian sigma for denoising the scatter, mm at the detector "
                             f"(default {DEFAULT_SCATTER_SMOOTHING_MM:g})")
    stages.add_argument("--no-air", action="store_true", help="ignore the air between source and detector")
    sim.add_argument("--out", required=True,
                     help="output folder, created if needed; replaced as a whole when the run completes")
    sim.add_argument("--overwrite", action="store_true",
                     help="write into a non-empty folder that does not hold a previous result (its other files "
                          "are kept; files with a result's name are replaced)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar and no notes (warnings still print)")
    from .dataset.cli import add_generate_parser

    add_generate_parser(commands)
    return parser


def parse_filtration(text: str) -> dict:
    if text.strip().lower() in ("", "none", "0"):
        return {}
    filtration = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            thickness = float(value)
        except ValueError:
            thickness = None
        if not sep or not name.strip() or thickness is None:
            raise InputError(f"Cannot read filtration item {item!r}.",
                             "Write --filtration as MATERIAL=MM pairs, e.g. Al=2.5,Cu=0.1.")
        earlier = next((key for key in filtration if key.lower() == name.strip().lower()), None)
        if earlier is not None:
            raise InputError(f"--filtration names {name.strip()} twice ({earlier}={filtration[earlier]:g} and "
                             f"{name.strip()}={thickness:g}); it is not clear which thickness is meant.",
                             "Give each filter once with its total thickness, e.g. --filtration Al=3.")
        filtration[name.strip()] = thickness
    return filtration


def package_version() -> str:
    from importlib import metadata

    from . import __version__

    try:
        return metadata.version("DeepDRRSlicerLib")
    except metadata.PackageNotFoundError:  # run from a source tree or inside Slicer
        return __version__


def _geometry(args, volume, landmarks) -> tuple[DetectorGeometry, dict | None]:
    """The detector geometry, and the C-arm parameters it came from (None for a geometry file)."""
    carm_options = [args.alpha, args.beta, args.sid, args.sod, args.isocenter, args.detector]
    if args.geometry is not None:
        if any(option is not None for option in carm_options):
            raise InputError("--geometry was given together with C-arm options "
                             "(--alpha/--beta/--sid/--sod/--isocenter/--detector).",
                             "Give either a geometry file or C-arm parameters, not both.")
        return DetectorGeometry.load(args.geometry), None
    preset = detector_preset(args.detector or DEFAULT_DETECTOR)
    width, height, spacing = preset.sampled(512)
    if args.size:
        width, height = args.size
        if width < 1 or height < 1:
            raise InputError(f"Detector size {width} x {height} pixels has zero size.",
                             "Give --size W H with both at least 1 (e.g. --size 512 512).")
        spacing = min(preset.width_mm / width, preset.height_mm / height)
    if args.pixel_spacing is not None:
        spacing = args.pixel_spacing
    if args.isocenter:
        isocenter, isocenter_from = tuple(args.isocenter), "--isocenter"
    elif landmarks:
        isocenter = tuple(np.mean([landmark.position_ras for landmark in landmarks], axis=0))
        isocenter_from = "the landmarks' centroid"
    else:
        isocenter, isocenter_from = tuple(volume.center_ras()), "the CT's centre"
    carm = CArm(alpha_deg=args.alpha or 0.0, beta_deg=args.beta or 0.0,
                sid_mm=args.sid if args.sid is not None else preset.sid_mm,
                sod_mm=args.sod if args.sod is not None else preset.sod_mm,
                isocenter_ras=isocenter, width=width, height=height, pixel_spacing_mm=spacing)
    record = {"detector": args.detector or DEFAULT_DETECTOR, "alpha_deg": carm.alpha_deg, "beta_deg": carm.beta_deg,
              "sid_mm": carm.sid_mm, "sod_mm": carm.sod_mm, "isocenter_ras": [float(x) for x in isocenter],
              "isocenter_from": isocenter_from, "width": width, "height": height,
              "pixel_spacing_mm": float(spacing)}
    return carm.geometry(), record


class _Progress:
    """A tqdm bar over the pipeline's steps, with the projector's rows filling one step."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", file=sys.stderr, leave=False, disable=None,
                            bar_format="{desc:<12} {bar} {n:.0f}% [{elapsed}]")

    def step(self, label: str, percent: float) -> None:
        if self.bar is not None:
            self.bar.set_description_str(label)
            self.bar.n = percent
            self.bar.refresh()

    def materials(self, fraction: float) -> None:
        self.step("materials", 10 + 20 * fraction)

    def projector(self, fraction: float) -> None:
        self.step("projecting", 30 + 20 * fraction)

    def scatter(self, fraction: float) -> None:
        self.step("scatter MC", 50 + 40 * fraction)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def simulate_command(args) -> int:
    from .landmarks import load_landmarks
    from .memory import MemoryWarning, check_memory, estimate_memory
    from .output import OutputFolder, write_result
    from .pipeline import SimulationSettings, Simulator, render_memory_context
    from .resources import sample_ct_path, sample_landmarks_path
    from .volume import load_volume

    start = time.perf_counter()
    say = _Messages(quiet=args.quiet)
    # Every input is read and checked before anything is written; the output folder is only checked here.
    target = OutputFolder(args.out, overwrite=args.overwrite)
    progress = _Progress(enabled=not args.quiet)
    try:
        ct_path = args.ct if args.ct is not None else sample_ct_path()
        landmarks_path = args.landmarks
        if args.ct is None and landmarks_path is None:
            landmarks_path = sample_landmarks_path()
        target.protect(ct_path, landmarks_path, args.geometry)
        progress.step("reading CT", 2)
        with say.warnings_printed():
            volume = load_volume(ct_path, series=args.series)
            landmarks = load_landmarks(landmarks_path) if landmarks_path is not None else None
            geometry, carm_record = _geometry(args, volume, landmarks)
        mas = args.mas if args.mas is not None else EXPOSURE_PRESETS[args.exposure or "fluoroscopy"]
        settings = SimulationSettings(kvp=args.kvp, filtration=parse_filtration(args.filtration), mode=args.mode,
                                      materials=args.materials, device=args.device, algorithm=args.algorithm,
                                      density_model=args.density_model, metal=args.metal,
                                      materials_cache=None if args.materials_cache is None else str(args.materials_cache),
                                      stages=_stages(args), mas=mas, seed=args.seed,
                                      detector_thickness_mm=args.detector_thickness,
                                      electronic_noise_keV=args.electronic_noise, detector_blur_mm=args.detector_blur,
                                      grid=args.grid, grid_ratio=args.grid_ratio, grid_lines_per_cm=args.grid_lines,
                                      scatter_photons=args.scatter_photons,
                                      scatter_smoothing_mm=args.scatter_smoothing, air=not args.no_air)
        settings.validate()
        progress.step("materials", 10)
        load_seconds = time.perf_counter() - start
        estimate = estimate_memory(render_memory_context(volume, settings, geometry.shape, writing=True,
                                                         landmarks=landmarks is not None))
        memory_warning = check_memory(estimate, f"Simulating {geometry.width} x {geometry.height} pixels")
        if memory_warning:
            say.warning(memory_warning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MemoryWarning)  # checked above for the whole run, writing included
            simulator = Simulator(volume, settings, progress=progress.materials)
            progress.step("projecting", 30)
            result = simulator.render(geometry, landmarks=landmarks, progress=progress.projector,
                                      scatter_progress=progress.scatter)
        result.timings = {"read_ct": load_seconds, **result.timings}
        progress.step("writing", 92)
        write_start = time.perf_counter()
        parameters = {"ct": str(ct_path), "series": args.series,
                      "landmarks": None if landmarks_path is None else str(landmarks_path),
                      "geometry_file": None if args.geometry is None else str(args.geometry),
                      "carm": carm_record,   # the pose as given (the geometry is in geometry.json)
                      "command": " ".join(["deepdrr-slicer", *sys.argv[1:]])}
        write_result(result, target, parameters)
        progress.step("done", 100)
    finally:
        progress.close()
    visible = "" if result.landmarks is None else (
        f", {sum(p.visible for p in result.landmarks)}/{len(result.landmarks)} landmarks visible")
    print(f"wrote {', '.join(result.stages)} to {target.path} ({result.backend}, "
          f"projector {result.timings['projector']:.2f} s, total {time.perf_counter() - start:.2f} s, "
          f"writing {time.perf_counter() - write_start:.2f} s{visible})")
    metrics = result.metrics
    if metrics.get("spr_center") is not None and "photons" in metrics.get("scatter", {}):
        print(f"scatter-to-primary ratio {metrics['spr_center']:.3f} at the centre, "
              f"{metrics['scatter']['photons']:.3g} photons in {metrics['scatter']['seconds']:.1f} s, "
              f"relative error {metrics['scatter']['relative_error_median']:.1%} (median)")
    if metrics.get("photons_per_pixel_median_in_body") is not None:
        print(f"{metrics['mas']:g} mAs: {metrics['photons_per_pixel_median_in_body']:.0f} absorbed photons per pixel "
              f"behind the patient (median), {metrics['photons_per_pixel_open_field_center']:.0f} in the open field")
    for note in [*result.notes, *target.notes]:
        say.note(note)
    for warning in result.warnings:
        say.warning(warning)
    return 0


def _stages(args) -> str:
    """--stages, refused in line-integral mode, which computes line integrals only."""
    if args.stages is not None and args.mode == "line-integral":
        raise InputError(f"--stages {args.stages} does not apply to --mode line-integral: it writes the line "
                         "integrals only (total and per material).",
                         "Drop --stages, or use --mode polychromatic for the primary, scatter and noise stages.")
    return args.stages if args.stages is not None else ",".join(STAGES)


class _Messages:
    """Notes (silenced by --quiet) and warnings (always shown) on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._warned: set[str] = set()

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"note: {text}", file=sys.stderr)

    def warning(self, text: str) -> None:
        # once each: a result repeats what reading the CT warned of, under another source name ("The CT: ...")
        said = text.partition(": ")[2] or text
        if said in self._warned:
            return
        self._warned.add(said)
        print(f"warning: {text}", file=sys.stderr)

    @contextmanager
    def warnings_printed(self):
        """Print, once each, the Python warnings raised while reading the inputs (also when reading fails)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for text in dict.fromkeys(str(warning.message) for warning in caught):
                    self.warning(text)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    restore = _terminate_as_interrupt()
    try:
        if args.command == "simulate":
            return simulate_command(args)
        if args.command == "generate":
            from .dataset.cli import generate_command

            return generate_command(args)
    except InputError as error:
        print(f"error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except MemoryError:
        print("error: the machine ran out of memory during the simulation (nothing was written).\n"
              "  fix: use fewer detector pixels (--size), crop or downsample the CT, or free memory.",
              file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (SimulationCancelled, KeyboardInterrupt):
        print("cancelled (nothing was written; a previous result in --out is unchanged)", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        restore()
    return 1


def _terminate_as_interrupt():
    """Make SIGTERM stop the run like Ctrl-C, so that partial output is cleaned up; returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
