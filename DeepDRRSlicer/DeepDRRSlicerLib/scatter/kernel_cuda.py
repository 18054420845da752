"""Photon transport on the GPU: ``transport.cu`` (a port of kernel_cpu.transport) through a CUDA launcher.

The tables and the voxel arrays are uploaded once per ScatterTransport and launcher; each run uploads two
small parameter vectors and zeroed tallies, launches a grid-stride kernel (one thread per photon at a
time) in batches (progress, cancel), and downloads the integer tallies, which ScatterTransport turns into
images exactly as after a CPU run.
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import kernel_cpu

SOURCE_FILE = Path(__file__).with_name("transport.cu")
KERNEL_NAME = "mc_transport"
THREADS_PER_BLOCK = 128
BLOCKS_PER_MULTIPROCESSOR = 16     # resident threads enough to hide latency; few enough that the end-of-thread
#                                    bookkeeping atomics stay negligible
# compiler options of the kernel: capping registers at 64 (the compiler takes 255 uncapped) raised the
# throughput on an H200 by 17 % (analog) and 16 % (forced detection) over no cap, 12 % over a cap of 128
# (benchmarks/bench_scatter_gpu.py): more resident threads hide the random voxel reads
COMPILE_OPTIONS: tuple = ("-maxrregcount=64",)
MAX_ROWS = 17                      # MC_MAX_ROWS in transport.cu: materials + world air
P_COUNT = 46                       # MC_P_COUNT
I_COUNT = 23                       # MC_I_COUNT


@lru_cache(maxsize=1)
def kernel_source() -> str:
    return SOURCE_FILE.read_text(encoding="utf-8")


def pack_parameters(a: dict) -> tuple[np.ndarray, np.ndarray]:
    """(P float64, I int64): the scalars and small vectors of one batch, in transport.cu's MC_P_* / MC_I_* order."""
    p = np.concatenate([
        np.asarray(a["ras_to_ijk"], dtype=np.float64).reshape(12),
        a["source"], a["det_origin"], a["det_u"], a["det_v"], a["det_normal"],
        np.asarray(a["beam_window"], dtype=np.float64).reshape(4), a["grid_axis"], a["world_center"],
        [a["e0"], a["inv_de"], a["air_density"], a["hc"], a["rest_kev"], a["cos_max"], a["grid_ratio"],
         a["grid_open"], a["world_radius"]]]).astype(np.float64)
    i = np.array([a["first_photon"], a["n_photons"], a["seed_lo"], a["seed_hi"], int(a["use_fractions"]),
                  a["ni"], a["nj"], a["nk"], a["n_materials"], a["n_e"], a["n_bins"], a["bsize"], a["nbi"], a["nbj"],
                  a["nbk"], a["n_x"], a["width"], a["height"], int(a["grid_on"]), a["tally_bin"], int(a["forced"]),
                  a["tally_h"], a["tally_w"]], dtype=np.int64)
    assert p.size == P_COUNT and i.size == I_COUNT
    return p, i


_live_tables: "weakref.WeakSet[DeviceTables]" = weakref.WeakSet()


class DeviceTables:
    """The voxel arrays and the cross-section tables of one ScatterTransport, on one launcher's device.
    ``cuda.release_device_memory()`` frees them (``buffers`` becomes None; the next run uploads again)."""

    ORDER = ("density", "labels", "fractions", "mu_fine", "src_energy", "src_cdf", "mu_src", "block_max", "y_grid",
             "f2", "f2_cumulative", "x_grid", "s_fn", "s_inf", "det_mu_t_fine", "det_mu_t_src", "norm_compton",
             "norm_rayleigh")

    def __init__(self, launcher, transport):
        if len(transport.materials.names) + 1 > MAX_ROWS:
            raise ValueError(f"the CUDA Monte Carlo handles at most {MAX_ROWS - 1} materials, "
                             f"got {len(transport.materials.names)}")
        self.launcher = launcher
        dtypes = {"density": np.float32, "labels": np.uint8, "fractions": np.float32}
        self.buffers = [launcher.upload(np.ascontiguousarray(getattr(transport, name), dtype=dtypes.get(name, np.float64)))
                        for name in self.ORDER]
        _live_tables.add(self)

    def release(self) -> None:
        self.buffers = None


def release_all() -> None:
    """Free the tables of every ScatterTransport on the GPU (they are uploaded again when needed)."""
    for tables in list(_live_tables):
        tables.release()


def run_batch(launcher, tables: DeviceTables, arguments: dict, tallies_shape: tuple) -> tuple:
    """Transport one batch on the device; (tallies (N_TALLIES, H_t, W_t) int64, book (N_BOOK,) int64)."""
    kernel = launcher.compile(kernel_source(), KERNEL_NAME, tuple(COMPILE_OPTIONS))
    p, i = pack_parameters(arguments)
    tallies = launcher.upload(np.zeros(tallies_shape, dtype=np.uint64))
    book = launcher.upload(np.zeros(kernel_cpu.N_BOOK, dtype=np.uint64))
    needed = -(-int(arguments["n_photons"]) // THREADS_PER_BLOCK)
    blocks = max(1, min(needed, launcher.multiprocessors() * BLOCKS_PER_MULTIPROCESSOR))
    launcher.launch(kernel, (blocks, 1, 1), (THREADS_PER_BLOCK, 1, 1),
                    [launcher.upload(p), launcher.upload(i), *tables.buffers, tallies, book])
    launcher.synchronize()
    return (launcher.download(tallies).view(np.int64).reshape(tallies_shape),
            launcher.download(book).view(np.int64))
