"""*Generate dataset* from scene nodes: the engine's generator, the same images as from files, resumable."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import require_slicer_core

slicer = require_slicer_core()

from DeepDRRSlicerLib import resources  # noqa: E402
from DeepDRRSlicerLib.cli import main  # noqa: E402
from DeepDRRSlicerLib.dataset.torch_data import ShardDataset  # noqa: E402
from DeepDRRSlicerLib.errors import InputError  # noqa: E402
from DeepDRRSlicerLib.mrml.dataset_logic import DatasetRequest, generate_dataset  # noqa: E402
from mrml_helpers import ijk_to_ras, node_checksum  # noqa: E402

SAMPLE = "alpha=-30:30,beta=-10:10,n=5"


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "report.json"}


@pytest.fixture
def bone_labels(scene, ct_node):
    """A label map node on the CT grid: 4 where the CT is bone, 0 elsewhere."""
    import vtk

    hu = slicer.util.arrayFromVolume(ct_node)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "bone")
    slicer.util.updateVolumeFromArray(node, (hu > 350).astype(np.uint8) * 4)
    matrix = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    return node


def _request(out, ct_node, landmarks_node, label_node=None, **kwargs):
    return DatasetRequest(out=str(out), ct_nodes=[ct_node], landmarks_nodes=[landmarks_node],
                          label_nodes=[label_node] if label_node is not None else [], sample=SAMPLE,
                          randomize="kvp=70:110", width=40, height=32, shard_size=2, **kwargs)


def test_nodes_give_the_same_images_as_the_files_they_came_from(tmp_path, ct_node, landmarks_node, bone_labels):
    before = node_checksum(ct_node)
    report = generate_dataset(_request(tmp_path / "from_nodes", ct_node, landmarks_node, bone_labels))
    assert report.complete and report.written == 5
    assert node_checksum(ct_node) == before
    assert main(["generate", "--ct", str(resources.sample_ct_path()), "--landmarks",
                 str(resources.sample_landmarks_path()), "--sample", SAMPLE, "--randomize", "kvp=70:110",
                 "--size", "40", "32", "--shard-size", "2", "--quiet", "--out", str(tmp_path / "from_files")]) == 0
    from DeepDRRSlicerLib.geometry import DetectorGeometry
    from DeepDRRSlicerLib.materials import decompose
    from DeepDRRSlicerLib.projector import project
    from DeepDRRSlicerLib.volume import load_volume

    materials = decompose(load_volume(resources.sample_ct_path()))
    from_nodes, from_files = ShardDataset(tmp_path / "from_nodes"), ShardDataset(tmp_path / "from_files")
    for index in range(5):
        (a, geometry, _, _), b = from_nodes.read_raw(index), from_files.read_raw(index)[0]
        np.testing.assert_allclose(a["primary"], b["primary"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a["landmarks"], b["landmarks"], rtol=1e-6, atol=1e-4)
        # the label map of bone projects where exact (Siddon) paths cross bone voxels: same rays, same projector
        bone = project(materials, DetectorGeometry.from_dict(geometry), algorithm="siddon").line_integrals[2]
        assert a["masks"].shape == (1, 32, 40)
        assert np.array_equal(a["masks"][0] > 0, bone > 0)
        path_mm = a["path_lengths"][0]
        assert np.all(path_mm[bone > 0] > 0) and path_mm.max() > 30
    structures = ShardDataset(tmp_path / "from_nodes").read_raw(0)[2]["structures"]
    assert structures == [{"id": 4, "name": structures[0]["name"]}]
    assert np.allclose(ijk_to_ras(bone_labels), ijk_to_ras(ct_node))


def test_a_cancelled_run_resumes_to_the_same_dataset(tmp_path, ct_node, landmarks_node):
    # an uninterrupted run, moved aside (the dataset records where its exported inputs are)
    generate_dataset(_request(tmp_path / "resumed", ct_node, landmarks_node))
    (tmp_path / "resumed").rename(tmp_path / "whole")
    done = []
    report = generate_dataset(_request(tmp_path / "resumed", ct_node, landmarks_node),
                              progress=lambda n, total, message: done.append(n),
                              cancel=lambda: max(done, default=0) >= 3)
    assert report.cancelled and not report.complete
    report = generate_dataset(_request(tmp_path / "resumed", ct_node, landmarks_node))
    assert report.complete and report.rendered_now == 2
    assert _digests(tmp_path / "resumed") == _digests(tmp_path / "whole")


def test_bad_requests_are_refused(tmp_path, scene, ct_node, landmarks_node):
    with pytest.raises(InputError, match="No CT volume"):
        generate_dataset(DatasetRequest(out=str(tmp_path / "a"), ct_nodes=[]))
    with pytest.raises(InputError, match="not a label map"):
        generate_dataset(_request(tmp_path / "b", ct_node, landmarks_node, label_node=ct_node))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="not a CT"):
        generate_dataset(DatasetRequest(out=str(tmp_path / "c"), ct_nodes=[labelmap]))
    with pytest.raises(InputError, match="no n"):
        generate_dataset(DatasetRequest(out=str(tmp_path / "d"), ct_nodes=[ct_node], sample="alpha=0:3"))
