"""``--workers K`` without Ray: shards rendered by K local processes.

Processes are spawned (not forked: the parent may already run numba's
thread pool), each with its share of the CPU cores for the projector's
threads, so K workers do not oversubscribe the machine.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .plan import Plan

_STATE: dict = {}


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, available_cpus() // max(1, workers))


def set_projector_threads(count: int) -> None:
    try:
        from ..projector_cpu import set_threads
    except ImportError:   # no numba: the numpy projector has no threads to set
        return
    set_threads(count)


def _worker_init(plan: Plan, out: str, threads: int, events, cancel_event) -> None:
    from .render import SampleRenderer

    set_projector_threads(threads)
    _STATE.update(plan=plan, out=out, renderer=SampleRenderer(plan), events=events, cancel=cancel_event,
                  parent=os.getppid())


def _should_stop() -> bool:
    """Asked before each image: the run was cancelled, or the parent died (killed with SIGKILL, say); then
    exit at once, between two images, so nothing keeps writing into the dataset (a rerun resumes it)."""
    if os.getppid() != _STATE["parent"]:
        os._exit(0)
    return _STATE["cancel"].is_set()


def _worker_shard(shard: int):
    from .runner import render_shard

    events = _STATE["events"]
    return render_shard(_STATE["plan"], _STATE["out"], shard, _STATE["renderer"],
                        cancel=_should_stop, on_image=lambda ok: events.put(ok))


def run_in_processes(plan: Plan, out, shards: list, workers: int, on_image=None, cancel=None) -> bool:
    """Render ``shards`` with ``workers`` processes. Returns True when cancelled."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    cancel_event = context.Event()
    cancelled = False
    workers = min(workers, len(shards))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                               initargs=(plan, str(out), threads_per_worker(workers), events, cancel_event))
    try:
        futures = {pool.submit(_worker_shard, shard) for shard in shards}
        while futures:
            finished, futures = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(events, on_image)
            for future in finished:
                if future.result() is None:
                    cancelled = True
            if cancel is not None and cancel() and not cancel_event.is_set():
                cancel_event.set()
                cancelled = True
                for future in futures:
                    future.cancel()
        _drain(events, on_image)
    except BaseException:
        cancel_event.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return cancelled or cancel_event.is_set()


def _drain(events, on_image) -> None:
    while True:
        try:
            ok = events.get_nowait()
        except queue.Empty:
            return
        if on_image is not None:
            on_image(ok)


__all__ = ["run_in_processes", "threads_per_worker", "available_cpus", "set_projector_threads"]
