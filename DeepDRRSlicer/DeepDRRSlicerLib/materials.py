"""Material decomposition: HU -> density (g/cm3) and material composition per voxel.

Two steps, each with a choice:

1. classes (air, soft tissue, bone): ``network`` (the default; the segmentation
   network of :mod:`material_network`, soft probabilities) or ``threshold``
   (DeepDRR's: air <= -800 HU < soft tissue <= 350 HU < bone); then metal by rule
   (:mod:`metal`; titanium alloy by default, or steel, CoCr, none);
2. density and composition from HU within each class (:mod:`hu_calibration`):
   ``calibrated`` (the default; water at 1.00 g/cm3, composition varying with HU
   after Schneider et al. 2000) or ``deepdrr`` (DeepDRR's fits,
   min(0.001029 HU + 1.030, 0.0005886 HU + 1.03), one composition per class).

``threshold`` + ``deepdrr`` + ``metal="none"`` is DeepDRR's decomposition exactly.
Without PyTorch, ``network`` falls back to thresholds and says so.
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
MATERIAL_METHODS = ("network", "threshold")
DEFAULT_METHOD = "network"
DEFAULT_DENSITY_MODEL = "calibrated"
#: Network bone probability is faded out between these HU (air partial volume is not bone).
BONE_GATE_HU = (-500.0, -200.0)
#: Bone has a cortex. A connected region that the network calls bone (probability above
#: BONE_REGION_PROBABILITY), of at least CORTEX_CHECK_CM3, with no voxel at or above CORTEX_HU is soft tissue:
#: e.g. contrast-enhanced kidneys (150-300 HU), which the network confuses with marrow. Smaller regions are
#: left alone: thin ribs in thick slices can peak below 500 HU. (Resources/Models/README.md, "Post-processing".)
BONE_REGION_PROBABILITY = 0.25
CORTEX_HU = 500.0
CORTEX_CHECK_CM3 = 10.0
#: Bone probability is stretched about 0.5 by this factor: the network learnt 3 mm partial-volume fractions,
#: and interpolating them onto a finer CT grid widens every bone edge (chosen on the training volumes).
BONE_SHARPNESS = 2.0
#: Within this distance of an implant the network's classes give way to the thresholds: the network saw
#: only synthetic implants, and real streaks and blooming mislead it (see Resources/Models/README.md).
METAL_ARTEFACT_MM = 10.0


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
    from .hu_calibration import deepdrr_density

    return deepdrr_density(hu)


def threshold_labels(hu) -> np.ndarray:
    """0 = air (<= -800 HU), 1 = soft tissue (<= 350 HU), 2 = bone."""
    hu = np.asarray(hu)
    labels = np.ones(hu.shape, dtype=np.uint8)
    labels[hu <= AIR_MAX_HU] = 0
    labels[hu > SOFT_TISSUE_MAX_HU] = 2
    return labels


def decompose(volume: Volume, method: str = DEFAULT_METHOD, *, density_model: str = DEFAULT_DENSITY_MODEL,
              metal: str = "titanium", device: str = "auto", progress=None, cache_dir=None, notes: list | None = None,
              network_output=None) -> MaterialVolume:
    """Materials of ``volume`` (see the module docstring).

    ``progress(fraction)`` may raise SimulationCancelled. Messages for the user
    (e.g. the fallback to thresholds without torch, a cache hit) are appended to
    ``notes`` when given. ``network_output`` (a material_network.WorkingProbabilities)
    reuses an earlier network run on the same CT.
    """
    from . import hu_calibration
    from .metal import metal_material

    if method not in MATERIAL_METHODS:
        raise InputError(f"Material method {method!r} is not available.",
                         f"Use --materials {' or '.join(MATERIAL_METHODS)}.")
    if density_model not in hu_calibration.DENSITY_MODELS:
        raise InputError(f"Density model {density_model!r} is not available.",
                         f"Use --density-model {' or '.join(hu_calibration.DENSITY_MODELS)}.")
    metal_name = metal_material(metal)
    notes = notes if notes is not None else []
    hu = np.asarray(volume.hu)
    network_share = 0.85 if method == "network" else 0.0
    probabilities, implants, method = _classes(volume, method, device, cache_dir, notes, network_output,
                                               None if progress is None else lambda f: progress(network_share * f))
    if probabilities is None:
        network_share = 0.0
    mask = implants if metal_name is not None else None
    if mask is not None and mask.any():
        notes.append(f"metal: {int(mask.sum())} voxel(s) at >= 2500 HU assigned {metal_name}")
    label = f"{method}, {density_model} density"
    if probabilities is None and density_model == "deepdrr":
        # Hard labels, DeepDRR's fit: the voxels keep one material each.
        labels = threshold_labels(hu)
        density = hu_to_density(hu)
        names = THRESHOLD_MATERIALS
        if mask is not None and mask.any():
            labels[mask] = len(names)
            density[mask] = _nominal_density(metal_name)
            names = names + (metal_name,)
        if progress is not None:
            progress(1.0)
        return MaterialVolume(density=density, labels=labels, names=names, ijk_to_ras=volume.ijk_to_ras, method=label)
    classes = probabilities if probabilities is not None else threshold_labels(hu)
    compose_progress = None if progress is None else (lambda f: progress(network_share + (1 - network_share) * f))
    density, fractions, names = hu_calibration.compose(hu, classes, density_model, metal_mask=mask,
                                                       metal_material=metal_name, progress=compose_progress)
    labels = np.empty(hu.shape, dtype=np.uint8)
    for k in range(hu.shape[0]):   # slice by slice: no second full-size copy of the fractions
        labels[k] = np.argmax(fractions[:, k], axis=0)
    return MaterialVolume(density=density, labels=labels, names=tuple(names), ijk_to_ras=volume.ijk_to_ras,
                          method=label, fractions=fractions)


def class_probabilities(volume: Volume, method: str = DEFAULT_METHOD, *, device: str = "auto", progress=None,
                        notes: list | None = None, network_output=None) -> np.ndarray:
    """float32 [3, k, j, i] probabilities of air, soft tissue and bone as the decomposition uses them:
    the network's (cleaned, thresholds near implants) or the thresholds' one-hot classes."""
    notes = notes if notes is not None else []
    probabilities, _, _ = _classes(volume, method, device, None, notes, network_output, progress)
    if probabilities is None:
        labels = threshold_labels(volume.hu)
        probabilities = (labels[None] == np.arange(3, dtype=np.uint8)[:, None, None, None]).astype(np.float32)
    return probabilities


def _classes(volume: Volume, method, device, cache_dir, notes, network_output, progress):
    """(network class probabilities or None for thresholds, implant mask, method actually used)."""
    from .metal import metal_mask

    hu = np.asarray(volume.hu)
    probabilities = None
    if method == "network":
        probabilities = _network_probabilities(volume, device, cache_dir, notes, network_output, progress)
        if probabilities is None:
            method = "threshold"
    implants = metal_mask(hu, volume.ijk_to_ras)
    if probabilities is not None and implants.any():
        near = near_mask(implants, volume.ijk_to_ras, METAL_ARTEFACT_MM)
        labels = threshold_labels(hu[near])
        probabilities[:, near] = (labels[None] == np.arange(3, dtype=np.uint8)[:, None]).astype(np.float32)
        notes.append(f"within {METAL_ARTEFACT_MM:g} mm of metal ({int(near.sum())} voxels) the thresholds "
                     "replace the network (implant artefacts)")
    return probabilities, implants, method


def near_mask(mask: np.ndarray, ijk_to_ras, distance_mm: float) -> np.ndarray:
    """bool [k, j, i]: voxels within ``distance_mm`` of ``mask`` (mask included), by a Euclidean distance map
    between voxel centres. Only the box around the mask, grown by the distance, is mapped: nothing outside it
    can be that close, and implants are small next to the CT (5 s less on a 512 x 512 x 133 chest CT)."""
    mask = np.asarray(mask, dtype=bool)
    near = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return near
    spacing = np.linalg.norm(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3], axis=0)   # i, j, k
    margin = [int(np.ceil(distance_mm / max(s, 1e-9))) + 1 for s in spacing[::-1]]      # k, j, i
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, present[0] - margin[axis]), min(mask.shape[axis], present[-1] + 1 + margin[axis])))
    box = tuple(box)
    near[box] = _distance_map(mask[box], spacing) <= distance_mm
    return near


def _distance_map(mask: np.ndarray, spacing) -> np.ndarray:
    """mm from each voxel centre to the nearest voxel of ``mask`` (<= 0 inside); SimpleITK, else SciPy."""
    try:
        import SimpleITK as sitk
    except ImportError:
        from scipy import ndimage

        return ndimage.distance_transform_edt(~mask, sampling=tuple(spacing[::-1]))
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                               squaredDistance=False, useImageSpacing=True))


def _nominal_density(material: str) -> float:
    from .attenuation import get_material

    return float(get_material(material).density)


def _network_probabilities(volume: Volume, device, cache_dir, notes: list, network_output, progress):
    """Class probabilities [3, k, j, i] from the network, or None (with a note) when torch is missing."""
    from . import material_network

    available, why = material_network.torch_status()
    if not available:
        notes.append(f"the segmentation network needs PyTorch ({why}); used HU thresholds instead. "
                     f"Fix: {material_network.TORCH_FIX}")
        return None
    if network_output is None:
        if cache_dir is not None:
            network_output, hit = material_network.cached_segment_working(volume.hu, volume.ijk_to_ras, cache_dir,
                                                                          device=device, progress=progress)
            notes.append(f"network output {'read from' if hit else 'stored in'} the materials cache {cache_dir}")
        else:
            network_output = material_network.remembered_segment_working(volume.hu, volume.ijk_to_ras, device=device,
                                                                         progress=progress)
    elif progress is not None:
        progress(1.0)
    probabilities = network_output.to_native()
    return clean_probabilities(probabilities, volume.hu, volume.ijk_to_ras, notes)


def clean_probabilities(probabilities: np.ndarray, hu, ijk_to_ras=None, notes: list | None = None,
                        floor: float = 1e-3) -> np.ndarray:
    """In place (and returned): the network's probabilities as the decomposition uses them.

    - Regions without cortex are not bone (:func:`drop_bone_without_cortex`; needs ``ijk_to_ras``).
    - Bone probability moves to soft tissue where the HU say air partial volume (:data:`BONE_GATE_HU`).
    - Bone probability is sharpened about 0.5 (:data:`BONE_SHARPNESS`); the other classes share the rest
      in their former proportion.
    - Probabilities below ``floor`` are dropped (renormalised), so that most voxels are one class and
      the composition step skips the others.
    """
    if ijk_to_ras is not None:
        drop_bone_without_cortex(probabilities, hu, ijk_to_ras, notes)
    low, high = BONE_GATE_HU
    for k in range(probabilities.shape[1]):
        p = probabilities[:, k]
        gate = np.clip((np.asarray(hu[k], dtype=np.float32) - low) / (high - low), 0.0, 1.0)
        moved = p[2] * (1.0 - gate)
        p[2] -= moved
        p[1] += moved
        sharp = np.clip((p[2] - 0.5) * np.float32(BONE_SHARPNESS) + 0.5, 0.0, 1.0)
        rest = 1.0 - p[2]
        scale = np.divide(1.0 - sharp, rest, out=np.zeros_like(rest), where=rest > 1e-6)
        p[0] *= scale
        p[1] *= scale
        p[2] = sharp
        p[p < floor] = 0.0
        p /= np.maximum(p.sum(axis=0), np.float32(1e-12))[None]
    return probabilities


def drop_bone_without_cortex(probabilities: np.ndarray, hu, ijk_to_ras, notes: list | None = None) -> int:
    """In place: bone probability becomes soft tissue in every connected region the network calls bone
    (probability > :data:`BONE_REGION_PROBABILITY`, face-connected) that is at least :data:`CORTEX_CHECK_CM3`
    large and has no voxel at or above :data:`CORTEX_HU`, and in its 3 mm fringe. Returns how many regions."""
    import SimpleITK as sitk

    hu = np.asarray(hu)
    region = probabilities[2] > BONE_REGION_PROBABILITY
    if not region.any():
        return 0
    # Memory: the labels (uint32, viewed in place) are the only full-size array beyond a few bool masks.
    labels_image = sitk.ConnectedComponent(sitk.GetImageFromArray(region.view(np.uint8)), False)
    labels = sitk.GetArrayViewFromImage(labels_image)
    voxel_cm3 = abs(float(np.linalg.det(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]))) / 1000.0
    sizes_cm3 = np.bincount(labels[region]) * voxel_cm3
    with_cortex = np.unique(labels[region & (hu >= CORTEX_HU)])
    candidates = np.flatnonzero(sizes_cm3 >= CORTEX_CHECK_CM3)
    without = np.setdiff1d(candidates[candidates > 0], with_cortex)
    if without.size == 0:
        return 0
    dropped = np.isin(labels, without)
    del labels, labels_image
    dropped |= near_mask(dropped, ijk_to_ras, 3.0) & ~region   # the 3 mm fringe, never another region
    probabilities[1][dropped] += probabilities[2][dropped]
    probabilities[2][dropped] = 0.0
    if notes is not None:
        notes.append(f"{without.size} region(s) the network called bone ({sizes_cm3[without].sum():.0f} cm3) "
                     f"have no voxel at or above {CORTEX_HU:g} HU (no cortex) and were made soft tissue")
    return int(without.size)


@dataclass(frozen=True, eq=False)
class MaterialOverride:
    """Inside ``mask`` (bool [k, j, i] on the CT grid) the voxels are ``material``.

    ``density``: "nominal" (the material's own density: right for implants,
    whose CT numbers saturate), "ct" (keep the density the CT gave), or None to
    choose: nominal for materials denser than 3 g/cm3 (metals), else ct.
    """

    mask: np.ndarray
    material: str
    density: str | None = None


def override_materials(materials: MaterialVolume, overrides) -> MaterialVolume:
    """A copy of ``materials`` with each override applied in order (a later one wins where masks overlap).

    The original is not modified. Unknown materials raise InputError naming the known ones.
    """
    from .attenuation import get_material

    overrides = list(overrides)
    if not overrides:
        return materials
    names = list(materials.names)
    for override in overrides:
        try:
            name = get_material(override.material).name
        except ValueError as error:
            raise InputError(f"Cannot override with material {override.material!r}: {error}",
                             "Pick a material from the list, e.g. titanium_alloy, stainless_steel, bone.") from None
        if np.shape(override.mask) != materials.density.shape:
            raise InputError(f"Override mask for {name} has shape {np.shape(override.mask)}, the CT "
                             f"{materials.density.shape}.", "Export the segment on the CT's grid.")
        if name not in names:
            names.append(name)
    fractions = materials.material_fractions()
    if len(names) > fractions.shape[0]:
        extra = np.zeros((len(names) - fractions.shape[0], *fractions.shape[1:]), dtype=np.float32)
        fractions = np.concatenate([fractions, extra])
    else:
        fractions = fractions.copy()
    density = materials.density.copy()
    for override in overrides:
        material = get_material(override.material)
        mask = np.asarray(override.mask, dtype=bool)
        mode = override.density or ("nominal" if material.density > 3.0 else "ct")
        if mode not in ("nominal", "ct"):
            raise InputError(f"Unknown density mode {mode!r} for an override.", "Use 'nominal' or 'ct'.")
        fractions[:, mask] = 0.0
        fractions[names.index(material.name), mask] = 1.0
        density[mask] = material.density if mode == "nominal" else materials.density[mask]
    labels = np.argmax(fractions, axis=0).astype(np.uint8)
    return MaterialVolume(density=density, labels=labels, names=tuple(names), ijk_to_ras=materials.ijk_to_ras,
                          method=f"{materials.method}, with overrides", fractions=fractions)


def _decomposition_memory(context) -> list:
    """Memory term (see memory.py) of a soft decomposition: network probabilities on the CT grid,
    composition chunks and the network's own working memory, all at once at worst."""
    from .hu_calibration import CHUNK_VOXELS
    from .memory import MemoryItem

    if context.materials_ready or not context.soft_fractions:
        return []
    working = 8 * context.n_materials * min(CHUNK_VOXELS, context.voxels)   # measured: ~2 float32 copies
    if context.extra.get("network"):
        # class probabilities (float32), the cortex rule's region labels and masks, inference buffers
        working += 20 * context.voxels + 64 * 2**20
    return [MemoryItem("material composition and network (temporary)", working, held=False, step="materials")]


def _register_memory_term() -> None:
    from .memory import register_memory_term

    register_memory_term(_decomposition_memory)


_register_memory_term()


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
