"""Which on-disk format for generated datasets? Write and read throughput of the same samples.

Candidates, each holding the same N samples (a 256x256 float32 image, 3 material line integrals,
7 float16 landmark heatmaps, landmarks and JSON metadata, as `deepdrr-slicer generate` makes):

* tar shards (this project's format; WebDataset layout), written with the generator's own writer;
* HDF5 (h5py), one dataset per field with N as the first axis, chunked per sample;
* Zarr v3 (zarr), one array per field, chunked per sample;
* a folder of .npz files, one per sample (the naive baseline).

Reads: every sample in random order (a shuffled training epoch, map-style Dataset) from a cold
file handle per format, plus a sequential pass. Page cache is not dropped (no root needed), so
reads measure decode and syscall overhead, which is what a DataLoader worker pays on a warm
machine. Run:  .venv/bin/python benchmarks/bench_dataset_formats.py [--samples 200]
"""

from __future__ import annotations

import argparse
import io
import warnings
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from DeepDRRSlicerLib.dataset.render import Sample
from DeepDRRSlicerLib.dataset.shards import ShardWriter, index_tar

SIZE = 256


def make_sample(n: int, rng) -> Sample:
    arrays = {
        "primary": rng.random((SIZE, SIZE), dtype=np.float32),
        "line_integrals": rng.random((3, SIZE, SIZE), dtype=np.float32),
        "landmarks": rng.random((7, 4), dtype=np.float32),
        "heatmaps": rng.random((7, SIZE, SIZE), dtype=np.float32).astype(np.float16),
    }
    meta = {"key": f"ct0000_pose{n:06d}", "physics": {"kvp": 90.0 + n % 30}, "seed": n}
    return Sample(key=meta["key"], arrays=arrays, geometry={"projection_matrix": np.eye(3, 4).tolist()}, meta=meta)


# ---- writers --------------------------------------------------------------------------------------
def write_tar(samples, folder: Path, shard_size: int = 64) -> None:
    for start in range(0, len(samples), shard_size):
        writer = ShardWriter(folder, start // shard_size)
        block = samples[start:start + shard_size]
        writer.open([s.key for s in block])
        for sample in block:
            writer.append(sample.key, sample.members(), {})
        writer.finish({})


def write_tar_no_fsync(samples, folder: Path) -> None:
    """The same writer without its fsync calls, to compare like with like (the others do not fsync)."""
    import os

    real = os.fsync
    os.fsync = lambda fd: None
    try:
        write_tar(samples, folder)
    finally:
        os.fsync = real


def write_hdf5(samples, folder: Path) -> None:
    import h5py

    with h5py.File(folder / "data.h5", "w") as handle:
        for name, array in samples[0].arrays.items():
            handle.create_dataset(name, shape=(len(samples), *array.shape), dtype=array.dtype,
                                  chunks=(1, *array.shape))
        meta = handle.create_dataset("meta", shape=(len(samples),), dtype=h5py.string_dtype())
        for n, sample in enumerate(samples):
            for name, array in sample.arrays.items():
                handle[name][n] = array
            meta[n] = json.dumps(sample.meta)


def write_zarr(samples, folder: Path) -> None:
    import zarr

    root = zarr.open_group(str(folder / "data.zarr"), mode="w")
    arrays = {name: root.create_array(name, shape=(len(samples), *a.shape), dtype=a.dtype, chunks=(1, *a.shape))
              for name, a in samples[0].arrays.items()}
    for n, sample in enumerate(samples):
        for name, array in sample.arrays.items():
            arrays[name][n] = array
    (folder / "data.zarr" / "meta.json").write_text(json.dumps([s.meta for s in samples]))


def write_npz(samples, folder: Path) -> None:
    for sample in samples:
        np.savez(folder / f"{sample.key}.npz", **sample.arrays, meta=np.array(json.dumps(sample.meta)))


# ---- readers: return a function index -> dict of arrays --------------------------------------------
def reader_tar(folder: Path):
    handles, index = {}, []
    for shard in sorted(folder.glob("shard-*.tar")):
        handles[shard] = open(shard, "rb")
        for key, members in index_tar(shard).items():
            index.append((shard, members))

    def read(n):
        shard, members = index[n]
        handle = handles[shard]
        out = {}
        for suffix, (offset, size) in members.items():
            handle.seek(offset)
            data = handle.read(size)
            out[suffix] = np.load(io.BytesIO(data)) if suffix.endswith(".npy") else json.loads(data)
        return out
    return read


def reader_hdf5(folder: Path):
    import h5py

    handle = h5py.File(folder / "data.h5", "r")
    names = [n for n in handle if n != "meta"]
    return lambda n: {**{name: handle[name][n] for name in names}, "meta": json.loads(handle["meta"][n])}


def reader_zarr(folder: Path):
    import zarr

    root = zarr.open_group(str(folder / "data.zarr"), mode="r")
    names = list(root.array_keys())
    meta = json.loads((folder / "data.zarr" / "meta.json").read_text())
    return lambda n: {**{name: root[name][n] for name in names}, "meta": meta[n]}


def reader_npz(folder: Path):
    files = sorted(folder.glob("*.npz"))

    def read(n):
        with np.load(files[n]) as data:
            return {name: data[name] for name in data.files}
    return read


FORMATS = {"tar shards (ours)": (write_tar, reader_tar, None),
           "  same, no fsync": (write_tar_no_fsync, reader_tar, None), "HDF5 (h5py)": (write_hdf5, reader_hdf5, "h5py"),
           "Zarr v3": (write_zarr, reader_zarr, "zarr"), "npz folder": (write_npz, reader_npz, None)}


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
    rng = np.random.default_rng(0)
    samples = [make_sample(n, rng) for n in range(args.samples)]
    payload = sum(sum(a.nbytes for a in s.arrays.values()) for s in samples)
    order = np.random.default_rng(1).permutation(args.samples)
    print(f"{args.samples} samples of {payload / args.samples / 1e6:.2f} MB of arrays each "
          f"({payload / 1e6:.0f} MB); best of {args.repeats}")
    print(f"{'format':<20} {'write MB/s':>10} {'random read samples/s':>22} {'sequential samples/s':>21} "
          f"{'files':>6} {'size MB':>8}")
    for name, (write, reader, module) in FORMATS.items():
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                print(f"{name:<20} (not installed: pip install {module})")
                continue
        write_s, random_s, sequential_s = [], [], []
        for _ in range(args.repeats):
            folder = Path(tempfile.mkdtemp(prefix="fmt-"))
            try:
                start = time.perf_counter()
                write(samples, folder)
                write_s.append(time.perf_counter() - start)
                size, files = folder_bytes(folder)
                read = reader(folder)
                start = time.perf_counter()
                for n in order:
                    read(int(n))
                random_s.append(time.perf_counter() - start)
                read = reader(folder)
                start = time.perf_counter()
                for n in range(args.samples):
                    read(n)
                sequential_s.append(time.perf_counter() - start)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        print(f"{name:<20} {payload / min(write_s) / 1e6:>10.0f} {args.samples / min(random_s):>22.0f} "
              f"{args.samples / min(sequential_s):>21.0f} {files:>6} {size / 1e6:>8.0f}")


if __name__ == "__main__":
    main()
