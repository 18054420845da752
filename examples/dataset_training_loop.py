"""A training loop over a generated dataset: landmark heatmaps from simulated X-rays.

It trains nothing serious (a four-layer CNN for a few epochs on CPU); it shows the
pieces a real training script uses:

* ``ShardDataset``: the tar shards written by ``deepdrr-slicer generate``, random access,
  safe in DataLoader workers;
* ``RenderDataset``: the same samples rendered on the fly from the CT, with fresh poses
  and physics every epoch (``set_epoch``), for when storing them is not wanted;
* ``collate``: stacks the tensors, keeps metadata (pose, drawn physics, P) as lists.

    .venv/bin/python examples/dataset_training_loop.py                  # makes a small dataset first
    .venv/bin/python examples/dataset_training_loop.py --dataset DS/    # or uses yours
    .venv/bin/python examples/dataset_training_loop.py --on-the-fly      # renders while training
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from DeepDRRSlicerLib.cli import build_parser, main as cli_main
from DeepDRRSlicerLib.dataset.cli import config_from_args
from DeepDRRSlicerLib.dataset.torch_data import RenderDataset, ShardDataset, collate
from DeepDRRSlicerLib.resources import sample_ct_path, sample_landmarks_path


def generate_arguments(images: int, size: int) -> list[str]:
    return ["generate", "--ct", str(sample_ct_path()), "--landmarks", str(sample_landmarks_path()),
            "--sample", f"alpha=-30:30,beta=-15:15,n={images}", "--jitter", "iso=10,roll=5",
            "--randomize", "kvp=70:110", "--size", str(size), str(size), "--heatmap-sigma", "3", "--quiet"]


class HeatmapNet(nn.Module):
    def __init__(self, landmarks: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(16, landmarks, 1))

    def forward(self, image):
        return self.layers(image)


def as_input(primary: torch.Tensor) -> torch.Tensor:
    """-log(I/I0), the line-integral-like image a detector's log transform gives, normalised per image."""
    image = -torch.log(primary.clamp_min(1e-6))
    image = (image - image.mean(dim=(1, 2), keepdim=True)) / (image.std(dim=(1, 2), keepdim=True) + 1e-6)
    return image[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="a folder written by 'deepdrr-slicer generate'")
    parser.add_argument("--on-the-fly", action="store_true", help="render the samples while training")
    parser.add_argument("--images", type=int, default=32, help="images to generate when no --dataset is given")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()
    torch.manual_seed(0)

    if args.on_the_fly:
        config = config_from_args(build_parser().parse_args(
            [*generate_arguments(args.images, args.size), "--out", "unused"]))
        dataset = RenderDataset(config)
    else:
        folder = args.dataset
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="deepdrr-example-")) / "dataset"
            print(f"generating {args.images} images into {folder}")
            assert cli_main([*generate_arguments(args.images, args.size), "--out", str(folder)]) == 0
        dataset = ShardDataset(folder, members=("primary", "heatmaps", "landmarks"))

    first = next(s for s in (dataset[i] for i in range(len(dataset))) if s is not None)
    model = HeatmapNet(first["heatmaps"].shape[0])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=args.workers,
                                         collate_fn=collate, persistent_workers=False,
                                         multiprocessing_context="spawn" if args.workers else None,
                                         generator=torch.Generator().manual_seed(0))
    for epoch in range(args.epochs):
        if isinstance(dataset, RenderDataset):
            dataset.set_epoch(epoch)   # new poses and physics each epoch, the same in every worker
        total, batches = 0.0, 0
        for batch in loader:
            prediction = model(as_input(batch["primary"]))
            loss = nn.functional.mse_loss(prediction, batch["heatmaps"]) * 100
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
            batches += 1
        kvps = [m["physics"]["kvp"] for m in batch["meta"]]
        print(f"epoch {epoch}: {batches} batches, mean loss {total / max(batches, 1):.4f} "
              f"(last batch kVp {min(kvps):.0f}-{max(kvps):.0f})")


if __name__ == "__main__":
    main()
