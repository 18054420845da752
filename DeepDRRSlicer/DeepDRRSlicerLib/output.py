"""Writing a simulation result to a folder: .npy per stage, PNG previews, JSON metadata, atomically."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import InputError, describe
from .pipeline import SimulationResult


#: Stages shown on a linear scale: ``final`` is already windowed to [0, 1] (noise.final_image); scatter
#: maps (more scatter brighter) from their minimum to their 99.5th percentile.
_FIXED_WINDOW_STAGES = {"final": (0.0, 1.0)}
_LINEAR_STAGES = ("scatter", "spr", "scatter_relative_error")


def is_detector_signal(stage: str) -> bool:
    """Whether a stage is a detector signal shown logarithmically (I/I0: dense matter dark), not a line
    integral (more matter brighter), the windowed ``final`` image or a scatter map (linear)."""
    return not (stage.startswith("line_integral") or stage in _FIXED_WINDOW_STAGES or stage in _LINEAR_STAGES)


def _window(stage: str, image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(display values, low, high): detector signals are shown logarithmically. Like a C-arm's automatic
    window, the 1-99 percentile range is taken over the central 70 % of the field, from the pixels whose
    rays crossed the patient."""
    image = np.asarray(image, dtype=np.float64)
    if stage in _FIXED_WINDOW_STAGES:
        return image, *_FIXED_WINDOW_STAGES[stage]
    if stage in _LINEAR_STAGES:
        low, high = float(image.min()), float(np.percentile(image, 99.5))
        return image, low, (high if high > low else low + 1.0)
    if not is_detector_signal(stage):
        values = image
        in_body = values > 0.02 * values.max()
    else:
        values = np.log(np.clip(image, 1e-12, None))
        in_body = image < 0.95  # unattenuated air would take the window
    rows, cols = image.shape
    central = np.zeros(image.shape, dtype=bool)
    central[int(0.15 * rows):int(np.ceil(0.85 * rows)), int(0.15 * cols):int(np.ceil(0.85 * cols))] = True
    window_from = values.ravel()
    for region in (in_body & central, in_body):
        if region.sum() > 0.05 * values.size:
            window_from = values[region]
            break
    low, high = np.percentile(window_from, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
    return values, float(low), float(high)


def auto_window(stage: str, image: np.ndarray) -> tuple[float, float]:
    """The display range of ``display_image``, in the image's own units (I/I0 or g/cm2).

    Detector signals map logarithmically between the two (``display_image``); a viewer with a linear
    window needs a logarithmic gray ramp between them to show the same picture.
    """
    _, low, high = _window(stage, image)
    if is_detector_signal(stage):
        return float(np.exp(low)), float(np.exp(high))
    return low, high


def display_image(stage: str, image: np.ndarray) -> np.ndarray:
    """8-bit preview. Detector-signal stages (I/I0) show dense matter dark, as a C-arm
    monitor does; line integrals show more material brighter. The window is a C-arm's
    automatic window (``auto_window``)."""
    values, low, high = _window(stage, image)
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path, image_uint8: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image_uint8, mode="L").save(path)


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("DeepDRRSlicerLib", "numpy", "numba", "SimpleITK", "xraydb"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


# ---- atomic result folders ----------------------------------------------------------------------
#
# A run writes into a hidden staging folder beside --out and moves it into place only when every file
# is complete, so an interrupted run leaves the previous result as it was and no partial one. A folder
# is a "previous result" when its summary.json lists the files the tool wrote there; anything else in
# --out is the user's and is never deleted.

RESULT_MANIFEST = "summary.json"
WRITTEN_BY = "deepdrr-slicer"
# What results written before summary.json listed its files contained (recognised as the tool's own).
_LEGACY_RESULT_PATTERNS = ("primary.npy", "primary.png", "line_integral*.npy", "line_integral*.png",
                           "landmarks.csv", "landmarks.json", "overlay.png", "geometry.json", "summary.json")
#: Names a simulate result may write (stages, images, landmarks, geometry, summary): an input file of such a
#: name inside the output folder would be replaced, so it is refused.
_RESULT_NAME_PATTERNS = ("*.npy", "*.png", "landmarks.csv", "landmarks.json", "geometry.json", "summary.json")
_STAGING_MARK = ".partial-"
_PREVIOUS_MARK = ".previous-"


def result_files(folder: Path) -> set[str] | None:
    """Names of the files a previous deepdrr-slicer run wrote in ``folder``, or None if it holds no result."""
    manifest = folder / RESULT_MANIFEST
    if not manifest.is_file():
        return None
    try:
        summary = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(summary, dict):
        return None
    if summary.get("written_by") == WRITTEN_BY and isinstance(summary.get("files"), list):
        return {str(name) for name in summary["files"] if isinstance(name, str) and "/" not in name} | {
            RESULT_MANIFEST}
    if isinstance(summary.get("versions"), dict) and "DeepDRRSlicerLib" in summary["versions"]:
        return {path.name for pattern in _LEGACY_RESULT_PATTERNS for path in folder.glob(pattern)}
    return None


class OutputFolder:
    """A result folder replaced as a whole, only when a run completes.

    Create it before any work (it checks the target and writes nothing), then
    write the files into the folder that :meth:`staging` yields::

        target = OutputFolder(out, overwrite=False)       # InputError now if out is unusable
        ...read inputs, render...
        with target.staging() as folder:                   # hidden folder beside out
            write files into folder                        # an exception removes it; out is untouched
        # here out holds exactly the new files (plus the user's own, which are never deleted)

    ``out`` that is absent, empty or a previous result (see :func:`result_files`)
    is swapped for the staging folder in one rename. A folder holding anything
    else is refused unless ``overwrite``; then the new files are moved in one by
    one, the user's other files stay, and files of the same name are replaced.
    ``recognise`` decides what counts as a previous result (a function of the
    folder returning the set of file names the tool wrote, or None); a dataset
    writer can pass its own.
    """

    def __init__(self, out, *, overwrite: bool = False, argument: str = "--out", recognise=result_files):
        self.argument = argument
        self.overwrite = bool(overwrite)
        self.recognise = recognise
        self.path = self._checked_path(out)
        self.notes: list[str] = []
        self._inputs: list[Path] = []
        self.check()

    def protect(self, *paths) -> None:
        """Inputs of the run (files or folders; None is skipped): never replaced, even with ``overwrite``, unless
        a previous result in the target wrote them. Raises InputError now when one lies in the target under a
        name a result may have."""
        for path in paths:
            if path is not None:
                self._inputs.append(Path(path).expanduser().resolve())
        self.check()

    def _check_inputs(self, names=None) -> None:
        target = self.path.resolve()
        # a previous result's own file may be an input (--geometry D/geometry.json --out D): it is read before
        # anything is written and re-rendered as it was, so replacing it is the point
        own = (self.recognise(target) or set()) if self._inputs and target.is_dir() else set()
        for path in self._inputs:
            if path.parent != target or path.name in own:
                continue
            clashes = (path.name in names) if names is not None else any(
                fnmatch.fnmatch(path.name, pattern) for pattern in _RESULT_NAME_PATTERNS)
            if clashes:
                raise InputError(f"The input {path} lies in the output folder {target} under a name the result "
                                 "writes; the run would replace it.",
                                 f"Give {self.argument} another folder, or move or rename the input.")

    def _checked_path(self, out) -> Path:
        fix = f"Give {self.argument} a folder path, e.g. {self.argument} results/run1."
        if out is None or not isinstance(out, (str, os.PathLike)):
            raise InputError(f"{self.argument} must be a folder path, got {describe(out)}.", fix)
        if not str(out).strip():
            raise InputError(f"{self.argument} is empty; it would mean the current folder.", fix)
        path = Path(os.path.abspath(os.path.expanduser(str(out))))
        if path.is_symlink() and path.resolve().is_dir():
            path = path.resolve()  # replace the folder the link points to, keep the link
        if path.parent == path:
            raise InputError(f"{self.argument} {path} is the root of the file system.", fix)
        return path

    def check(self) -> None:
        """Refuse an unusable target now, before any work: raises InputError, writes nothing."""
        out = self.path
        self._check_inputs()
        if out.exists() and not out.is_dir():
            raise InputError(f"Output path {out} exists and is not a folder.",
                             f"Give {self.argument} a folder (new or existing).")
        ancestor = out if out.exists() else out.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise InputError(f"Cannot create the output folder {out}: {ancestor} is a file, not a folder.",
                             f"Give {self.argument} a path inside a folder.")
        if not os.access(ancestor, os.W_OK | os.X_OK) or (out.exists() and not os.access(out.parent, os.W_OK)):
            where = ancestor if not out.exists() else out.parent
            raise InputError(f"Cannot write the output folder {out}: {where} is not writable.",
                             f"Give {self.argument} a folder you can write to.")
        foreign = self.foreign_entries()
        if foreign and not self.overwrite:
            listed = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
            own = self.recognise(out) if out.is_dir() else None
            what = ("holds a previous result plus files it did not write" if own is not None
                    else "is not empty and does not hold a previous deepdrr-slicer result")
            raise InputError(f"The output folder {out} {what} ({len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'}: "
                             f"{listed}); writing there could mix results with them or replace them.",
                             f"Give {self.argument} a new or empty folder, or add --overwrite to write into it "
                             "anyway (its other files are kept; files with a result's name are replaced).")

    def foreign_entries(self) -> set[str]:
        """Entries of the target folder that no previous run of the tool wrote."""
        if not self.path.is_dir():
            return set()
        entries = {entry.name for entry in self.path.iterdir()}
        return entries - (self.recognise(self.path) or set())

    @contextmanager
    def staging(self):
        """Yield an empty hidden folder beside the target; move it into place when the block completes."""
        self.check()  # the folder may have changed while the run was working
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{_STAGING_MARK}{os.getpid()}-", dir=parent))
        except OSError as error:
            raise _write_error(self.path, error, self.argument) from None
        try:
            yield staging
            with _interrupts_deferred():
                self._commit(staging)
        except OSError as error:
            raise _write_error(self.path, error, self.argument) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _remove_leftovers(self.path)

    def _commit(self, staging: Path) -> None:
        out = self.path
        new_files = {entry.name for entry in staging.iterdir()}
        self._check_inputs(new_files)
        if not out.exists():
            os.rename(staging, out)
            return
        own = self.recognise(out) or set()
        entries = {entry.name for entry in out.iterdir()}
        try:
            working = Path.cwd().resolve()
        except OSError:
            working = None
        holds_cwd = working is not None and (working == out.resolve() or out.resolve() in working.parents)
        if entries <= own and not holds_cwd:  # a folder a shell sits in is not renamed under it
            # Only the tool's files: swap the folders (two renames, interrupts deferred).
            previous = out.with_name(f".{out.name}{_PREVIOUS_MARK}{os.getpid()}-{os.urandom(4).hex()}")
            os.rename(out, previous)
            os.rename(staging, out)
            for name in own:
                (previous / name).unlink(missing_ok=True)
            try:
                previous.rmdir()
            except OSError:  # something appeared there meanwhile: not ours to delete
                self.notes.append(f"the previous result's folder was kept as {previous}: it held other files")
            return
        # The user's files are here too (allowed by --overwrite): move the new files in one by one.
        replaced = sorted(name for name in new_files & entries if name not in own)
        for name in sorted(new_files - {RESULT_MANIFEST}) + [RESULT_MANIFEST] * (RESULT_MANIFEST in new_files):
            os.replace(staging / name, out / name)
        for name in own - new_files:
            (out / name).unlink(missing_ok=True)
        kept = sorted(entries - own - new_files)
        if kept:
            self.notes.append(f"kept {len(kept)} file(s) in {out} that deepdrr-slicer did not write: "
                              + ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else ""))
        if replaced:
            self.notes.append(f"--overwrite replaced {len(replaced)} file(s) deepdrr-slicer had not written: "
                              + ", ".join(replaced[:5]) + (", ..." if len(replaced) > 5 else ""))


@contextmanager
def atomic_output(out, *, overwrite: bool = False, argument: str = "--out", recognise=result_files):
    """``with atomic_output(out) as folder:`` write into ``folder``; it replaces ``out`` when the block ends."""
    with OutputFolder(out, overwrite=overwrite, argument=argument, recognise=recognise).staging() as folder:
        yield folder


@contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C (and SIGTERM) for the few renames that swap a result into place; re-raise after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    handlers = {}
    for name in ("SIGINT", "SIGTERM"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            handlers[number] = signal.signal(number, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    if received:
        raise KeyboardInterrupt


def _remove_leftovers(out: Path) -> None:
    """Staging or swapped-out folders of runs that were killed (their process is gone)."""
    for marker in (_STAGING_MARK, _PREVIOUS_MARK):
        for leftover in out.parent.glob(f".{glob.escape(out.name)}{marker}*"):
            pid_text = leftover.name[len(out.name) + 1 + len(marker):].split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_alive(int(pid_text)):
                shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; keep the folder instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _write_error(out: Path, error: OSError, argument: str) -> InputError:
    return InputError(f"Cannot write the results to {out}: {error.strerror or error}"
                      f"{' (' + str(error.filename) + ')' if getattr(error, 'filename', None) else ''}.",
                      f"Free disk space or give {argument} a folder you can write to; the previous contents "
                      "of the folder are unchanged.")


def write_result(result: SimulationResult, out_dir, parameters: dict | None = None, *,
                 overwrite: bool = False) -> list[Path]:
    """Write every stage and the metadata into ``out_dir`` (atomically); returns the files written.

    ``out_dir`` is a folder path or an :class:`OutputFolder` made before the run.
    """
    if not isinstance(result, SimulationResult):
        raise InputError(f"result must be a SimulationResult (from Simulator.render), got {describe(result)}.",
                         "Pass the object that Simulator.render() or simulate() returned.")
    if parameters is not None and not isinstance(parameters, dict):
        raise InputError(f"parameters must be a dict or None, got {describe(parameters)}.",
                         "Pass a dict of the run's parameters (written to summary.json), or nothing.")
    target = out_dir if isinstance(out_dir, OutputFolder) else OutputFolder(out_dir, overwrite=overwrite)
    with target.staging() as folder:
        names = _write_files(result, folder, parameters)
    return [target.path / name for name in names]


def _write_files(result: SimulationResult, out: Path, parameters: dict | None) -> list[str]:
    from .landmarks import draw_overlay, write_landmarks_csv, write_landmarks_json
    from .truncation import mark_on_preview

    written = []
    previews = {stage: display_image(stage, image) for stage, image in result.stages.items()}
    for stage, image in result.stages.items():
        np.save(out / f"{stage}.npy", np.ascontiguousarray(image, dtype=np.float32))
        save_png(out / f"{stage}.png", previews[stage])
        written += [f"{stage}.npy", f"{stage}.png"]
    for name, mask in result.masks.items():   # 0/1 masks, e.g. truncation: marked pixels white
        np.save(out / f"{name}.npy", np.ascontiguousarray(mask, dtype=np.float32))
        save_png(out / f"{name}.png", np.where(mask > 0.5, 255, 0).astype(np.uint8))
        written += [f"{name}.npy", f"{name}.png"]
    result.geometry.save(out / "geometry.json")
    written.append("geometry.json")
    if result.landmarks is not None:
        main_stage = next((s for s in ("final", "primary", "line_integral") if s in result.stages),
                          next(iter(result.stages)))
        write_landmarks_csv(result.landmarks, out / "landmarks.csv")
        write_landmarks_json(result.landmarks, result.geometry, out / "landmarks.json")
        base = previews[main_stage]
        if "truncation" in result.masks:
            base = mark_on_preview(base, result.masks["truncation"])
        draw_overlay(base, result.landmarks, out / "overlay.png", title=main_stage)
        written += ["landmarks.csv", "landmarks.json", "overlay.png"]
    summary = result.summary()
    summary["parameters"] = parameters or {}
    summary["versions"] = versions()
    summary["geometry"] = result.geometry.to_dict()
    written.append(RESULT_MANIFEST)
    summary["written_by"] = WRITTEN_BY
    summary["files"] = list(written)
    (out / RESULT_MANIFEST).write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    return written


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
