"""PyTorch datasets over a generated dataset, and rendering the same samples on the fly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

from DeepDRRSlicerLib.cli import build_parser, main  # noqa: E402
from DeepDRRSlicerLib.dataset.cli import config_from_args  # noqa: E402
from DeepDRRSlicerLib.dataset.torch_data import RenderDataset, ShardDataset, collate  # noqa: E402
from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.resources import sample_ct_path, sample_landmarks_path  # noqa: E402

ARGS = ["generate", "--ct", str(sample_ct_path()), "--landmarks", str(sample_landmarks_path()),
        "--sample", "alpha=-30:30,beta=-15:15,n=6", "--randomize", "kvp=70:110", "--jitter", "roll=10",
        "--size", "40", "32", "--shard-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "ds"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def _config(out):
    return config_from_args(build_parser().parse_args([*ARGS, "--out", str(out)]))


def _batches(dataset, workers):
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate,
                                         multiprocessing_context="spawn" if workers else None)
    return list(loader)


def test_shard_dataset_reads_every_image_in_manifest_order(generated):
    dataset = ShardDataset(generated)
    assert len(dataset) == 6
    sample = dataset[5]
    assert sample["key"] == "ct0000_pose000005"
    assert sample["primary"].shape == (32, 40) and sample["primary"].dtype == torch.float32
    assert sample["line_integrals"].shape == (3, 32, 40)
    assert sample["heatmaps"].dtype == torch.float32 and sample["heatmaps"].shape == (7, 32, 40)
    assert sample["projection_matrix"].shape == (3, 4)
    assert 70 <= sample["meta"]["physics"]["kvp"] <= 110
    only = ShardDataset(generated, members=("primary",))[5]
    assert "heatmaps" not in only and torch.equal(only["primary"], sample["primary"])


def test_loader_workers_give_the_same_batches(generated):
    dataset = ShardDataset(generated)
    serial, parallel = _batches(dataset, 0), _batches(dataset, 2)
    assert [b["key"] for b in serial] == [b["key"] for b in parallel]
    for a, b in zip(serial, parallel):
        for name in ("primary", "line_integrals", "landmarks", "heatmaps"):
            assert torch.equal(a[name], b[name])


def test_on_the_fly_rendering_equals_the_stored_dataset(generated, tmp_path):
    stored = ShardDataset(generated)
    rendered = RenderDataset(_config(tmp_path / "unused"))
    assert len(rendered) == len(stored)
    for index in (0, 3, 5):
        a, b = stored[index], rendered[index]
        assert a["key"] == b["key"]
        for name in ("primary", "line_integrals", "landmarks", "heatmaps", "projection_matrix"):
            assert torch.equal(a[name], b[name]), name
    # DataLoader workers render the same images as the main process (seeding depends on the index only)
    serial, parallel = _batches(rendered, 0), _batches(rendered, 2)
    for a, b in zip(serial, parallel):
        assert a["key"] == b["key"] and torch.equal(a["primary"], b["primary"])


def test_each_epoch_draws_new_poses_reproducibly(tmp_path):
    first = RenderDataset(_config(tmp_path / "unused"))
    second = RenderDataset(_config(tmp_path / "unused"), epoch=1)
    first.set_epoch(1)
    assert torch.equal(first[2]["primary"], second[2]["primary"])
    first.set_epoch(0)
    assert first[2]["meta"]["pose"] != second[2]["meta"]["pose"]
    alpha = [second[i]["meta"]["pose"]["alpha"] for i in range(len(second))]
    assert all(-30 <= a <= 30 for a in alpha)


def test_verify_catches_a_damaged_shard(generated, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(generated, copy)
    shard = copy / "shards" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF     # inside the first sample's primary image
    shard.write_bytes(bytes(data))
    ShardDataset(copy)[0]  # without verification the bytes are read as they are
    with pytest.raises(InputError, match="sha256"):
        ShardDataset(copy, verify=True)[0]
    assert np.isfinite(ShardDataset(copy, verify=True)[1]["primary"].numpy()).all()


def test_example_training_loop_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "dataset_training_loop.py"
    done = subprocess.run([sys.executable, str(script), "--images", "8", "--size", "32", "--epochs", "2",
                           "--workers", "0"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    losses = [float(line.split("mean loss ")[1].split()[0]) for line in done.stdout.splitlines()
              if line.startswith("epoch")]
    assert len(losses) == 2 and all(np.isfinite(losses))
