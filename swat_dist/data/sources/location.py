"""Where a dataset lives: a local folder, or ``s3://bucket/prefix`` on an S3-compatible object store.

Every place that takes a dataset path asks :func:`parse_location` first, so ``s3://b/x`` is never taken
for a local folder named ``s3:`` and a scheme we do not read (``gs://``, ``http://``, ...) is a one-line
error. Pure string work: importable on a login node (the config check uses it) without boto3.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCHEMES = ("s3",)  # what the loader reads; sources/object_store.py is the client
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: a dataset's objects are ``prefix/<name>`` (``prefix`` without slashes at its ends)."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}" if name else f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __str__(self) -> str:
        return self.url()


def parse_location(path: str, what: str = "data.path") -> str | S3Location:
    """``path`` itself when local, an :class:`S3Location` for ``s3://``; any other scheme is a ValueError."""
    match = _SCHEME.match(path)
    if match is None:
        return path
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{what} {path}: {scheme}:// is not supported (a local path, or s3://bucket/prefix)")
    bucket, _, prefix = path[match.end() :].partition("/")
    if not bucket:
        raise ValueError(f"{what} {path}: no bucket (expected s3://bucket/prefix)")
    return S3Location(bucket, prefix.strip("/"))


def local_only(path: str, what: str) -> str:
    """``path`` for a command that reads or writes local files only: a URL is a one-line error naming it."""
    if not isinstance(parse_location(path, what), str):
        raise ValueError(
            f"{what} {path}: a local path is needed here "
            "(s3:// works for the loader, data convert DST, data verify, data plan)"
        )
    return path


@dataclass(frozen=True)
class CacheSettings:
    """The node-local cache of a remote dataset (``data.cache_dir``, ``data.cache_gb``, ``data.prefetch``)."""

    folder: str | None  # None: <tmp>/swat_dist-cache-<uid> (on clusters $TMPDIR, node-local)
    max_bytes: int
    prefetch: int  # shard groups fetched ahead of the one being read
    group: int  # shards per group (data.shard_group)

    def root(self, location: S3Location) -> Path:
        """This dataset's folder in the cache: ``<folder>/<bucket>/<prefix>``."""
        base = Path(self.folder) if self.folder else Path(tempfile.gettempdir()) / f"swat_dist-cache-{os.getuid()}"
        return base / location.bucket / (location.prefix or "_")
