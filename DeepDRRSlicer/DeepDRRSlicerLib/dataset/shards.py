"""Shards: plain POSIX tar files of samples, written so that no reader ever sees a broken one.

A sample is a run of consecutive tar members named ``<key>.<suffix>``
(WebDataset's convention: ``ct0000_pose000003.primary.npy``,
``....geometry.json``, ``....json``). Headers are fixed (mtime 0, uid/gid 0,
mode 0644, ustar), so the same samples give the same bytes.

Writing: a shard grows as ``shard-NNNNNN.tar.partial`` with a line per
processed image in ``shard-NNNNNN.log`` (offset and CRC-32 of each sample, or
why an image failed). A rerun checks the log against the partial file,
truncates both to the last sample that verifies, and continues, so a resumed
shard is byte-identical to an uninterrupted one. Only when a shard is
complete is it closed, fsynced and renamed to ``shard-NNNNNN.tar``; loaders
read only ``.tar`` files, so a killed run never leaves a shard they would read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
import zlib
from pathlib import Path

BLOCK = 512
RECORD = 20 * BLOCK        # tar's default blocking factor, as GNU tar and Python's tarfile write


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def sample_parts(key: str, members) -> list:
    """The tar bytes of one sample, in pieces: each (suffix, data) as member ``key.suffix``."""
    parts = []
    for suffix, data in members:
        parts.append(tar_header(f"{key}.{suffix}", len(data)))
        parts.append(data)
        padding = (-len(data)) % BLOCK
        if padding:
            parts.append(b"\0" * padding)
    return parts


def sample_bytes(key: str, members) -> bytes:
    return b"".join(sample_parts(key, members))


def end_of_archive(size: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record."""
    total = size + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-total) % RECORD)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, fsync, rename: readers see all or nothing."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


class ShardWriter:
    """Appends samples to one shard's partial file; resumes, finishes atomically."""

    def __init__(self, folder: Path, index: int):
        self.folder = Path(folder)
        self.index = index
        self.final = self.folder / f"{shard_name(index)}.tar"
        self.partial = self.folder / f"{shard_name(index)}.tar.partial"
        self.log_path = self.folder / f"{shard_name(index)}.log"
        self.records: list = []      # log entries kept, in order
        self.size = 0
        self._tar = None
        self._log = None

    # ---- resume -------------------------------------------------------------------------------
    def open(self, expected_keys: list) -> list:
        """Open for appending; return the log entries already done (a prefix of expected_keys)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        kept, size = [], 0
        if self.partial.exists() and self.log_path.exists():
            kept, size = self._verified_prefix(expected_keys)
        self._tar = open(self.partial, "r+b" if self.partial.exists() else "w+b")
        self._tar.truncate(size)
        self._digest = hashlib.sha256()       # of the whole shard, kept up to date while appending
        self._tar.seek(0)
        for block in iter(lambda: self._tar.read(min(1 << 20, size - self._tar.tell())), b""):
            self._digest.update(block)
        self._tar.seek(size)
        self.size = size
        self.records = kept
        self._log = open(self.log_path, "w", encoding="utf-8")
        for entry in kept:
            self._log.write(json.dumps(entry, sort_keys=True) + "\n")
        self._log.flush()
        return kept

    def _verified_prefix(self, expected_keys) -> tuple[list, int]:
        kept, size = [], 0
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return [], 0
        with open(self.partial, "rb") as handle:
            for position, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break
                if position >= len(expected_keys) or entry.get("key") != expected_keys[position]:
                    break
                if entry.get("status") == "ok":
                    start, end = entry.get("start"), entry.get("end")
                    if start != size or not isinstance(end, int) or end <= start:
                        break
                    handle.seek(start)
                    data = handle.read(end - start)
                    if len(data) != end - start or zlib.crc32(data) != entry.get("crc32"):
                        break
                    size = end
                elif entry.get("status") != "failed":
                    break
                kept.append(entry)
        return kept, size

    # ---- writing ------------------------------------------------------------------------------
    def append(self, key: str, members, row: dict) -> dict:
        start = self.size
        crc = 0
        for part in sample_parts(key, members):
            self._tar.write(part)
            self._digest.update(part)
            crc = zlib.crc32(part, crc)
            self.size += len(part)
        self._tar.flush()
        entry = {"key": key, "status": "ok", "start": start, "end": self.size, "crc32": crc, "row": row}
        self._log_entry(entry)
        return entry

    def fail(self, key: str, reason: str, row: dict) -> dict:
        entry = {"key": key, "status": "failed", "reason": reason, "row": row}
        self._log_entry(entry)
        return entry

    def _log_entry(self, entry: dict) -> None:
        self._log.write(json.dumps(entry, sort_keys=True) + "\n")
        self._log.flush()
        self.records.append(entry)

    def finish(self, shard_record: dict) -> dict:
        """Close the archive, write the shard's record, then rename it into place."""
        end = end_of_archive(self.size)
        self._tar.write(end)
        self._tar.flush()
        os.fsync(self._tar.fileno())
        self._digest.update(end)
        digest, total = self._digest, self.size + len(end)
        self.close()
        record = dict(shard_record)
        record.update({"file": self.final.name, "bytes": total, "sha256": digest.hexdigest()})
        atomic_write_bytes(self.folder / f"{shard_name(self.index)}.json",
                           (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        os.replace(self.partial, self.final)
        fsync_dir(self.folder)
        try:
            self.log_path.unlink()
        except OSError:
            pass
        return record

    def close(self) -> None:
        for handle in (self._tar, self._log):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass
        self._tar = self._log = None


def shard_is_complete(folder: Path, index: int) -> bool:
    folder = Path(folder)
    return (folder / f"{shard_name(index)}.tar").is_file() and (folder / f"{shard_name(index)}.json").is_file()


def read_shard_record(folder: Path, index: int) -> dict:
    return json.loads((Path(folder) / f"{shard_name(index)}.json").read_text(encoding="utf-8"))


def tar_members(handle, offset: int = 0):
    """Yield (key, suffix, data offset, size) of the members of an open shard from ``offset`` on, reading
    headers only, until the end blocks or the end of the file. The handle is left at each member's data."""
    while True:
        handle.seek(offset)
        header = handle.read(BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            return
        info = tarfile.TarInfo.frombuf(header, encoding="utf-8", errors="strict")
        key, _, suffix = info.name.partition(".")
        yield key, suffix, offset + BLOCK, info.size
        offset += BLOCK + info.size + (-info.size) % BLOCK


def index_tar(path) -> dict:
    """{key: {suffix: (data offset, size)}} of a shard, from its headers alone."""
    samples: dict = {}
    with open(path, "rb") as handle:
        for key, suffix, data_offset, size in tar_members(handle):
            samples.setdefault(key, {})[suffix] = (data_offset, size)
    return samples


def is_disk_full(error: OSError) -> bool:
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


__all__ = ["ShardWriter", "shard_name", "shard_is_complete", "read_shard_record", "tar_members", "index_tar", "sample_bytes",
           "atomic_write_bytes", "tar_header", "is_disk_full"]
