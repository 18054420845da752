"""The one home of projection geometry.

World frame: patient RAS, millimetres. A detector image array is indexed
(row, column) = (v, u); pixel centres sit at integer (u, v); row 0 is the top
of the displayed image.

Every pose (C-arm angles, a Slicer transform, a JSON file) becomes a
:class:`DetectorGeometry`: source point, centre of pixel (0, 0), the pixel
step vectors ``u`` (along a row) and ``v`` (down a column), and the pixel
counts. The 3x4 projection matrix ``P`` maps homogeneous RAS points to
``(u, v, 1)`` scaled by the depth in mm along the principal axis.

C-arm convention (``CArm``): at alpha = beta = 0 the source is posterior and
the detector anterior (AP view of a supine patient); the image shows the head
at the top and the patient's right on the image's left. ``alpha`` (orbital,
LAO positive) rotates about the patient's S axis through the isocentre;
``beta`` (angulation, cranial positive) tilts the detector toward the head.
The pose is ``R = Rz(alpha) @ Rx(beta)`` applied to the AP frame.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

# Siemens Cios Spin-like mobile C-arm, as in DeepDRR's MobileCArm.
DEFAULT_SID_MM = 1020.0
DEFAULT_SOD_MM = 530.0
NATIVE_DETECTOR_PIXELS = 1536
NATIVE_PIXEL_SPACING_MM = 0.194
DETECTOR_SIDE_MM = NATIVE_DETECTOR_PIXELS * NATIVE_PIXEL_SPACING_MM



@dataclass(frozen=True)
class DetectorPreset:
    """A flat-panel detector (native pixel grid) and the distances it typically works at."""

    description: str
    columns: int          # native pixels along a row (u)
    rows: int             # native pixels down a column (v)
    pixel_mm: float       # native pixel pitch
    sid_mm: float
    sod_mm: float

    @property
    def width_mm(self) -> float:
        return self.columns * self.pixel_mm

    @property
    def height_mm(self) -> float:
        return self.rows * self.pixel_mm

    def sampled(self, longest_side: int = 512) -> tuple[int, int, float]:
        """(width, height, pixel spacing mm): the whole panel binned to square pixels, at most
        ``longest_side`` pixels along its longer side."""
        longest_side = _pixel_count(longest_side, "size")
        if longest_side >= max(self.columns, self.rows):
            return self.columns, self.rows, self.pixel_mm
        spacing = max(self.width_mm, self.height_mm) / longest_side
        return (max(1, round(self.width_mm / spacing)), max(1, round(self.height_mm / spacing)), spacing)


# Named detectors (--detector). The distances are typical, not a particular installation's.
DETECTOR_PRESETS = {
    "mobile-carm-30": DetectorPreset(
        "mobile C-arm, 30 x 30 cm flat panel, 1536 x 1536 pixels of 0.194 mm (Siemens Cios Spin-like, "
        "DeepDRR's MobileCArm), SID 1020 mm, source to isocentre 530 mm",
        NATIVE_DETECTOR_PIXELS, NATIVE_DETECTOR_PIXELS, NATIVE_PIXEL_SPACING_MM, DEFAULT_SID_MM, DEFAULT_SOD_MM),
    "angio-30x40": DetectorPreset(
        "fixed angiography C-arm, 40 x 30 cm flat panel (48 cm diagonal), 2480 x 1920 pixels of 0.154 mm "
        "(Siemens Artis-like), SID 1200 mm, source to isocentre 785 mm",
        2480, 1920, 0.154, 1200.0, 785.0),
    "radiography-43": DetectorPreset(
        "radiography, 43 x 43 cm flat panel, 3072 x 3072 pixels of 0.139 mm, SID 1000 mm (table), "
        "patient centre 150 mm above the panel (source to patient centre 850 mm)",
        3072, 3072, 0.139, 1000.0, 850.0),
}
DEFAULT_DETECTOR = "mobile-carm-30"


def detector_preset(name: str) -> DetectorPreset:
    try:
        return DETECTOR_PRESETS[name]
    except KeyError:
        raise InputError(f"Unknown detector preset {name!r}.",
                         f"Use one of: {', '.join(DETECTOR_PRESETS)}.") from None


# The AP frame (alpha = beta = 0), in RAS: the beam travels posterior -> anterior,
# columns run toward the patient's left, rows run toward the feet.
AP_BEAM_DIRECTION = np.array([0.0, 1.0, 0.0])
AP_COLUMN_DIRECTION = np.array([-1.0, 0.0, 0.0])
AP_ROW_DIRECTION = np.array([0.0, 0.0, -1.0])


def _vector3(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"Geometry field '{name}' is not a list of numbers: {value!r}.",
                         f"Give '{name}' as three numbers [R, A, S] in mm.") from None
    if array.shape != (3,):
        raise InputError(f"Geometry field '{name}' has {array.size} values, expected 3.",
                         f"Give '{name}' as three numbers [R, A, S] in mm.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"Geometry field '{name}' contains NaN or infinity: {array.tolist()}.",
                         f"Give finite coordinates for '{name}'.")
    return array


MAX_DETECTOR_PIXELS = 16384


def _pixel_count(value, name: str) -> int:
    whole = (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or (
        isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value))
    if not whole:
        raise InputError(f"Detector {name} must be a whole number of pixels, got {value!r}.",
                         f"Give the detector {name} as a positive integer.")
    if int(value) < 1:
        raise InputError(f"Detector {name} is {value} pixels: the detector has zero size.",
                         f"Give a detector {name} of at least 1 pixel (e.g. --size 512 512).")
    if int(value) > MAX_DETECTOR_PIXELS:
        raise InputError(f"Detector {name} of {int(value)} pixels is larger than the {MAX_DETECTOR_PIXELS} supported.",
                         "Use fewer, larger pixels (the native panel is 1536 x 1536).")
    return int(value)


def rotation_x(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def roll_about_beam(angle_deg: float) -> np.ndarray:
    """4x4 rotation of the C-arm frame about its beam axis (AP: the A axis); compose as ``pose @ roll``."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    matrix = np.eye(4)
    matrix[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
    return matrix


@dataclass(frozen=True, eq=False)
class DetectorGeometry:
    """A point source and a flat pixel grid, in RAS mm (the interchange format)."""

    source: np.ndarray
    detector_origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        for name in ("source", "detector_origin", "u", "v"):
            object.__setattr__(self, name, _vector3(getattr(self, name), name))
        object.__setattr__(self, "width", _pixel_count(self.width, "width"))
        object.__setattr__(self, "height", _pixel_count(self.height, "height"))
        if np.linalg.norm(self.u) <= 0 or np.linalg.norm(self.v) <= 0:
            raise InputError("Detector pixel spacing is zero (u or v is a zero vector).",
                             "Give u and v with length equal to the pixel spacing in mm.")
        if np.linalg.norm(np.cross(self.u, self.v)) < 1e-9 * np.linalg.norm(self.u) * np.linalg.norm(self.v):
            raise InputError("Detector vectors u and v are parallel, so they span no plane.",
                             "Give u along a detector row and v along a column, perpendicular.")
        if abs(np.dot(self.normal, self.detector_origin - self.source)) < 1e-6:
            raise InputError("The source lies in the detector plane.",
                             "Move the source away from the detector (SID must be > 0).")
        _warn_if_sheared(self.u, self.v)

    # ---- derived quantities -------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Image array shape (rows, columns)."""
        return (self.height, self.width)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(column spacing |u|, row spacing |v|) in mm."""
        return (float(np.linalg.norm(self.u)), float(np.linalg.norm(self.v)))

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the detector plane, pointing from the detector toward the source."""
        n = np.cross(self.u, self.v)
        n = n / np.linalg.norm(n)
        if np.dot(n, self.source - self.detector_origin) < 0:
            n = -n
        return n

    @property
    def detector_center(self) -> np.ndarray:
        return self.detector_origin + 0.5 * (self.width - 1) * self.u + 0.5 * (self.height - 1) * self.v

    @property
    def source_to_detector_mm(self) -> float:
        """Perpendicular distance from the source to the detector plane."""
        return float(abs(np.dot(self.normal, self.source - self.detector_origin)))

    def pixel_center(self, column: float, row: float) -> np.ndarray:
        return self.detector_origin + column * self.u + row * self.v

    def pixel_centers(self) -> np.ndarray:
        """(height, width, 3) RAS positions of every pixel centre."""
        rows = np.arange(self.height, dtype=np.float64)[:, None, None]
        cols = np.arange(self.width, dtype=np.float64)[None, :, None]
        return self.detector_origin + cols * self.u + rows * self.v

    def projection_matrix(self) -> np.ndarray:
        """3x4 matrix P: P @ [R, A, S, 1] = depth * [u, v, 1].

        depth is the distance in mm from the source along the detector normal,
        positive for points between the source and the detector side.
        """
        basis = np.column_stack([self.u, self.v, self.detector_origin - self.source])
        to_pixel = np.linalg.inv(basis)
        extrinsic = np.hstack([np.eye(3), -self.source[:, None]])
        return self.source_to_detector_mm * (to_pixel @ extrinsic)

    def project(self, points_ras) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) RAS points: returns (N, 2) pixel (u, v) and (N,) depth in mm."""
        points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
        homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ self.projection_matrix().T
        depth = homogeneous[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = homogeneous[:, :2] / depth[:, None]
        return uv, depth

    def contains_pixel(self, uv) -> np.ndarray:
        """True where (u, v) falls on the detector (pixel edges at -0.5 and size - 0.5)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return ((uv[:, 0] >= -0.5) & (uv[:, 0] <= self.width - 0.5)
                & (uv[:, 1] >= -0.5) & (uv[:, 1] <= self.height - 0.5))

    def resized(self, width: int, height: int) -> "DetectorGeometry":
        """Same source and physical detector area, sampled by width x height pixels."""
        width = _pixel_count(width, "width")
        height = _pixel_count(height, "height")
        u = self.u * (self.width / width)
        v = self.v * (self.height / height)
        corner = self.detector_origin - 0.5 * self.u - 0.5 * self.v
        return DetectorGeometry(self.source, corner + 0.5 * u + 0.5 * v, u, v, width, height)

    def image_to_ras_matrix(self) -> np.ndarray:
        """4x4 IJK->RAS of the image as a one-slice volume at the detector plane.

        I = column, J = row, K = 0; the K axis is the detector normal (1 mm).
        """
        matrix = np.eye(4)
        matrix[:3, 0] = self.u
        matrix[:3, 1] = self.v
        matrix[:3, 2] = -self.normal
        matrix[:3, 3] = self.detector_origin
        return matrix

    # ---- interchange --------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "coordinate_system": "RAS",
            "units": "mm",
            "source": self.source.tolist(),
            "detector_origin": self.detector_origin.tolist(),
            "u": self.u.tolist(),
            "v": self.v.tolist(),
            "width": self.width,
            "height": self.height,
            "projection_matrix": self.projection_matrix().tolist(),
        }

    @classmethod
    def from_dict(cls, data) -> "DetectorGeometry":
        if not isinstance(data, dict):
            raise InputError(f"Geometry must be a JSON object, got {type(data).__name__}.",
                             "Write the geometry as {\"source\": [...], \"detector_origin\": [...], "
                             "\"u\": [...], \"v\": [...], \"width\": W, \"height\": H}.")
        missing = [k for k in ("source", "detector_origin", "u", "v", "width", "height") if k not in data]
        if missing:
            raise InputError(f"Geometry is missing field(s): {', '.join(missing)}.",
                             "Add them; see the README section 'Geometry interchange (JSON)'.")
        system = str(data.get("coordinate_system", "RAS")).upper()
        if system not in ("RAS", "LPS"):
            raise InputError(f"Geometry coordinate_system '{system}' is not supported.",
                             "Use 'RAS' (or 'LPS', which is converted).")
        units = str(data.get("units", "mm")).strip().lower()
        if units not in ("mm", "millimeter", "millimetre", "millimeters", "millimetres"):
            raise InputError(f"Geometry units '{data.get('units')}' are not supported: every length is read in mm.",
                             "Convert source, detector_origin, u and v to millimetres and set \"units\": \"mm\".")
        flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
        geometry = cls(
            source=_vector3(data["source"], "source") * flip,
            detector_origin=_vector3(data["detector_origin"], "detector_origin") * flip,
            u=_vector3(data["u"], "u") * flip,
            v=_vector3(data["v"], "v") * flip,
            width=data["width"],
            height=data["height"],
        )
        if "projection_matrix" in data and system == "RAS":
            _check_matrix_agrees(data["projection_matrix"], geometry.projection_matrix())
        return geometry

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> "DetectorGeometry":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Geometry file not found: {path}.", "Check the path given to --geometry.")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"Geometry file {path} is not valid JSON ({error}).",
                             "Fix the JSON syntax, or write it with 'deepdrr-slicer simulate' and edit it.") from None
        return cls.from_dict(data)


def _check_matrix_agrees(given, expected: np.ndarray) -> None:
    try:
        given = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError):
        given = None
    if given is None or given.shape != (3, 4) or not np.all(np.isfinite(given)):
        raise InputError("Geometry 'projection_matrix' is not a finite 3x4 matrix.",
                         "Remove it (it is derived from the other fields) or fix it.")
    scale = np.linalg.norm(expected)
    a = given / np.linalg.norm(given)
    b = expected / scale
    if min(np.abs(a - b).max(), np.abs(a + b).max()) > 1e-6:
        raise InputError("Geometry 'projection_matrix' disagrees with source/detector_origin/u/v.",
                         "Remove 'projection_matrix' from the file; it is recomputed from the other fields.")


@dataclass(frozen=True)
class CArm:
    """A C-arm pose and detector, DeepDRR MobileCArm defaults."""

    alpha_deg: float = 0.0
    beta_deg: float = 0.0
    sid_mm: float = DEFAULT_SID_MM
    sod_mm: float = DEFAULT_SOD_MM
    isocenter_ras: tuple = (0.0, 0.0, 0.0)
    width: int = 512
    height: int = 512
    pixel_spacing_mm: float = DETECTOR_SIDE_MM / 512

    def __post_init__(self):
        for name in ("alpha_deg", "beta_deg", "sid_mm", "sod_mm", "pixel_spacing_mm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
                raise InputError(f"C-arm {name} must be a finite number, got {value!r}.",
                                 f"Give a number for {name}.")
        object.__setattr__(self, "isocenter_ras", tuple(_vector3(self.isocenter_ras, "isocenter").tolist()))
        if self.sod_mm <= 0 or self.sid_mm <= self.sod_mm:
            raise InputError(
                f"C-arm distances are inconsistent: SID {self.sid_mm} mm, SOD {self.sod_mm} mm.",
                "Need 0 < SOD < SID: the isocentre lies between the source and the detector.")
        if self.pixel_spacing_mm <= 0:
            raise InputError(f"Pixel spacing must be positive, got {self.pixel_spacing_mm} mm.",
                             "Give --pixel-spacing > 0 (the native detector has 0.194 mm).")
        _pixel_count(self.width, "width")
        _pixel_count(self.height, "height")

    def rotation(self) -> np.ndarray:
        return rotation_z(math.radians(self.alpha_deg)) @ rotation_x(math.radians(self.beta_deg))

    def pose_matrix(self) -> np.ndarray:
        """4x4 C-arm frame -> RAS: rotation R and the isocentre as translation."""
        pose = np.eye(4)
        pose[:3, :3] = self.rotation()
        pose[:3, 3] = self.isocenter_ras
        return pose

    def geometry(self) -> DetectorGeometry:
        return geometry_from_pose(self.pose_matrix(), self.sid_mm, self.sod_mm,
                                  self.width, self.height, self.pixel_spacing_mm)

    @classmethod
    def from_pose(cls, pose, **detector) -> "CArm":
        """Angles and isocentre of a rigid 4x4 pose (any roll about the beam is dropped)."""
        pose = np.asarray(pose, dtype=np.float64)
        beam = pose[:3, :3] @ AP_BEAM_DIRECTION
        beam = beam / np.linalg.norm(beam)
        beta = math.degrees(math.asin(max(-1.0, min(1.0, beam[2]))))
        alpha = math.degrees(math.atan2(-beam[0], beam[1]))
        return cls(alpha_deg=alpha, beta_deg=beta, isocenter_ras=tuple(pose[:3, 3]), **detector)


def geometry_from_pose(pose, sid_mm: float, sod_mm: float, width: int, height: int,
                       pixel_spacing_mm: float) -> DetectorGeometry:
    """Detector geometry of a C-arm whose frame (isocentre at origin, AP axes) is ``pose``.

    The pose is any rigid 4x4 (C-arm frame -> RAS), e.g. a Slicer transform.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise InputError("C-arm pose must be a finite 4x4 matrix.", "Give a rigid transform.")
    rotation = pose[:3, :3]
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4):
        raise InputError("C-arm pose is not rigid (it scales or shears).",
                         "Use a pure rotation + translation; disable scaling on the transform handles.")
    isocenter = pose[:3, 3]
    beam = rotation @ AP_BEAM_DIRECTION
    u = rotation @ AP_COLUMN_DIRECTION * pixel_spacing_mm
    v = rotation @ AP_ROW_DIRECTION * pixel_spacing_mm
    source = isocenter - sod_mm * beam
    center = isocenter + (sid_mm - sod_mm) * beam
    width = _pixel_count(width, "width")
    height = _pixel_count(height, "height")
    origin = center - 0.5 * (width - 1) * u - 0.5 * (height - 1) * v
    return DetectorGeometry(source, origin, u, v, width, height)


def carm_frame_outline(sid_mm: float, sod_mm: float, width_mm: float, height_mm: float):
    """Source and the detector's four outer corners in the C-arm frame (isocentre at the origin, AP axes).

    Corners run (row 0, col 0), (row 0, last col), (last row, last col), (last row, col 0).
    """
    source = -sod_mm * AP_BEAM_DIRECTION
    center = (sid_mm - sod_mm) * AP_BEAM_DIRECTION
    half_u = 0.5 * width_mm * AP_COLUMN_DIRECTION
    half_v = 0.5 * height_mm * AP_ROW_DIRECTION
    corners = np.array([center - half_u - half_v, center + half_u - half_v,
                        center + half_u + half_v, center - half_u + half_v])
    return source, corners


class GeometryWarning(UserWarning):
    """A geometry that is valid but probably not what was meant (e.g. sheared detector pixels)."""


# |cos| of the angle between u and v above which the pixel grid counts as sheared (0.006 degrees off 90).
PERPENDICULAR_TOLERANCE = 1e-4


def _warn_if_sheared(u: np.ndarray, v: np.ndarray) -> None:
    cosine = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    if abs(cosine) > PERPENDICULAR_TOLERANCE:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
        warnings.warn(f"Detector vectors u and v are not perpendicular: they meet at {angle:.3f} degrees, not 90. "
                      "The pixels are parallelograms, so the image is sheared (as if the panel's rows and columns "
                      "were skewed); a flat-panel detector has perpendicular rows and columns. Check u (along a "
                      "row) and v (down a column) in the geometry.", GeometryWarning, stacklevel=4)


def rays_cross_box(geometry: DetectorGeometry, ijk_to_ras, shape_kji, pixels_per_block: int = 1 << 20) -> bool:
    """Whether any pixel's ray (source to pixel centre) passes through the box bounded by a grid's outer faces."""
    ijk_to_ras = np.asarray(ijk_to_ras, dtype=np.float64)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    linear, offset = ras_to_ijk[:3, :3], ras_to_ijk[:3, 3]
    size = np.array(shape_kji[::-1], dtype=np.float64)
    corners = np.array([[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5)
                        for c in (-0.5, size[2] - 0.5)])
    uv, depth = geometry.project(corners @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3])
    columns, rows = (0, geometry.width - 1), (0, geometry.height - 1)
    if np.all(depth > 0):  # the box's image is the hull of its corners' images: only pixels in their bounds
        columns = (max(0, math.ceil(uv[:, 0].min())), min(geometry.width - 1, math.floor(uv[:, 0].max())))
        rows = (max(0, math.ceil(uv[:, 1].min())), min(geometry.height - 1, math.floor(uv[:, 1].max())))
        if columns[0] > columns[1] or rows[0] > rows[1]:
            return False
    source = linear @ geometry.source + offset
    origin = linear @ geometry.detector_origin + offset
    step_u, step_v = linear @ geometry.u, linear @ geometry.v
    column_index = np.arange(columns[0], columns[1] + 1, dtype=np.float64)
    block = max(1, pixels_per_block // len(column_index))
    for first_row in range(rows[0], rows[1] + 1, block):
        row_index = np.arange(first_row, min(rows[1] + 1, first_row + block), dtype=np.float64)
        ends = origin + column_index[None, :, None] * step_u + row_index[:, None, None] * step_v
        direction = (ends - source).reshape(-1, 3)
        t_in = np.zeros(len(direction))
        t_out = np.ones(len(direction))
        for axis in range(3):
            e = direction[:, axis]
            with np.errstate(divide="ignore", invalid="ignore"):
                ta = (-0.5 - source[axis]) / e
                tb = (size[axis] - 0.5 - source[axis]) / e
            flat = e == 0
            inside = -0.5 <= source[axis] <= size[axis] - 0.5
            t_in = np.maximum(t_in, np.where(flat, -np.inf if inside else np.inf, np.minimum(ta, tb)))
            t_out = np.minimum(t_out, np.where(flat, np.inf if inside else -np.inf, np.maximum(ta, tb)))
        if np.any(t_in < t_out):
            return True
    return False
