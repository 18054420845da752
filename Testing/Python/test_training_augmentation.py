"""The training script's synthetic enhancing structures (tools/train_material_network.py).

They teach the network that a bright homogeneous structure beside bone (a contrast-filled aorta,
an enhancing kidney) is soft tissue. If they overwrote bone, or left their voxels labelled as what
was there before (air, bone), the network would learn the opposite. Synthetic patches, no data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training script needs PyTorch (pip install '.[network]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import train_material_network as training  # noqa: E402

PATCH = 32


def spine_patch(batch: int = 6):
    """(hu [B, P, P, P], targets [B, 3, P, P, P]): air above a soft-tissue body holding a bone column."""
    k, j, i = np.meshgrid(*[np.arange(PATCH)] * 3, indexing="ij")
    body = j >= 8
    bone = (np.hypot(j - 20, i - 16) <= 4) & body
    hu = np.where(bone, 700.0, np.where(body, 40.0, -1000.0)).astype(np.float32)
    targets = np.stack([~body, body & ~bone, bone]).astype(np.float32)
    return (torch.from_numpy(np.repeat(hu[None], batch, 0)),
            torch.from_numpy(np.repeat(targets[None], batch, 0)))


def augmented(seed: int):
    hu, targets = spine_patch()
    before_hu, before_targets = hu.clone(), targets.clone()
    training.add_enhancing_structures(hu, targets, np.random.default_rng(seed), probability=1.0)
    return before_hu, before_targets, hu, targets


def test_structures_are_labelled_soft_tissue_with_contrast_like_values():
    before_hu, before_targets, hu, targets = augmented(seed=4)
    changed = (hu - before_hu).abs() > 1.0
    assert changed.any(dim=(1, 2, 3)).float().mean() >= 0.8, "most patches should gain a structure"
    # Where a structure fills a voxel, the voxel is soft tissue with a contrast-like CT number.
    filled = changed & (hu > 120)
    assert filled.sum() > 500
    assert torch.all(targets[:, 1][filled] > 0.5)
    assert float(hu[filled].mean()) < 500, "enhancing tissue, not cortical bone"
    # Targets stay a probability distribution.
    assert torch.allclose(targets.sum(1), torch.ones_like(targets[:, 0]), atol=1e-5)


def test_bone_is_never_overwritten():
    before_hu, before_targets, hu, targets = augmented(seed=5)
    bone = before_targets[:, 2] == 1
    assert torch.equal(hu[bone], before_hu[bone])
    assert torch.equal(targets[:, 2][bone], before_targets[:, 2][bone])


def test_air_covered_by_a_structure_stops_being_air():
    covered = 0
    for seed in range(1, 6):   # together these seeds put structures into the air above the body
        before_hu, before_targets, hu, targets = augmented(seed)
        now_filled = (before_targets[:, 0] == 1) & (hu > 0)
        covered += int(now_filled.sum())
        assert torch.all(targets[:, 0][now_filled] < 0.5)
    assert covered > 100


def test_same_seed_same_patch_other_seed_other_patch():
    _, _, hu_a, targets_a = augmented(seed=7)
    _, _, hu_b, targets_b = augmented(seed=7)
    _, _, hu_c, _ = augmented(seed=8)
    assert torch.equal(hu_a, hu_b) and torch.equal(targets_a, targets_b)
    assert not torch.equal(hu_a, hu_c)


def test_darkened_marrow_keeps_cortex_labels_and_everything_outside_bone():
    """``--marrow``: bone below 500 HU (marrow) is lowered to 0-150 HU, cortex and soft tissue are not
    touched, and the labels stay bone."""
    hu, targets = spine_patch(batch=4)
    bone = targets[0, 2] > 0.5
    marrow_column = bone & (torch.arange(PATCH)[None, None, :] < 16)   # half the column is marrow, half cortex
    hu[:, marrow_column] = 250.0
    before_hu, before_targets = hu.clone(), targets.clone()
    training.darken_marrow(hu, targets, np.random.default_rng(3), probability=1.0)
    assert torch.equal(targets, before_targets)
    outside_marrow = ~marrow_column
    assert torch.equal(hu[:, outside_marrow], before_hu[:, outside_marrow])   # 700 HU cortex and soft tissue kept
    darkened = hu[:, marrow_column]
    assert float(darkened.min()) >= 0.0 and float(darkened.max()) <= 150.0 + 1e-3
    assert len({round(float(hu[b, marrow_column].mean()), 3) for b in range(4)}) == 4   # a level per patch


def test_marrow_probability_zero_draws_no_random_numbers(monkeypatch):
    """The default (0) must leave the random stream alone, so that the shipped weights still rebuild:
    the marrow step is not even called, and a nonzero share is."""
    hu, targets = spine_patch(batch=2)
    batch = torch.cat([hu[:, None], targets, torch.zeros(2, len(training.GROUPS), PATCH, PATCH, PATCH),
                       torch.ones(2, 1, PATCH, PATCH, PATCH)], 1)
    calls = []
    monkeypatch.setattr(training, "darken_marrow", lambda *args: calls.append(args))
    training.augment(batch, np.random.default_rng(5), 0.0)
    training.augment(batch, np.random.default_rng(5))
    assert calls == []
    training.augment(batch, np.random.default_rng(5), 0.3)
    assert len(calls) == 1
