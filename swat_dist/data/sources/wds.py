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
from typing import Any, BinaryIO

import numpy as np
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from .index import DatasetIndex, ShardInfo
from .location import CacheSettings
from .shard_set import ShardSet

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

    def __init__(
        self, folder: Path, prefix: str, max_bytes: int, on_close: Callable[[Path], None] | None = None
    ) -> None:
        self.folder, self.prefix, self.max_bytes = folder, prefix, max_bytes
        self.on_close = on_close  # called with each shard's path once it is closed, whole (an uploader)
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
        if self.on_close is not None:
            self.on_close(self.folder / name)

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
    masks = 0
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for member in tar.getmembers():
                ext = member.name.rpartition("/")[2].partition(".")[2]
                if ext == "jpg":
                    offsets.append(member.offset_data)
                    sizes.append(member.size)
                elif ext == "cls":
                    labels.append(int(os.pread(raw.fileno(), member.size, member.offset_data)))
                elif ext == "png":
                    masks += 1
    except (tarfile.TarError, ValueError, EOFError) as err:  # zeroed or cut bytes; a .cls that is not digits
        raise ValueError(f"{path}: not a readable WebDataset shard ({err}); run swat-dist data verify") from None
    if masks and not labels:  # what a classification config reading a segmentation set meets first
        raise ValueError(f"{path}: a segmentation set (image + mask members): use task: segment")
    if not (len(offsets) == len(sizes) == len(labels)):
        raise ValueError(f"{path}: {len(offsets)} .jpg but {len(labels)} .cls members - not a swat_dist shard")
    return np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), np.asarray(labels, np.int64)


class WdsSource:
    """Random access to the samples of a split's shards, for the planned loaders (:mod:`..loaders.loader`).

    WebDataset's own pipeline streams shards, which is what makes exactly-once delivery, equal step
    counts and mid-epoch resume hard (ranks and workers split *shards*, unevenly). Here the shards stay
    standard WebDataset files, but samples are read by byte offset: sample ids run over the shards in
    index order, and the shard-group plan (:func:`..loaders.plan.shard_group_permutation`) keeps each batch's
    reads within a few shards. Offsets come from the tar headers, scanned once per process.

    ``root`` may be ``s3://bucket/prefix`` (``cache`` then says where and how much to keep): shards are
    read from a node-local cache that follows the loader's plan (:mod:`.shard_cache`, :mod:`.shard_set`);
    sample ids, labels and bytes are those of the same dataset on disk.
    """

    def __init__(
        self, root: str | Path, split: str, train_tf: Any, eval_tf: Any, cache: CacheSettings | None = None
    ) -> None:
        def check(index: DatasetIndex) -> None:
            if index.format != "wds":
                raise ValueError(f"{root}: a {index.format} dataset, not wds (data.format must match)")

        self.shards = ShardSet(root, split, cache, check=check, scan=scan_shard)
        self.classes = self.shards.index.classes
        self.paths, self.shard_sizes, self.shard_of = self.shards.paths, self.shards.shard_sizes, self.shards.shard_of
        self.cache, self.follow, self.reading = self.shards.cache, self.shards.follow, self.shards.reading
        self.train_tf, self.eval_tf = train_tf, eval_tf

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def offsets(self) -> np.ndarray:
        """Every sample's .jpg data offset in its shard (remote: reads every shard through the cache)."""
        return self.shards.column(0)

    @property
    def labels(self) -> np.ndarray:
        return self.shards.column(2)

    def load_encoded(self, index: int) -> tuple[bytes, int]:
        """Sample ``index``'s ``.jpg`` member as stored, and its label (``data.augment_on: device``)."""
        shard, (offsets, sizes, labels), at = self.shards.locate(index)
        return self.shards.read(shard, int(offsets[at]), int(sizes[at])), int(labels[at])

    def unreadable(self, index: int, err: Exception) -> str:
        """The one line for sample ``index`` whose bytes do not open or decode (zeroed or changed since the scan)."""
        shard, (offsets, _, _), at = self.shards.locate(index)
        why = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
        return (
            f"{self.paths[shard]}: sample {index} (.jpg at byte {int(offsets[at]):,}) does not decode ({why}); "
            "run swat-dist data verify"
        )

    def load(self, index: int, train: bool) -> tuple[Any, int]:
        data, label = self.load_encoded(index)
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(self.unreadable(index, err)) from None
        return (self.train_tf if train else self.eval_tf)(rgb), label
