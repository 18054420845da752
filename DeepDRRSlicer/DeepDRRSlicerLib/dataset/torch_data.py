"""PyTorch datasets: read a generated dataset, or render the same samples on the fly.

Both return the same dict per image (see :func:`sample_to_torch`) and both are
worker-safe: what image ``i`` holds depends only on ``i`` (and the epoch), never
on the DataLoader worker or on global random state, so any ``num_workers``
gives the same batches. File handles and renderers are opened lazily in each
worker process, never shared across a fork.

torch is imported here only; the rest of the engine does not need it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import InputError
from .shards import tar_members

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as error:  # pragma: no cover - exercised only without torch
    raise ImportError("DeepDRRSlicerLib.dataset.torch_data needs PyTorch (pip install torch).") from error


def sample_to_torch(key: str, arrays: dict, geometry: dict, meta: dict) -> dict:
    """{"key", "<array name>": tensor..., "projection_matrix": (3, 4) float64, "geometry", "meta"}.

    Heatmaps (stored as float16) are returned as float32; masks as uint8."""
    sample = {"key": key}
    for name, array in arrays.items():
        if array.dtype == np.float16:
            array = array.astype(np.float32)
        sample[name] = torch.from_numpy(np.ascontiguousarray(array))
    sample["projection_matrix"] = torch.tensor(geometry["projection_matrix"], dtype=torch.float64)
    sample["geometry"] = geometry
    sample["meta"] = meta
    return sample


def collate(samples: list) -> dict:
    """Stack tensors of equal shape; keep keys, geometry and metadata as lists; drop None samples."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return {}
    batch = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            batch[name] = torch.stack(values)
        else:
            batch[name] = values
    return batch


class ShardDataset(Dataset):
    """A generated dataset folder, random access by index (manifest order).

    ``members`` limits what is read (e.g. ``("primary", "heatmaps")``); ``verify=True`` checks
    every member's sha256 against the sample's metadata. An unfinished dataset (no manifest yet)
    is readable too: its complete shards are used, with a warning.
    """

    def __init__(self, root, members=None, verify: bool = False):
        self.root = Path(root)
        self.members = None if members is None else set(members)
        self.verify = verify
        self.rows = _read_rows(self.root)
        self._handles: OrderedDict = OrderedDict()
        self._pid = None

    def __len__(self) -> int:
        return len(self.rows)

    def _handle(self, file: str):
        if self._pid != os.getpid():      # a forked DataLoader worker: never reuse the parent's handles
            self._handles = OrderedDict()
            self._pid = os.getpid()
        handle = self._handles.get(file)
        if handle is None:
            handle = open(self.root / file, "rb")
            self._handles[file] = handle
            if len(self._handles) > 16:
                self._handles.popitem(last=False)[1].close()
        else:
            self._handles.move_to_end(file)
        return handle

    def read_raw(self, index: int) -> tuple[dict, dict, dict, dict]:
        """(arrays, geometry, meta, raw member bytes) of image ``index``, without torch."""
        row = self.rows[index]
        key, handle = row["key"], self._handle(row["file"])
        raw = {}
        for member_key, suffix, _, size in tar_members(handle, int(row["offset"])):
            if member_key != key:
                break
            name = suffix[:-4] if suffix.endswith(".npy") else suffix
            if self.members is None or name in self.members or suffix in ("json", "geometry.json") or self.verify:
                raw[suffix] = handle.read(size)
        if "json" not in raw:
            raise InputError(f"Sample {key} is incomplete in {row['file']}.",
                             "The shard is damaged: regenerate it (delete it and rerun the generate command).")
        meta = json.loads(raw["json"])
        if self.verify:
            import hashlib

            for suffix, digest in meta["sha256"].items():
                if hashlib.sha256(raw.get(suffix, b"")).hexdigest() != digest:
                    raise InputError(f"Sample {key}: member {suffix} does not match its sha256.",
                                     "The shard is damaged: delete it and rerun the generate command.")
        geometry = json.loads(raw["geometry.json"])
        arrays = {}
        for suffix, data in raw.items():
            if suffix.endswith(".npy"):
                name = suffix[:-4]
                if self.members is None or name in self.members:
                    arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
        return arrays, geometry, meta, raw

    def __getitem__(self, index: int) -> dict:
        arrays, geometry, meta, _ = self.read_raw(index)
        return sample_to_torch(meta["key"], arrays, geometry, meta)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        state["_pid"] = None
        return state


def _read_rows(root: Path) -> list[dict]:
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    shards = sorted((root / "shards").glob("shard-*.json")) if (root / "shards").is_dir() else []
    rows = []
    for record_path in shards:
        if record_path.with_suffix(".tar").is_file():
            rows.extend(json.loads(record_path.read_text(encoding="utf-8"))["images"])
    if not rows:
        raise InputError(f"{root} holds no generated dataset (no manifest.csv and no complete shard).",
                         "Give the folder passed to 'deepdrr-slicer generate --out'.")
    import warnings

    warnings.warn(f"{root} is unfinished (no manifest.csv): reading its {len(shards)} complete shard(s).",
                  stacklevel=3)
    return sorted(rows, key=lambda row: int(row["index"]))


class RenderDataset(Dataset):
    """Renders samples on the fly from CTs, with the generator's plan and renderer.

    ``RenderDataset(config)[i]`` equals image ``i`` of ``deepdrr-slicer generate`` with the same
    configuration (None for an image that cannot be made, e.g. no ray through the CT; ``collate``
    drops those). ``set_epoch(e)`` draws a fresh set of poses and physics for epoch ``e`` (epoch 0
    is the configuration's own seed). Each DataLoader worker builds its own renderer and gives the
    projector its share of the CPU cores.
    """

    def __init__(self, config, epoch: int = 0):
        from .plan import make_plan
        from .render import check_stages

        self.base_plan = make_plan(config)
        check_stages(self.base_plan)
        self.epoch = 0
        self.plan = self.base_plan
        self._renderer = None
        self._pid = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        from .plan import Plan

        self.epoch = int(epoch)
        if self.epoch == 0:
            self.plan = self.base_plan
        else:
            base = self.base_plan
            seed = int(np.random.SeedSequence(base.config.seed, spawn_key=(0xE90C, self.epoch)).generate_state(1)[0])
            self.plan = Plan(dataclasses.replace(base.config, seed=seed), base.cts, base.structures,
                             base.landmark_labels, base.material_names)
        self._renderer = None

    def __len__(self) -> int:
        return self.plan.total

    def _renderer_here(self):
        if self._renderer is None or self._pid != os.getpid():
            from .process_runner import set_projector_threads, threads_per_worker
            from .render import SampleRenderer

            info = torch.utils.data.get_worker_info()
            if info is not None:
                set_projector_threads(threads_per_worker(info.num_workers))
            self._renderer = SampleRenderer(self.plan)
            self._pid = os.getpid()
        return self._renderer

    def render_raw(self, index: int):
        """The generator's Sample for image ``index`` (raises ItemFailed when it cannot be made)."""
        item = self.plan.items(index, index + 1)[0]
        return self._renderer_here().render(item)

    def __getitem__(self, index: int):
        from .render import ItemFailed

        if not 0 <= index < len(self):
            raise IndexError(index)
        try:
            sample = self.render_raw(index)
        except ItemFailed:
            return None
        return sample_to_torch(sample.key, sample.arrays, sample.geometry,
                               json.loads(dict(sample.members())["json"]))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_renderer"] = None
        state["_pid"] = None
        return state


__all__ = ["ShardDataset", "RenderDataset", "collate", "sample_to_torch"]
