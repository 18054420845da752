"""``deepdrr-slicer generate``: the command-line face of :func:`runner.generate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

EXIT_INCOMPLETE = 1


def add_generate_parser(commands) -> argparse.ArgumentParser:
    from ..hu_calibration import DENSITY_MODELS
    from ..metal import METAL_CHOICES
    from ..projector import ALGORITHMS, DEVICES

    gen = commands.add_parser(
        "generate", help="make a labelled 2D dataset from many CTs and poses",
        description="Render many CTs x sampled or listed poses x randomised physics into a sharded, labelled "
                    "dataset (tar shards, manifest.csv, dataset card). The same command and seed write the same "
                    "bytes; rerunning an interrupted command finishes it.")
    source = gen.add_argument_group("CTs")
    source.add_argument("--ct", type=str, action="append", default=[], metavar="PATH",
                        help="CT (NIfTI, NRRD, MetaImage or DICOM folder); repeat for several")
    source.add_argument("--ct-list", type=Path, metavar="FILE",
                        help="text file with one CT per line, or a CSV with columns ct[,landmarks][,labels]")
    source.add_argument("--landmarks", type=str, action="append", default=[], metavar="PATH",
                        help="landmarks per --ct, in the same order (.mrk.json, .fcsv, CSV label,R,A,S)")
    source.add_argument("--labels", type=str, action="append", default=[], metavar="PATH",
                        help="label map per --ct, in the same order (integer labels; resampled to the CT grid)")
    source.add_argument("--label-names", type=Path, metavar="CSV", help="CSV id,name naming the label values")
    poses = gen.add_argument_group("poses")
    poses.add_argument("--sample", metavar="SPEC",
                       help="random poses per CT, e.g. alpha=-40:110,beta=-30:30,n=1000 (also sid, sod; "
                            "A:B/N for a grid)")
    poses.add_argument("--poses", type=Path, metavar="POSES.json",
                       help="JSON list of poses (alpha, beta, sid, sod, roll, isocenter) or detector geometries")
    poses.add_argument("--jitter", metavar="SPEC", help="iso=MM (isocentre, each axis), roll=DEG (about the beam)")
    physics = gen.add_argument_group("physics")
    physics.add_argument("--randomize", metavar="SPEC",
                         help="per-image draws, e.g. kvp=70:120,filtration.Al=2:5,sid=950:1100 "
                              "(A:B uniform, A:B:log, X|Y|Z)")
    physics.add_argument("--stages", default="primary", help="comma-separated stages to store (default primary)")
    physics.add_argument("--kvp", type=float, default=90.0, help="tube voltage when not randomised (default 90)")
    physics.add_argument("--filtration", default="Al=3.3", help="added filtration (default Al=3.3)")
    physics.add_argument("--materials", choices=["network", "threshold"], default="network",
                         help="material decomposition, as for simulate (default network)")
    physics.add_argument("--density-model", choices=list(DENSITY_MODELS), default="calibrated",
                         help="HU -> density and composition, as for simulate (default calibrated)")
    physics.add_argument("--metal", choices=list(METAL_CHOICES), default="titanium",
                         help="implant material, as for simulate (default titanium)")
    physics.add_argument("--algorithm", choices=list(ALGORITHMS), help="projector (default: the engine's)")
    physics.add_argument("--device", choices=list(DEVICES), default="auto", help="projector device")
    image = gen.add_argument_group("images and labels")
    image.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(256, 256),
                       help="detector pixels (default 256 256)")
    image.add_argument("--pixel-spacing", type=float, metavar="MM",
                       help="detector pixel spacing (default: the 298 mm panel over max(W, H))")
    image.add_argument("--mask-algorithm", choices=list(ALGORITHMS), default="siddon",
                       help="projector for label path lengths and masks (default siddon: exact paths through "
                            "the labelled voxels, so a mask is not widened by interpolation)")
    image.add_argument("--heatmap-sigma", type=float, default=2.0, metavar="PX",
                       help="landmark heatmap Gaussian sigma in pixels; 0 stores none (default 2)")
    run = gen.add_argument_group("running")
    run.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    run.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    run.add_argument("--shard", metavar="i/n", help="render only shards s with s %% n == i (e.g. one of n machines)")
    run.add_argument("--workers", type=int, default=1, metavar="K", help="local worker processes (default 1)")
    run.add_argument("--ray", metavar="ADDRESS",
                     help="run shards as Ray tasks: 'auto' (a running cluster), 'local', or ray://host:port")
    run.add_argument("--overwrite", action="store_true", help="replace a different dataset already in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--out", type=Path, required=True, help="dataset folder (created; rerun to resume)")
    return gen


def config_from_args(args):
    from ..cli import parse_filtration
    from .config import CTEntry, GenerateConfig, read_ct_list, read_label_names
    from .spec import (check_carm_distances, check_pose_file_distances, load_poses, parse_jitter, parse_randomize,
                       parse_sample)

    if args.ct and args.ct_list:
        raise InputError("Both --ct and --ct-list were given.", "Give the CTs one way.")
    if args.ct_list:
        if args.landmarks or args.labels:
            raise InputError("--landmarks/--labels were given with --ct-list.",
                             "Put them in the list's landmarks and labels columns.")
        entries = read_ct_list(args.ct_list)
    else:
        for option, values in (("--landmarks", args.landmarks), ("--labels", args.labels)):
            if values and len(values) != len(args.ct):
                raise InputError(f"{len(values)} {option} file(s) for {len(args.ct)} CT(s).",
                                 f"Give one {option} per --ct, in the same order (or use --ct-list).")
        entries = [CTEntry(ct, args.landmarks[n] if args.landmarks else None,
                           args.labels[n] if args.labels else None) for n, ct in enumerate(args.ct)]
    if args.sample is not None and args.poses is not None:
        raise InputError("Both --sample and --poses were given.", "Give one of them.")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if args.workers < 1:
        raise InputError(f"--workers {args.workers} is less than 1.", "Give --workers K with K >= 1.")
    if args.ray and args.workers > 1:
        raise InputError("Both --ray and --workers were given.", "With Ray, the cluster's CPUs are the workers.")
    sampling = parse_sample(args.sample) if args.sample is not None else None
    randomize = parse_randomize(args.randomize)
    poses = load_poses(args.poses) if args.poses is not None else None
    if poses is None:
        check_carm_distances(sampling, randomize)
    else:
        check_pose_file_distances(poses, randomize, str(args.poses))
    return GenerateConfig(
        cts=entries,
        sampling=sampling,
        poses=poses,
        poses_source=None if args.poses is None else str(args.poses),
        jitter=parse_jitter(args.jitter),
        randomize=randomize,
        stages=stages,
        width=args.size[0], height=args.size[1], pixel_spacing_mm=args.pixel_spacing,
        seed=args.seed, kvp=args.kvp, filtration=parse_filtration(args.filtration), materials=args.materials,
        density_model=args.density_model, metal=args.metal,
        algorithm=args.algorithm, device=args.device, heatmap_sigma_px=args.heatmap_sigma,
        mask_algorithm=args.mask_algorithm,
        label_names=read_label_names(args.label_names) if args.label_names else {},
        shard_size=args.shard_size,
    )


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return (0, 1)
    index, sep, count = text.partition("/")
    try:
        result = (int(index), int(count))
    except ValueError:
        result = None
    if not sep or result is None or not 0 <= result[0] < result[1]:
        raise InputError(f"--shard {text!r} is not i/n with 0 <= i < n.", "Give e.g. --shard 0/4 ... --shard 3/4.")
    return result


class _Bar:
    def __init__(self, enabled: bool):
        self.bar = None
        self.enabled = enabled

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is None and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, leave=False, disable=None)
        if self.bar is not None:
            self.bar.set_description_str(message)
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate_command(args) -> int:
    from .runner import generate

    config = config_from_args(args)
    shard_filter = parse_shard(args.shard)
    bar = _Bar(not args.quiet)
    try:
        report = generate(config, args.out, workers=args.workers, ray_address=args.ray, shard_filter=shard_filter,
                          overwrite=args.overwrite, progress=bar)
    except KeyboardInterrupt:   # Ctrl-C, or SIGTERM (the CLI turns it into an interrupt)
        bar.close()
        print(f"cancelled: the shards finished in {args.out} are kept and the one being written is not readable "
              "by loaders; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        bar.close()
    for ct in report.skipped_cts:
        print(f"warning: skipped CT {ct['index']} ({ct['path']}): {ct['reason']}", file=sys.stderr)
    for ct in report.no_ray:
        what = "every pose" if ct["poses"] == ct["of"] else f"{ct['poses']} of {ct['of']} poses"
        print(f"warning: {what} put no ray through CT {ct['index']} ({ct['path']}); those images are not made. "
              "Check the isocentre and angle ranges.", file=sys.stderr)
    reasons: dict = {}
    for failure in report.failed:
        reasons[failure["reason"]] = reasons.get(failure["reason"], 0) + 1
    for reason, count in sorted(reasons.items()):
        print(f"warning: {count} image(s) not made: {reason}", file=sys.stderr)
    rate = f", {report.images_per_second:.2f} images/s" if report.rendered_now else ""
    if report.cancelled:
        print(f"cancelled: {report.shards_done}/{report.shards_total} shards complete in {args.out}; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    if not report.complete:
        print(f"rendered {report.rendered_now} image(s) in {report.seconds:.1f} s{rate}; "
              f"{report.shards_done}/{report.shards_total} shards of {args.out} complete (the manifest is written "
              "when all are)")
        return 0
    print(f"wrote {report.written} images ({report.shards_total} shards) to {args.out}: rendered "
          f"{report.rendered_now} now in {report.seconds:.1f} s{rate} ({report.runner})")
    if report.written == 0:
        return EXIT_INCOMPLETE
    return 0


__all__ = ["add_generate_parser", "generate_command", "config_from_args", "parse_shard"]
