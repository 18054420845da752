"""Run a dataset: plan it, render its shards (serially, in local processes or on Ray), index it.

``generate(config, out)`` is the one generator behind the CLI, the Slicer
module and the benchmarks. A shard is the unit of work; what is in a shard
depends only on the plan, so every way of running writes the same bytes, and
a rerun of an interrupted run only renders what is missing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, SimulationCancelled
from .config import FORMAT_NAME, GenerateConfig
from .inputs import INPUTS
from .manifest import dataset_card, dataset_json, manifest_csv, manifest_row
from .plan import Plan, make_plan
from .render import NO_RAY, ItemFailed, SampleRenderer, check_stages
from .shards import (ShardWriter, atomic_write_bytes, is_disk_full, read_shard_record, shard_is_complete,
                     shard_name)

MARKER = ".deepdrr-dataset"
SHARDS = "shards"
OWN_FILES = ("plan.json", "manifest.csv", "dataset.json", "README.md", "report.json", MARKER)


@dataclass
class GenerateReport:
    out: Path
    planned: int
    written: int
    failed: list                 # [{"key", "reason"}]
    skipped_cts: list            # [{"index", "path", "reason"}]
    no_ray: list                 # [{"index", "path", "poses", "of"}]
    shards_total: int
    shards_done: int
    rendered_now: int
    seconds: float
    complete: bool
    cancelled: bool = False
    runner: str = "serial"
    hosts: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.rendered_now / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "out"}
        data["out"] = str(self.out)
        data["images_per_second"] = round(self.images_per_second, 4)
        data["seconds"] = round(self.seconds, 3)
        return data


class OutputError(InputError):
    """The output folder cannot be written (unwritable, disk full)."""


def _output_error(out: Path, error: OSError) -> OutputError:
    what = os.strerror(error.errno) if getattr(error, "errno", None) else str(error)
    if is_disk_full(error):
        return OutputError(f"Cannot write the dataset to {out}: {what}. Completed shards are intact; the shard being "
                           "written was not renamed into place, so no loader reads it.",
                           "Free disk space (or give another --out) and rerun the same command: it resumes.")
    return OutputError(f"Cannot write to the output folder {out}: {what}.",
                       "Give --out a folder you can write to (and that is not read-only).")


def claim_output(out) -> Path:
    """Check ``out`` is new, empty or one of our datasets, create it and mark it as ours."""
    out = Path(out)
    if str(out).strip() in ("", "."):
        raise InputError(f"The output folder {str(out)!r} is not a dataset folder name.",
                         "Give --out a new folder, e.g. --out datasets/pelvis.")
    if out.exists() and not out.is_dir():
        raise InputError(f"Output path {out} exists and is not a folder.", "Give --out a folder (new or existing).")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise InputError(f"Output folder {out} is not empty and holds no DeepDRRSlicer dataset.",
                         "Give a new or empty folder; files this tool did not write are never deleted.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).is_file():
            atomic_write_bytes(out / MARKER, json.dumps({"format": FORMAT_NAME}).encode() + b"\n")
    except OSError as error:
        raise _output_error(out, error) from None
    return out


def prepare_output(out: Path, plan: Plan, overwrite: bool = False) -> None:
    """Create ``out`` or accept it as this same dataset; never delete files this tool did not write."""
    out = claim_output(out)
    plan_bytes = _plan_bytes(plan)
    existing = (out / "plan.json").read_bytes() if (out / "plan.json").is_file() else None
    if existing is not None and existing != plan_bytes:
        if not overwrite:
            raise InputError(f"Output folder {out} holds a different dataset ({_first_difference(existing, plan_bytes)}).",
                             "Give another --out, or add --overwrite to replace that dataset.")
        # keep the marker: the folder stays ours while the user's other files sit beside the new dataset
        remove_dataset(out, keep_inputs=True, keep_marker=True)
    try:
        (out / SHARDS).mkdir(exist_ok=True)
        atomic_write_bytes(out / "plan.json", plan_bytes)
    except OSError as error:
        raise _output_error(out, error) from None


def remove_dataset(out: Path, keep_inputs: bool = False, keep_marker: bool = False) -> None:
    """Delete a dataset this tool wrote (its own files only; ``inputs/`` holds what the Slicer
    module exported for it; ``keep_marker`` when a new dataset replaces it at once)."""
    out = Path(out)
    folders = [SHARDS] if keep_inputs else [SHARDS, INPUTS]
    for name in OWN_FILES:
        if keep_marker and name == MARKER:
            continue
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass
    for folder in (out / name for name in folders):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and (folder.name == INPUTS or path.name.startswith(("shard-", ".shard-"))):
                    path.unlink()
            try:
                folder.rmdir()
            except OSError:
                pass


def _plan_bytes(plan: Plan) -> bytes:
    return (json.dumps(plan.to_dict(), indent=1, sort_keys=True) + "\n").encode()


def _first_difference(old: bytes, new: bytes) -> str:
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        return "its plan.json is unreadable"
    for section in ("config", "cts"):
        if a.get(section) != b.get(section):
            if section == "config":
                keys = [k for k in set(a["config"]) | set(b["config"]) if a["config"].get(k) != b["config"].get(k)]
                return "different settings: " + ", ".join(sorted(keys))
            return "different CTs or CT contents"
    return "a different plan"


# ---- one shard ------------------------------------------------------------------------------------
def render_shard(plan: Plan, out: Path, shard: int, renderer: SampleRenderer, cancel=None, on_image=None):
    """Render (or finish) one shard into ``out/shards``. Returns its record, or None when cancelled."""
    folder = Path(out) / SHARDS
    items = plan.shard_items(shard)
    writer = ShardWriter(folder, shard)
    file = f"{SHARDS}/{shard_name(shard)}.tar"
    try:
        done = writer.open([item.key for item in items])
        for item in items[len(done):]:
            if cancel is not None and cancel():
                writer.close()
                return None
            try:
                sample = renderer.render(item, cancel=cancel)
            except ItemFailed as failure:
                writer.fail(item.key, failure.reason, manifest_row(item, plan, file, None, None))
                if on_image is not None:
                    on_image(False)
                continue
            except SimulationCancelled:
                writer.close()
                return None
            visible = None
            if "landmarks" in sample.arrays:
                visible = int((sample.arrays["landmarks"][:, 3] > 0).sum())
            writer.append(item.key, sample.members(), manifest_row(item, plan, file, writer.size, visible))
            if on_image is not None:
                on_image(True)
        record = {"shard": shard, "images": [e["row"] for e in writer.records if e["status"] == "ok"],
                  "failed": [{"key": e["key"], "ct_index": e["row"]["ct_index"], "reason": e["reason"]}
                             for e in writer.records if e["status"] == "failed"]}
        return writer.finish(record)
    except OSError as error:
        writer.close()
        raise _output_error(Path(out), error) from None
    except BaseException:
        writer.close()
        raise


# ---- the whole dataset ----------------------------------------------------------------------------
def generate(config: GenerateConfig, out, *, workers: int = 1, ray_address: str | None = None,
             shard_filter: tuple = (0, 1), overwrite: bool = False, progress=None, cancel=None,
             plan: Plan | None = None) -> GenerateReport:
    """Make (or finish) the dataset ``config`` describes in ``out``.

    ``progress(done, total, message)`` is called as images finish; ``cancel()`` returning
    True stops at the next image (the run is resumable). ``shard_filter=(i, n)`` renders
    only shards s with s % n == i (several machines without Ray). ``ray_address`` runs the
    shards as Ray tasks ("local" starts a local cluster).
    """
    start = time.perf_counter()
    out = Path(out)
    if plan is None:
        plan = make_plan(config, progress=(lambda i, n, m: progress(0, 0, m)) if progress else None)
    check_stages(plan)
    index, count = shard_filter
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise InputError(f"--shard {index}/{count} is not i/n with 0 <= i < n.", "Give e.g. --shard 0/4.")
    if not ray_address:
        return _generate_into(plan, out, start, workers, None, index, count, overwrite, progress, cancel)
    from .ray_runner import ray_session

    with ray_session(ray_address):   # before the folder is claimed: a missing cluster leaves no files behind
        return _generate_into(plan, out, start, workers, ray_address, index, count, overwrite, progress, cancel)


def _generate_into(plan: Plan, out: Path, start: float, workers: int, ray_address, index: int, count: int,
                   overwrite: bool, progress, cancel) -> GenerateReport:
    """``generate`` after its checks (and inside the Ray session, with ``ray_address``)."""
    prepare_output(out, plan, overwrite=overwrite)
    _remove_leftovers(out / SHARDS, plan.shard_count)
    shards = [s for s in range(plan.shard_count) if s % count == index]
    pending = [s for s in shards if not shard_is_complete(out / SHARDS, s)]
    done_before = sum(len(plan.shard_items(s)) for s in shards if s not in pending)
    total = sum(len(plan.shard_items(s)) for s in shards)
    counter = {"done": done_before, "rendered": 0}

    def on_image(ok: bool) -> None:
        counter["done"] += 1
        counter["rendered"] += bool(ok)   # an image not made (e.g. no ray through the CT) is not counted
        if progress is not None:
            progress(counter["done"], total, "rendering")

    if progress is not None:
        progress(counter["done"], total, "rendering")
    cancelled = False
    hosts = [socket.gethostname()]
    if ray_address:
        from .ray_runner import run_on_ray

        cancelled, hosts = run_on_ray(plan, out, pending, on_image=on_image, cancel=cancel)
        runner = f"ray ({ray_address})"
    elif workers > 1 and len(pending) > 1:
        from .process_runner import run_in_processes

        cancelled = run_in_processes(plan, out, pending, workers, on_image=on_image, cancel=cancel)
        runner = f"{workers} local processes"
    else:
        runner = "serial"
        renderer = SampleRenderer(plan)
        for shard in pending:
            if render_shard(plan, out, shard, renderer, cancel=cancel, on_image=on_image) is None:
                cancelled = True
                break
    report = finalize(plan, out)
    report.rendered_now = counter["rendered"]
    report.seconds = time.perf_counter() - start
    report.cancelled = cancelled
    report.runner = runner
    report.hosts = sorted(set(hosts))
    try:
        atomic_write_bytes(out / "report.json", (json.dumps(report.to_dict(), indent=1) + "\n").encode())
    except OSError as error:
        raise _output_error(out, error) from None
    return report


def _remove_leftovers(folder: Path, shard_count: int) -> None:
    """A run killed between finishing a shard and tidying up leaves its log behind. (Temporary
    files of atomic writes are left alone: another process, e.g. --shard i/n, may be writing them.)"""
    for path in folder.iterdir():
        name = path.name
        if name.startswith("shard-") and (name.endswith(".log") or name.endswith(".tar.partial")) and \
                shard_is_complete(folder, int(name[len("shard-"):len("shard-") + 6])):
            try:
                path.unlink()
            except OSError:
                pass


def finalize(plan: Plan, out) -> GenerateReport:
    """Index what is complete; write manifest, dataset.json and the card once every shard is."""
    out = Path(out)
    records, rows, failed = [], [], []
    complete = True
    for shard in range(plan.shard_count):
        if not shard_is_complete(out / SHARDS, shard):
            complete = False
            continue
        record = read_shard_record(out / SHARDS, shard)
        records.append(record)
        rows.extend(record["images"])
        failed.extend(record["failed"])
    blind: dict = {}
    for failure in failed:
        if failure["reason"] == NO_RAY:
            blind[failure["ct_index"]] = blind.get(failure["ct_index"], 0) + 1
    if complete:
        try:
            atomic_write_bytes(out / "manifest.csv", manifest_csv(plan, rows))
            atomic_write_bytes(out / "dataset.json", dataset_json(plan, records, rows, failed))
            atomic_write_bytes(out / "README.md", dataset_card(plan, records, rows, failed))
        except OSError as error:
            raise _output_error(out, error) from None
    skipped = [{"index": c.index, "path": c.path, "reason": c.reason} for c in plan.cts if c.status != "ok"]
    no_ray = [{"index": c.index, "path": c.path, "poses": blind[c.index], "of": c.image_count}
              for c in plan.cts if blind.get(c.index)]
    return GenerateReport(out=out, planned=plan.total, written=len(rows), failed=failed, skipped_cts=skipped,
                          no_ray=no_ray, shards_total=plan.shard_count, shards_done=len(records), rendered_now=0,
                          seconds=0.0, complete=complete)


__all__ = ["generate", "finalize", "render_shard", "prepare_output", "claim_output", "remove_dataset", "GenerateReport",
           "OutputError"]
