"""Material decomposition: HU -> density (g/cm3) and a material label per voxel.

The density fits and thresholds are DeepDRR's (Unberath et al. 2018):
density = min(0.001029 HU + 1.030, 0.0005886 HU + 1.03), clipped at 0;
air <= -800 HU < soft tissue <= 350 HU < bone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import InputError
from .volume import Volume

THRESHOLD_MATERIALS = ("air", "soft_tissue", "bone")
AIR_MAX_HU = -800.0
SOFT_TISSUE_MAX_HU = 350.0


@dataclass(frozen=True, eq=False)
class MaterialVolume:
    """Per-voxel density and material composition on the grid of ``volume``.

    The composition is either a hard label per voxel (``labels``) or soft
    per-material mass fractions (``fractions``, [M, k, j, i], summing to 1 per
    voxel, e.g. a segmentation network's class probabilities). The density of
    material m in a voxel is ``density * fraction_m``. Build soft volumes with
    :meth:`from_fractions`; ``labels`` is then the most probable material.
    """

    density: np.ndarray   # float32 [k, j, i], g/cm3
    labels: np.ndarray    # uint8 [k, j, i], index into names (argmax of fractions when those are given)
    names: tuple          # material names, keys of attenuation's table
    ijk_to_ras: np.ndarray
    method: str = "threshold"
    fractions: np.ndarray | None = None   # float32 [M, k, j, i] mass fractions, or None for hard labels

    def __post_init__(self):
        if self.density.shape != self.labels.shape:
            raise InputError(f"Density {self.density.shape} and label {self.labels.shape} grids differ.",
                             "Give a label map on the same grid as the CT.")
        if self.density.size and float(self.density.max()) >= 32.0:
            raise InputError(f"Density up to {float(self.density.max()):.1f} g/cm3 exceeds the 32 g/cm3 supported.",
                             "Check the density map; no material is denser than 22.6 g/cm3.")
        if len(self.names) > 255:
            raise InputError("More than 255 materials.", "Merge materials.")
        if self.labels.size and int(self.labels.max()) >= len(self.names):
            raise InputError(f"Material labels go up to {int(self.labels.max())} but only {len(self.names)} "
                             "material names were given.", "Give one material name per label value, starting at 0.")
        if self.fractions is not None and self.fractions.shape != (len(self.names), *self.density.shape):
            raise InputError(f"Material fractions {self.fractions.shape} do not match {len(self.names)} materials "
                             f"on the density grid {self.density.shape}.",
                             "Give one fraction volume per material, on the CT grid.")

    @classmethod
    def from_fractions(cls, density, fractions, names, ijk_to_ras, method: str = "fractions") -> "MaterialVolume":
        """Soft composition: ``fractions`` [M, k, j, i] >= 0, normalised here to sum to 1 per voxel."""
        fractions = np.asarray(fractions, dtype=np.float32)
        if fractions.ndim != 4 or fractions.shape[0] != len(names):
            raise InputError(f"Material fractions have shape {fractions.shape}; expected ({len(names)}, k, j, i).",
                             "Stack one fraction volume per material name.")
        if not np.all(np.isfinite(fractions)) or fractions.size and float(fractions.min()) < 0:
            raise InputError("Material fractions contain negative, NaN or infinite values.",
                             "Give fractions in [0, 1], e.g. softmax probabilities.")
        total = fractions.sum(axis=0)
        fractions = np.where(total > 0, fractions / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)
        empty = total <= 0
        if np.any(empty):
            fractions[0][empty] = 1.0   # no composition given: the first material (air) by convention
        labels = np.argmax(fractions, axis=0).astype(np.uint8)
        return cls(density=np.asarray(density, dtype=np.float32), labels=labels, names=tuple(names),
                   ijk_to_ras=np.asarray(ijk_to_ras, dtype=np.float64), method=method, fractions=fractions)

    def material_fractions(self) -> np.ndarray:
        """float32 [M, k, j, i] mass fractions (one-hot for hard labels)."""
        if self.fractions is not None:
            return self.fractions
        return (self.labels[None] == np.arange(len(self.names), dtype=np.uint8)[:, None, None, None]).astype(np.float32)

    @cached_property
    def _projector_layout(self):
        from .projector_voxels import build_layout

        return build_layout(self)

    def projector_layout(self):
        """The voxel layout the CPU projectors read (projector_voxels), built once per MaterialVolume."""
        return self._projector_layout

    def mass_g(self) -> np.ndarray:
        """Mass of each material in grams."""
        voxel_cm3 = abs(np.linalg.det(self.ijk_to_ras[:3, :3])) / 1000.0
        if self.fractions is not None:
            return (self.fractions.reshape(len(self.names), -1) @ self.density.ravel().astype(np.float64)) * voxel_cm3
        return np.bincount(self.labels.ravel(), weights=self.density.ravel(),
                           minlength=len(self.names))[: len(self.names)] * voxel_cm3


def hu_to_density(hu) -> np.ndarray:
    """DeepDRR's two linear fits, g/cm3 (never negative)."""
    hu = np.asarray(hu, dtype=np.float32)
    density = np.minimum(np.float32(0.001029) * hu + np.float32(1.030), np.float32(0.0005886) * hu + np.float32(1.03))
    return np.maximum(density, np.float32(0.0))


def threshold_labels(hu) -> np.ndarray:
    """0 = air (<= -800 HU), 1 = soft tissue (<= 350 HU), 2 = bone."""
    hu = np.asarray(hu)
    labels = np.ones(hu.shape, dtype=np.uint8)
    labels[hu <= AIR_MAX_HU] = 0
    labels[hu > SOFT_TISSUE_MAX_HU] = 2
    return labels


def decompose(volume: Volume, method: str = "threshold") -> MaterialVolume:
    if method != "threshold":
        raise InputError(f"Material method {method!r} is not available.",
                         "Use --materials threshold.")
    return MaterialVolume(density=hu_to_density(volume.hu), labels=threshold_labels(volume.hu),
                          names=THRESHOLD_MATERIALS, ijk_to_ras=volume.ijk_to_ras, method=method)


def from_label_map(volume: Volume, labels, names) -> MaterialVolume:
    """Materials from a user label map on the CT grid (e.g. a segmentation)."""
    labels = np.asarray(labels)
    if labels.shape != volume.hu.shape:
        raise InputError(f"Label map shape {labels.shape} differs from the CT's {volume.hu.shape}.",
                         "Resample the segmentation onto the CT grid first.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise InputError(f"Label values span {labels.min()}..{labels.max()} but {len(names)} names were given.",
                         "Give one material name per label value, starting at 0.")
    return MaterialVolume(density=hu_to_density(volume.hu), labels=labels.astype(np.uint8),
                          names=tuple(names), ijk_to_ras=volume.ijk_to_ras, method="label map")
