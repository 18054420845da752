"""How much memory a simulation will take, estimated before it starts, and the check against what is free.

An estimate is a list of items, each an array (or group of arrays) with its
size in bytes and whether it stays allocated (``held``) or exists only while
one step runs (``peak``, the largest transient of that step). Items name the
step that allocates them (``STEPS``, in run order): a transient only coincides
with the held items of its own and earlier steps (the network's buffers are
gone before the projector's voxel layout exists). The total is the worst step:
its transient plus everything held by then, which is what the process needs at
its worst moment. An item without a step counts at every step.

Stages add their own items: write a function ``term(context) -> list[MemoryItem]``
and register it with :func:`register_memory_term` (e.g. a scatter stage adds its
(H, W) images and its working buffers). The built-in terms below cover the CT
copy, the material decomposition and its packed voxels, the projector's outputs
and working memory, the stage images and writing them (PNG windowing, overlay).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

from .errors import InputError

# Refuse above the available memory; warn above this fraction of it.
WARN_FRACTION = 0.5
# The numpy fallback projector works on blocks of this many samples (projector_numpy._SAMPLES_PER_BLOCK),
# with about this many bytes of temporaries per sample.
_NUMPY_BLOCK_SAMPLES = 400_000
_NUMPY_BYTES_PER_SAMPLE = 320


class MemoryWarning(UserWarning):
    """A simulation will use a large share of the memory available."""


#: The steps of a run, in order: decomposing the CT, projecting, the detector stages, writing files.
STEPS = ("materials", "projector", "detector", "writing")


@dataclass(frozen=True)
class MemoryItem:
    name: str
    bytes: int
    held: bool = True   # stays allocated for the rest of the run; False: only during its step
    step: str | None = None   # the step (STEPS) that allocates it; None: counts at every step

    def __post_init__(self):
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown memory step {self.step!r}; one of {STEPS}")


@dataclass(frozen=True)
class MemoryContext:
    """What decides a simulation's memory use."""

    volume_shape: tuple            # CT voxels (k, j, i)
    detector_shape: tuple          # (rows, columns)
    n_materials: int = 3
    mode: str = "polychromatic"    # or "line-integral"
    kernel: str = "numba"          # "numba" (compiled CPU kernels) or "numpy" (the fallback)
    n_energies: int = 300          # spectrum bins (the numpy fallback's Beer-Lambert holds (E, H, W))
    soft_fractions: bool = False   # materials with per-voxel fractions [M, k, j, i]
    volume_loaded: bool = True     # the CT's float32 copy already exists (counts as held either way)
    materials_ready: bool = False  # decomposition already done (its arrays are held, no transient)
    packed_ready: bool = False     # the projector's voxel layout already exists
    stage_names: tuple = ()        # images the result will hold; default: primary/line_integral + per material
    writing: bool = False          # results are written to files (PNG windowing, overlay)
    landmarks: bool = False
    extra: dict = field(default_factory=dict)   # for registered terms

    @property
    def voxels(self) -> int:
        return math.prod(int(n) for n in self.volume_shape)

    @property
    def pixels(self) -> int:
        return math.prod(int(n) for n in self.detector_shape)

    def stages(self) -> tuple:
        if self.stage_names:
            return tuple(self.stage_names)
        main = ("primary",) if self.mode == "polychromatic" else ("line_integral",)
        return main + tuple(f"line_integral_{m}" for m in range(self.n_materials))


@dataclass
class MemoryEstimate:
    items: list = field(default_factory=list)

    def add(self, name: str, nbytes: float, held: bool = True, step: str | None = None) -> None:
        self.items.append(MemoryItem(name, int(max(0, nbytes)), held, step))

    @property
    def held_bytes(self) -> int:
        return sum(item.bytes for item in self.items if item.held)

    def held_by(self, step: str | None) -> int:
        """Bytes held while ``step`` runs: held items of that step and earlier ones (None: all of them)."""
        if step is None:
            return self.held_bytes
        last = STEPS.index(step)
        return sum(item.bytes for item in self.items
                   if item.held and (item.step is None or STEPS.index(item.step) <= last))

    def _at_peak(self, item: MemoryItem) -> int:
        return self.held_by(item.step) + item.bytes

    @property
    def peak_item(self) -> MemoryItem | None:
        """The transient of the worst moment (the one with the most memory in use while it exists)."""
        transient = [item for item in self.items if not item.held]
        return max(transient, key=self._at_peak) if transient else None

    @property
    def total(self) -> int:
        peak = self.peak_item
        return max(self.held_bytes, self._at_peak(peak)) if peak else self.held_bytes

    def largest(self, count: int = 3) -> list:
        return sorted(self.items, key=lambda item: item.bytes, reverse=True)[:count]

    def describe(self) -> str:
        parts = ", ".join(f"{item.name} {format_bytes(item.bytes)}" for item in self.largest())
        return f"{format_bytes(self.total)} (largest: {parts})"


_TERMS: list = []


def register_memory_term(term) -> None:
    """Add ``term(context: MemoryContext) -> list[MemoryItem]`` to every estimate (e.g. for a new stage)."""
    if term not in _TERMS:
        _TERMS.append(term)


def estimate_memory(context: MemoryContext) -> MemoryEstimate:
    """Bytes a simulation described by ``context`` will need at its worst moment."""
    estimate = MemoryEstimate()
    for term in (_volume_and_materials, _projector, _stages_and_writing, *_TERMS):
        for item in term(context):
            estimate.items.append(item)
    return estimate


def _volume_and_materials(c: MemoryContext) -> list:
    v = c.voxels
    items = [MemoryItem("CT voxels (float32)", 4 * v)]
    if c.materials_ready:
        items.append(MemoryItem("density and labels", 5 * v, step="materials"))
        if c.soft_fractions:
            items.append(MemoryItem("material fractions", 4 * c.n_materials * v, step="materials"))
    else:
        items.append(MemoryItem("density and labels", 5 * v, step="materials"))
        # hu_to_density: two float32 fits and their minimum exist at once
        items.append(MemoryItem("material decomposition (temporary)", 12 * v, held=False, step="materials"))
        if c.soft_fractions:
            items.append(MemoryItem("material fractions", 4 * c.n_materials * v, step="materials"))
    # the projector's voxel layout (projector_voxels), one voxel of padding on every side, read by both
    # kernels: packed labels (4 bytes) or per-material density channels (4 bytes per material)
    padded = math.prod(int(n) + 2 for n in c.volume_shape)
    layout = 4 * c.n_materials * padded if c.soft_fractions else 4 * padded
    items.append(MemoryItem("voxel layout for the projector", layout, step="projector"))
    if not c.packed_ready:
        # padded density, labels and mixed-block flags, or one padded channel at a time
        items.append(MemoryItem("building the voxel layout (temporary)", (8 if c.soft_fractions else 10) * padded,
                                held=False, step="projector"))
    return items


def _projector(c: MemoryContext) -> list:
    p, m = c.pixels, c.n_materials
    items = [MemoryItem("line integrals per material (float32)", 4 * m * p, step="projector")]
    if c.mode == "polychromatic":
        items.append(MemoryItem("primary image (float32)", 4 * p, step="projector"))
    if c.kernel == "numpy":
        items.append(MemoryItem("pixel centres (float64)", 24 * p, step="projector"))
        transient = _NUMPY_BLOCK_SAMPLES * _NUMPY_BYTES_PER_SAMPLE
        if c.mode == "polychromatic":
            # Beer-Lambert over all pixels at once: float64 line integrals, exponent and exp, (E, H, W) each
            transient = max(transient, 8 * m * p + 16 * c.n_energies * p)
        items.append(MemoryItem("projector working memory (temporary)", transient, held=False, step="projector"))
    return items


def _stages_and_writing(c: MemoryContext) -> list:
    p = c.pixels
    stages = c.stages()
    # the truncation mask (float32, kept in the result) and, while it is computed, a boolean mask and the
    # ray arithmetic of one block of 65536 rays (truncation.py)
    items = [MemoryItem("truncation mask (float32)", 4 * p, step="projector"),
             MemoryItem("truncation mask rays (temporary)", p + 65536 * 400, held=False, step="projector")]
    if c.mode != "polychromatic":
        items.append(MemoryItem("total line integral (float32)", 4 * p, step="detector"))
    if c.writing:
        items.append(MemoryItem("8-bit previews", len(stages) * p, step="writing"))
        # display_image: float64 copy, clipped, log, the windowed region, percentile partition, scaled result
        items.append(MemoryItem("windowing a stage for its PNG (temporary)", 44 * p, held=False, step="writing"))
        if c.landmarks:
            # overlay: float64 copy of the preview plus an RGB canvas, enlarged to >= 512 px on small detectors
            factor = max(1, math.ceil(512 / max(1, max(c.detector_shape))))
            items.append(MemoryItem("landmark overlay (temporary)", 8 * p + 4 * p * factor * factor, held=False,
                                     step="writing"))
    return items


def format_bytes(count: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


_AVAILABLE_CACHE_SECONDS = 1.0
_available_cache: list = []   # [(time, bytes)]: /proc and cgroup reads cost ~0.1-0.4 ms, live renders run at 80 Hz


def available_memory_bytes() -> int | None:
    """Memory this process can still take (MemAvailable, within any cgroup limit), or None if unknown.

    Read at most once a second."""
    now = time.monotonic()
    if _available_cache and now - _available_cache[0][0] < _AVAILABLE_CACHE_SECONDS:
        return _available_cache[0][1]
    value = _read_available_memory()
    _available_cache[:] = [(now, value)]
    return value


def _read_available_memory() -> int | None:
    candidates = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        candidates.append(int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError):
            pass
        candidates += _cgroup_headroom()
    elif sys.platform == "win32":
        candidates += _windows_available()
    if not candidates:
        try:
            import psutil  # optional

            candidates.append(int(psutil.virtual_memory().available))
        except Exception:  # noqa: BLE001 - psutil absent or unsupported platform
            pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    return min(candidates) if candidates else None


def _cgroup_headroom() -> list:
    pairs = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    for limit_path, usage_path in pairs:
        try:
            with open(limit_path) as handle:
                limit_text = handle.read().strip()
            with open(usage_path) as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit() and int(limit_text) < (1 << 60):
            return [max(0, int(limit_text) - usage)]
    return []


def _windows_available() -> list:
    try:
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("sullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = MemoryStatus()
        status.dwLength = ctypes.sizeof(MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return [int(status.ullAvailPhys)]
    except Exception:  # noqa: BLE001 - not Windows after all, or no ctypes
        pass
    return []


def check_memory(estimate: MemoryEstimate, what: str = "This simulation", *, available: int | None = None,
                 fix: str | None = None) -> str | None:
    """Refuse (InputError) an estimate above the available memory; return a warning text above
    ``WARN_FRACTION`` of it, else None. ``available`` defaults to :func:`available_memory_bytes`."""
    if available is None:
        available = available_memory_bytes()
    if available is None:
        return None
    fix = fix or ("Use fewer detector pixels (--size, e.g. 1024 1024; bin the 1536 x 1536 panel down), crop or "
                  "downsample the CT, or run on a machine with more free memory.")
    if estimate.total > available:
        raise InputError(f"{what} needs about {estimate.describe()}, more than the {format_bytes(available)} of "
                         "memory available; it would fail part-way or make the machine swap.", fix)
    if estimate.total > WARN_FRACTION * available:
        return (f"{what} needs about {estimate.describe()}, {100.0 * estimate.total / available:.0f} % of the "
                f"{format_bytes(available)} of memory available.")
    return None


def warn_if_large(estimate: MemoryEstimate, what: str) -> None:
    """:func:`check_memory` for the Python API: raises above the available memory, warns above the threshold."""
    message = check_memory(estimate, what, fix="Render fewer detector pixels (a smaller width x height), crop or "
                                              "downsample the CT, or free memory.")
    if message:
        warnings.warn(message, MemoryWarning, stacklevel=3)
