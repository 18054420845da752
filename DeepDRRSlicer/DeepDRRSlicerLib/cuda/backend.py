"""The CUDA projector's host side, shared by every launcher.

* The padded voxel layout (``projector_voxels``) is uploaded once per MaterialVolume and stays on the
  device for every later pose (at most ``MAX_RESIDENT_VOLUMES`` volumes; the least recently used goes).
* A batch of poses runs in one launch (one grid layer per pose).
* Memory is planned before anything is allocated: when the volume and the outputs do not fit in free
  device memory (or in ``memory_limit``), the volume is streamed in slabs of k-planes and the kernel
  accumulates the line integrals across slabs (equal, bit for bit, to the unsplit result); when not
  even two planes fit, ``DeviceMemoryError`` says how much was needed and how much was free.
* Results stay on the device as ``DeviceArray`` (DLPack) when asked, else come back in one copy.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .launcher import DeviceArray, DeviceMemoryError, Launcher
from .source import (
    BLOCK,
    FIRST_SLAB,
    LAST_SLAB,
    MAX_CHANNEL_MATERIALS,
    MAX_PACKED_MATERIALS,
    MAX_POSES_PER_LAUNCH,
    POSE_DOUBLES,
    grid_for,
)

__all__ = ["CudaProjector", "DevicePlan", "plan_device_memory", "MAX_RESIDENT_VOLUMES"]

MAX_RESIDENT_VOLUMES = 2
# kept free for the CUDA context, compiled modules and the allocator's rounding
MIN_RESERVE_BYTES = 256 * 2**20
RESERVE_FRACTION = 0.02
# the kernel indexes a slab with 32-bit integers
MAX_SLAB_ELEMENTS = 2**31 - 1


@dataclass(frozen=True)
class DevicePlan:
    """How one render uses the device."""

    slabs: tuple             # ((first owned padded k-plane, stop), ...): one entry = the whole volume
    poses_per_chunk: int     # poses rendered per round of slabs
    resident: bool           # the whole volume stays on the device for later renders
    volume_bytes: int        # the padded layout
    output_bytes: int        # line integrals (+ primary) of all poses
    free_bytes: int          # device memory free for this render (before it)

    @property
    def split(self) -> bool:
        return len(self.slabs) > 1


def plan_device_memory(*, plane_bytes: int, plane_elements: int, n_planes: int, n_poses: int,
                       bytes_per_pose: int, free_bytes: int, total_bytes: int, already_resident: bool,
                       keep_on_device: bool, memory_limit: int | None = None) -> DevicePlan:
    """Decide slabs and pose chunks for a render (pure arithmetic; tested without a device).

    ``n_planes``: padded k-planes (nk + 2); owned planes are 0..n_planes - 2, a slab stores one more.
    ``free_bytes``: what the render may allocate, volumes it may evict included.
    """
    volume_bytes = plane_bytes * n_planes
    output_bytes = bytes_per_pose * n_poses
    reserve = max(MIN_RESERVE_BYTES, int(total_bytes * RESERVE_FRACTION))
    budget = free_bytes - reserve
    limited_by_caller = False
    if memory_limit is not None:
        if already_resident and volume_bytes + bytes_per_pose > memory_limit:
            already_resident = False   # the caller releases it; the render streams slabs
        allowed = int(memory_limit) - (volume_bytes if already_resident else 0)
        limited_by_caller = allowed < budget
        budget = min(budget, allowed)
    whole_volume_elements = plane_elements * n_planes
    need_volume = 0 if already_resident else volume_bytes
    last_owned = n_planes - 1   # owned planes: [0, n_planes - 1)

    def whole(chunk: int) -> DevicePlan:
        return DevicePlan(slabs=((0, last_owned),), poses_per_chunk=chunk, resident=True,
                          volume_bytes=volume_bytes, output_bytes=output_bytes, free_bytes=free_bytes)

    if whole_volume_elements <= MAX_SLAB_ELEMENTS:
        if keep_on_device:
            if need_volume + output_bytes <= budget:
                return whole(n_poses)
        elif need_volume + bytes_per_pose <= budget:
            chunk = min(n_poses, max(1, (budget - need_volume) // bytes_per_pose))
            return whole(int(chunk))
    # slabs: outputs first (all of them when they stay on the device, else at most half the budget)
    if keep_on_device:
        chunk = n_poses
    else:
        chunk = int(min(n_poses, max(1, (budget // 2) // bytes_per_pose)))
    remaining = budget - chunk * bytes_per_pose
    owned = min(remaining // plane_bytes - 1 if remaining > 0 else 0, MAX_SLAB_ELEMENTS // plane_elements - 1)
    if owned < 1:
        needed = chunk * bytes_per_pose + 2 * plane_bytes
        what = (f"Projecting {n_poses} pose(s) in slabs of this CT ({n_planes - 2} planes of "
                f"{plane_bytes / 2**20:.1f} MiB; outputs {chunk * bytes_per_pose / 2**20:.1f} MiB)")
        if limited_by_caller:
            raise DeviceMemoryError(needed, int(memory_limit), what + " within the device memory limit")
        raise DeviceMemoryError(needed + reserve, free_bytes, what)
    owned = int(owned)
    slabs = tuple((first, min(first + owned, last_owned)) for first in range(0, last_owned, owned))
    return DevicePlan(slabs=slabs, poses_per_chunk=chunk, resident=False, volume_bytes=volume_bytes,
                      output_bytes=output_bytes, free_bytes=free_bytes)


@dataclass
class _Resident:
    layout_ref: weakref.ref
    buffer: object
    nbytes: int


class CudaProjector:
    """Renders poses of voxel layouts with one launcher; keeps recent volumes on the device."""

    def __init__(self, launcher: Launcher):
        self.launcher = launcher
        self._resident: OrderedDict = OrderedDict()   # id(layout) -> _Resident
        self._lock = threading.RLock()
        self.last_plan: DevicePlan | None = None

    # ------------------------------------------------------------------ resident volumes
    def _drop_dead(self) -> None:
        for key in [k for k, entry in self._resident.items() if entry.layout_ref() is None]:
            del self._resident[key]

    def resident_bytes(self, except_layout=None) -> int:
        self._drop_dead()
        return sum(e.nbytes for k, e in self._resident.items() if except_layout is None or k != id(except_layout))

    def release(self, layout=None) -> None:
        """Free the device copy of ``layout`` (or of every volume)."""
        with self._lock:
            if layout is None:
                self._resident.clear()
            else:
                self._resident.pop(id(layout), None)

    def _resident_buffer(self, layout, planes: np.ndarray):
        entry = self._resident.get(id(layout))
        if entry is not None and entry.layout_ref() is layout:
            self._resident.move_to_end(id(layout))
            return entry.buffer
        # make room: only this volume and the newest other one stay
        while len(self._resident) >= MAX_RESIDENT_VOLUMES:
            self._resident.popitem(last=False)
        buffer = self.launcher.upload(planes)
        self._resident[id(layout)] = _Resident(weakref.ref(layout), buffer, int(planes.nbytes))
        return buffer

    # ------------------------------------------------------------------ rendering
    def render(self, layout, poses: np.ndarray, shape, *, mu_log2: np.ndarray | None = None,
               weights: np.ndarray | None = None, keep_on_device: bool = False, memory_limit: int | None = None,
               progress=None):
        """Line integrals [poses, M, H, W] (g/cm2) and, with a spectrum, the primary [poses, H, W].

        ``poses``: float64 [poses, 24] (``source.pose_array``). ``mu_log2`` [M, bins] (mu/rho * log2 e)
        and ``weights`` [bins] give the primary; without them it is None. Returns numpy arrays, or
        ``DeviceArray`` with ``keep_on_device``.
        """
        with self._lock:
            return self._render(layout, poses, shape, mu_log2, weights, keep_on_device, memory_limit, progress)

    def _render(self, layout, poses, shape, mu_log2, weights, keep_on_device, memory_limit, progress):
        launcher = self.launcher
        height, width = (int(n) for n in shape)
        n_materials = int(layout.n_materials)
        labels = layout.kind == "labels"
        if n_materials > (MAX_PACKED_MATERIALS if labels else MAX_CHANNEL_MATERIALS):
            raise ValueError(f"the CUDA projector handles at most {MAX_CHANNEL_MATERIALS} materials")
        poses = np.ascontiguousarray(poses, dtype=np.float64).reshape(-1, POSE_DOUBLES)
        n_poses = len(poses)
        want_primary = mu_log2 is not None and weights is not None and len(weights) > 0
        nk, nj, ni = (int(n) for n in layout.shape_kji)
        planes = (layout.packed.reshape(nk + 2, -1) if labels else layout.channels.reshape(nk + 2, -1))
        pixels = width * height
        bytes_per_pose = (n_materials + (1 if want_primary else 0)) * pixels * 4 + POSE_DOUBLES * 8

        self._drop_dead()
        entry = self._resident.get(id(layout))
        already = entry is not None and entry.layout_ref() is layout
        free, total = launcher.memory_info()
        plan = plan_device_memory(plane_bytes=int(planes.shape[1] * planes.itemsize),
                                  plane_elements=int(planes.shape[1]), n_planes=nk + 2, n_poses=n_poses,
                                  bytes_per_pose=bytes_per_pose, free_bytes=free + self.resident_bytes(layout),
                                  total_bytes=total, already_resident=already, keep_on_device=keep_on_device,
                                  memory_limit=memory_limit)
        self.last_plan = plan
        if plan.split:
            self.release()   # other volumes' memory goes to the slabs
        elif not already and free < plan.volume_bytes + plan.poses_per_chunk * bytes_per_pose:
            self.release()
        try:
            return self._run(layout, planes, plan, poses, width, height, n_materials, labels, mu_log2, weights,
                             want_primary, keep_on_device, progress)
        except Exception as error:
            if launcher.is_out_of_memory(error):
                free_now, _ = launcher.memory_info()
                raise DeviceMemoryError(plan.volume_bytes // len(plan.slabs) + plan.output_bytes, free_now,
                                        "Projecting on the GPU (memory was taken by another program meanwhile)") from error
            raise

    def _run(self, layout, planes, plan, poses, width, height, n_materials, labels, mu_log2, weights,
             want_primary, keep_on_device, progress):
        launcher = self.launcher
        kernel = launcher.kernel(n_materials, labels)
        n_poses = len(poses)
        nk, nj, ni = (int(n) for n in layout.shape_kji)
        if want_primary:
            mu_device = launcher.upload(np.ascontiguousarray(mu_log2, dtype=np.float32))
            weights_device = launcher.upload(np.ascontiguousarray(weights, dtype=np.float32))
            n_bins = int(len(weights))
        else:
            mu_device = weights_device = launcher.upload(np.zeros(1, np.float32))
            n_bins = 0
        label_mask = np.uint32(layout.label_mask if labels else 0)
        mixed_flag = np.uint32(layout.mixed_flag if labels else 0)
        resident = self._resident_buffer(layout, planes) if plan.resident else None

        chunk = plan.poses_per_chunk
        if keep_on_device:
            integrals_all = launcher.empty((n_poses, n_materials, height, width), np.float32)
            primary_all = launcher.empty((n_poses, height, width), np.float32) if want_primary else None
        else:
            integrals_host = np.empty((n_poses, n_materials, height, width), np.float32)
            primary_host = np.empty((n_poses, height, width), np.float32) if want_primary else None
        steps = -(-n_poses // chunk) * len(plan.slabs)
        done = 0
        for start in range(0, n_poses, chunk):
            stop = min(n_poses, start + chunk)
            if keep_on_device:
                integrals = launcher.index(integrals_all, slice(start, stop))
                primary = launcher.index(primary_all, slice(start, stop)) if want_primary else mu_device
            else:
                integrals = launcher.empty((stop - start, n_materials, height, width), np.float32)
                primary = launcher.empty((stop - start, height, width), np.float32) if want_primary else mu_device
            for slab_index, (first, owned_stop) in enumerate(plan.slabs):
                if resident is not None:
                    voxels = resident
                else:
                    voxels = None   # free the previous slab before the next upload
                    voxels = launcher.upload(planes[first:owned_stop + 1])
                flags = (FIRST_SLAB if slab_index == 0 else 0) | (LAST_SLAB if slab_index == len(plan.slabs) - 1 else 0)
                for launch_start in range(start, stop, MAX_POSES_PER_LAUNCH):
                    launch_stop = min(stop, launch_start + MAX_POSES_PER_LAUNCH)
                    local = slice(launch_start - start, launch_stop - start)
                    pose_device = launcher.upload(poses[launch_start:launch_stop])
                    whole_chunk = launch_start == start and launch_stop == stop
                    sub_integrals = integrals if whole_chunk else launcher.index(integrals, local)
                    sub_primary = primary if whole_chunk or not want_primary else launcher.index(primary, local)
                    launcher.launch(kernel, grid_for(width, height, launch_stop - launch_start), BLOCK, [
                        voxels, label_mask, mixed_flag, np.int32(ni), np.int32(nj), np.int32(nk),
                        np.int32(first), np.int32(owned_stop), pose_device, np.int32(width), np.int32(height),
                        mu_device, weights_device, np.int32(n_bins), sub_integrals, sub_primary, np.int32(flags)])
                done += 1
                if progress is not None:
                    launcher.synchronize()
                    progress(done / steps)
            if not keep_on_device:
                integrals_host[start:stop] = launcher.download(integrals)
                if want_primary:
                    primary_host[start:stop] = launcher.download(primary)
        launcher.synchronize()
        if keep_on_device:
            return (DeviceArray(launcher, integrals_all, (n_poses, n_materials, height, width), np.float32),
                    DeviceArray(launcher, primary_all, (n_poses, height, width), np.float32) if want_primary else None)
        return integrals_host, primary_host
