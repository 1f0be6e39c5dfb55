"""One split's tar shards, on disk or in an object store: what the wds sources (classify and segment) share.

Sample ids run over the shards in index order. Each shard's tar headers are scanned once per process:
all at start for local shards (a damaged one is reported before training), each when first read for
shards in an object store (through the node-local cache of :mod:`.shard_cache`, which follows the
loader's plan). Bytes are then read by offset either way, so a sample is the same wherever it lives.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from .index import DatasetIndex, read_index
from .location import CacheSettings, S3Location, parse_location

if TYPE_CHECKING:
    from .shard_cache import ShardCache

Scan = TypeVar("Scan", bound=tuple)  # a shard's columns (offsets, sizes, ...): the first has one row per sample
_T = TypeVar("_T")
DEFAULT_CACHE = CacheSettings(None, 50 * 10**9, prefetch=2, group=8)  # the config's defaults (data.cache_*)


class ShardFiles:
    """Byte-range reads from a split's shards, one descriptor per shard per process (a forked loader worker
    opens its own)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._pid, self._fds = -1, dict[int, int]()

    def read(self, shard: int, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():
            self._pid, self._fds = os.getpid(), {}
        if shard not in self._fds:
            self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return os.pread(self._fds[shard], size, offset)


class ShardSet(Generic[Scan]):
    """``root``'s ``split`` shards; ``check(index)`` refuses a dataset of the wrong kind (before any shard
    is read), ``scan(path)`` reads a shard's headers, ``what`` names its samples in errors."""

    def __init__(
        self, root: str | Path, split: str, cache: CacheSettings | None, *,
        check: Callable[[DatasetIndex], None], scan: Callable[[str], Scan], what: str = "samples",
    ) -> None:  # fmt: skip
        where = parse_location(str(root))
        self.cache: ShardCache | None = None
        if isinstance(where, S3Location):
            from .shard_cache import open_remote  # boto3: imported only for a dataset in an object store

            self.index, self.cache = open_remote(where, cache or DEFAULT_CACHE, split)
        else:
            self.index = read_index(root)
        check(self.index)
        if split not in self.index.splits:
            raise ValueError(f"{root}: no {split} split in index.json")
        files = self.index.splits[split].files
        self.paths = [where.url(f.path) if isinstance(where, S3Location) else str(Path(root) / f.path) for f in files]
        self.shard_sizes = [f.samples for f in files]
        self.shard_of = np.repeat(np.arange(len(files)), self.shard_sizes)
        self.starts = np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(np.int64)
        self._scan_file, self._what = scan, what
        self._scans: dict[int, Scan] = {}
        self._files = ShardFiles(self.paths)
        if self.cache is None:  # local: scan every shard now, so a damaged one is reported before training
            for shard in range(len(files)):
                self.scan(shard)

    def __len__(self) -> int:
        return len(self.shard_of)

    def locate(self, index: int) -> tuple[int, Scan, int]:
        """(shard, its scan, the sample's row in it) of sample ``index``."""
        shard = int(self.shard_of[index])
        return shard, self.scan(shard), index - int(self.starts[shard])

    def scan(self, shard: int) -> Scan:
        if shard not in self._scans:
            found = self._local(shard, self._scan_file)
            if len(found[0]) != self.shard_sizes[shard]:
                raise ValueError(
                    f"{self.paths[shard]}: {len(found[0])} {self._what}, index.json says {self.shard_sizes[shard]} "
                    "(run swat-dist data verify)"
                )
            self._scans[shard] = found
        return self._scans[shard]

    def column(self, i: int) -> np.ndarray:
        """Column ``i`` of every shard's scan, in sample order (remote: reads every shard through the cache)."""
        return np.concatenate([self.scan(k)[i] for k in range(len(self.paths))])

    def read(self, shard: int, offset: int, size: int) -> bytes:
        if self.cache is None:
            return self._files.read(shard, offset, size)
        # open per read (~10 us next to a decode's ms): an evicted shard's space is freed at once
        return self._local(shard, lambda path: _pread(path, offset, size))

    def follow(self, schedule: Callable[[int], list[int]]) -> None:
        """The loader's shard order per epoch, for the remote cache's prefetch and eviction (local: no-op)."""
        if self.cache is not None:
            self.cache.follow(schedule)

    def reading(self, epoch: int, index: int) -> None:
        """A batch of ``epoch`` starting with sample ``index`` is being read (moves the prefetch window)."""
        if self.cache is not None:
            self.cache.reading(epoch, int(self.shard_of[index]))

    def _local(self, shard: int, read: Callable[[str], _T]) -> _T:
        """``read(path)`` of the shard's local file; a cached copy evicted by another process is fetched again."""
        if self.cache is None:
            return read(self.paths[shard])
        while True:
            try:
                return read(str(self.cache.path(shard)))
            except FileNotFoundError:
                continue


def _pread(path: str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)
