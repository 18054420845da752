"""*Generate dataset* from scene nodes: the engine's generator, fed with the module's inputs.

The CT volume nodes (with their parent transforms), landmark point lists and
label maps (label map volume nodes, or segmentations exported to label maps)
are written into the dataset's ``inputs/`` folder and the file-based generator
(:func:`DeepDRRSlicerLib.dataset.generate`) runs on them: the same code as
``deepdrr-slicer generate``, so a dataset made in Slicer can be extended or
regenerated from the command line. The nodes are only read. A cancelled run
is resumed by running it again with the same inputs and settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import slicer

from ..errors import InputError
from .landmark_nodes import landmarks_from_node
from .scene_utils import node_label
from .volume_nodes import check_ct_node, ijk_to_world_matrix, volume_from_node

__all__ = ["DatasetRequest", "generate_dataset", "label_map_from_node"]


@dataclass
class DatasetRequest:
    """What the panel's *Generate dataset* section asks for."""

    out: str
    ct_nodes: list
    landmarks_nodes: list = field(default_factory=list)    # one per CT node, or empty (None entries allowed)
    label_nodes: list = field(default_factory=list)        # label map or segmentation per CT node, or empty
    sample: str = "alpha=-40:40,beta=-25:25,n=100"
    jitter: str = ""
    randomize: str = ""
    stages: tuple = ("primary",)
    width: int = 256
    height: int = 256
    pixel_spacing_mm: float | None = None   # None: the 298 mm panel over max(width, height)
    seed: int = 0
    shard_size: int = 64
    kvp: float = 90.0
    overwrite: bool = False


def label_map_from_node(node, reference_node=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(labels [k, j, i], IJK->world matrix, {label: name}) of a label map or segmentation node."""
    if node.IsA("vtkMRMLSegmentationNode"):
        logic = getattr(getattr(getattr(slicer, "modules", None), "segmentations", None), "logic", None)
        if logic is None:
            raise InputError(f"{node_label(node)} is a segmentation, and this Slicer has no Segmentations module "
                             "to export it.", "Export it to a label map volume (Segmentations module) and pick that.")
        scene = node.GetScene()
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            logic().ExportVisibleSegmentsToLabelmapNode(node, labelmap, reference_node)
            labels, matrix, _ = label_map_from_node(labelmap)
            segmentation = node.GetSegmentation()
            names = {}
            for index in range(segmentation.GetNumberOfSegments()):
                segment = segmentation.GetNthSegment(index)
                if segment.GetLabelValue() > 0:
                    names[int(segment.GetLabelValue())] = segment.GetName()
            return labels, matrix, names
        finally:
            scene.RemoveNode(labelmap)
    if not node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{node_label(node)} is a {node.GetClassName()}, not a label map or segmentation.",
                         "Pick a label map volume or a segmentation for the structures to project.")
    labels = np.array(slicer.util.arrayFromVolume(node), copy=True)
    matrix = ijk_to_world_matrix(node)
    names = {}
    display = node.GetDisplayNode()
    colors = display.GetColorNode() if display is not None else None
    for value in np.unique(labels):
        if value > 0:
            name = colors.GetColorName(int(value)) if colors is not None else ""
            names[int(value)] = name if name and name != "(none)" else f"label_{int(value)}"
    return labels, matrix, names


def _config(request: DatasetRequest, out: Path):
    from ..dataset.config import CTEntry, GenerateConfig
    from ..dataset.inputs import INPUTS, write_label_map, write_landmarks, write_volume
    from ..dataset.spec import parse_jitter, parse_randomize, parse_sample

    if not request.ct_nodes:
        raise InputError("No CT volume is selected for the dataset.", "Pick one or more CT volumes.")
    for option, nodes in (("landmarks", request.landmarks_nodes), ("label maps", request.label_nodes)):
        if nodes and len(nodes) != len(request.ct_nodes):
            raise InputError(f"{len(nodes)} {option} for {len(request.ct_nodes)} CT volume(s).",
                             f"Give one entry of {option} per CT (None where a CT has none).")
    sampling = parse_sample(request.sample)
    jitter = parse_jitter(request.jitter)
    randomize = parse_randomize(request.randomize)
    folder = out / INPUTS
    folder.mkdir(exist_ok=True)
    entries, label_names = [], {}
    for index, node in enumerate(request.ct_nodes):
        check_ct_node(node)
        ct_path = write_volume(volume_from_node(node), folder / f"ct{index:04d}.nrrd")
        landmarks_path = labels_path = None
        marks = request.landmarks_nodes[index] if request.landmarks_nodes else None
        if marks is not None:
            landmarks_path = write_landmarks(landmarks_from_node(marks), folder / f"ct{index:04d}_landmarks.csv")
        label_node = request.label_nodes[index] if request.label_nodes else None
        if label_node is not None:
            labels, matrix, names = label_map_from_node(label_node, node)
            labels_path = write_label_map(labels, matrix, folder / f"ct{index:04d}_labels.nrrd")
            for label, name in names.items():
                label_names.setdefault(label, name)
        entries.append(CTEntry(str(ct_path), None if landmarks_path is None else str(landmarks_path),
                               None if labels_path is None else str(labels_path)))
    return GenerateConfig(cts=entries, sampling=sampling, jitter=jitter, randomize=randomize,
                          stages=tuple(request.stages), width=int(request.width), height=int(request.height),
                          pixel_spacing_mm=request.pixel_spacing_mm,
                          seed=int(request.seed), kvp=float(request.kvp), label_names=label_names,
                          shard_size=int(request.shard_size))


def generate_dataset(request: DatasetRequest, progress=None, cancel=None):
    """Run the engine's generator on the request's nodes; returns its ``GenerateReport``.

    ``progress(done, total, message)`` reports images; ``cancel()`` returning True stops after
    the current image (the report says ``cancelled``; the same request later resumes).
    """
    from ..dataset.runner import claim_output, generate

    out = claim_output(Path(request.out))
    config = _config(request, out)
    return generate(config, out, overwrite=request.overwrite, progress=progress, cancel=cancel)
