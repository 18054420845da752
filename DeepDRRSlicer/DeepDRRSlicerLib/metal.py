"""Metal implants by rule: connected regions at or above :data:`METAL_MIN_HU`.

CT numbers saturate inside metal (often at 3071 HU), so they say nothing
about its density or kind; the voxels found here become one implant material
at its nominal density, chosen by the user (:data:`METAL_CHOICES`). The rule
runs on top of any decomposition (network or thresholds).

Known limit: undiluted contrast (e.g. the injected arm vein or the superior
vena cava during a contrast bolus) and dental enamel can exceed the threshold
too and are then called metal; turn the rule off with ``metal="none"`` or map
a segmentation over them.
"""

from __future__ import annotations

import numpy as np

from .attenuation import get_material, register_material
from .errors import InputError

METAL_MIN_HU = 2500.0
#: Components smaller than this (mm3) are noise, not implants.
METAL_MIN_VOLUME_MM3 = 4.0

# Nominal compositions (mass fractions, mid-range of the standard's limits) and densities.
IMPLANT_ALLOYS = {
    "titanium_alloy": ({"Ti": 0.90, "Al": 0.06, "V": 0.04}, 4.43,
                       "Ti-6Al-4V implant alloy, ASTM F136 nominal composition; density 4.43 g/cm3"),
    "stainless_steel": ({"Fe": 0.6262, "Cr": 0.18, "Ni": 0.14, "Mo": 0.026, "Mn": 0.02, "Si": 0.0075, "C": 0.0003},
                        8.0, "316L implant steel, ASTM F138 mid-range composition; density 8.0 g/cm3"),
    "cobalt_chromium": ({"Co": 0.655, "Cr": 0.285, "Mo": 0.06}, 8.3,
                        "CoCrMo casting alloy, ASTM F75 mid-range composition; density 8.3 g/cm3"),
}
#: User-facing choices -> material names.
METAL_CHOICES = {"titanium": "titanium_alloy", "steel": "stainless_steel", "cocr": "cobalt_chromium", "none": None}
DEFAULT_METAL = "titanium"

for _name, (_composition, _density, _source) in IMPLANT_ALLOYS.items():
    register_material(_name, _composition, _density, source=_source)
del _name, _composition, _density, _source


def metal_material(choice: str) -> str | None:
    """Material name for a user choice ('titanium', 'steel', 'cocr', 'none' or a registered material)."""
    if choice in METAL_CHOICES:
        return METAL_CHOICES[choice]
    try:
        return get_material(choice).name
    except ValueError:
        raise InputError(f"Unknown metal {choice!r}.",
                         f"Use --metal {', '.join(METAL_CHOICES)} (or a material registered with "
                         "attenuation.register_material).") from None


def metal_mask(hu: np.ndarray, ijk_to_ras, min_hu: float = METAL_MIN_HU,
               min_volume_mm3: float = METAL_MIN_VOLUME_MM3) -> np.ndarray:
    """bool [k, j, i]: voxels >= ``min_hu`` in 26-connected components of at least ``min_volume_mm3``."""
    hu = np.asarray(hu)
    candidates = hu >= min_hu
    if not candidates.any():
        return candidates
    voxel_mm3 = abs(float(np.linalg.det(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3])))
    min_voxels = max(1, int(np.ceil(min_volume_mm3 / max(voxel_mm3, 1e-9))))
    labels = _components_26(candidates)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def _components_26(mask: np.ndarray) -> np.ndarray:
    """Labels of the 26-connected components of ``mask`` (0 outside): SimpleITK (always in Slicer and in the
    engine's dependencies), else SciPy (machines with a trimmed environment)."""
    try:
        import SimpleITK as sitk
    except ImportError:
        try:
            from scipy import ndimage
        except ImportError:
            raise ImportError("Metal detection needs SimpleITK or SciPy for connected components: "
                              "pip install SimpleITK") from None
        return ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))[0]
    return sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))


__all__ = ["METAL_MIN_HU", "METAL_MIN_VOLUME_MM3", "IMPLANT_ALLOYS", "METAL_CHOICES", "DEFAULT_METAL",
           "metal_material", "metal_mask"]
