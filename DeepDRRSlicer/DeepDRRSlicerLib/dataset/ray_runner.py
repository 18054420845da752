"""``--ray ADDRESS``: shards as Ray tasks, on one machine or a cluster (optional extra: ``pip install .[ray]``).

Each task renders one shard with the same ``render_shard`` as the serial run,
so the bytes are the same. A worker that sees the dataset folder (a shared
file system, or the driver's own machine) writes the shard in place; one that
does not renders it into a temporary folder and returns the files, which the
driver then writes atomically. Tasks ask for one CPU each (and one GPU when
the projector has a CUDA device), and the projector uses that many threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import tempfile
from pathlib import Path

from ..errors import InputError
from .plan import Plan
from .shards import atomic_write_bytes, fsync_dir, shard_name

CPUS_PER_TASK = 1


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the Ray package, which is not installed.",
                         "Install it with pip install 'DeepDRRSlicerLib[ray]' (or pip install ray), "
                         "or use --workers K for local processes.") from None
    return ray


def _connect(ray, address: str) -> bool:
    """Connect (or start a local cluster for 'local'); True when this call started Ray."""
    if ray.is_initialized():
        return False
    options = {"log_to_driver": False, "logging_level": "WARNING", "include_dashboard": False}
    try:
        if address == "local":
            from .process_runner import available_cpus

            ray.init(num_cpus=available_cpus(), **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"Cannot connect to the Ray cluster at {address!r}: {error}",
                         "Start one with 'ray start --head' (then --ray auto), or use --ray local.") from None
    return True


def _render_shard_task(plan: Plan, out: str, shard: int, plan_sha256: str, threads: int):
    """Runs on a Ray worker. Returns (host, record, files) where files is None when written in place."""
    from .process_runner import set_projector_threads
    from .render import SampleRenderer
    from .runner import render_shard

    set_projector_threads(threads)
    host = socket.gethostname()
    renderer = SampleRenderer(plan)
    plan_file = Path(out) / "plan.json"
    if plan_file.is_file() and hashlib.sha256(plan_file.read_bytes()).hexdigest() == plan_sha256:
        record = render_shard(plan, Path(out), shard, renderer)
        return host, record, None
    with tempfile.TemporaryDirectory(prefix="deepdrr-shard-") as folder:
        record = render_shard(plan, Path(folder), shard, renderer)
        shards = Path(folder) / "shards"
        files = {name: (shards / name).read_bytes() for name in (f"{shard_name(shard)}.json",
                                                                  f"{shard_name(shard)}.tar")}
    return host, record, files


@contextlib.contextmanager
def ray_session(address: str):
    """Connect to ``address`` (a cluster, "auto", or "local" to start one) for the ``with`` block, and shut
    Ray down after it when this call started it. Raises InputError with the fix when there is no cluster."""
    ray = _import_ray()
    started = _connect(ray, address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_on_ray(plan: Plan, out, shards: list, on_image=None, cancel=None) -> tuple[bool, list]:
    """Render ``shards`` as Ray tasks, inside a :func:`ray_session`. Returns (cancelled, hosts that rendered)."""
    from ..projector import cuda_status

    ray = _import_ray()
    out = Path(out)
    hosts = set()
    cancelled = False
    gpus = 1 if plan.config.device != "cpu" and cuda_status()[0] else 0
    task = ray.remote(num_cpus=CPUS_PER_TASK, num_gpus=gpus, max_retries=2)(_render_shard_task)
    plan_ref = ray.put(plan)
    plan_sha256 = hashlib.sha256((out / "plan.json").read_bytes()).hexdigest()
    pending = {task.remote(plan_ref, str(out), shard, plan_sha256, CPUS_PER_TASK): shard for shard in shards}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
        if cancel is not None and cancel():
            for reference in pending:
                ray.cancel(reference, force=True)
            cancelled = True
            break
        for reference in ready:
            shard = pending.pop(reference)
            host, record, files = ray.get(reference)
            hosts.add(host)
            if files is not None:
                # same order as ShardWriter.finish: the record, then the shard under its final name
                folder = out / "shards"
                atomic_write_bytes(folder / f"{shard_name(shard)}.json", files[f"{shard_name(shard)}.json"])
                atomic_write_bytes(folder / f"{shard_name(shard)}.tar", files[f"{shard_name(shard)}.tar"])
                fsync_dir(folder)
            if on_image is not None:
                for ok in [True] * len(record["images"]) + [False] * len(record["failed"]):
                    on_image(ok)
    return cancelled, sorted(hosts)


__all__ = ["run_on_ray", "ray_session"]
