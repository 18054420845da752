"""The material segmentation network: a compact 3D U-Net (air / soft tissue / bone).

It was trained in this repository from real labelled CT (see
``Resources/Models/README.md`` and ``tools/train_material_network.py``); its
weights ship in ``Resources/Models/`` and are never downloaded.

Inference:

1. the CT array is put in a canonical orientation (array axes nearest to
   S, A, R, from the IJK->RAS matrix), so the network sees every CT the way it
   was trained whatever the file's axis order;
2. it is resampled to the network's working spacing (box-averaged where the CT
   is finer, trilinear where it is coarser);
3. a sliding window with overlap and tapered blending gives per-class
   probabilities, deterministically, with a progress callback that may raise
   :class:`SimulationCancelled` to stop;
4. the probabilities are interpolated back onto the CT grid.

torch is optional for the engine: it is imported only inside functions, and
:func:`torch_status` says whether it is there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, SimulationCancelled

CLASS_NAMES = ("air", "soft_tissue", "bone")
WEIGHTS_PARTS = ("Models", "material_unet.pt")
#: Format tag stored in the weights file; bump it when the architecture changes.
WEIGHTS_FORMAT = "deepdrr-slicer-material-unet-1"
#: Windows are at most this many working-grid voxels per axis (memory vs. overlap waste).
MAX_WINDOW = 160
#: Overlap between neighbouring windows, working-grid voxels.
WINDOW_OVERLAP = 24

_RETRAIN_FIX = ("Reinstall DeepDRRSlicer from a complete copy (pip install . or the Slicer extension), "
                "or rebuild the weights with: python tools/train_material_network.py")
TORCH_FIX = ("Install PyTorch: in 3D Slicer, the module's 'Install PyTorch...' button (SlicerPyTorch "
             "extension); outside Slicer, pip install '.[network]' (torch==2.13.0). Or use --materials threshold.")


class NetworkUnavailable(RuntimeError):
    """The segmentation network cannot run here (no torch); the message says why and what to do."""


class ModelWeightsError(InputError):
    """The weights file is missing, truncated, corrupt or of another format."""


def torch_status() -> tuple[bool, str]:
    """Whether torch can be imported, and why not."""
    try:
        import torch  # noqa: F401
    except Exception as error:  # ImportError, or a broken install raising OSError
        return False, f"PyTorch is not available ({error.__class__.__name__}: {error})"
    return True, ""


def default_weights_path() -> Path:
    """Path of the shipped weights (it may not exist in an incomplete install)."""
    from .resources import resource_dirs

    for base in resource_dirs():
        candidate = base.joinpath(*WEIGHTS_PARTS)
        if candidate.exists():
            return candidate
    return resource_dirs()[-1].joinpath(*WEIGHTS_PARTS)


# --------------------------------------------------------------------------
# The architecture
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkConfig:
    channels: tuple = (8, 16, 32, 64)     # feature channels per level (len = levels)
    in_channels: int = 2                  # see input_channels()
    classes: int = len(CLASS_NAMES)
    working_spacing_mm: float = 3.0
    top_convs: int = 1                    # convolutions per block at full working resolution (cost!)

    @property
    def multiple(self) -> int:
        """Window sizes must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.channels) - 1)

    def as_dict(self) -> dict:
        return {"channels": list(self.channels), "in_channels": self.in_channels, "classes": self.classes,
                "working_spacing_mm": self.working_spacing_mm, "top_convs": self.top_convs}

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        return cls(channels=tuple(int(c) for c in d["channels"]), in_channels=int(d["in_channels"]),
                   classes=int(d["classes"]), working_spacing_mm=float(d["working_spacing_mm"]),
                   top_convs=int(d.get("top_convs", 2)))


def build_model(config: NetworkConfig):
    """A 3D U-Net: per level 3x3x3 conv + BatchNorm + ReLU (two per block, ``top_convs`` at the
    full-resolution level, where they cost most); max-pool down, transposed conv up."""
    import torch
    from torch import nn

    def block(cin, cout, convs=2):
        layers = []
        for n in range(convs):
            layers += [nn.Conv3d(cin if n == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                       nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    class MaterialUNet(nn.Module):
        def __init__(self):
            super().__init__()
            ch = config.channels
            self.encoders = nn.ModuleList()
            previous = config.in_channels
            for level, c in enumerate(ch):
                self.encoders.append(block(previous, c, config.top_convs if level == 0 else 2))
                previous = c
            self.upsamplers = nn.ModuleList()
            self.decoders = nn.ModuleList()
            for level in range(len(ch) - 1, 0, -1):
                self.upsamplers.append(nn.ConvTranspose3d(ch[level], ch[level - 1], 2, stride=2))
                self.decoders.append(block(2 * ch[level - 1], ch[level - 1], config.top_convs if level == 1 else 2))
            self.head = nn.Conv3d(ch[0], config.classes, 1)

        def forward(self, x):
            skips = []
            for level, encoder in enumerate(self.encoders):
                x = encoder(x)
                if level < len(self.encoders) - 1:
                    skips.append(x)
                    x = torch.nn.functional.max_pool3d(x, 2)
            for upsample, decoder in zip(self.upsamplers, self.decoders):
                x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
            return self.head(x)

    return MaterialUNet()


def input_channels(hu):
    """Network input from HU (a torch tensor [..., k, j, i]) -> [..., 2, k, j, i].

    Channel 0: HU / 1000 over the whole CT range; channel 1: a soft-tissue-to-bone
    window (-200..600 HU) that keeps contrast where air/soft/bone decisions are made.
    """
    import torch

    wide = torch.clamp(hu, -1024.0, 3071.0) / 1000.0
    window = torch.clamp(hu, -200.0, 600.0) / 400.0
    return torch.stack([wide, window], dim=-4)


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

@dataclass
class LoadedModel:
    model: object            # torch.nn.Module in eval mode
    config: NetworkConfig
    path: Path
    sha256: str
    metadata: dict
    device: str


def load_model(path=None, device: str = "cpu") -> LoadedModel:
    """Load (once per file version and device) the network from ``path`` (default: the shipped weights).

    Missing, truncated or corrupt files raise :class:`ModelWeightsError` naming
    the file and the fix; without torch, :class:`NetworkUnavailable`.
    """
    ok, why = torch_status()
    if not ok:
        raise NetworkUnavailable(f"The material segmentation network needs PyTorch: {why}. Fix: {TORCH_FIX}")
    path = Path(path) if path is not None else default_weights_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelWeightsError(f"The network weights file {path} is missing.", _RETRAIN_FIX) from None
    return _load_model_cached(str(path), stat.st_mtime_ns, stat.st_size, device)


@functools.lru_cache(maxsize=4)
def _load_model_cached(path: str, _mtime_ns: int, _size: int, device: str) -> LoadedModel:
    import torch

    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    expected = _expected_sha256(Path(path))
    if expected is not None and expected != digest:
        raise ModelWeightsError(f"The network weights file {path} is corrupt or truncated (its SHA-256 {digest[:12]}... "
                                f"differs from the {expected[:12]}... recorded beside it).", _RETRAIN_FIX)
    try:
        import io

        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, unpickling errors, foreign objects
        raise ModelWeightsError(f"The network weights file {path} cannot be read "
                                f"({error.__class__.__name__}: {str(error)[:200]}).", _RETRAIN_FIX) from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelWeightsError(f"The network weights file {path} has format {found!r}, expected {WEIGHTS_FORMAT!r}.",
                                _RETRAIN_FIX)
    try:
        config = NetworkConfig.from_dict(payload["config"])
        model = build_model(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except Exception as error:
        raise ModelWeightsError(f"The network weights file {path} does not match the network "
                                f"({error.__class__.__name__}: {str(error)[:200]}).", _RETRAIN_FIX) from None
    model.eval()
    model.to(device)
    metadata = {k: v for k, v in payload.items() if k not in ("state_dict",)}
    return LoadedModel(model=model, config=config, path=Path(path), sha256=digest, metadata=metadata, device=device)


def _expected_sha256(path: Path) -> str | None:
    """The SHA-256 recorded in ``<weights>.json`` beside the weights, if that file exists."""
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return None
    try:
        return str(json.loads(sidecar.read_text(encoding="utf-8"))["sha256"])
    except (ValueError, KeyError, OSError) as error:
        raise ModelWeightsError(f"The weights description {sidecar} cannot be read ({error}).", _RETRAIN_FIX) from None


def save_weights(model, config: NetworkConfig, path, metadata: dict | None = None) -> str:
    """Write ``model``'s weights (a plain state dict, loadable with weights_only=True) and a JSON
    sidecar with their SHA-256; returns the digest."""
    import io

    import torch

    # Plain JSON types only: weights_only=True refuses anything else (e.g. torch's TorchVersion strings).
    metadata = json.loads(json.dumps(metadata or {}, default=str))
    payload = {"format": WEIGHTS_FORMAT, "config": config.as_dict(), "class_names": list(CLASS_NAMES),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    payload.update(metadata)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = Path(path)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {"file": path.name, "sha256": digest, "bytes": len(data), "format": WEIGHTS_FORMAT,
               "config": config.as_dict(), "class_names": list(CLASS_NAMES)}
    sidecar.update(metadata)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return digest


# --------------------------------------------------------------------------
# Orientation and resampling (shared by training and inference)
# --------------------------------------------------------------------------

def canonical_axes(ijk_to_ras) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Array-axis permutation and flips that bring a [k, j, i] array to the canonical
    order (axis 0 -> superior, axis 1 -> anterior, axis 2 -> patient's left)."""
    direction = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    # Column c of ``direction`` is the RAS step of index c (i, j, k); array axis a holds index 2 - a.
    unit = direction / np.maximum(np.linalg.norm(direction, axis=0), 1e-12)
    targets = (2, 1, 0)   # canonical axis 0 <- RAS z (S), axis 1 <- y (A), axis 2 <- x (R)
    chosen: list[int] = []
    for target in targets:
        scores = [abs(unit[target, 2 - a]) if a not in chosen else -1.0 for a in range(3)]
        chosen.append(int(np.argmax(scores)))
    signs = [unit[target, 2 - a] for target, a in zip(targets, chosen)]
    # Axis 2 runs to the patient's left (-R), the way an axial slice is shown.
    flips = (signs[0] < 0, signs[1] < 0, signs[2] > 0)
    return tuple(chosen), flips


def to_canonical(array: np.ndarray, axes, flips) -> np.ndarray:
    out = np.transpose(array, axes)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return out


def from_canonical(array: np.ndarray, axes, flips) -> np.ndarray:
    """Inverse of :func:`to_canonical` on the last three axes of ``array``."""
    lead = array.ndim - 3
    for axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, axis=lead + axis)
    inverse = np.argsort(axes)
    return np.transpose(array, tuple(range(lead)) + tuple(lead + int(a) for a in inverse))


def working_shape(shape, spacing_mm, working_spacing_mm: float) -> tuple[int, int, int]:
    """Grid size covering the same extent at about ``working_spacing_mm``."""
    return tuple(max(1, int(round(n * s / working_spacing_mm))) for n, s in zip(shape, spacing_mm))


def resample(tensor, size):
    """Resample a [N, C, k, j, i] tensor to ``size`` over the same extent (voxel faces aligned).

    Axes that shrink are box-averaged (adaptive average pooling, so thin bone
    is not aliased away); axes that grow are interpolated trilinearly.
    """
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    current = tuple(tensor.shape[-3:])
    if current == size:
        return tensor
    pooled = tuple(min(c, s) for c, s in zip(current, size))
    if pooled != current:
        tensor = F.adaptive_avg_pool3d(tensor, pooled)
    if pooled != size:
        tensor = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    return tensor


# --------------------------------------------------------------------------
# Sliding-window inference
# --------------------------------------------------------------------------

def _axis_windows(length: int, window: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Window size (a multiple of ``multiple``) and start offsets covering ``length``."""
    padded = int(math.ceil(length / multiple) * multiple)
    if padded <= window:
        return padded, [0]
    count = int(math.ceil((length - overlap) / (window - overlap)))
    size = int(math.ceil(((length + (count - 1) * overlap) / count) / multiple) * multiple)
    size = min(size, window)
    starts = [int(round(s)) for s in np.linspace(0, length - size, count)]
    return size, starts


def _taper(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1 in the middle, a raised-cosine ramp over the overlap at inner window edges."""
    weights = np.ones(size, dtype=np.float32)
    ramp = max(1, min(overlap, size // 2))
    rising = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
    if not at_start:
        weights[:ramp] = rising
    if not at_end:
        weights[-ramp:] = rising[::-1]
    return weights


def predict_probabilities(loaded: LoadedModel, hu_working: np.ndarray, progress=None,
                          max_window: int = MAX_WINDOW, overlap: int = WINDOW_OVERLAP) -> np.ndarray:
    """Class probabilities [C, k, j, i] (float32) of a canonical, working-grid HU array.

    Windows overlap by ``overlap`` voxels and are blended with raised-cosine
    weights; the result does not depend on timing or threads. ``progress(f)``
    is called after each window and may raise SimulationCancelled.
    """
    import torch

    multiple = loaded.config.multiple
    max_window = max(multiple, max_window // multiple * multiple)
    shape = hu_working.shape
    plans = [_axis_windows(n, max_window, overlap, multiple) for n in shape]
    classes = loaded.config.classes
    total = np.zeros((classes, *shape), dtype=np.float32)
    weight_sum = np.zeros(shape, dtype=np.float32)
    starts_list = [(a, b, c) for a in plans[0][1] for b in plans[1][1] for c in plans[2][1]]
    device = torch.device(loaded.device)
    with torch.inference_mode(), fixed_torch_threads():
        for index, (s0, s1, s2) in enumerate(starts_list):
            sizes = [p[0] for p in plans]
            region = tuple(slice(s, min(s + z, n)) for s, z, n in zip((s0, s1, s2), sizes, shape))
            extent = tuple(r.stop - r.start for r in region)
            # Pad past the CT's end by repeating its last slice, as training does (an air slab there
            # would be a body that ends, which real scans never show).
            block = np.pad(np.asarray(hu_working[region], dtype=np.float32),
                           [(0, z - e) for z, e in zip(sizes, extent)], mode="edge")
            x = input_channels(torch.from_numpy(block).to(device))[None]
            probabilities = torch.softmax(loaded.model(x), dim=1)[0].float().cpu().numpy()
            tapers = [_taper(z, overlap, s == p[1][0], s == p[1][-1]) for z, s, p in zip(sizes, (s0, s1, s2), plans)]
            weights = tapers[0][:, None, None] * tapers[1][None, :, None] * tapers[2][None, None, :]
            weights = weights[: extent[0], : extent[1], : extent[2]]
            total[(slice(None), *region)] += probabilities[:, : extent[0], : extent[1], : extent[2]] * weights
            weight_sum[region] += weights
            if progress is not None:
                progress((index + 1) / len(starts_list))
    return total / np.maximum(weight_sum, 1e-12)


# torch's CPU convolutions round differently with different thread counts (about 1e-7), and
# DataLoader workers, Ray workers and Slicer each set their own. Inference always uses this many
# threads, so one machine gives bit-identical materials (and images) whoever calls it.
INFERENCE_THREADS = max(1, min(8, os.cpu_count() or 1))


@contextlib.contextmanager
def fixed_torch_threads(threads: int = INFERENCE_THREADS):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class WorkingProbabilities:
    """The network's output on its working grid, and how to map it back onto the CT grid."""

    probabilities: np.ndarray   # float32 [C, k', j', i'] on the canonical working grid
    axes: tuple
    flips: tuple
    native_shape: tuple         # the CT's [k, j, i] shape
    info: dict

    def to_native(self) -> np.ndarray:
        """float32 [C, k, j, i] probabilities on the CT grid (trilinear; they still sum to 1)."""
        import torch

        canonical_shape = tuple(np.array(self.native_shape)[list(self.axes)])
        native = np.empty((self.probabilities.shape[0], *canonical_shape), dtype=np.float32)
        with torch.inference_mode(), fixed_torch_threads():
            source = torch.from_numpy(np.ascontiguousarray(self.probabilities, dtype=np.float32))[None]
            for c in range(source.shape[1]):   # one class at a time bounds the peak memory
                native[c] = resample(source[:, c:c + 1], canonical_shape)[0, 0].numpy()
        return np.ascontiguousarray(from_canonical(native, self.axes, self.flips))


def segment_working(hu: np.ndarray, ijk_to_ras, *, device: str = "auto", weights_path=None, progress=None,
                    max_window: int = MAX_WINDOW, loaded: LoadedModel | None = None) -> WorkingProbabilities:
    """Run the network on a CT; probabilities stay on the working grid (see :meth:`WorkingProbabilities.to_native`).

    ``progress(fraction)`` may raise SimulationCancelled. ``loaded`` runs a
    model already in memory (training) instead of the weights file.
    """
    import time

    import torch

    if loaded is None:
        loaded = load_model(weights_path, _device(device))
    start = time.perf_counter()
    report = _progress_stages(progress, (0.05, 0.95))
    # Below -1024 HU is padding (e.g. -2048 outside the scan circle), not matter.
    hu = np.maximum(np.asarray(hu, dtype=np.float32), np.float32(-1024.0))
    axes, flips = canonical_axes(ijk_to_ras)
    spacing = np.linalg.norm(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3], axis=0)[::-1]  # per array axis
    canonical = np.ascontiguousarray(to_canonical(hu, axes, flips))
    canonical_spacing = tuple(float(spacing[a]) for a in axes)
    size = working_shape(canonical.shape, canonical_spacing, loaded.config.working_spacing_mm)
    with torch.inference_mode():
        working = resample(torch.from_numpy(canonical)[None, None], size)[0, 0].numpy()
    del canonical
    report(0, 1.0)
    probabilities = predict_probabilities(loaded, working, progress=lambda f: report(1, f), max_window=max_window)
    info = {"device": loaded.device, "working_shape": list(size), "weights": str(loaded.path),
            "weights_sha256": loaded.sha256, "seconds": round(time.perf_counter() - start, 3)}
    return WorkingProbabilities(probabilities, axes, flips, tuple(hu.shape), info)


def segment(hu: np.ndarray, ijk_to_ras, **kwargs) -> tuple[np.ndarray, dict]:
    """Per-class probabilities [3, k, j, i] (air, soft tissue, bone; float32, summing to 1) on the CT grid,
    and a dict describing the run. Takes the keyword arguments of :func:`segment_working`."""
    working = segment_working(hu, ijk_to_ras, **kwargs)
    return working.to_native(), working.info


# --------------------------------------------------------------------------
# Cache of network outputs (CLI --materials-cache)
# --------------------------------------------------------------------------

def cache_key(hu: np.ndarray, ijk_to_ras, weights_sha256: str) -> str:
    """Identifies one CT (voxels and placement) run through one set of weights."""
    h = hashlib.sha256()
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    h.update(str(hu.shape).encode())
    h.update(memoryview(hu).cast("B"))
    h.update(np.ascontiguousarray(ijk_to_ras, dtype=np.float64).tobytes())
    h.update(f"{WEIGHTS_FORMAT}:{weights_sha256}".encode())
    return h.hexdigest()


_RECENT: dict = {}
_RECENT_SIZE = 2


def remembered_segment_working(hu, ijk_to_ras, *, device: str = "auto", progress=None) -> WorkingProbabilities:
    """:func:`segment_working` for the shipped weights, remembering the last few CTs in this process
    (a reloaded CT, or several simulators of the same CT, do not rerun the network)."""
    loaded = load_model(None, _device(device))
    key = (cache_key(hu, ijk_to_ras, loaded.sha256), loaded.device)
    if key in _RECENT:
        if progress is not None:
            progress(1.0)
        return _RECENT[key]
    result = segment_working(hu, ijk_to_ras, progress=progress, loaded=loaded)
    _RECENT[key] = result
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.pop(next(iter(_RECENT)))
    return result


def cached_segment_working(hu, ijk_to_ras, cache_dir, *, device: str = "auto", weights_path=None,
                           progress=None) -> tuple[WorkingProbabilities, bool]:
    """:func:`segment_working` through a folder cache: (result, whether it came from the cache)."""
    loaded = load_model(weights_path, _device(device))
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot create the materials cache folder {folder} ({error}).",
                         "Give --materials-cache a writable folder.") from None
    path = folder / f"materials-{cache_key(hu, ijk_to_ras, loaded.sha256)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                result = WorkingProbabilities(z["probabilities"].astype(np.float32), tuple(int(a) for a in z["axes"]),
                                              tuple(bool(f) for f in z["flips"]),
                                              tuple(int(n) for n in z["native_shape"]),
                                              json.loads(str(z["info"])))
            if result.native_shape == tuple(np.shape(hu)):
                if progress is not None:
                    progress(1.0)
                return result, True
        except (OSError, ValueError, KeyError):
            pass   # unreadable entry: recompute and overwrite it
    result = segment_working(hu, ijk_to_ras, progress=progress, loaded=loaded)
    temporary = path.with_suffix(".tmp.npz")
    np.savez_compressed(temporary, probabilities=result.probabilities.astype(np.float16),
                        axes=np.array(result.axes), flips=np.array(result.flips),
                        native_shape=np.array(result.native_shape), info=json.dumps(result.info))
    temporary.replace(path)
    return result, False


def _device(device: str) -> str:
    import torch

    if device in ("auto", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        # --device cuda asks for the GPU projector (CuPy/pycuda); a CPU build of torch still segments
        return "cpu"
    if device not in ("cpu", "cuda"):
        raise InputError(f"Unknown device {device!r} for the network.", "Use auto, cpu or cuda.")
    return device


def _progress_stages(progress, weights):
    """Map (stage, fraction) onto one 0..1 progress callback."""
    offsets = np.concatenate([[0.0], np.cumsum(weights)])

    def report(stage: int, fraction: float):
        if progress is not None:
            progress(float(offsets[stage] + weights[stage] * min(max(fraction, 0.0), 1.0)))

    return report


__all__ = ["CLASS_NAMES", "NetworkConfig", "NetworkUnavailable", "ModelWeightsError", "LoadedModel", "torch_status",
           "default_weights_path", "build_model", "input_channels", "load_model", "save_weights", "canonical_axes",
           "to_canonical", "from_canonical", "working_shape", "resample", "predict_probabilities", "segment",
           "segment_working", "WorkingProbabilities", "cache_key", "cached_segment_working",
           "remembered_segment_working", "SimulationCancelled",
           "TORCH_FIX"]
