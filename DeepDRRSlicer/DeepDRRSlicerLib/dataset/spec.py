"""What to generate: pose sampling, jitter and physics randomisation, parsed and checked.

Text forms (the CLI's ``--sample``, ``--jitter`` and ``--randomize``) are
comma-separated ``name=value`` items. A value is

* ``X``        a fixed number;
* ``A:B``      uniform in [A, B];
* ``A:B:log``  log-uniform in [A, B] (A, B > 0), e.g. mAs;
* ``A:B/N``    (``--sample`` only) N evenly spaced values from A to B, a grid;
* ``X|Y|Z``    one of the listed numbers, each equally likely.

Every draw comes from the seed alone (see :mod:`.plan`), so the same
specification and seed give the same poses and parameters on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import DEFAULT_SID_MM, DEFAULT_SOD_MM

POSE_KEYS = ("alpha", "beta", "sid", "sod")
JITTER_KEYS = ("iso", "roll")
GEOMETRY_PHYSICS_KEYS = ("sid", "sod")
FILTRATION_PREFIX = "filtration."


@dataclass(frozen=True)
class Distribution:
    """One randomised quantity: fixed, uniform, log-uniform, a grid or a choice."""

    kind: str                 # "fixed" | "uniform" | "log" | "grid" | "choice"
    values: tuple             # fixed: (x,); uniform/log: (a, b); grid: (a, b, n); choice: (x, y, ...)

    @property
    def low(self) -> float:
        return min(self.values[:2]) if self.kind in ("uniform", "log", "grid") else min(self.values)

    @property
    def high(self) -> float:
        return max(self.values[:2]) if self.kind in ("uniform", "log", "grid") else max(self.values)

    def grid_values(self) -> np.ndarray:
        if self.kind == "grid":
            return np.linspace(self.values[0], self.values[1], int(self.values[2]))
        if self.kind == "fixed":
            return np.array([self.values[0]], dtype=np.float64)
        if self.kind == "choice":
            return np.array(self.values, dtype=np.float64)
        raise ValueError("not a grid")

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(count, float(self.values[0]))
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1], size=count)
        if self.kind == "log":
            return np.exp(rng.uniform(math.log(self.values[0]), math.log(self.values[1]), size=count))
        if self.kind == "choice":
            return np.asarray(self.values, dtype=np.float64)[rng.integers(0, len(self.values), size=count)]
        raise ValueError("a grid is not drawn at random")

    def text(self) -> str:
        if self.kind == "fixed":
            return _number_text(self.values[0])
        if self.kind == "uniform":
            return f"{_number_text(self.values[0])}:{_number_text(self.values[1])}"
        if self.kind == "log":
            return f"{_number_text(self.values[0])}:{_number_text(self.values[1])}:log"
        if self.kind == "grid":
            return f"{_number_text(self.values[0])}:{_number_text(self.values[1])}/{int(self.values[2])}"
        return "|".join(_number_text(v) for v in self.values)


def _number_text(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _number(text: str, option: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{option}: the value {text!r} of {name!r} is not a finite number.",
                         f"Write {option} items as name=X, name=A:B, name=A:B:log or name=X|Y|Z.")
    return value


def parse_distribution(name: str, text: str, option: str, allow_grid: bool = False) -> Distribution:
    text = text.strip()
    if "|" in text:
        return Distribution("choice", tuple(_number(part, option, name) for part in text.split("|")))
    if "/" in text:
        if not allow_grid:
            raise InputError(f"{option}: grid values ({name}={text}) are only allowed in --sample.",
                             f"Give {name} as A:B (uniform) or X|Y|Z (choice).")
        span, _, count_text = text.partition("/")
        low, sep, high = span.partition(":")
        count = _number(count_text, option, name)
        if not sep or count < 1 or not count.is_integer():
            raise InputError(f"{option}: cannot read the grid {name}={text}.",
                             f"Write a grid as {name}=A:B/N with N a whole number >= 1.")
        return Distribution("grid", (_number(low, option, name), _number(high, option, name), int(count)))
    parts = text.split(":")
    if len(parts) == 1:
        return Distribution("fixed", (_number(parts[0], option, name),))
    if len(parts) == 2:
        low, high = _number(parts[0], option, name), _number(parts[1], option, name)
        _check_order(name, text, option, low, high)
        return Distribution("uniform", (low, high))
    if len(parts) == 3 and parts[2].strip().lower() == "log":
        low, high = _number(parts[0], option, name), _number(parts[1], option, name)
        _check_order(name, text, option, low, high)
        if low <= 0 or high <= 0:
            raise InputError(f"{option}: the log-uniform range {name}={text} includes values <= 0.",
                             "Give a log-uniform range of positive numbers, e.g. mas=0.5:5:log.")
        return Distribution("log", (low, high))
    raise InputError(f"{option}: cannot read {name}={text}.",
                     f"Write {option} items as name=X, name=A:B, name=A:B:log or name=X|Y|Z.")


def _check_order(name: str, text: str, option: str, low: float, high: float) -> None:
    if low > high:
        raise InputError(f"{option}: the range {name}={text} runs from high to low.",
                         f"Give the smaller value first, e.g. {name}={_number_text(high)}:{_number_text(low)}.")


def check_carm_distances(sampling: "PoseSampling | None", randomize: dict) -> None:
    """Refuse SID and SOD ranges that can draw an SID not beyond the SOD (the isocentre at or behind the
    detector) now, before anything is rendered, rather than at the first such draw."""
    def source(name):
        if sampling is not None and name in sampling.parameters and name not in randomize:
            return sampling.parameters[name], f"--sample {name}={sampling.parameters[name].text()}"
        return _distance_source(name, randomize, {})

    sid, sod = source("sid"), source("sod")
    _refuse_meeting_distances(sid, sod, "", "Keep every SID above every SOD, e.g. an SID range starting above "
                                            f"{_number_text(sod[0].high)} mm.")


def check_pose_file_distances(poses: list, randomize: dict, source: str) -> None:
    """As :func:`check_carm_distances`, for each C-arm pose of a ``--poses`` file: its own SID/SOD (or the
    default), unless ``--randomize`` draws them. Refused before anything is rendered, naming the pose."""
    for number, pose in enumerate(poses):
        if "geometry" not in pose:
            sid, sod = _distance_source("sid", randomize, pose), _distance_source("sod", randomize, pose)
            _refuse_meeting_distances(sid, sod, f"{source} pose {number}: ",
                                      "Keep every SID above every SOD, in the pose file and in --randomize.")


def _distance_source(name: str, randomize: dict, pose: dict) -> tuple:
    """(Distribution, where it comes from) of the SID or SOD: --randomize, else the pose's own, else the default."""
    if name in randomize:
        return randomize[name], f"--randomize {name}={randomize[name].text()}"
    if name in pose:
        return Distribution("fixed", (pose[name],)), f"its {name} {_number_text(pose[name])} mm"
    default = DEFAULT_SID_MM if name == "sid" else DEFAULT_SOD_MM
    return Distribution("fixed", (default,)), f"the default {name.upper()} {_number_text(default)} mm"


def _refuse_meeting_distances(sid_source: tuple, sod_source: tuple, where: str, fix: str) -> None:
    (sid, sid_from), (sod, sod_from) = sid_source, sod_source
    if sid.low <= sod.high:
        raise InputError(f"{where}{sid_from} and {sod_from} can draw an SID of {_number_text(sid.low)} mm with an SOD "
                         f"of {_number_text(sod.high)} mm: the source-to-detector distance must exceed the source-to-"
                         "isocentre distance.", fix)


def _items(text: str, option: str) -> list[tuple[str, str]]:
    items = []
    seen = set()
    for raw in (text or "").split(","):
        if not raw.strip():
            continue
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise InputError(f"{option}: cannot read the item {raw.strip()!r}.",
                             f"Write {option} as comma-separated name=value items, e.g. alpha=-40:110,n=100.")
        if name in seen:
            raise InputError(f"{option}: {name!r} is given twice.", f"Give each name once in {option}.")
        seen.add(name)
        items.append((name, value))
    return items


@dataclass(frozen=True)
class PoseSampling:
    """C-arm poses drawn at random (``count`` per CT) or on a grid (cartesian product)."""

    parameters: dict        # key in POSE_KEYS -> Distribution
    count: int | None       # poses per CT; None for a grid

    @property
    def is_grid(self) -> bool:
        return self.count is None

    def to_dict(self) -> dict:
        return {"parameters": {k: v.text() for k, v in self.parameters.items()}, "count": self.count}


def parse_sample(text: str) -> PoseSampling:
    """``alpha=-40:110,beta=-30:30,n=1000`` (random) or ``alpha=-40:110/16,beta=0`` (grid)."""
    option = "--sample"
    parameters: dict = {}
    count = None
    for name, value in _items(text, option):
        if name == "n":
            number = _number(value, option, name)
            if number < 1 or not number.is_integer():
                raise InputError(f"--sample: n={value} is not a whole number of poses >= 1.",
                                 "Give the number of poses per CT, e.g. n=1000.")
            count = int(number)
        elif name in POSE_KEYS:
            parameters[name] = parse_distribution(name, value, option, allow_grid=True)
        else:
            raise InputError(f"--sample: unknown pose parameter {name!r}.",
                             f"Use {', '.join(POSE_KEYS)} and n (poses per CT); isocentre and roll "
                             "jitter go in --jitter.")
    grid = any(d.kind == "grid" for d in parameters.values())
    if grid:
        if count is not None:
            raise InputError("--sample mixes a grid (A:B/N) with n=...: the grid fixes the number of poses.",
                             "Drop n, or give ranges as A:B to draw n random poses.")
        random_ones = [k for k, d in parameters.items() if d.kind in ("uniform", "log")]
        if random_ones:
            raise InputError(f"--sample mixes a grid with random ranges ({', '.join(random_ones)}).",
                             "Give every parameter as a grid A:B/N or a fixed value, or none as a grid.")
    elif count is None:
        raise InputError("--sample has no n (poses per CT) and no grid (A:B/N).",
                         "Add n=..., e.g. --sample alpha=-40:110,beta=-30:30,n=1000.")
    sampling = PoseSampling(parameters, count)
    for name in ("sid", "sod"):
        if name in parameters and parameters[name].low <= 0:
            raise InputError(f"--sample: {name} must be positive ({parameters[name].text()}).",
                             f"Give {name} in mm, e.g. sid=950:1100.")
    return sampling


@dataclass(frozen=True)
class Jitter:
    """Isocentre offsets (uniform in ±iso mm along R, A and S) and roll about the beam (±roll degrees)."""

    iso_mm: float = 0.0
    roll_deg: float = 0.0

    def to_dict(self) -> dict:
        return {"iso_mm": self.iso_mm, "roll_deg": self.roll_deg}


def parse_jitter(text: str | None) -> Jitter:
    values = {}
    for name, value in _items(text or "", "--jitter"):
        if name not in JITTER_KEYS:
            raise InputError(f"--jitter: unknown item {name!r}.",
                             "Use iso=MM (isocentre offset, each axis) and roll=DEG (rotation about the beam).")
        number = _number(value, "--jitter", name)
        if number < 0:
            raise InputError(f"--jitter: {name}={value} is negative.", f"Give {name} as a half-width >= 0.")
        values[name] = number
    return Jitter(iso_mm=values.get("iso", 0.0), roll_deg=values.get("roll", 0.0))


def randomizable_settings() -> dict[str, type]:
    """Numeric fields of the pipeline's SimulationSettings, by name (e.g. kvp; mas once exposure exists)."""
    from ..pipeline import SimulationSettings

    found = {}
    for item in dataclasses.fields(SimulationSettings):
        default = getattr(SimulationSettings(), item.name)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and item.name != "seed":
            found[item.name] = type(default)
    return found


def parse_randomize(text: str | None) -> dict:
    """Physics parameters to draw per image: SimulationSettings fields, filtration.<element>, sid, sod."""
    available = randomizable_settings()
    result = {}
    for name, value in _items(text or "", "--randomize"):
        if name.startswith(FILTRATION_PREFIX):
            element = name[len(FILTRATION_PREFIX):]
            if not element.isalpha():
                raise InputError(f"--randomize: {name!r} does not name a filter material.",
                                 "Write filtration.Al=2:5 or filtration.Cu=0:0.3 (thickness in mm).")
        elif name not in available and name not in GEOMETRY_PHYSICS_KEYS:
            names = sorted([*available, *GEOMETRY_PHYSICS_KEYS]) + ["filtration.<element>"]
            raise InputError(f"--randomize: {name!r} is not a setting this engine has.",
                             f"Randomise one of: {', '.join(names)}.")
        distribution = parse_distribution(name, value, "--randomize")
        if name.startswith(FILTRATION_PREFIX) and distribution.low < 0:
            raise InputError(f"--randomize: {name}={value} allows a negative thickness.",
                             "Give filter thicknesses >= 0 mm.")
        if name in GEOMETRY_PHYSICS_KEYS and distribution.low <= 0:
            raise InputError(f"--randomize: {name}={value} allows a distance <= 0.", f"Give {name} in mm > 0.")
        result[name] = distribution
    return result


def load_poses(path) -> list[dict]:
    """A JSON list of poses (or ``{"poses": [...]}``). Each pose is either C-arm parameters
    (``alpha``, ``beta``, optional ``sid``, ``sod``, ``roll``, ``isocenter`` [R, A, S]) or a
    detector geometry (``source``, ``detector_origin``, ``u``, ``v``, ``width``, ``height``).
    An optional ``ct`` (a CT's index in the list, or its path as given) limits a pose to one CT."""
    from ..geometry import DetectorGeometry

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Pose file not found: {path}.", "Check the path given to --poses.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"Pose file {path} is not valid JSON ({error}).", "Fix the JSON syntax.") from None
    if isinstance(data, dict) and "poses" in data:
        data = data["poses"]
    if not isinstance(data, list) or not data:
        raise InputError(f"Pose file {path} holds no list of poses.",
                         'Write a JSON list, e.g. [{"alpha": 0, "beta": 0}, {"alpha": 30, "beta": 10}].')
    poses = []
    for number, pose in enumerate(data):
        where = f"{path} pose {number}"
        if not isinstance(pose, dict):
            raise InputError(f"{where} is not a JSON object.", "Give each pose as {\"alpha\": ..., \"beta\": ...}.")
        if "source" in pose:
            DetectorGeometry.from_dict(pose)  # validates
            poses.append({"geometry": {k: pose[k] for k in pose if k != "ct"}, "ct": pose.get("ct")})
            continue
        unknown = set(pose) - {"alpha", "beta", "sid", "sod", "roll", "isocenter", "ct"}
        if unknown:
            raise InputError(f"{where} has unknown field(s) {sorted(unknown)}.",
                             "Use alpha, beta, sid, sod, roll, isocenter (and ct), or a detector geometry.")
        entry = {"ct": pose.get("ct")}
        for key in ("alpha", "beta", "sid", "sod", "roll"):
            if key in pose:
                entry[key] = _number(str(pose[key]), "--poses", f"{where} {key}")
        if "isocenter" in pose:
            iso = pose["isocenter"]
            if not isinstance(iso, list) or len(iso) != 3:
                raise InputError(f"{where}: isocenter is not [R, A, S].", "Give the isocentre as three numbers in mm.")
            entry["isocenter"] = [_number(str(x), "--poses", f"{where} isocenter") for x in iso]
        poses.append(entry)
    return poses


DEFAULT_POSE = {"alpha": 0.0, "beta": 0.0, "sid": DEFAULT_SID_MM, "sod": DEFAULT_SOD_MM}

__all__ = ["Distribution", "PoseSampling", "Jitter", "check_carm_distances", "check_pose_file_distances",
           "parse_sample", "parse_jitter", "parse_randomize", "parse_distribution", "load_poses",
           "randomizable_settings", "DEFAULT_POSE"]
