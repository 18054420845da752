"""A segmentation node's segments as material overrides (e.g. a segmented screw -> titanium).

Segments are exported on the CT's grid (``slicer.util.arrayFromSegmentBinaryLabelmap``)
and become ``materials.MaterialOverride`` masks, which replace the network's
(or the thresholds') materials inside them.

Which segment becomes which material: an explicit ``{segment ID or name: material}``
mapping, or, without one, the segment's name when it names a material
(``material_for_segment_name``: "titanium", "Screw (steel)", "CoCr", "bone", ...).
Segments whose names name no material are left alone.
"""

from __future__ import annotations

import re

import numpy as np

from ..attenuation import available_materials, get_material
from ..errors import InputError
from ..materials import MaterialOverride
from ..metal import METAL_CHOICES

__all__ = ["material_for_segment_name", "overrides_from_segmentation", "segmentation_key"]

_STEEL = {"steel", "stainless", "ss"}
_COCR = {"cocr", "cobalt", "chromium", "como", "cocrmo"}
_TITANIUM = {"titanium", "ti", "titan", "ti6al4v"}
_IMPLANT = {"screw", "screws", "implant", "metal", "nail", "plate", "prosthesis", "wire", "rod", "stent", "valve"}


def material_for_segment_name(name: str) -> str | None:
    """The material a segment's name asks for, or None.

    A metal named in it wins ("Screw (steel)" -> stainless steel); then a
    registered material ("bone", "soft tissue", "adipose"); then an implant word
    ("screw", "implant", "plate", ...) means the default titanium alloy.
    """
    words = [w for w in re.sub(r"[^a-z0-9]+", " ", name.lower()).split() if w]
    if not words:
        return None
    if _STEEL & set(words):
        return METAL_CHOICES["steel"]
    if _COCR & set(words) or "co cr" in " ".join(words):
        return METAL_CHOICES["cocr"]
    if _TITANIUM & set(words):
        return METAL_CHOICES["titanium"]
    known = set(available_materials())
    candidates = ["_".join(words)] + ["_".join(words[i:i + 2]) for i in range(len(words) - 1)] + words
    for candidate in candidates:
        try:
            material = get_material(candidate).name
        except ValueError:
            continue
        if material in known:   # a registered material (or an alias of one), not a bare element symbol
            return material
    if _IMPLANT & set(words):
        return METAL_CHOICES["titanium"]
    return None


def segmentation_key(segmentation_node, mapping: dict | None) -> tuple:
    """Changes when the segmentation's content or the mapping changes."""
    if segmentation_node is None:
        return ()
    return (segmentation_node.GetID(), int(segmentation_node.GetMTime()),
            tuple(sorted((mapping or {}).items())))


def overrides_from_segmentation(segmentation_node, ct_node, mapping: dict | None = None, export=None) -> list:
    """``MaterialOverride`` list for the segments of ``segmentation_node`` on ``ct_node``'s grid.

    ``mapping``: {segment ID or segment name: material name}; None maps by segment names.
    ``export(segmentation_node, segment_id, ct_node) -> array`` exports one segment on the CT
    grid (default ``slicer.util.arrayFromSegmentBinaryLabelmap``, which needs the Slicer application).
    """
    if export is None:
        import slicer

        export = slicer.util.arrayFromSegmentBinaryLabelmap

    segmentation = segmentation_node.GetSegmentation()
    overrides = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        name = segmentation.GetSegment(segment_id).GetName()
        if mapping is not None:
            material = mapping.get(segment_id, mapping.get(name))
        else:
            material = material_for_segment_name(name)
        if not material:
            continue
        try:
            material = METAL_CHOICES.get(material, material) or material
            material = get_material(material).name
        except ValueError:
            raise InputError(f"Segment {name!r} is mapped to the unknown material {material!r}.",
                             f"Use one of: {', '.join(available_materials())}.") from None
        mask = export(segmentation_node, segment_id, ct_node)
        if mask is None:
            continue
        mask = np.asarray(mask) > 0
        if mask.any():
            overrides.append(MaterialOverride(mask=mask, material=material))
    return overrides
