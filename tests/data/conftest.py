"""Shared, session-wide conversions of the corpus (each costs a second or two; FFCV's import ~8 s once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert

from .corpus import MAX_PIXELS, MAX_RES, Entry, write_corpus
from .s3server import S3Server, start

SHARD_BYTES = 20 * 1024  # a few samples per shard, so the corpus spans several


def options(fmt: str, **kw: object) -> ConvertOptions:
    base: dict[str, object] = dict(
        fmt=fmt, workers=1, shard_bytes=SHARD_BYTES, max_resolution=MAX_RES, max_pixels=MAX_PIXELS
    )
    return ConvertOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Entry]]:
    root = tmp_path_factory.mktemp("corpus") / "src"
    return root, write_corpus(root)


@pytest.fixture(scope="session")
def wds_dataset(corpus: tuple[Path, list[Entry]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("wds") / "out"
    assert convert(corpus[0], dst, options("wds", workers=2)) == 0  # the process pool path
    return dst


@pytest.fixture(scope="session")
def ffcv_dataset(corpus: tuple[Path, list[Entry]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("ffcv") / "out"
    # half raw, half JPEG: both storage modes must read back
    assert convert(corpus[0], dst, options("ffcv", workers=2, compress_probability=0.5)) == 0
    return dst


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on 127.0.0.1 (SeaweedFS), its AWS variables set for the session."""
    server = start(tmp_path_factory.mktemp("s3server"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in server.env().items():
                mp.setenv(key, value)
            yield server
    finally:
        server.stop()
