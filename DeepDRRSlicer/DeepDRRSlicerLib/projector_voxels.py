"""The voxel layouts the CPU projectors read, built once per MaterialVolume (numpy only, no numba).

Every layout describes the same continuous object: per-material density
``rho_m = density * fraction_m`` (g/cm3) on the voxel grid, with hard labels
as one-hot fractions. Both layouts are padded by one voxel on every side
that repeats the edge voxel ("clamp to edge"), so interpolation next to the
volume's faces needs no bounds checks: padded index = voxel index + 1.

``labels`` (hard labels, at most 16 materials): one uint32 per voxel, read
both as uint32 and as float32. The float32 is the voxel's density with its
lowest ``label_bits + 1`` mantissa bits replaced by the material label and a
*mixed* flag, so one load gives density and label. That rounds the density
toward zero by less than 2^(label_bits + 1 - 23) relative (1e-6 for 3
materials), and every backend reads the same rounded values. The mixed flag
is set where the 2x2x2 block of voxels starting at this one (+1 along each
axis) holds more than one label: where it is clear, all four neighbours of
an in-slice bilinear sample share one material and the kernel takes a fast
path. Voxels of zero density carry label 0 (their material is immaterial)
and hold their mixed flag in the sign bit instead, so they read as exactly
+0.0 or -0.0, never as a denormal.

``fractions`` (soft fractions, or hard labels with more than 16 materials):
float32 [padded voxels, M], the per-material densities rho_m of each voxel,
interleaved so one voxel's materials share a cache line. The buffer holding
it runs ``VECTOR_SLACK`` floats past the last voxel, so a kernel may load a
voxel's materials as one 4- or 8-wide vector (the extra lanes are ignored)
even at the end of the array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_PACKED_MATERIALS = 16
#: Floats readable past the last voxel of a ``fractions`` layout (an 8-wide load of 1 material needs 7).
VECTOR_SLACK = 8


@dataclass(frozen=True, eq=False)
class VoxelLayout:
    kind: str                 # "labels" or "fractions"
    shape_kji: tuple          # unpadded (nk, nj, ni)
    n_materials: int
    packed: np.ndarray        # uint32 [padded voxels] ("labels"), else an empty placeholder
    channels: np.ndarray      # float32 [padded voxels, M] ("fractions"), else an empty placeholder
    label_bits: int           # bits of the label field ("labels"); the mixed flag is the next bit

    @property
    def label_mask(self) -> int:
        return (1 << self.label_bits) - 1

    @property
    def mixed_flag(self) -> int:
        """Either bit set: the block is mixed (the sign bit marks it on zero-density voxels)."""
        return (1 << self.label_bits) | (1 << 31)

    @property
    def channel_slack(self) -> int:
        """Floats of the buffer that holds ``channels`` lying past its last voxel (readable, ignored)."""
        root = self.channels
        while isinstance(root.base, np.ndarray):
            root = root.base
        end = root.__array_interface__["data"][0] + root.nbytes
        return max(0, (end - self.channels.__array_interface__["data"][0] - self.channels.nbytes) // 4)

    @property
    def padded_shape_kji(self) -> tuple:
        return tuple(n + 2 for n in self.shape_kji)

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.channels.nbytes)

    def material_densities(self) -> np.ndarray:
        """float64 [padded voxels, M]: what every kernel integrates (for the numpy fallback and tests)."""
        if self.kind == "fractions":
            return self.channels.astype(np.float64)
        values = self.packed.view(np.float32).astype(np.float64)
        labels = self.packed & np.uint32(self.label_mask)
        out = np.zeros((self.packed.size, self.n_materials))
        out[np.arange(self.packed.size), labels] = values
        return out


def label_bits_for(n_materials: int) -> int:
    return max(1, int(np.ceil(np.log2(max(int(n_materials), 2)))))


def _padded(array: np.ndarray) -> np.ndarray:
    return np.pad(array, 1, mode="edge")


def _mixed_blocks(labels_padded: np.ndarray) -> np.ndarray:
    """True where the 2x2x2 block starting at each voxel holds more than one label (the last layer: True)."""
    mixed = np.ones(labels_padded.shape, dtype=bool)
    base = labels_padded[:-1, :-1, :-1]
    inner = mixed[:-1, :-1, :-1]
    inner[...] = False
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                if dk or dj or di:
                    inner |= labels_padded[dk:dk + base.shape[0], dj:dj + base.shape[1], di:di + base.shape[2]] != base
    return mixed


def pack_labels(density: np.ndarray, labels: np.ndarray, n_materials: int) -> VoxelLayout:
    """The ``labels`` layout of a hard-labelled volume (see the module docstring)."""
    if n_materials > MAX_PACKED_MATERIALS:
        raise ValueError(f"the packed layout holds at most {MAX_PACKED_MATERIALS} materials")
    bits = label_bits_for(n_materials)
    density = np.ascontiguousarray(density, dtype=np.float32)
    labels_padded = _padded(np.where(density > 0, labels, 0).astype(np.uint8))
    if labels_padded.size and int(labels_padded.max()) >= n_materials:
        raise ValueError(f"labels go up to {int(labels_padded.max())} for {n_materials} materials")
    packed = _padded(density).view(np.uint32)
    packed &= np.uint32(~((1 << (bits + 1)) - 1) & 0xFFFFFFFF)
    zero = packed == 0
    packed |= labels_padded
    # the mixed flag: a low mantissa bit where the density is positive; the sign bit where it is
    # zero (-0.0 is still exactly zero, where the low bit would make a denormal)
    mixed = _mixed_blocks(labels_padded)
    np.bitwise_or(packed, np.uint32(1 << bits), out=packed, where=mixed & ~zero)
    np.bitwise_or(packed, np.uint32(1 << 31), out=packed, where=mixed & zero)
    return VoxelLayout(kind="labels", shape_kji=tuple(density.shape), n_materials=int(n_materials),
                       packed=packed.ravel(), channels=np.zeros((1, 1), np.float32), label_bits=bits)


def pack_fractions(density: np.ndarray, fractions: np.ndarray) -> VoxelLayout:
    """The ``fractions`` layout: rho_m = density * fraction_m, float32, interleaved per voxel."""
    density = np.asarray(density, dtype=np.float32)
    n_materials = fractions.shape[0]
    padded_shape = tuple(n + 2 for n in density.shape)
    size = int(np.prod(padded_shape)) * n_materials
    buffer = np.zeros(size + VECTOR_SLACK, dtype=np.float32)
    channels = buffer[:size].reshape(*padded_shape, n_materials)
    for m in range(n_materials):
        channels[..., m] = _padded(density * np.asarray(fractions[m], dtype=np.float32))
    return VoxelLayout(kind="fractions", shape_kji=tuple(density.shape), n_materials=int(n_materials),
                       packed=np.zeros(1, np.uint32), channels=channels.reshape(-1, n_materials),
                       label_bits=label_bits_for(n_materials))


def build_layout(materials) -> VoxelLayout:
    """The layout for a MaterialVolume: packed labels when hard with <= 16 materials, else fractions."""
    n_materials = len(materials.names)
    if materials.fractions is None and n_materials <= MAX_PACKED_MATERIALS:
        return pack_labels(materials.density, materials.labels, n_materials)
    return pack_fractions(materials.density, materials.material_fractions())
