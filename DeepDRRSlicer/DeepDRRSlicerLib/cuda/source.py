"""The one kernel source (``projector.cu``) and what every launcher needs to run it."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

KERNEL_FILE = Path(__file__).with_name("projector.cu")
KERNEL_NAME = "drr_joseph"
# kernel argument order: see drr_joseph in projector.cu
POSE_DOUBLES = 24
FIRST_SLAB = 1
LAST_SLAB = 2
# threads per block (columns x rows): 128 threads in a 16 x 8 tile keep neighbouring rays, which read
# neighbouring voxels, in one block
BLOCK = (16, 8, 1)
# the grid's z dimension (one layer per pose) is limited to 65535
MAX_POSES_PER_LAUNCH = 65535
MAX_PACKED_MATERIALS = 16
MAX_CHANNEL_MATERIALS = 16


@lru_cache(maxsize=1)
def kernel_source() -> str:
    return KERNEL_FILE.read_text(encoding="utf-8")


def source_digest() -> str:
    return hashlib.sha256(kernel_source().encode()).hexdigest()[:16]


def defines(n_materials: int, labels: bool) -> list[str]:
    """The preprocessor definitions that select one variant of the kernel."""
    limit = MAX_PACKED_MATERIALS if labels else MAX_CHANNEL_MATERIALS
    if not 1 <= n_materials <= limit:
        raise ValueError(f"the CUDA projector handles 1 to {limit} materials, got {n_materials}")
    return [f"-DDRR_MATERIALS={int(n_materials)}", f"-DDRR_LABELS={1 if labels else 0}"]


def pose_array(frames) -> np.ndarray:
    """float64 [poses, 24] from (source_ijk, origin_ijk, u_ijk, v_ijk, source_ras, origin_ras, u_ras, v_ras)."""
    rows = [np.concatenate([np.asarray(vector, dtype=np.float64).reshape(3) for vector in frame]) for frame in frames]
    array = np.ascontiguousarray(np.stack(rows), dtype=np.float64)
    assert array.shape[1] == POSE_DOUBLES
    return array


def grid_for(width: int, height: int, poses: int) -> tuple:
    return ((width + BLOCK[0] - 1) // BLOCK[0], (height + BLOCK[1] - 1) // BLOCK[1], poses)
