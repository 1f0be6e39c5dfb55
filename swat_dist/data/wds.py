"""WebDataset shards: the only module that imports ``webdataset``.

Format written (what every WebDataset reader expects): plain tar files ``<split>-000000.tar``, ... whose
members come in groups sharing a key - ``<key>.cls`` (the class index as ASCII digits) and ``<key>.jpg``.
Keys are ``<label:04d>_<n:08d>_<stem>``: ``n`` (the file's position in the split's sorted source list) makes
them unique and stable across runs, the sanitised stem lets a person trace a sample to its source, and
they never contain a dot (WebDataset splits a member name into key and extension at the first dot).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import webdataset as wds

from .index import ShardInfo

BLOCK = 512  # tar block; every member is one header block plus its data padded to whole blocks
RECORD = 20 * BLOCK  # tarfile pads a closed stream to whole records; the end marker is two blocks
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(label: int, number: int, rel: str) -> str:
    stem = _UNSAFE.sub("_", Path(rel).name.split(".")[0])[:40].strip("_") or "x"
    return f"{label:04d}_{number:08d}_{stem}"


def _member_bytes(size: int) -> int:
    return BLOCK + -(-size // BLOCK) * BLOCK


def _tar_bytes(members: int) -> int:
    """Size of a closed tar stream whose members take ``members`` bytes."""
    return -(-(members + 2 * BLOCK) // RECORD) * RECORD


class _HashingFile:
    """Write-only file that hashes and counts what passes through (the tar stream only appends)."""

    def __init__(self, path: Path) -> None:
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()


class ShardSink:
    """Writes samples in the order given into tar shards of at most ``max_bytes`` each.

    The bound is exact: before each sample the shard's closed size is computed from the tar layout, and a
    new shard starts if the sample would cross it (a single sample larger than the bound gets a shard of
    its own). ``shards`` lists what was written, ``sha256`` their checksums, once :meth:`close` returns.
    """

    def __init__(self, folder: Path, prefix: str, max_bytes: int) -> None:
        self.folder, self.prefix, self.max_bytes = folder, prefix, max_bytes
        self.shards: list[ShardInfo] = []
        self.sha256: dict[str, str] = {}
        self._out: _HashingFile | None = None
        self._tar: wds.TarWriter | None = None
        self._members = 0
        self._count = 0

    def _open_next(self) -> None:
        self._close_current()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._out = _HashingFile(self.folder / name)
        # mtime fixed: the same input gives byte-identical shards, so checksums are reproducible
        self._tar = wds.TarWriter(self._out, encoder=False, mtime=0)
        self.shards.append(ShardInfo(name, 0, 0))
        self._members, self._count = 0, 0

    def _close_current(self) -> None:
        if self._tar is None or self._out is None:
            return
        self._tar.close()
        self._out.close()
        name = self.shards[-1].path
        self.shards[-1] = ShardInfo(name, self._count, self._out.bytes)
        self.sha256[name] = self._out.sha.hexdigest()
        self._tar, self._out = None, None

    def write(self, key: str, jpeg: bytes, label: int) -> None:
        cls = str(label).encode()
        size = _member_bytes(len(jpeg)) + _member_bytes(len(cls))
        if self._tar is None or (self._count and _tar_bytes(self._members + size) > self.max_bytes):
            self._open_next()
        assert self._tar is not None
        self._tar.write({"__key__": key, "cls": cls, "jpg": jpeg})
        self._members += size
        self._count += 1

    def close(self) -> list[ShardInfo]:
        self._close_current()
        return self.shards


def read_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, grouping adjacent members as WebDataset does.

    Streams the file (constant memory). A truncated or corrupt tar raises ``tarfile.TarError`` after
    the samples before the damage have been yielded - including a cut at a member boundary, which
    ``tarfile`` (and so every WebDataset reader) takes for a normal end: the end-of-archive marker
    (two zero blocks) is required.
    """
    key: str | None = None
    sample: dict[str, bytes] = {}
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base, _, ext = member.name.rpartition("/")[2].partition(".")
            if base != key:
                if key is not None:
                    yield key, sample
                key, sample = base, {}
            extracted = tar.extractfile(member)
            sample[ext] = extracted.read() if extracted else b""
        end = tar.offset
    if key is not None:
        yield key, sample
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read()
    if len(tail) < 2 * BLOCK or tail.strip(b"\0"):
        raise tarfile.ReadError(f"no end-of-archive marker at byte {end:,} (truncated?)")
