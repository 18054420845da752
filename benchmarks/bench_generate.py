"""Dataset generation throughput: images/s end to end, serial vs local workers vs Ray.

Each mode renders the same dataset (bundled pelvis CT, random poses and kVp, 256x256, landmarks
with heatmaps) into a fresh folder with `DeepDRRSlicerLib.dataset.generate`, the function behind
`deepdrr-slicer generate`; the time covers planning, rendering, writing and indexing. Ray's
cluster is started before the clock (a cluster is normally up already; its start-up is printed
separately). The outputs of all modes are compared byte for byte.

Overhead vs serial = serial images/s / mode images/s - 1 (the serial run already uses every core
through the projector's threads, so a parallel runner can only lose; the target is <= 10 %).

    .venv/bin/python benchmarks/bench_generate.py [--images 48] [--size 256] [--workers 2]
        [--stages primary] [--stages primary,scatter,noisy] [--no-ray]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from DeepDRRSlicerLib.dataset.config import CTEntry, GenerateConfig
from DeepDRRSlicerLib.dataset.plan import settings_for
from DeepDRRSlicerLib.dataset.process_runner import available_cpus
from DeepDRRSlicerLib.dataset.render import available_stages
from DeepDRRSlicerLib.dataset.runner import generate
from DeepDRRSlicerLib.dataset.spec import parse_jitter, parse_randomize, parse_sample
from DeepDRRSlicerLib.resources import sample_ct_path, sample_landmarks_path


def config(images: int, size: int, stages: tuple, shard_size: int) -> GenerateConfig:
    return GenerateConfig(cts=[CTEntry(str(sample_ct_path()), str(sample_landmarks_path()))],
                          sampling=parse_sample(f"alpha=-40:40,beta=-25:25,n={images}"),
                          jitter=parse_jitter("iso=15,roll=5"), randomize=parse_randomize("kvp=70:120"),
                          stages=stages, width=size, height=size, shard_size=shard_size)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "report.json":
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def timed(cfg: GenerateConfig, **kwargs) -> tuple[float, str]:
    folder = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        start = time.perf_counter()
        report = generate(cfg, folder / "ds", **kwargs)
        seconds = time.perf_counter() - start
        assert report.complete and report.written == cfg.sampling.count, report
        return seconds, digest(folder / "ds")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--stages", action="append", help="comma-separated stage set (repeatable)")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    stage_sets = args.stages or ["primary", "primary,scatter,noisy"]
    print(f"{args.images} images of {args.size}x{args.size}, bundled pelvis CT, {available_cpus()} CPU(s), "
          f"shards of {args.shard_size}")
    ray = None
    if not args.no_ray:
        try:
            import ray
        except ImportError:
            print("Ray is not installed (pip install .[ray]): Ray rows skipped")
    if ray is not None:
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        print(f"Ray local cluster with {args.workers} worker CPUs started in {time.perf_counter() - start:.1f} s "
              "(not in the timings)")
    try:
        for stage_text in stage_sets:
            stages = tuple(stage_text.split(","))
            cfg = config(args.images, args.size, stages, args.shard_size)
            known = available_stages(settings_for(cfg, {}), ("air", "soft_tissue", "bone"))
            missing = [s for s in stages if s not in known]
            if missing:
                print(f"\nstages {stage_text}: not available in this engine ({', '.join(missing)} missing)")
                continue
            # compile this stage set's kernels first (numba caches them on disk for the worker processes)
            timed(config(2, 32, stages, 2))
            print(f"\nstages {stage_text}")
            print(f"  {'mode':<22} {'seconds':>8} {'images/s':>9} {'overhead vs serial':>19}  output")
            serial_s, serial_digest = timed(cfg)
            rows = [("serial", serial_s, serial_digest)]
            seconds, out = timed(cfg, workers=args.workers)
            rows.append((f"--workers {args.workers}", seconds, out))
            if ray is not None:
                seconds, out = timed(cfg, ray_address="auto")
                rows.append((f"Ray, {args.workers} workers", seconds, out))
            for name, seconds, out in rows:
                overhead = seconds / serial_s - 1
                same = "identical" if out == serial_digest else "DIFFERENT"
                print(f"  {name:<22} {seconds:>8.2f} {args.images / seconds:>9.2f} {overhead:>+18.1%}  {same}")
    finally:
        if ray is not None:
            ray.shutdown()


if __name__ == "__main__":
    main()
