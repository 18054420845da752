"""The settings of one dataset: everything that decides its bytes, and nothing that does not.

How the work is run (serial, ``--workers K``, Ray, ``--shard i/n``) is not part
of the configuration: any way of running the same configuration writes the
same files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..geometry import DETECTOR_SIDE_MM
from ..materials import DEFAULT_DENSITY_MODEL, DEFAULT_METHOD
from ..metal import DEFAULT_METAL
from .spec import Jitter, PoseSampling

FORMAT_NAME = "deepdrr-slicer-dataset"
FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 64
DEFAULT_HEATMAP_SIGMA_PX = 2.0


@dataclass(frozen=True)
class CTEntry:
    """One CT with its optional landmarks and label map (paths as the user gave them)."""

    ct: str
    landmarks: str | None = None
    labels: str | None = None

    def to_dict(self) -> dict:
        return {"ct": self.ct, "landmarks": self.landmarks, "labels": self.labels}


#: Settings that only some stages use: drawing them for a dataset without one of those stages would change
#: nothing while the metadata records the draws. An empty tuple: no stage of a dataset uses it.
SETTING_STAGES = {
    "mas": ("noisy", "final"),
    "electronic_noise_keV": ("noisy", "final"),
    "scatter_photons": ("scatter", "total"),
    "scatter_smoothing_mm": ("scatter", "total"),
    "grid_ratio": (),
    "grid_lines_per_cm": (),
}


@dataclass
class GenerateConfig:
    cts: list                                  # [CTEntry]
    sampling: PoseSampling | None = None       # --sample
    poses: list | None = None                  # --poses (parsed by spec.load_poses)
    poses_source: str | None = None
    jitter: Jitter = field(default_factory=Jitter)
    randomize: dict = field(default_factory=dict)   # name -> Distribution
    stages: tuple = ("primary",)
    width: int = 256
    height: int = 256
    pixel_spacing_mm: float | None = None      # default: the 298 mm panel over max(width, height)
    seed: int = 0
    kvp: float = 90.0
    filtration: dict = field(default_factory=lambda: {"Al": 3.3})
    materials: str = DEFAULT_METHOD            # as `simulate`: the network by default
    density_model: str = DEFAULT_DENSITY_MODEL
    metal: str = DEFAULT_METAL
    algorithm: str | None = None               # None: the pipeline's default
    device: str = "auto"
    heatmap_sigma_px: float = DEFAULT_HEATMAP_SIGMA_PX   # 0: no heatmaps
    mask_algorithm: str = "siddon"
    label_names: dict = field(default_factory=dict)      # label id -> name
    shard_size: int = DEFAULT_SHARD_SIZE

    @property
    def spacing_mm(self) -> float:
        return self.pixel_spacing_mm if self.pixel_spacing_mm is not None else DETECTOR_SIDE_MM / max(self.width,
                                                                                                      self.height)

    def validate(self) -> None:
        if not self.cts:
            raise InputError("No CT was given.", "Give --ct PATH (repeat it for several CTs) or --ct-list FILE.")
        if (self.sampling is None) == (self.poses is None):
            raise InputError("Give exactly one of --sample and --poses.",
                             "E.g. --sample alpha=-40:110,beta=-30:30,n=1000, or --poses poses.json.")
        for name, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, int) or value < 1 or value > 16384:
                raise InputError(f"Detector {name} {value!r} is not 1-16384 pixels.", "Give --size W H, e.g. 256 256.")
        if self.pixel_spacing_mm is not None and not self.pixel_spacing_mm > 0:
            raise InputError(f"Pixel spacing {self.pixel_spacing_mm} mm is not positive.", "Give --pixel-spacing > 0.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"Seed {self.seed!r} is not a whole number >= 0.", "Give --seed N with N >= 0.")
        if not self.heatmap_sigma_px >= 0:
            raise InputError(f"Heatmap sigma {self.heatmap_sigma_px} px is negative.",
                             "Give --heatmap-sigma >= 0 (0 writes no heatmaps).")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise InputError(f"Shard size {self.shard_size!r} is not a whole number >= 1.",
                             "Give --shard-size N, e.g. 64 images per shard.")
        if not self.stages:
            raise InputError("No stage was chosen.", "Give --stages, e.g. --stages primary.")
        if len(set(self.stages)) != len(self.stages):
            raise InputError(f"--stages lists a stage twice: {','.join(self.stages)}.", "Give each stage once.")
        for name in sorted(self.randomize):
            users = SETTING_STAGES.get(name)
            if users is None or set(users) & set(self.stages):
                continue
            why = (f"no stage in --stages {','.join(self.stages)} uses it" if users
                   else "datasets are rendered without an anti-scatter grid")
            raise InputError(f"--randomize {name}: {why}, so its draws would change nothing in the images while "
                             "each sample's metadata records them.",
                             f"Add {' or '.join(users)} to --stages, or leave {name} out of --randomize." if users
                             else f"Leave {name} out of --randomize.")
        if self.sampling is not None and "sid" in self.sampling.parameters and "sid" in self.randomize:
            raise InputError("sid is given in both --sample and --randomize.", "Give it in one of them.")
        if self.sampling is not None and "sod" in self.sampling.parameters and "sod" in self.randomize:
            raise InputError("sod is given in both --sample and --randomize.", "Give it in one of them.")

    def to_dict(self) -> dict:
        """Everything that decides the dataset's content (compared on resume)."""
        return {
            "cts": [entry.to_dict() for entry in self.cts],
            "sample": None if self.sampling is None else self.sampling.to_dict(),
            "poses": self.poses,
            "poses_source": self.poses_source,
            "jitter": self.jitter.to_dict(),
            "randomize": {name: d.text() for name, d in sorted(self.randomize.items())},
            "stages": list(self.stages),
            "size": [self.width, self.height],
            "pixel_spacing_mm": self.spacing_mm,
            "seed": self.seed,
            "settings": {"kvp": self.kvp, "filtration": dict(self.filtration), "materials": self.materials,
                         "density_model": self.density_model, "metal": self.metal,
                         "algorithm": self.algorithm, "device": self.device},
            "heatmap_sigma_px": self.heatmap_sigma_px,
            "mask_algorithm": self.mask_algorithm,
            "label_names": {str(k): v for k, v in sorted(self.label_names.items())},
            "shard_size": self.shard_size,
        }


def read_ct_list(path) -> list[CTEntry]:
    """A text file with one CT per line, or a CSV whose header names ``ct`` (and optionally
    ``landmarks``, ``labels``). Blank lines and lines starting with # are ignored; relative
    paths are taken relative to the list's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CT list not found: {path}.", "Check the path given to --ct-list.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"CT list {path} cannot be read ({error}).", "Give a UTF-8 text file, one CT per line.") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"CT list {path} names no CT.", "Write one CT path per line.")
    base = path.parent

    def resolve(value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        candidate = Path(value.strip())
        return str(candidate if candidate.is_absolute() else base / candidate)

    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = [cell.strip().lower() for cell in rows[0]]
    if "ct" in header:
        unknown = set(header) - {"ct", "landmarks", "labels"}
        if unknown:
            raise InputError(f"CT list {path} has unknown column(s) {sorted(unknown)}.",
                             "Use the columns ct, landmarks, labels.")
        entries = []
        for number, row in enumerate(rows[1:], start=2):
            cells = dict(zip(header, row))
            if not cells.get("ct", "").strip():
                raise InputError(f"CT list {path} line {number} has no ct path.", "Give a CT path on every line.")
            entries.append(CTEntry(resolve(cells["ct"]), resolve(cells.get("landmarks")), resolve(cells.get("labels"))))
        if not entries:
            raise InputError(f"CT list {path} names no CT.", "Write one CT path per line under the header.")
        return entries
    return [CTEntry(resolve(line)) for line in lines]


def read_label_names(path) -> dict:
    """CSV of ``id,name`` (a header line is skipped) -> {id: name}."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label names file not found: {path}.", "Give a CSV with lines id,name.")
    names = {}
    for number, row in enumerate(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            label = int(row[0])
        except ValueError:
            if number == 1:
                continue  # header
            raise InputError(f"{path} line {number}: {row[0]!r} is not a label id.", "Write lines as id,name.") from None
        if len(row) < 2 or not row[1].strip():
            raise InputError(f"{path} line {number}: label {label} has no name.", "Write lines as id,name.")
        names[label] = row[1].strip()
    return names


__all__ = ["CTEntry", "GenerateConfig", "read_ct_list", "read_label_names", "FORMAT_NAME", "FORMAT_VERSION"]
