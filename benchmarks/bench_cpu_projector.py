"""CPU projector benchmark: our engine vs plastimatch (exact Siddon) vs DiffDRR (trilinear).

All three render the same cone-beam geometry from the same chest CT:
AP C-arm (source posterior, detector anterior), isocentre at the CT centre,
SID 1020 mm, SOD 530 mm, a square detector of --detector-mm side (default
700 mm, which covers the whole chest: 364 mm at the isocentre) sampled at
96^2, 256^2, 512^2 and 1024^2 pixels. Ours: the default projector (Joseph),
Siddon and the trilinear march; at --layout-size also the soft-fraction voxel
layout and the benchmark-only candidates (candidate_projectors.py).

Run from the repository root (see benchmarks/README.md for the one-off setup):

    .venv/bin/python benchmarks/bench_cpu_projector.py

Ours runs in-process (one untimed run to compile and warm the caches, then the
median of --repeats runs). plastimatch runs as a subprocess (one untimed run,
then the median of --plastimatch-repeats); its own reported "Total time" (ray
casting + writing the image; not reading the CT) is used for the ratio, the
subprocess wall time is printed too. Ours and plastimatch are timed in
interleaved rounds so that drifts of a shared machine hit both alike.
DiffDRR runs in the peers' venv through benchmarks/_diffdrr_worker.py.

Images are compared with Pearson r on the total line integral. plastimatch's
mu map is 0.022/mm x (1 + HU/1000) with HU <= -800 set to 0 (lung counts as
nothing); ours is DeepDRR's density fit (lung ~0.15 g/cm3), so r is also
printed for our projector run on plastimatch's own mu map: that number checks
the geometry alone.

Writes benchmarks/results/bench_cpu_projector.json and a side-by-side PNG
(ours | plastimatch | DiffDRR) at the first size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
DEFAULT_CT = BENCH_DIR / ".cache" / "diffdrr" / "data" / "cxr.nii.gz"
DEFAULT_WORK = BENCH_DIR / ".cache" / "bench_cpu_projector"
DEFAULT_RESULTS = BENCH_DIR / "results"
PEERS_VENV = BENCH_DIR / ".venv-peers"

SID_MM = 1020.0
SOD_MM = 530.0
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class ForeignCpu:
    """CPU seconds used by other processes (all of the machine's busy time minus ours) over a span.

    Linux only (/proc/stat); elsewhere it reports None. A quiet machine shows ~0.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        fields = fields[:8]  # user nice system idle iowait irq softirq steal (guest is inside user)
        busy = sum(fields) - fields[3] - fields[4]
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system

    def seconds(self) -> float | None:
        end = self._sample()
        if end is None or self.start is None:
            return None
        return round(max(0.0, (end[0] - self.start[0]) - (end[1] - self.start[1])), 2)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- ours
class OursRun:
    """One configuration of our projector: an untimed warm-up run, then timed runs on demand.

    Each run records its wall time and this process's CPU time (both threads): the CPU time
    is the work done, which other processes on a shared machine disturb far less than wall time.
    """

    def __init__(self, call):
        self._call = call
        self.result = call()  # numba compile / cache load and warm caches, untimed
        self.times: list[float] = []
        self.cpu: list[float] = []

    def once(self) -> None:
        cpu, start = time.process_time(), time.perf_counter()
        self.result = self._call()
        self.times.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu)

    def summary(self) -> dict:
        return {"seconds": statistics.median(self.times), "all_seconds": self.times,
                "cpu_seconds": statistics.median(self.cpu), "all_cpu_seconds": self.cpu}


# --------------------------------------------------------------------------- plastimatch
def plastimatch_arguments(geometry, isocenter_ras) -> tuple[list[str], bool]:
    """Command-line geometry of ``plastimatch drr`` for one of our detectors, and whether to mirror columns.

    plastimatch (proj_matrix.cxx, drr.cxx): the source sits at
    isocentre + SAD * nrm, so ``--nrm`` is the unit vector from the isocentre
    to the source; ``--vup`` points from the panel centre to its top row;
    columns run along prt = -(nrm x vup), rows along -vup; the panel centre is
    at source - SID * nrm with pixel (rows-1)/2, (cols-1)/2 on the central ray.
    Everything is in DICOM LPS mm. Its (column, row) frame satisfies
    prt x pdn = -nrm, ours u x v = +normal(toward source): the two are mirror
    images, so no choice of nrm/vup reproduces our image; the columns of its
    output must be reversed (returned flag), rows match with vup = -v.
    """
    source = np.asarray(geometry.source, dtype=np.float64)
    iso = np.asarray(isocenter_ras, dtype=np.float64)
    sad = float(np.linalg.norm(source - iso))
    nrm_ras = (source - iso) / sad
    if np.linalg.norm(np.cross(nrm_ras, geometry.normal)) > 1e-9:
        raise ValueError("the isocentre is not on the detector's central axis")
    centre = geometry.detector_center
    off_axis = (centre - source) - np.dot(centre - source, -nrm_ras) * (-nrm_ras)
    if np.linalg.norm(off_axis) > 1e-6:
        raise ValueError("the central ray does not hit the detector centre")
    sid = geometry.source_to_detector_mm
    du, dv = geometry.pixel_spacing
    u_hat, v_hat = geometry.u / du, geometry.v / dv
    vup_ras = -v_hat
    prt_ras = -np.cross(nrm_ras, vup_ras)
    if np.allclose(prt_ras, u_hat, atol=1e-9):
        flip_columns = False
    elif np.allclose(prt_ras, -u_hat, atol=1e-9):
        flip_columns = True
    else:
        raise ValueError("detector u/v are not perpendicular to the central ray")

    def lps(vector):
        return " ".join(f"{x + 0.0:.10g}" for x in np.asarray(vector) * RAS_TO_LPS)

    args = [
        "-i", "exact",
        "--sad", f"{sad:.10g}",
        "--sid", f"{sid:.10g}",
        "-r", f"{geometry.height} {geometry.width}",
        "-z", f"{geometry.height * dv:.10g} {geometry.width * du:.10g}",
        "-n", lps(nrm_ras),
        "--vup", lps(vup_ras),
        "-o", lps(iso),
        "-t", "raw",
    ]
    return args, flip_columns


def write_lps_volume(ct_path: Path, work: Path) -> Path:
    """The CT re-oriented to LPS (identity direction), which plastimatch needs; cached."""
    import SimpleITK as sitk

    target = work / "ct_lps.mha"
    stamp = work / "ct_lps.source"
    key = f"{ct_path.resolve()} {ct_path.stat().st_size} {ct_path.stat().st_mtime_ns}"
    if target.is_file() and stamp.is_file() and stamp.read_text() == key:
        return target
    image = sitk.DICOMOrient(sitk.ReadImage(str(ct_path)), "LPS")
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkInt16):
        image = sitk.Cast(image, sitk.sitkFloat32)
    work.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(target))
    stamp.write_text(key)
    return target


TOTAL_TIME = re.compile(r"Total time:\s*([0-9.eE+-]+)")


class PlastimatchRun:
    """``plastimatch drr`` for one geometry: an untimed run (file cache), then timed runs on demand."""

    def __init__(self, executable: str, volume: Path, geometry, isocenter_ras, work: Path):
        self.args, self.flip = plastimatch_arguments(geometry, isocenter_ras)
        self.geometry = geometry
        self.prefix = work / f"plastimatch_{geometry.height}x{geometry.width}_"
        self.command = [executable, "drr", *self.args, "-O", str(self.prefix), str(volume)]
        self.reported: list[float] = []
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.last_cpu = 0.0
        self._run()

    def _run(self) -> tuple[float, float]:
        start = time.perf_counter()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(self.command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"plastimatch failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        match = TOTAL_TIME.search(done.stdout)
        if match is None:
            raise RuntimeError(f"no 'Total time' in plastimatch output:\n{done.stdout}")
        return float(match.group(1)), elapsed

    def once(self) -> None:
        reported, wall = self._run()
        self.reported.append(reported)
        self.wall.append(wall)
        self.cpu.append(self.last_cpu)

    def result(self) -> tuple[dict, np.ndarray]:
        height, width = self.geometry.height, self.geometry.width
        image = np.fromfile(f"{self.prefix}0000.raw", dtype=np.float32)
        if image.size != height * width:
            raise RuntimeError(f"plastimatch wrote {image.size} values, expected {height * width}")
        image = image.reshape(height, width)
        if self.flip:
            image = image[:, ::-1]
        shown = ["plastimatch", "drr", *self.args, "-O", "PREFIX", "CT_LPS.mha"]
        return {
            "seconds": statistics.median(self.reported), "all_seconds": self.reported,
            "wall_seconds": statistics.median(self.wall), "all_wall_seconds": self.wall,
            "process_cpu_seconds": statistics.median(self.cpu), "all_process_cpu_seconds": self.cpu,
            "command": " ".join(f'"{a}"' if " " in a else a for a in shown),
            "columns_mirrored": self.flip,
        }, np.ascontiguousarray(image)


# --------------------------------------------------------------------------- DiffDRR
def peers_python(explicit: str | None) -> Path | None:
    candidates = [explicit, os.environ.get("DEEPDRR_PEERS_PYTHON"),
                  PEERS_VENV / "bin" / "python", PEERS_VENV / "Scripts" / "python.exe"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def run_diffdrr(python: Path, ct_path: Path, geometries, work: Path, n_points: int, repeats: int):
    geometry_file = work / "geometries.json"
    geometry_file.write_text(json.dumps([g.to_dict() for g in geometries]))
    command = [str(python), str(BENCH_DIR / "_diffdrr_worker.py"), "--ct", str(ct_path), "--geometry",
               str(geometry_file), "--out", str(work), "--n-points", str(n_points), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"DiffDRR worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    images = {(r["height"], r["width"]): np.load(work / f"diffdrr_{r['height']}x{r['width']}.npy")
              for r in report["results"]}
    return report, images


# --------------------------------------------------------------------------- output
def save_side_by_side(path: Path, panels: list[tuple[str, np.ndarray | None]]) -> None:
    from PIL import Image, ImageDraw

    height, width = next(p.shape for _, p in panels if p is not None)
    gap, label = 4, 14
    canvas = Image.new("L", (len(panels) * width + (len(panels) - 1) * gap, height + label), 0)
    draw = ImageDraw.Draw(canvas)
    for index, (name, image) in enumerate(panels):
        x = index * (width + gap)
        if image is not None:
            low, high = np.percentile(image, [0.5, 99.5])
            scaled = np.clip((image - low) / max(high - low, 1e-12), 0, 1)
            canvas.paste(Image.fromarray((scaled * 255).astype(np.uint8)), (x, label))
        else:
            name += " (not run)"
        draw.text((x + 2, 1), name, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def plastimatch_fixed_cpu(executable: str, volume: Path, geometry, isocenter, work: Path, runs: int = 3) -> float:
    """plastimatch's CPU seconds for a 1 x 1 pixel image of the same view: reading the CT and setting up,
    which its per-image CPU time includes and a warm in-process renderer does not pay."""
    tiny = geometry.resized(1, 1)
    run = PlastimatchRun(executable, volume, tiny, isocenter, work)
    for _ in range(runs):
        run.once()
    return statistics.median(run.cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time our CPU projector against plastimatch and DiffDRR.")
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT, help="chest CT (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 256, 512, 1024],
                        help="square detector sizes in pixels (default 96 256 512 1024)")
    parser.add_argument("--detector-mm", type=float, default=700.0,
                        help="detector side in mm, the same at every size (default 700: the chest fits)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours per case (median; 3 at 1024)")
    parser.add_argument("--plastimatch-repeats", type=int, default=5, help="timed plastimatch runs (median)")
    parser.add_argument("--diffdrr-repeats", type=int, default=3)
    parser.add_argument("--diffdrr-sizes", type=int, nargs="*", default=[256, 512],
                        help="sizes DiffDRR renders (default 256 512; it takes ~20 s per 512 image)")
    parser.add_argument("--n-points", type=int, default=500, help="DiffDRR trilinear samples per ray")
    parser.add_argument("--layout-size", type=int, default=256,
                        help="size at which the voxel layouts and the candidate projectors are compared")
    parser.add_argument("--skip-layouts", action="store_true", help="no soft-fraction layouts (they need ~3 GB)")
    parser.add_argument("--skip-candidates", action="store_true", help="no benchmark-only candidate projectors")
    parser.add_argument("--plastimatch", default=shutil.which("plastimatch"), help="plastimatch executable")
    parser.add_argument("--peers-python", default=None,
                        help="python with torch + diffdrr (default: benchmarks/.venv-peers, or $DEEPDRR_PEERS_PYTHON)")
    parser.add_argument("--skip-plastimatch", action="store_true")
    parser.add_argument("--skip-diffdrr", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder (git-ignored)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="output folder (git-ignored)")
    args = parser.parse_args(argv)

    import numba

    from DeepDRRSlicerLib import projector_cpu
    from DeepDRRSlicerLib.geometry import CArm
    from DeepDRRSlicerLib.materials import MaterialVolume, decompose
    from DeepDRRSlicerLib.primary import PrimaryModel
    from DeepDRRSlicerLib.projector import DEFAULT_ALGORITHM, project
    from DeepDRRSlicerLib.spectrum import tube_spectrum
    from DeepDRRSlicerLib.volume import load_volume

    if not args.ct.is_file():
        print(f"error: CT not found: {args.ct}\n  fetch it with: bash benchmarks/setup_peers.sh --data-only", file=sys.stderr)
        return 2
    if args.threads:
        projector_cpu.set_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = load_average()

    start = time.perf_counter()
    volume = load_volume(args.ct)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    materials = decompose(volume)
    decompose_seconds = time.perf_counter() - start
    start = time.perf_counter()
    materials.projector_layout()
    layout_seconds = time.perf_counter() - start
    model = PrimaryModel.for_spectrum(tube_spectrum(90, {"Al": 3.3}), materials.names)
    isocenter = volume.center_ras()

    # plastimatch's own mu map on our grid: projecting it checks the geometry independently of physics
    hu = volume.hu
    mu_map = MaterialVolume(density=np.where(hu > -800.0, 1.0 + hu / 1000.0, 0.0).astype(np.float32),
                            labels=np.zeros(hu.shape, np.uint8), names=("water",),
                            ijk_to_ras=volume.ijk_to_ras)

    geometries = [CArm(alpha_deg=0.0, beta_deg=0.0, sid_mm=SID_MM, sod_mm=SOD_MM, isocenter_ras=tuple(isocenter),
                       width=n, height=n, pixel_spacing_mm=args.detector_mm / n).geometry() for n in args.sizes]

    print(f"CT {rel(args.ct)}: {volume.shape_ijk} voxels, spacing {np.round(volume.spacing, 4).tolist()} mm; "
          f"isocentre (RAS) {np.round(isocenter, 3).tolist()} mm")
    print(f"geometry: AP, SID {SID_MM:g} mm, SOD {SOD_MM:g} mm, detector {args.detector_mm:g} mm square "
          f"({args.detector_mm * SOD_MM / SID_MM:.0f} mm at the isocentre), sizes {args.sizes}")
    print(f"once per CT: decompose {decompose_seconds:.2f} s, voxel layout {layout_seconds:.2f} s")
    print(f"load average at start: {load_start}; CPUs: {os.cpu_count()}")

    use_plastimatch = bool(args.plastimatch) and not args.skip_plastimatch
    if args.skip_plastimatch:
        plastimatch_info = {"skipped": "--skip-plastimatch"}
    elif not args.plastimatch:
        plastimatch_info = {"skipped": "plastimatch not found (apt-get install plastimatch)"}
        print("plastimatch not found; skipping it (apt-get install plastimatch)")
    else:
        version = subprocess.run([args.plastimatch, "--version"], capture_output=True, text=True).stdout.strip()
        plastimatch_info = {"version": version}
        lps_volume = write_lps_volume(args.ct, args.work)
        plastimatch_info["fixed_cpu_seconds"] = plastimatch_fixed_cpu(args.plastimatch, lps_volume, geometries[0],
                                                                      isocenter, args.work)
        print(f"plastimatch CPU seconds for a 1-pixel image (reading the CT, set-up): "
              f"{plastimatch_info['fixed_cpu_seconds']:.3f}")

    def ours(mv, algorithm, primary_model, geometry):
        return lambda: project(mv, geometry, primary_model=primary_model, algorithm=algorithm)

    # Voxel layouts: the same threshold materials as one-hot fractions (per-material channels) give the
    # same image as the packed labels, so the time difference is the layout's; 6 soft materials show the
    # cost of a segmentation network's output.
    layouts = {}
    if not args.skip_layouts:
        one_hot = materials.material_fractions()
        layouts["fractions layout, 3 materials"] = MaterialVolume.from_fractions(
            materials.density, one_hot, materials.names, materials.ijk_to_ras)
        del one_hot
        rng = np.random.default_rng(0)
        six = rng.dirichlet(np.ones(6), size=1).astype(np.float32)[0][:, None, None, None] * np.ones(
            (1, *materials.density.shape), np.float32)
        layouts["fractions layout, 6 materials"] = MaterialVolume.from_fractions(
            materials.density, six, ("air", "soft_tissue", "bone", "fat", "muscle", "titanium"), materials.ijk_to_ras)
        del six
        for layout_materials in layouts.values():
            layout_materials.projector_layout()

    # Ours and plastimatch are timed in interleaved rounds (each round: every configuration of ours
    # once, then plastimatch once), so a slow drift of the machine affects both sides of the ratio alike.
    cases = []
    ours_images = {}
    plastimatch_images = {}
    foreign = {}
    meter = ForeignCpu()
    for geometry in geometries:
        n = geometry.width
        size = (geometry.height, geometry.width)
        row = {"size": f"{size[0]}x{size[1]}", "pixel_mm": geometry.pixel_spacing[0], "ours": {}}
        configurations = {
            f"{DEFAULT_ALGORITHM} poly": ours(materials, DEFAULT_ALGORITHM, model, geometry),
            f"{DEFAULT_ALGORITHM} line_integrals": ours(materials, DEFAULT_ALGORITHM, None, geometry),
            "siddon poly": ours(materials, "siddon", model, geometry),
        }
        if n <= 512:
            configurations["trilinear poly"] = ours(materials, "trilinear", model, geometry)
        if n == args.layout_size:
            for name, layout_materials in layouts.items():
                primary_model = model if layout_materials.names == materials.names else None
                label = "poly" if primary_model is not None else "line_integrals"
                configurations[f"{DEFAULT_ALGORITHM} {label}, {name}"] = ours(layout_materials, DEFAULT_ALGORITHM,
                                                                            primary_model, geometry)
            if not args.skip_candidates:
                from candidate_projectors import CANDIDATES, project_candidate

                for candidate in CANDIDATES:
                    configurations[f"candidate {candidate} line_integrals"] = (
                        lambda c=candidate, g=geometry: project_candidate(materials, g, c))
        runs = {name: OursRun(call) for name, call in configurations.items()}
        peer = (PlastimatchRun(args.plastimatch, lps_volume, geometry, isocenter, args.work)
                if use_plastimatch else None)
        repeats = min(args.repeats, 3) if n >= 1024 else args.repeats
        plastimatch_repeats = min(args.plastimatch_repeats, 3) if n >= 1024 else args.plastimatch_repeats
        for round_index in range(max(repeats, plastimatch_repeats if peer else 0)):
            if round_index < repeats:
                for run in runs.values():
                    run.once()
            if peer is not None and round_index < plastimatch_repeats:
                peer.once()
        for name, run in runs.items():
            row["ours"][name] = run.summary()
            print(f"  ours {name:52s} {row['size']}: {row['ours'][name]['seconds']:.4f} s wall, "
                  f"{row['ours'][name]['cpu_seconds']:.4f} CPU-s (runs {', '.join(f'{t:.3f}' for t in run.times)})")
        default_result = runs[f"{DEFAULT_ALGORITHM} line_integrals"].result
        ours_images[(size, DEFAULT_ALGORITHM)] = default_result.total_line_integral
        row["r_ours_default_vs_siddon"] = pearson(default_result.total_line_integral,
                                                  runs["siddon poly"].result.total_line_integral)
        if peer is not None:
            timing, image = peer.result()
            timing["cpu_seconds_less_fixed"] = max(0.0, timing["process_cpu_seconds"]
                                                   - plastimatch_info["fixed_cpu_seconds"])
            plastimatch_images[size] = image
            check = project(mu_map, geometry).total_line_integral
            timing["r_vs_ours"] = pearson(ours_images[(size, DEFAULT_ALGORITHM)], image)
            timing["r_vs_ours_on_its_mu_map"] = pearson(check, image)
            row["plastimatch"] = timing
            print(f"  plastimatch exact {row['size']}: reported {timing['seconds']:.4f} s "
                  f"(runs {', '.join(f'{t:.3f}' for t in timing['all_seconds'])}), wall {timing['wall_seconds']:.3f} s, "
                  f"CPU {timing['process_cpu_seconds']:.3f} s ({timing['cpu_seconds_less_fixed']:.3f} s less the "
                  f"1-pixel run); r vs ours {timing['r_vs_ours']:.5f}, "
                  f"r vs ours on its mu map {timing['r_vs_ours_on_its_mu_map']:.6f}")
        cases.append(row)
    foreign["ours_and_plastimatch"] = meter.seconds()
    if use_plastimatch:
        plastimatch_info["command"] = cases[0]["plastimatch"]["command"]

    info = {
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "numba_version": numba.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"numba {info['numba_version']}: {info['numba_threads']} threads ({info['numba_threading_layer']} layer)")

    diffdrr_images = {}
    python = peers_python(args.peers_python)
    diffdrr_geometries = [g for g in geometries if g.width in args.diffdrr_sizes]
    if args.skip_diffdrr or not diffdrr_geometries:
        diffdrr_info = {"skipped": "--skip-diffdrr or no --diffdrr-sizes"}
    elif python is None:
        diffdrr_info = {"skipped": "no peers venv (bash benchmarks/setup_peers.sh, or --peers-python)"}
        print("DiffDRR venv not found; skipping it (bash benchmarks/setup_peers.sh)")
    else:
        meter = ForeignCpu()
        report, diffdrr_images = run_diffdrr(python, args.ct, diffdrr_geometries, args.work, args.n_points,
                                             args.diffdrr_repeats)
        foreign["diffdrr"] = meter.seconds()
        diffdrr_info = {k: v for k, v in report.items() if k != "results"}
        for result, geometry in zip(report["results"], diffdrr_geometries):
            size = (geometry.height, geometry.width)
            row = next(r for r in cases if r["size"] == f"{size[0]}x{size[1]}")
            result["r_vs_ours"] = pearson(ours_images[(size, DEFAULT_ALGORITHM)], diffdrr_images[size])
            if size in plastimatch_images:
                result["r_vs_plastimatch"] = pearson(plastimatch_images[size], diffdrr_images[size])
            row["diffdrr"] = result
            print(f"  DiffDRR trilinear ({result['n_points']} pts) {row['size']}: {result['seconds']:.3f} s; "
                  f"r vs ours {result['r_vs_ours']:.5f}")

    # ---- table
    default_poly = f"{DEFAULT_ALGORITHM} poly"
    print()
    print(f"{'tool':66s} {'size':>9s} {'wall s':>8s} {'CPU s':>8s}")
    for row in cases:
        lines = [(f"ours {name}", v["seconds"], v["cpu_seconds"]) for name, v in row["ours"].items()]
        if "plastimatch" in row:
            p = row["plastimatch"]
            lines.append(("plastimatch drr -i exact (its reported time; CPU less the 1-pixel run)", p["seconds"],
                          p["cpu_seconds_less_fixed"]))
            lines.append(("plastimatch drr -i exact (process wall; process CPU)", p["wall_seconds"],
                          p["process_cpu_seconds"]))
        if "diffdrr" in row:
            lines.append((f"DiffDRR trilinear ({row['diffdrr']['n_points']} pts)", row["diffdrr"]["seconds"], float("nan")))
        for name, seconds, cpu in lines:
            print(f"{name:66s} {row['size']:>9s} {seconds:8.4f} {cpu:8.4f}")
    print()
    for row in cases:
        o = row["ours"]
        ratios = {}
        if "plastimatch" in row:
            p = row["plastimatch"]
            ratios["ours_default_poly_over_plastimatch"] = o[default_poly]["seconds"] / p["seconds"]
            ratios["ours_default_line_over_plastimatch"] = o[f"{DEFAULT_ALGORITHM} line_integrals"]["seconds"] / p["seconds"]
            ratios["ours_siddon_poly_over_plastimatch"] = o["siddon poly"]["seconds"] / p["seconds"]
            if p["cpu_seconds_less_fixed"] > 0:
                ratios["ours_default_poly_over_plastimatch_cpu"] = (o[default_poly]["cpu_seconds"]
                                                                    / p["cpu_seconds_less_fixed"])
        ratios["ours_default_poly_over_siddon_poly"] = o[default_poly]["seconds"] / o["siddon poly"]["seconds"]
        ratios["ours_default_poly_over_siddon_poly_cpu"] = o[default_poly]["cpu_seconds"] / o["siddon poly"]["cpu_seconds"]
        if "diffdrr" in row:
            ratios["diffdrr_over_ours_default_poly"] = row["diffdrr"]["seconds"] / o[default_poly]["seconds"]
        row["ratios"] = ratios
        print(f"{row['size']}:")
        if "plastimatch" in row:
            cpu_ratio = ratios.get("ours_default_poly_over_plastimatch_cpu", float("nan"))
            print(f"  ours ({default_poly}) / plastimatch exact = {ratios['ours_default_poly_over_plastimatch']:.2f}x wall,"
                  f" {cpu_ratio:.2f}x CPU   (line integrals only: {ratios['ours_default_line_over_plastimatch']:.2f}x;"
                  f" siddon poly: {ratios['ours_siddon_poly_over_plastimatch']:.2f}x)   target <= 1.0")
            print(f"  Pearson r ours vs plastimatch = {row['plastimatch']['r_vs_ours']:.5f}"
                  f"   (ours on plastimatch's mu map: {row['plastimatch']['r_vs_ours_on_its_mu_map']:.6f})")
        print(f"  ours {default_poly} / siddon poly = {ratios['ours_default_poly_over_siddon_poly']:.2f}x wall, "
              f"{ratios['ours_default_poly_over_siddon_poly_cpu']:.2f}x CPU")
        if "diffdrr" in row:
            print(f"  DiffDRR / ours ({default_poly}) = {ratios['diffdrr_over_ours_default_poly']:.1f}x   target >= 20")
            print(f"  Pearson r ours vs DiffDRR = {row['diffdrr']['r_vs_ours']:.5f}"
                  + (f"   (plastimatch vs DiffDRR: {row['diffdrr']['r_vs_plastimatch']:.5f})"
                     if "r_vs_plastimatch" in row["diffdrr"] else ""))
        print(f"  ours {DEFAULT_ALGORITHM} vs siddon r = {row['r_ours_default_vs_siddon']:.6f}")

    load_end = load_average()
    print(f"\nload average: start {load_start}, end {load_end}")
    print("CPU seconds used by other processes while each tool ran (0 = quiet machine): "
          + ", ".join(f"{k} {v}" for k, v in foreign.items()))

    shown = next((g for g in geometries if g.width >= 256), geometries[0])
    first = (shown.height, shown.width)
    png = args.results / f"bench_cpu_projector_{first[0]}.png"
    save_side_by_side(png, [(f"ours ({DEFAULT_ALGORITHM})", ours_images[(first, DEFAULT_ALGORITHM)]),
                            ("plastimatch exact", plastimatch_images.get(first)),
                            ("DiffDRR trilinear", diffdrr_images.get(first))])
    np.savez_compressed(args.results / f"bench_cpu_projector_images_{first[0]}.npz",
                        ours=ours_images[(first, DEFAULT_ALGORITHM)],
                        **({"plastimatch": plastimatch_images[first]} if first in plastimatch_images else {}),
                        **({"diffdrr": diffdrr_images[first]} if first in diffdrr_images else {}))

    results = {
        "benchmark": "bench_cpu_projector",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ct": {"path": rel(args.ct), "shape_ijk": list(volume.shape_ijk),
               "spacing_mm": volume.spacing.tolist(), "isocenter_ras": isocenter.tolist(),
               "load_seconds": load_seconds, "decompose_seconds": decompose_seconds,
               "layout_seconds": layout_seconds},
        "geometry": {"view": "AP (alpha = beta = 0): source posterior, detector anterior",
                     "sid_mm": SID_MM, "sod_mm": SOD_MM, "detector_mm": args.detector_mm,
                     "field_at_isocenter_mm": args.detector_mm * SOD_MM / SID_MM,
                     "sizes": args.sizes, "detectors": [g.to_dict() for g in geometries]},
        "ours": {"default_algorithm": DEFAULT_ALGORITHM, "spectrum": "90 kVp, 3.3 mm Al",
                 "materials": list(materials.names), "repeats": args.repeats, **info},
        "plastimatch": plastimatch_info,
        "diffdrr": diffdrr_info,
        "load_average": {"start": load_start, "end": load_end},
        "foreign_cpu_seconds": foreign,
        "cases": cases,
        "png": rel(png),
    }
    out = args.results / "bench_cpu_projector.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {rel(out)} and {rel(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
