"""Shared, session-wide conversions of the corpus (each costs a second or two; FFCV's import ~8 s once), and
the id dataset uploaded to the test S3 server (the server itself: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.sources.location import S3Location

from .corpus import MAX_PIXELS, MAX_RES, Entry, write_corpus
from .helpers import write_id_folder
from .s3server import BUCKET, S3Server, upload_dataset

SHARD_BYTES = 20 * 1024  # a few samples per shard, so the corpus spans several


def options(fmt: str, **kw: object) -> ConvertOptions:
    base: dict[str, object] = dict(
        fmt=fmt, workers=1, shard_bytes=SHARD_BYTES, max_resolution=MAX_RES, max_pixels=MAX_PIXELS
    )
    return ConvertOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def no_jit():
    """FFCV's pipelines uncompiled for a test module (``pytestmark = pytest.mark.usefixtures("no_jit")``): numba
    compiles each pipeline in 10-30 s here, the same code runs as Python in milliseconds on tiny images."""
    from swat_dist.data.sources.ffcv import set_jit  # here: importing ffcv costs seconds, most modules need none

    set_jit(False)
    yield
    set_jit(True)


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
def _s3_ids_session(s3_server_session: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("s3ids")
    write_id_folder(root / "src", classes=3, per_class={"train": 20, "val": 3})
    opts = ConvertOptions(fmt="wds", workers=1, shard_bytes=16384, max_resolution=64)
    assert convert(root / "src", root / "wds", opts) == 0
    with s3_server_session.environ():
        upload_dataset(root / "wds", S3Location(BUCKET, "ids/v1"))
    return root / "wds", f"s3://{BUCKET}/ids/v1"


@pytest.fixture
def s3_ids(s3_server: S3Server, _s3_ids_session: tuple[Path, str]) -> tuple[Path, str]:
    """(local wds folder, the same files at s3://...): 60 train samples whose colour is their id, in 20
    shards of 10 KB (3 samples each), and 9 val samples; uploaded once per session, the server's AWS
    variables set for the test (:func:`tests.conftest.s3_server`)."""
    return _s3_ids_session
