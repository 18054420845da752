"""Landmarks: read them, project them onto the detector, export and draw them.

World frame: patient RAS, millimetres. Files stored in LPS (Slicer's default
for markups since 4.11) are converted to RAS here, at the reading edge, and
nowhere else.

Readers (:func:`load_landmarks`), chosen by the file name and, for ``.json``,
by the content:

* Slicer markups JSON (``.mrk.json``, or any ``.json`` with a ``markups``
  list): ``markups[].controlPoints[].{label, position}``, with
  ``markups[].coordinateSystem`` ``"LPS"`` (the default when absent) or
  ``"RAS"``. Points whose ``positionStatus`` is ``"undefined"`` or
  ``"missing"`` are skipped.
* Slicer ``.fcsv``: a ``# CoordinateSystem = LPS|RAS|0|1`` header line is
  required (``0`` = RAS, ``1`` = LPS in files older than Slicer 4.11);
  columns ``id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID``,
  or as named by a ``# columns =`` header line.
* Plain ``.csv`` with the header ``label,R,A,S`` (RAS mm); ``label,L,P,S``
  (LPS mm) is accepted too.
* ``.json`` written by :func:`write_landmarks_json` (the 3D positions are read
  back; the projection is recomputed by :func:`project_landmarks`).

Projection (:func:`project_landmarks`): pixel coordinates ``u`` (column) and
``v`` (row) with pixel centres at integers, ``depth_mm`` = distance from the
source along the principal axis (positive in front of the source), and
``visible`` = in front of the source AND on the detector. A point at or behind
the source is not an error: it is reported with ``visible=False`` and
``u = v = NaN``.

Exports: CSV with the header ``label,u,v,depth_mm,visible``, where ``visible``
is written ``true`` or ``false`` and a missing ``u``/``v`` is written ``nan``;
JSON with the same fields per landmark plus ``position_ras``, the 3x4
projection matrix and the full detector geometry (NaN is written as ``null``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .geometry import DetectorGeometry

__all__ = [
    "CSV_HEADER",
    "Landmark",
    "ProjectedLandmark",
    "draw_overlay",
    "load_landmarks",
    "project_landmarks",
    "read_landmarks_csv",
    "read_landmarks_json",
    "write_landmarks_csv",
    "write_landmarks_json",
]

CSV_HEADER = ("label", "u", "v", "depth_mm", "visible")
FCSV_COLUMNS = ("id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc",
                "associatedNodeID")
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_SUPPORTED = ".mrk.json, .json, .fcsv or .csv"


# ---- data ----------------------------------------------------------------------------------------
def _position(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{what}: the position {value!r} is not three numbers.",
                         "Give each landmark position as three numbers in mm.") from None
    if array.shape != (3,):
        raise InputError(f"{what}: the position has {array.size} values, expected 3.",
                         "Give each landmark position as three numbers in mm.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what}: the position {array.tolist()} contains NaN or infinity.",
                         "Give finite coordinates in mm, or delete the point.")
    return array


@dataclass(frozen=True, eq=False)
class Landmark:
    """A named point in patient RAS millimetres."""

    label: str
    position_ras: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "label", str(self.label))
        object.__setattr__(self, "position_ras", _position(self.position_ras, f"Landmark '{self.label}'"))


@dataclass(frozen=True, eq=False)
class ProjectedLandmark:
    """A landmark on the detector: pixel (u = column, v = row), depth along the principal axis.

    ``u`` and ``v`` are NaN when the point is at or behind the source (``depth_mm <= 0``).
    ``position_ras`` is NaN when it was read from a CSV export, which does not store it.
    """

    label: str
    position_ras: np.ndarray
    u: float
    v: float
    depth_mm: float
    visible: bool

    @property
    def uv(self) -> np.ndarray:
        return np.array([self.u, self.v])

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "position_ras": [_json_float(x) for x in np.asarray(self.position_ras, dtype=float)],
            "u": _json_float(self.u),
            "v": _json_float(self.v),
            "depth_mm": _json_float(self.depth_mm),
            "visible": bool(self.visible),
        }


# ---- projection ----------------------------------------------------------------------------------
def project_landmarks(landmarks, geometry: DetectorGeometry) -> list[ProjectedLandmark]:
    """Project landmarks (``Landmark`` objects) with ``geometry``; keeps their order."""
    landmarks = list(landmarks)
    if not landmarks:
        return []
    for item in landmarks:
        if not isinstance(item, Landmark):
            raise InputError(f"project_landmarks() got a {type(item).__name__}, not a Landmark.",
                             "Build Landmark(label, position_ras) objects, or use load_landmarks(path).")
    points = np.array([item.position_ras for item in landmarks])
    uv, depth = geometry.project(points)
    in_front = depth > 0
    uv = np.where(in_front[:, None], uv, np.nan)
    visible = in_front & geometry.contains_pixel(uv)  # NaN compares False: not on the detector
    return [
        ProjectedLandmark(item.label, item.position_ras.copy(), float(uv[n, 0]), float(uv[n, 1]),
                          float(depth[n]), bool(visible[n]))
        for n, item in enumerate(landmarks)
    ]


# ---- reading -------------------------------------------------------------------------------------
def load_landmarks(path) -> list[Landmark]:
    """Read 3D landmarks (RAS mm) from a Slicer ``.mrk.json``/``.fcsv``, a ``label,R,A,S``
    ``.csv`` or a ``.json`` written by :func:`write_landmarks_json`."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".json"):
        kind = "json"
    elif name.endswith(".fcsv"):
        kind = "fcsv"
    elif name.endswith(".csv"):
        kind = "csv"
    else:
        raise InputError(f"Landmark file {path} has an unknown extension '{path.suffix}'.",
                         f"Give a landmark file ending in {_SUPPORTED} (export markups from Slicer "
                         "with File > Save, or write a CSV with the header label,R,A,S).")
    text = _read_text(path)
    if kind == "fcsv":
        landmarks = _parse_fcsv(text, path)
    elif kind == "csv":
        landmarks = _parse_csv(text, path)
    else:
        data = _parse_json_text(text, path)
        if isinstance(data, dict) and "markups" in data:
            landmarks = _parse_markups(data, path)
        elif isinstance(data, dict) and "landmarks" in data:
            landmarks = [Landmark(p.label, p.position_ras) for p in _parse_export_json(data, path)]
        else:
            raise InputError(f"Landmark file {path} is JSON but neither Slicer markups (no 'markups' "
                             "list) nor a landmark export (no 'landmarks' list).",
                             "Save the points from Slicer as a .mrk.json, or write them with "
                             "write_landmarks_json().")
    if not landmarks:
        raise InputError(f"Landmark file {path} has no control points.",
                         "Place at least one point in it (in Slicer: Markups > Point list).")
    return landmarks


def read_landmarks_json(path) -> list[ProjectedLandmark]:
    """Read back a file written by :func:`write_landmarks_json`."""
    path = Path(path)
    data = _parse_json_text(_read_text(path), path)
    if not isinstance(data, dict) or "landmarks" not in data:
        raise InputError(f"{path} is not a landmark export: it has no 'landmarks' list.",
                         "Give a file written by write_landmarks_json() (deepdrr-slicer writes "
                         "one beside every image).")
    return _parse_export_json(data, path)


def read_landmarks_csv(path) -> list[ProjectedLandmark]:
    """Read back a file written by :func:`write_landmarks_csv` (``position_ras`` is NaN)."""
    path = Path(path)
    rows = _csv_rows(_read_text(path))
    if not rows:
        raise InputError(f"{path} is empty.", "Give a file written by write_landmarks_csv().")
    header = tuple(cell.strip() for cell in rows[0][1])
    if header != CSV_HEADER:
        raise InputError(f"{path}: the header is {','.join(header)!r}, expected {','.join(CSV_HEADER)!r}.",
                         "Give a file written by write_landmarks_csv().")
    result = []
    for line, cells in rows[1:]:
        _check_count(cells, path, line, len(CSV_HEADER), len(CSV_HEADER))
        label = cells[0]
        u, v, depth = (_number(cells[n], path, line, CSV_HEADER[n], allow_nan=n < 3) for n in (1, 2, 3))
        flag = cells[4].strip().lower()
        if flag not in ("true", "false"):
            raise InputError(f"{path} line {line}: 'visible' is {cells[4]!r}, expected true or false.",
                             "Write visible as true or false.")
        result.append(ProjectedLandmark(label, np.full(3, np.nan), u, v, depth, flag == "true"))
    return result


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"Landmark file not found: {path}.",
                         "Check the path; in Slicer, save the point list first (File > Save).")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"Landmark file {path} is not UTF-8 text.",
                         f"Give a text file ({_SUPPORTED}).") from None
    except OSError as error:
        raise InputError(f"Landmark file {path} cannot be read ({error.strerror}).",
                         "Check the file's permissions.") from None


def _parse_json_text(text: str, path: Path):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"Landmark file {path} is not valid JSON (line {error.lineno}, column "
                         f"{error.colno}: {error.msg}).",
                         "Fix the JSON syntax, or save the point list again from Slicer.") from None


def _coordinate_flip(system, path: Path, where: str) -> np.ndarray:
    key = str(system).strip().upper()
    if key in ("LPS", "1"):
        return _LPS_TO_RAS
    if key in ("RAS", "0"):
        return np.ones(3)
    raise InputError(f"Landmark file {path}: unknown coordinate system {system!r} ({where}).",
                     "Use LPS or RAS (in .fcsv files also 1 = LPS, 0 = RAS).")


def _parse_markups(data: dict, path: Path) -> list[Landmark]:
    markups = data.get("markups")
    if not isinstance(markups, list):
        raise InputError(f"Landmark file {path}: 'markups' is not a list.",
                         "Save the point list again from Slicer (File > Save, .mrk.json).")
    landmarks = []
    for m_index, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise InputError(f"Landmark file {path}: markups[{m_index}] is not an object.",
                             "Save the point list again from Slicer.")
        flip = _coordinate_flip(markup.get("coordinateSystem", "LPS"), path,
                                f"markups[{m_index}].coordinateSystem")
        units = str(markup.get("coordinateUnits", "mm")).strip().lower()
        if units != "mm":
            raise InputError(f"Landmark file {path}: markups[{m_index}] uses units {units!r}.",
                             "Save the points in millimetres (Slicer's default).")
        points = markup.get("controlPoints", [])
        if not isinstance(points, list):
            raise InputError(f"Landmark file {path}: markups[{m_index}].controlPoints is not a list.",
                             "Save the point list again from Slicer.")
        for p_index, point in enumerate(points):
            where = f"Landmark file {path}, markups[{m_index}].controlPoints[{p_index}]"
            if not isinstance(point, dict):
                raise InputError(f"{where} is not an object.", "Save the point list again from Slicer.")
            if str(point.get("positionStatus", "defined")).lower() in ("undefined", "missing"):
                continue
            if "position" not in point:
                raise InputError(f"{where} has no 'position'.",
                                 "Give each control point a position [x, y, z] in mm.")
            label = point.get("label") or f"{markup.get('name') or 'P'}-{p_index + 1}"
            position = _json_position(point["position"], where)
            landmarks.append(Landmark(label, position * flip))
    return landmarks


def _json_position(value, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise InputError(f"{where}: the position {value!r} is not a list of three numbers.",
                         "Give the position as [x, y, z] in mm.")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise InputError(f"{where}: the position {value!r} contains a non-numeric value.",
                         "Give the position as three numbers, e.g. [12.5, -40.0, 88.1].")
    return _position(value, where)


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the non-blank lines that are not '#' comments."""
    rows = []
    for line_number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if cells[0].lstrip().startswith("#"):
            continue
        rows.append((line_number, cells))
    return rows


def _check_count(cells, path: Path, line: int, minimum: int, maximum: int | None) -> None:
    if len(cells) < minimum or (maximum is not None and len(cells) > maximum):
        if maximum is None:
            wanted = f"at least {minimum}"
        elif maximum == minimum:
            wanted = str(minimum)
        else:
            wanted = f"{minimum} to {maximum}"
        raise InputError(f"Landmark file {path} line {line} has {len(cells)} columns, expected {wanted}.",
                         "Give one point per line with every column; quote a label or description "
                         "that contains a comma.")


def _number(text: str, path: Path, line: int, column: str, allow_nan: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"Landmark file {path} line {line}: {column} = {text.strip()!r} is not a number.",
                         "Write coordinates as plain numbers in mm, e.g. 12.5.") from None
    if math.isnan(value) and allow_nan:
        return value
    if not math.isfinite(value):
        raise InputError(f"Landmark file {path} line {line}: {column} = {text.strip()!r} is not finite.",
                         "Give finite coordinates in mm, or delete the point.")
    return value


def _parse_fcsv(text: str, path: Path) -> list[Landmark]:
    system = None
    columns = list(FCSV_COLUMNS)
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            continue
        key, _, value = line[1:].partition("=")
        key = key.strip().lower()
        if key == "coordinatesystem":
            system = value.strip()
        elif key == "columns":
            columns = [c.strip() for c in value.split(",")]
    if system is None:
        raise InputError(f"Landmark file {path} has no '# CoordinateSystem = ...' header line, "
                         "so LPS and RAS cannot be told apart.",
                         "Add the line '# CoordinateSystem = LPS' (what Slicer 4.11 and later "
                         "write) or '# CoordinateSystem = RAS' before the points.")
    flip = _coordinate_flip(system, path, "# CoordinateSystem header")
    missing = [c for c in ("x", "y", "z") if c not in columns]
    if missing:
        raise InputError(f"Landmark file {path}: the '# columns' header lacks {', '.join(missing)}.",
                         "Use Slicer's columns id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,"
                         "associatedNodeID.")
    needed = max(columns.index(c) for c in ("x", "y", "z") + (("label",) if "label" in columns else ()))
    landmarks = []
    for line, cells in _csv_rows(text):
        # Slicer 5 writes two more fields than its '# columns' line names: allow extras.
        _check_count(cells, path, line, needed + 1, None)
        xyz = np.array([_number(cells[columns.index(c)], path, line, c) for c in ("x", "y", "z")])
        label = cells[columns.index("label")].strip() if "label" in columns else ""
        if not label:
            label = cells[columns.index("id")].strip() if "id" in columns else ""
        landmarks.append(Landmark(label or f"F-{len(landmarks) + 1}", xyz * flip))
    return landmarks


def _parse_csv(text: str, path: Path) -> list[Landmark]:
    rows = _csv_rows(text)
    if not rows:
        raise InputError(f"Landmark file {path} has no control points (it is empty).",
                         "Write a header line label,R,A,S and one point per line.")
    line, header = rows[0]
    names = [cell.strip() for cell in header]
    upper = [name.upper() for name in names]
    if tuple(names) == CSV_HEADER:
        raise InputError(f"{path} holds projected 2D landmarks (label,u,v,depth_mm,visible), not 3D "
                         "positions.",
                         "Read it with read_landmarks_csv(), or give 3D positions with the header "
                         "label,R,A,S.")
    if upper == ["LABEL", "R", "A", "S"]:
        flip = np.ones(3)
    elif upper == ["LABEL", "L", "P", "S"]:
        flip = _LPS_TO_RAS
    else:
        raise InputError(f"Landmark file {path}: missing header; line {line} reads {','.join(names)!r}, "
                         "expected 'label,R,A,S'.",
                         "Put the header line label,R,A,S (RAS mm) first, or label,L,P,S for LPS.")
    landmarks = []
    for line, cells in rows[1:]:
        _check_count(cells, path, line, 4, 4)
        xyz = np.array([_number(cells[n], path, line, names[n]) for n in (1, 2, 3)])
        landmarks.append(Landmark(cells[0].strip() or f"P-{len(landmarks) + 1}", xyz * flip))
    return landmarks


def _parse_export_json(data: dict, path: Path) -> list[ProjectedLandmark]:
    system = str(data.get("coordinate_system", "RAS")).upper()
    if system != "RAS":
        raise InputError(f"{path}: coordinate_system {system!r}; landmark exports are in RAS.",
                         "Write the file with write_landmarks_json().")
    items = data["landmarks"]
    if not isinstance(items, list):
        raise InputError(f"{path}: 'landmarks' is not a list.", "Write the file with write_landmarks_json().")
    result = []
    for n, item in enumerate(items):
        where = f"{path}, landmarks[{n}]"
        if not isinstance(item, dict) or "position_ras" not in item:
            raise InputError(f"{where} has no 'position_ras'.", "Write the file with write_landmarks_json().")
        position = _json_position(item["position_ras"], where)
        values = []
        for key in ("u", "v", "depth_mm"):
            value = item.get(key)
            if value is None and key != "depth_mm":
                values.append(math.nan)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values.append(float(value))
            else:
                raise InputError(f"{where}: '{key}' is {value!r}, not a finite number.",
                                 "Write the file with write_landmarks_json().")
        result.append(ProjectedLandmark(str(item.get("label", f"P-{n + 1}")), position, *values,
                                        bool(item.get("visible", False))))
    return result


# ---- writing -------------------------------------------------------------------------------------
def _json_float(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _format(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.6f}"


def write_landmarks_csv(projected, path) -> None:
    """CSV, header ``label,u,v,depth_mm,visible``; visible is ``true``/``false``; NaN is ``nan``."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for item in projected:
        writer.writerow([item.label, _format(item.u), _format(item.v), _format(item.depth_mm),
                         "true" if item.visible else "false"])
    _write_text(path, buffer.getvalue())


def write_landmarks_json(projected, geometry: DetectorGeometry, path) -> None:
    """JSON object: ``landmarks`` (label, position_ras, u, v, depth_mm, visible),
    ``projection_matrix`` (3x4, RAS -> pixel) and the full ``geometry``."""
    document = {
        "coordinate_system": "RAS",
        "units": "mm",
        "pixel_convention": "u = column, v = row, pixel centres at integers; u, v null behind the source",
        "projection_matrix": geometry.projection_matrix().tolist(),
        "geometry": geometry.to_dict(),
        "landmarks": [item.to_dict() for item in projected],
    }
    _write_text(Path(path), json.dumps(document, indent=2, allow_nan=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise InputError(f"Cannot write {path}: the folder {path.parent} does not exist.",
                         "Create the output folder first, or choose another path.")
    path.write_text(text, encoding="utf-8")


# ---- drawing -------------------------------------------------------------------------------------
_MIN_DRAWN_SIDE = 512
_MARK = (255, 214, 0)      # amber: readable on both dark and light X-ray backgrounds
_SHADOW = (0, 0, 0)
_NOTE = (255, 120, 120)


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """Window a float image to 8 bits; an 8-bit image is taken as already windowed."""
    if image.dtype == np.uint8:
        return image
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [1.0, 99.0])
    if not high > low:
        low, high = float(finite.min()), float(finite.max())
    if not high > low:
        return np.full(image.shape, 128, dtype=np.uint8)
    scaled = (np.nan_to_num(image, nan=low, posinf=high, neginf=low) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class OverlayWarning(UserWarning):
    """Some label text cannot be drawn with any font found (it would show as boxes)."""


# Fonts tried, in order, for label characters that the bundled DejaVu Sans lacks (e.g. CJK).
_FALLBACK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/arialuni.ttf",
    "C:/Windows/Fonts/seguisym.ttf",
)


def _font(size: int, texts=()):
    """A TrueType font that draws every character of ``texts``: the bundled DejaVu Sans (Latin, Greek,
    Cyrillic, Arabic, Hebrew, symbols...), else a system font that has the missing characters."""
    from PIL import ImageFont

    from .resources import resource_path

    try:
        font = ImageFont.truetype(str(resource_path("Fonts", "DejaVuSans.ttf")), size)
    except (OSError, FileNotFoundError):  # an incomplete install: Pillow's own font, Latin only
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
            return ImageFont.load_default()
    missing = _missing_characters(font, texts)
    if not missing:
        return font
    for candidate in _FALLBACK_FONTS:
        if Path(candidate).is_file():
            try:
                fallback = ImageFont.truetype(candidate, size)
            except OSError:
                continue
            if not _missing_characters(fallback, texts):
                return fallback
    import warnings

    warnings.warn(f"No font found that draws the label character(s) {''.join(sorted(missing))!r}; they show as "
                  "boxes in the overlay. Install a font with them (e.g. Noto Sans CJK) or rename the landmarks.",
                  OverlayWarning, stacklevel=3)
    return font


def _missing_characters(font, texts) -> set:
    """Characters of ``texts`` that ``font`` draws as its 'missing glyph' box."""
    try:
        notdef = font.getmask("\U0010fffd")  # a private-use code point no font maps
        box = bytes(notdef), notdef.size
    except Exception:  # noqa: BLE001 - a bitmap font without that API: assume it draws what it can
        return set()
    missing = set()
    for character in set("".join(texts)):
        if character.isspace() or not character.isprintable():
            continue
        mask = font.getmask(character)
        if (bytes(mask), mask.size) == box:
            missing.add(character)
    return missing


def _outlined_text(draw, xy, text, font, fill, stroke):
    draw.text(xy, text, font=font, fill=fill, stroke_width=stroke, stroke_fill=_SHADOW)


def draw_overlay(image, projected, path, title: str | None = None) -> None:
    """Write a PNG of ``image`` (rows = v, columns = u) with the visible landmarks marked.

    The image is windowed to 8 bits between its 1st and 99th percentiles (min-max if
    those coincide). Each visible landmark gets a circle with a cross at its pixel
    centre and its label; landmarks that are not visible are listed in the
    bottom-left corner ("off-detector: ...", "behind source: ..."). Images whose
    longer side is below 512 pixels are enlarged by a whole factor (nearest
    neighbour) so that the labels stay legible.
    """
    from PIL import Image, ImageDraw

    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"draw_overlay() needs a 2D image (rows, columns), got shape {array.shape}.",
                         "Pass one detector image, e.g. result.stages['final'].")
    projected = list(projected)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Cannot write {path}: the folder {path.parent} does not exist.",
                         "Create the output folder first, or choose another path.")
    height, width = array.shape
    factor = max(1, math.ceil(_MIN_DRAWN_SIDE / max(height, width)))
    canvas = Image.fromarray(_to_8bit(array), mode="L")
    if factor > 1:
        canvas = canvas.resize((width * factor, height * factor), Image.NEAREST)
    canvas = canvas.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    font_size = max(12, round(side / 48))
    font = _font(font_size, [str(title or "")] + [str(item.label) for item in projected])
    stroke = max(1, round(font_size / 10))
    radius = max(5, round(side / 90))
    line = max(1, round(side / 400))

    occupied = []
    if title:
        _outlined_text(draw, (radius, radius), str(title), font, (255, 255, 255), stroke)
        occupied.append(draw.textbbox((radius, radius), str(title), font=font, stroke_width=stroke))

    off_detector, behind, marks = [], [], []
    for item in projected:
        if not item.visible:
            (behind if not item.depth_mm > 0 else off_detector).append(item.label)
            continue
        x = (item.u + 0.5) * factor - 0.5
        y = (item.v + 0.5) * factor - 0.5
        marks.append((item.label, x, y))
        occupied.append((x - 2 * radius, y - 2 * radius, x + 2 * radius, y + 2 * radius))
    for _, x, y in marks:
        for colour, extra in ((_SHADOW, line + 1), (_MARK, 0)):
            width = line + extra
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=width)
            draw.line([(x - 2 * radius, y), (x - radius // 2, y)], fill=colour, width=width)
            draw.line([(x + radius // 2, y), (x + 2 * radius, y)], fill=colour, width=width)
            draw.line([(x, y - 2 * radius), (x, y - radius // 2)], fill=colour, width=width)
            draw.line([(x, y + radius // 2), (x, y + 2 * radius)], fill=colour, width=width)
    for label, x, y in marks:
        _place_label(draw, canvas.size, label, x, y, radius, font, stroke, occupied)

    notes = []
    for heading, labels in (("off-detector: ", off_detector), ("behind source: ", behind)):
        if labels:
            notes += _wrap(draw, heading, labels, font, stroke, canvas.size[0] - 2 * radius)
    y = canvas.size[1] - radius
    for note in reversed(notes):
        box = draw.textbbox((0, 0), note, font=font, stroke_width=stroke)
        y -= box[3] - box[1] + stroke
        _outlined_text(draw, (radius - box[0], y - box[1]), note, font, _NOTE, stroke)
    canvas.save(path, format="PNG")


def _wrap(draw, heading: str, labels, font, stroke, max_width: float) -> list[str]:
    """'heading: a, b, c' broken into lines no wider than max_width (one label at least per line)."""
    lines, current = [], heading
    for n, label in enumerate(labels):
        piece = label + ("," if n < len(labels) - 1 else "")
        trial = current + piece if current in (heading, "  ") else current + " " + piece
        box = draw.textbbox((0, 0), trial, font=font, stroke_width=stroke)
        if box[2] - box[0] > max_width and current not in (heading, "  "):
            lines.append(current)
            current = "  " + piece
        else:
            current = trial
    lines.append(current)
    return lines


def _place_label(draw, size, text, x, y, radius, font, stroke, occupied) -> None:
    box = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    w, h = box[2] - box[0], box[3] - box[1]
    gap = 2 * radius + 2
    candidates = [(x + gap, y - h / 2), (x - gap - w, y - h / 2), (x + gap, y - h - 2), (x + gap, y + 2),
                  (x - gap - w, y - h - 2), (x - gap - w, y + 2), (x - w / 2, y - gap - h), (x - w / 2, y + gap)]
    rects = []
    for cx, cy in candidates:
        cx = min(max(cx, 1), size[0] - w - 1)
        cy = min(max(cy, 1), size[1] - h - 1)
        rects.append((cx, cy, cx + w, cy + h))
    free = [r for r in rects
            if not any(r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3] for o in occupied)]
    chosen = free[0] if free else rects[0]
    occupied.append(chosen)
    _outlined_text(draw, (chosen[0] - box[0], chosen[1] - box[1]), text, font, _MARK, stroke)
