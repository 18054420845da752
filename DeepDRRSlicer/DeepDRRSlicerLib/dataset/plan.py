"""The plan: which images a dataset holds, drawn from the seed alone.

Images are numbered CT by CT (all poses of CT 0, then CT 1, ...). Each CT's
poses and physics parameters come from random streams keyed by
``(seed, CT index, parameter name)``, so adding a randomised parameter does
not move the poses, and a CT's images do not depend on the other CTs. Each
image also gets its own seed (for the noise stage), drawn from the CT's
``image.seed`` stream. Shards are fixed blocks of ``shard_size`` consecutive
images: who renders a shard, and when, never changes what is in it.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import CArm, DetectorGeometry, geometry_from_pose, roll_about_beam
from .config import GenerateConfig
from .spec import DEFAULT_POSE, FILTRATION_PREFIX


@dataclass
class CTInfo:
    index: int
    path: str
    status: str = "ok"                 # "ok" or "skipped"
    reason: str | None = None
    sha256: str | None = None
    shape_kji: list | None = None
    spacing_mm: list | None = None
    corners_ras: list | None = None
    isocenter_ras: list | None = None
    landmark_labels: list = field(default_factory=list)
    label_ids: list = field(default_factory=list)
    image_count: int = 0
    checked_poses: int = 0          # poses checked for a ray through the CT while planning (the first ones)
    blind_poses: int = 0            # of those, how many put no ray through it

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Item:
    """One image of the dataset."""

    index: int            # global, 0-based
    key: str              # sample key in the shards, e.g. ct0003_pose000017
    ct: int
    pose_index: int
    pose: dict            # alpha, beta, sid, sod, roll (deg/mm), isocenter [R, A, S]; or {"geometry": {...}}
    physics: dict         # drawn values, by --randomize name
    seed: int

    def to_dict(self) -> dict:
        return {"index": self.index, "key": self.key, "ct": self.ct, "pose_index": self.pose_index,
                "pose": self.pose, "physics": self.physics, "seed": self.seed}


def sample_key(ct: int, pose_index: int) -> str:
    return f"ct{ct:04d}_pose{pose_index:06d}"


def _stream(seed: int, ct: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ct, zlib.crc32(name.encode()))))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in files:
        if path.is_dir():
            digest.update(str(item.relative_to(path)).encode() + b"\0")
        with open(item, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def geometry_misses_volume(geometry: DetectorGeometry, corners_ras) -> bool:
    """True when no detector ray can cross the CT's box (its projected corners miss the panel)."""
    uv, depth = geometry.project(np.asarray(corners_ras, dtype=np.float64))
    if np.any(depth <= 0):
        return False   # the box straddles the source plane: cannot rule it out cheaply
    low, high = uv.min(axis=0), uv.max(axis=0)
    return bool(high[0] < -0.5 or low[0] > geometry.width - 0.5 or high[1] < -0.5 or low[1] > geometry.height - 0.5)


POSES_CHECKED_WHILE_PLANNING = 256


class Plan:
    """The dataset's images and shards, from a configuration and the CTs' contents."""

    def __init__(self, config: GenerateConfig, cts: list, structures: list, landmark_labels: list,
                 material_names: tuple):
        self.config = config
        self.cts = cts
        self.structures = structures            # [(label id, name)]
        self.landmark_labels = landmark_labels
        self.material_names = tuple(material_names)
        self.offsets = np.concatenate([[0], np.cumsum([info.image_count for info in cts])]).astype(int)

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    @property
    def shard_count(self) -> int:
        return math.ceil(self.total / self.config.shard_size)

    def shard_range(self, shard: int) -> tuple[int, int]:
        start = shard * self.config.shard_size
        return start, min(self.total, start + self.config.shard_size)

    def items(self, start: int = 0, stop: int | None = None) -> list[Item]:
        stop = self.total if stop is None else stop
        found = []
        for info in self.cts:
            first, last = int(self.offsets[info.index]), int(self.offsets[info.index + 1])
            if last <= start or first >= stop or info.image_count == 0:
                continue
            found.extend(_draw_ct_items(self, info.index, max(start, first) - first, min(stop, last) - first))
        return found

    def shard_items(self, shard: int) -> list[Item]:
        return self.items(*self.shard_range(shard))

    def ct_items(self, ct: int) -> list[Item]:
        return _draw_ct_items(self, ct)

    def geometry(self, item: Item) -> DetectorGeometry:
        return item_geometry(item, self.config)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "cts": [info.to_dict() for info in self.cts],
                "structures": [{"id": label, "name": name} for label, name in self.structures],
                "landmark_labels": list(self.landmark_labels), "material_names": list(self.material_names),
                "images": self.total, "shards": self.shard_count}


def effective_pose(item: Item) -> dict:
    """The pose as rendered: a randomised SID or SOD (in ``physics``) replaces the pose's own."""
    pose = dict(item.pose)
    if "geometry" not in pose:
        for name in ("sid", "sod"):
            if name in item.physics:
                pose[name] = float(item.physics[name])
    return pose


def item_geometry(item: Item, config: GenerateConfig) -> DetectorGeometry:
    if "geometry" in item.pose:
        return DetectorGeometry.from_dict(item.pose["geometry"])
    pose = effective_pose(item)
    sid, sod = pose["sid"], pose["sod"]
    carm = CArm(alpha_deg=pose["alpha"], beta_deg=pose["beta"], sid_mm=sid, sod_mm=sod,
                isocenter_ras=tuple(pose["isocenter"]), width=config.width, height=config.height,
                pixel_spacing_mm=config.spacing_mm)
    matrix = carm.pose_matrix()
    if pose.get("roll", 0.0):
        matrix = matrix @ roll_about_beam(pose["roll"])
    return geometry_from_pose(matrix, sid, sod, config.width, config.height, config.spacing_mm)


def _draw_ct_items(plan: Plan, ct: int, first: int = 0, last: int | None = None) -> list[Item]:
    """Items ``first`` to ``last`` (pose indices) of CT ``ct``. Every draw is made for all of the
    CT's poses at once (so a pose does not depend on which slice is asked for); only the
    asked-for items are built."""
    columns = _ct_columns(id(plan), plan, ct)
    info = plan.cts[ct]
    last = info.image_count if last is None else min(last, info.image_count)
    offset = int(plan.offsets[ct])
    items = []
    for n in range(first, last):
        if columns["poses"] is not None:
            pose = copy.deepcopy(columns["poses"][n])
        else:
            pose = {k: float(columns[k][n]) for k in ("alpha", "beta", "sid", "sod")}
        if "geometry" not in pose:
            base_iso = pose.get("isocenter", info.isocenter_ras)
            pose["isocenter"] = [float(base_iso[a] + columns["iso"][n, a]) for a in range(3)]
            pose["roll"] = float(pose.get("roll", 0.0) + columns["roll"][n])
        physics = {name: float(values[n]) for name, values in columns["physics"].items()}
        items.append(Item(index=offset + n, key=sample_key(ct, n), ct=ct, pose_index=n, pose=pose,
                          physics=physics, seed=int(columns["seed"][n])))
    return items


@lru_cache(maxsize=8)
def _ct_columns(_plan_id, plan: Plan, ct: int) -> dict:
    config = plan.config
    info = plan.cts[ct]
    count = info.image_count
    seed = config.seed
    columns: dict = {"poses": None}
    if config.sampling is not None:
        params = config.sampling.parameters
        if config.sampling.is_grid:
            grids = [params[k].grid_values() if k in params else np.array([DEFAULT_POSE[k]])
                     for k in ("alpha", "beta", "sid", "sod")]
            mesh = np.meshgrid(*grids, indexing="ij")
            columns.update({k: m.ravel() for k, m in zip(("alpha", "beta", "sid", "sod"), mesh)})
        else:
            for key in ("alpha", "beta", "sid", "sod"):
                if key in params:
                    columns[key] = params[key].draw(_stream(seed, ct, f"pose.{key}"), count)
                else:
                    columns[key] = np.full(count, DEFAULT_POSE[key])
    else:
        poses = []
        for entry in _poses_for_ct(config, info):
            if "geometry" in entry:
                poses.append({"geometry": entry["geometry"]})
            else:
                pose = {k: float(entry.get(k, DEFAULT_POSE[k])) for k in ("alpha", "beta", "sid", "sod")}
                if "roll" in entry:
                    pose["roll"] = float(entry["roll"])
                if "isocenter" in entry:
                    pose["isocenter"] = [float(x) for x in entry["isocenter"]]
                poses.append(pose)
        columns["poses"] = poses
    jitter = config.jitter
    columns["iso"] = (_stream(seed, ct, "jitter.iso").uniform(-jitter.iso_mm, jitter.iso_mm, size=(count, 3))
                      if jitter.iso_mm > 0 else np.zeros((count, 3)))
    columns["roll"] = (_stream(seed, ct, "jitter.roll").uniform(-jitter.roll_deg, jitter.roll_deg, size=count)
                       if jitter.roll_deg > 0 else np.zeros(count))
    columns["physics"] = {name: config.randomize[name].draw(_stream(seed, ct, f"physics.{name}"), count)
                          for name in sorted(config.randomize)}
    columns["seed"] = _stream(seed, ct, "image.seed").integers(0, 2**62, size=count)
    return columns


def _poses_for_ct(config: GenerateConfig, info: CTInfo) -> list[dict]:
    chosen = []
    for entry in config.poses or []:
        target = entry.get("ct")
        if target is None or target == info.index or (isinstance(target, str) and target == info.path):
            chosen.append(entry)
    return chosen


def _count_for_ct(config: GenerateConfig, info: CTInfo) -> int:
    if config.sampling is not None:
        if config.sampling.is_grid:
            count = 1
            for key in ("alpha", "beta", "sid", "sod"):
                if key in config.sampling.parameters:
                    count *= len(config.sampling.parameters[key].grid_values())
            return count
        return config.sampling.count
    return len(_poses_for_ct(config, info))


def make_plan(config: GenerateConfig, progress=None) -> Plan:
    """Read every CT (and its landmarks and label map) once, check them, and lay out the images.

    A CT, landmark file or label map that cannot be read is reported and skipped. A pose
    range that puts no ray through a CT is reported; if no image of any CT would see its
    CT, this raises InputError.
    """
    config.validate()
    _check_physics_ranges(config)
    from ..materials import decompose

    infos = []
    structure_ids: set = set()
    landmark_labels: list = []
    material_names = None
    for index, entry in enumerate(config.cts):
        info = CTInfo(index=index, path=entry.ct)
        infos.append(info)
        if progress is not None:
            progress(index, len(config.cts), f"checking CT {index + 1}/{len(config.cts)}")
        try:
            volume, landmarks, labels = load_ct_entry(entry)
        except InputError as error:
            info.status, info.reason = "skipped", f"{error.problem} {error.fix}"
            continue
        except Exception as error:  # noqa: BLE001 - any unreadable CT is skipped and reported
            info.status, info.reason = "skipped", f"cannot read it: {type(error).__name__}: {error}"
            continue
        info.sha256 = file_sha256(Path(entry.ct))
        info.shape_kji = list(volume.hu.shape)
        info.spacing_mm = [round(float(s), 6) for s in volume.spacing]
        info.corners_ras = volume.corners_ras().round(6).tolist()
        if landmarks:
            info.isocenter_ras = np.mean([p.position_ras for p in landmarks], axis=0).round(6).tolist()
            info.landmark_labels = [p.label for p in landmarks]
            for label in info.landmark_labels:
                if label not in landmark_labels:
                    landmark_labels.append(label)
        else:
            info.isocenter_ras = volume.center_ras().round(6).tolist()
        if labels is not None:
            info.label_ids = sorted(int(x) for x in np.unique(labels) if x > 0)
            structure_ids.update(info.label_ids)
        if material_names is None:
            material_names = decompose(volume, config.materials, density_model=config.density_model,
                                       metal=config.metal).names
        info.image_count = _count_for_ct(config, info)
    if len(structure_ids) > 254:
        raise InputError(f"The label maps hold {len(structure_ids)} structures; at most 254 can be projected.",
                         "Merge labels, or give label maps with fewer structures.")
    structures = [(label, config.label_names.get(label, f"label_{label}")) for label in sorted(structure_ids)]
    plan = Plan(config, infos, structures, landmark_labels, material_names or ())
    readable = [info for info in infos if info.status == "ok"]
    if not readable:
        reasons = "; ".join(f"{info.path}: {info.reason}" for info in infos)
        raise InputError(f"None of the {len(infos)} CT(s) can be used ({reasons}).",
                         "Check the paths and formats (NIfTI, NRRD, MetaImage or a DICOM folder).")
    for info in readable:
        # a pose range that misses the CT shows in its first poses already; every pose is checked
        # again (cheaply) before it is rendered, and the report counts them all
        items = _draw_ct_items(plan, info.index, 0, POSES_CHECKED_WHILE_PLANNING)
        info.checked_poses = len(items)
        info.blind_poses = sum(geometry_misses_volume(plan.geometry(item), info.corners_ras) for item in items)
    if plan.total == 0:
        raise InputError("The pose list gives no pose for any readable CT.",
                         "Check the 'ct' fields in the pose file, or drop them to use every pose for every CT.")
    if all(info.blind_poses == info.checked_poses for info in readable if info.image_count):
        raise InputError("No pose puts a ray through any CT: every image would be blank"
                         + (f" (checked the first {POSES_CHECKED_WHILE_PLANNING} poses of each CT)."
                            if plan.total > POSES_CHECKED_WHILE_PLANNING else "."),
                         "Check the isocentre and angle ranges (the isocentre should lie inside the patient; "
                         "a pose file's isocenter is in RAS mm).")
    return plan


def _check_physics_ranges(config: GenerateConfig) -> None:
    from ..pipeline import check_spectrum

    base = settings_for(config, {})
    base.validate()
    for name, distribution in config.randomize.items():
        if name in ("sid", "sod"):
            continue
        for value in (distribution.low, distribution.high):
            trial = settings_for(config, {name: value})
            try:
                trial.validate()
                if name.startswith(FILTRATION_PREFIX) or name == "kvp":
                    check_spectrum(trial)   # an unknown filter material, or one that stops the beam
            except InputError as error:
                raise InputError(f"--randomize {name}={distribution.text()}: {error.problem}", error.fix) from None


def settings_for(config: GenerateConfig, physics: dict):
    """The pipeline settings of one image: the base settings with the drawn values."""
    from ..pipeline import SimulationSettings

    kwargs = {"kvp": config.kvp, "filtration": dict(config.filtration), "materials": config.materials,
              "density_model": config.density_model, "metal": config.metal, "device": config.device}
    if config.algorithm is not None:
        kwargs["algorithm"] = config.algorithm
    settings = SimulationSettings(**kwargs)
    if hasattr(settings, "stages"):
        # a pipeline that computes stages on request: ask only for those the dataset stores
        from .. import pipeline

        offered = tuple(getattr(pipeline, "STAGES", ()))
        wanted = tuple(stage for stage in config.stages if stage in offered)
        settings.stages = wanted or offered[:1]
    for name, value in physics.items():
        if name in ("sid", "sod"):
            continue
        if name.startswith(FILTRATION_PREFIX):
            settings.filtration[name[len(FILTRATION_PREFIX):]] = float(value)
        else:
            current = getattr(settings, name)
            setattr(settings, name, int(round(value)) if isinstance(current, int) else float(value))
    return settings


def load_ct_entry(entry):
    """Volume, landmarks (or None) and label map on the CT grid (or None) of one CT entry."""
    from ..landmarks import load_landmarks
    from ..volume import load_volume

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = load_volume(entry.ct)
    landmarks = load_landmarks(entry.landmarks) if entry.landmarks else None
    labels = load_label_map(entry.labels, volume) if entry.labels else None
    return volume, landmarks, labels


def load_label_map(path, volume) -> np.ndarray:
    """A label map (NIfTI/NRRD/...) as integers on the CT's voxel grid [k, j, i], resampled
    (nearest neighbour) when its grid differs from the CT's."""
    import SimpleITK as sitk

    from ..volume import LPS_TO_RAS

    path = Path(path)
    if not path.exists():
        raise InputError(f"Label map not found: {path}.", "Check the path given to --labels.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"Cannot read label map {path}: {str(error).strip().splitlines()[-1]}",
                         "Give a label map as NIfTI or NRRD with integer labels.") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Label map {path} is not a 3D scalar image.", "Give a 3D label map (one integer per voxel).")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(f"Label map {path} holds non-integer values.", "Give integer labels (0 = background).")
    if array.size and array.min() < 0:
        raise InputError(f"Label map {path} holds negative labels.", "Give labels >= 0 (0 = background).")
    ras_to_lps = np.linalg.inv(LPS_TO_RAS)
    ct_lps = ras_to_lps @ volume.ijk_to_ras
    spacing = np.linalg.norm(ct_lps[:3, :3], axis=0)
    label_matrix = np.eye(4)
    label_matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    label_matrix[:3, 3] = image.GetOrigin()
    if array.shape == volume.hu.shape and np.allclose(label_matrix, ct_lps, atol=1e-3):
        return array.astype(np.int64)
    reference = sitk.Image([int(n) for n in volume.hu.shape[::-1]], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(x) for x in ct_lps[:3, 3]])
    reference.SetDirection([float(x) for x in (ct_lps[:3, :3] / spacing).ravel()])
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkInt32), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
    return sitk.GetArrayFromImage(resampled).astype(np.int64)


__all__ = ["Plan", "Item", "CTInfo", "make_plan", "effective_pose", "item_geometry", "settings_for", "load_ct_entry",
           "load_label_map", "geometry_misses_volume", "sample_key"]
