"""WebDataset shards: the only module that imports ``webdataset``.

Format written (what every WebDataset reader expects): plain tar files ``<split>-000000.tar``, ... whose
members come in groups sharing a key - ``<key>.cls`` (the class index as ASCII digits) and ``<key>.jpg``.
Keys are ``<label:04d>_<n:08d>_<stem>``: ``n`` (the file's position in the split's sorted source list) makes
them unique and stable across runs, the sanitised stem lets a person trace a sample to its source, and
they never contain a dot (WebDataset splits a member name into key and extension at the first dot).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from .index import ShardInfo, read_index
from .location import CacheSettings, S3Location, parse_location

if TYPE_CHECKING:
    from .shard_cache import ShardCache

BLOCK = 512  # tar block; every member is one header block plus its data padded to whole blocks
RECORD = 20 * BLOCK  # tarfile pads a closed stream to whole records; the end marker is two blocks
_T = TypeVar("_T")
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
        """A classification sample: ``<key>.cls`` + ``<key>.jpg``."""
        self.write_members(key, {"cls": str(label).encode(), "jpg": jpeg})

    def write_members(self, key: str, members: dict[str, bytes]) -> None:
        """One sample: ``<key>.<ext>`` for each extension, in the order given (segmentation: jpg, png)."""
        size = sum(_member_bytes(len(data)) for data in members.values())
        if self._tar is None or (self._count and _tar_bytes(self._members + size) > self.max_bytes):
            self._open_next()
        assert self._tar is not None
        self._tar.write({"__key__": key, **members})
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


def scan_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(jpeg data offsets, jpeg sizes, labels) of a shard's samples in stored order, reading headers only.

    tarfile's random-access mode seeks over member data, so a 256 MB shard of ~2,500 samples costs a
    few thousand 512-byte header reads plus one tiny read per ``.cls``.
    """
    offsets, sizes, labels = [], [], []
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for member in tar.getmembers():
                ext = member.name.rpartition("/")[2].partition(".")[2]
                if ext == "jpg":
                    offsets.append(member.offset_data)
                    sizes.append(member.size)
                elif ext == "cls":
                    labels.append(int(os.pread(raw.fileno(), member.size, member.offset_data)))
    except (tarfile.TarError, ValueError, EOFError) as err:  # zeroed or cut bytes; a .cls that is not digits
        raise ValueError(f"{path}: not a readable WebDataset shard ({err}); run swat-dist data verify") from None
    if not (len(offsets) == len(sizes) == len(labels)):
        raise ValueError(f"{path}: {len(offsets)} .jpg but {len(labels)} .cls members - not a swat_dist shard")
    return np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), np.asarray(labels, np.int64)


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


class WdsSource:
    """Random access to the samples of a split's shards, for the planned loaders (:mod:`..loaders.loader`).

    WebDataset's own pipeline streams shards, which is what makes exactly-once delivery, equal step
    counts and mid-epoch resume hard (ranks and workers split *shards*, unevenly). Here the shards stay
    standard WebDataset files, but samples are read by byte offset: sample ids run over the shards in
    index order, and the shard-group plan (:func:`..loaders.plan.shard_group_permutation`) keeps each batch's
    reads within a few shards. Offsets come from the tar headers, scanned once per process at start.

    ``root`` may be ``s3://bucket/prefix`` (``cache`` then says where and how much to keep): shards are
    read from a node-local cache that follows the loader's plan (:mod:`.shard_cache`), each scanned when
    first read; sample ids, labels and bytes are those of the same dataset on disk.
    """

    def __init__(
        self, root: str | Path, split: str, train_tf: Any, eval_tf: Any, cache: CacheSettings | None = None
    ) -> None:
        where = parse_location(str(root))
        self.cache: ShardCache | None = None
        if isinstance(where, S3Location):
            from .shard_cache import open_remote  # boto3: imported only for a dataset in an object store

            index, self.cache = open_remote(where, cache or CacheSettings(None, 50 * 10**9, 2, 8), split)
        else:
            index = read_index(root)
        if index.format != "wds":
            raise ValueError(f"{root}: a {index.format} dataset, not wds (data.format must match)")
        if split not in index.splits:
            raise ValueError(f"{root}: no {split} split in index.json")
        info = index.splits[split]
        self.classes = index.classes
        self.paths = [str(Path(root) / f.path) if self.cache is None else where.url(f.path) for f in info.files]  # type: ignore[union-attr]
        self.shard_sizes = [f.samples for f in info.files]
        self.shard_of = np.repeat(np.arange(len(self.paths)), self.shard_sizes)
        self.starts = np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(np.int64)
        self._scans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if self.cache is None:  # local: scan every shard now, so a damaged one is reported before training
            for shard in range(len(self.paths)):
                self._scan(shard)
        self.train_tf, self.eval_tf = train_tf, eval_tf
        self._files = ShardFiles(self.paths)

    def follow(self, schedule: Callable[[int], list[int]]) -> None:
        """The loader's shard order per epoch, for the remote cache's prefetch and eviction (local: no-op)."""
        if self.cache is not None:
            self.cache.follow(schedule)

    def reading(self, epoch: int, index: int) -> None:
        """A batch of ``epoch`` starting with sample ``index`` is being read (moves the prefetch window)."""
        if self.cache is not None:
            self.cache.reading(epoch, int(self.shard_of[index]))

    def _scan(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if shard not in self._scans:
            found = self._local(shard, scan_shard)
            if len(found[0]) != self.shard_sizes[shard]:
                raise ValueError(
                    f"{self.paths[shard]}: {len(found[0])} samples, index.json says {self.shard_sizes[shard]} "
                    "(run swat-dist data verify)"
                )
            self._scans[shard] = found
        return self._scans[shard]

    def _local(self, shard: int, read: Callable[[str], _T]) -> _T:
        """``read(path)`` of the shard's local file; a cached copy evicted by another process is fetched again."""
        if self.cache is None:
            return read(self.paths[shard])
        while True:
            try:
                return read(str(self.cache.path(shard)))
            except FileNotFoundError:
                continue

    def __len__(self) -> int:
        return len(self.shard_of)

    def _all(self, column: int) -> np.ndarray:
        return np.concatenate([self._scan(k)[column] for k in range(len(self.paths))])

    @property
    def offsets(self) -> np.ndarray:
        """Every sample's .jpg data offset in its shard (remote: reads every shard through the cache)."""
        return self._all(0)

    @property
    def labels(self) -> np.ndarray:
        return self._all(2)

    def load(self, index: int, train: bool) -> tuple[Any, int]:
        shard = int(self.shard_of[index])
        offsets, sizes, labels = self._scan(shard)
        at = index - int(self.starts[shard])
        offset, size = int(offsets[at]), int(sizes[at])
        if self.cache is None:
            data = self._files.read(shard, offset, size)
        else:  # open per sample (~10 us next to a decode's ms): an evicted shard frees its space at once
            data = self._local(shard, lambda path: _pread(path, offset, size))
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # zeroed or changed since the scan
            why = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
            raise ValueError(
                f"{self.paths[shard]}: sample {index} (.jpg at byte {offset:,}) does not decode ({why}); "
                "run swat-dist data verify"
            ) from None
        return (self.train_tf if train else self.eval_tf)(rgb), int(labels[at])


def _pread(path: str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)
