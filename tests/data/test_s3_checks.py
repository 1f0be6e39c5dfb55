"""wds datasets in an S3-compatible store (a real SeaweedFS on 127.0.0.1): every wrong setting is one line
naming what to fix, before any batch where it can be; an unsupported scheme is never a local folder;
data plan and data convert speak s3://."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swat_dist.config import DataConfig
from swat_dist.config_types import ConfigError
from swat_dist.data.loaders.build import build_loaders
from swat_dist.data.loaders.loader import TrainLoader
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.location import CacheSettings, S3Location
from swat_dist.data.sources.object_store import ObjectStore
from swat_dist.data.sources.wds import WdsSource

from .s3server import BUCKET, free_port, upload_dataset

GROUP = 2


def _source(path, split="train", cache=None):
    return WdsSource(path, split, train_transform(16, color_jitter=0.0), eval_transform(16, 1.0), cache)


def _one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(err.value)
    assert "\n" not in text and all(p in text for p in parts), text


def _data(path: str, **kw) -> DataConfig:
    return DataConfig(format="wds", path=path, batch_size=4, workers=0, **kw)


def _build(data: DataConfig):
    return build_loaders(data, {}, world_size=1, rank=0, seed=0, num_classes=3, img_size=16)


def test_wrong_settings_are_one_line_before_any_batch(s3_ids, tmp_path, monkeypatch):
    _, url = s3_ids
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError) as err:  # a prefix that holds no s3_ids
        _build(_data(f"s3://{BUCKET}/ids/nothing-here", cache_dir=cache))
    _one_line(err, f"s3://{BUCKET}/ids/nothing-here/index.json", "no such object")
    with pytest.raises(ValueError) as err:
        _build(_data("s3://no-such-bucket/ids/v1", cache_dir=cache))
    _one_line(err, "no such bucket 'no-such-bucket'")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(ValueError) as err:
        _build(_data(url, cache_dir=cache))
    _one_line(err, f"{url}/index.json", "access denied", "AWS_SECRET_ACCESS_KEY")
    monkeypatch.undo()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(ValueError) as err:
        _build(_data(url, cache_dir=cache))
    _one_line(err, f"{url}/index.json", "cannot reach http://127.0.0.1:", "AWS_ENDPOINT_URL")
    assert not Path(cache).exists() or not any(Path(cache).rglob("*.tar"))  # nothing read before the check


def test_a_deleted_shard_is_one_line_naming_the_object(s3_ids, tmp_path):
    local, _ = s3_ids
    where = S3Location(BUCKET, "ids/deleted")
    upload_dataset(local, where)
    store = ObjectStore(where)
    store.delete("train-000003.tar")  # gone before the loader starts: the listing check finds it
    with pytest.raises(ValueError) as err:
        _build(_data(where.url(), cache_dir=str(tmp_path / "c1")))
    _one_line(err, f"{where.url('train-000003.tar')}: no such object")
    upload_dataset(local, where)
    src = _source(where.url(), cache=CacheSettings(str(tmp_path / "c2"), 10**9, prefetch=0, group=GROUP))
    store.delete("train-000002.tar")  # gone mid-run: the read that needs it names it
    first = next(i for i, s in enumerate(src.shard_of) if s == 2)
    with pytest.raises(ValueError) as err:
        src.load(first, train=False)
    _one_line(err, f"{where.url('train-000002.tar')}: no such object")


@pytest.mark.parametrize("path", ["gs://bucket/x", "http://127.0.0.1/x", "file:///tmp/x"])
def test_an_unsupported_scheme_is_one_line_never_a_local_folder(path, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        _data(path)
    scheme = path.split(":")[0]
    _one_line(err, f"{scheme}:// is not supported")
    with pytest.raises(ValueError) as err:
        _source(path)
    _one_line(err, f"{scheme}:// is not supported")
    with pytest.raises(ConfigError) as err:  # s3 is for wds only: a folder s3_ids reads local files
        DataConfig(format="folder", path="s3://b/x")
    _one_line(err, "data.format 'folder' reads local files")
    from swat_dist.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["data", "convert", str(tmp_path), f"{scheme}://b/x", "--format", "wds"]) == 2
    assert main(["data", "verify", f"{scheme}://b/x"]) == 2  # refused before any request
    assert main(["data", "digits", "s3://b/x"]) == 2
    assert not list(tmp_path.iterdir())  # never written as a local folder named "gs:" or "s3:"


def test_plan_command_reads_the_index_from_the_store(s3_ids, capsys):
    from swat_dist.cli import main

    _, url = s3_ids
    assert main(["data", "plan", url, "--world-size", "2", "--batch-size", "3"]) == 0
    assert "60 train / 9 val samples" in capsys.readouterr().out


def test_convert_to_the_store_uploads_the_local_conversion_index_last(s3_ids, tmp_path, capsys):
    from swat_dist.cli import main

    local, _ = s3_ids
    src = local.parent / "src"
    where = S3Location(BUCKET, "converted")
    args = ["data", "convert", str(src), where.url(), "--format", "wds", "--shard-size-mb", str(16384 / 2**20)]
    assert main([*args, "--max-resolution", "64", "--workers", "1"]) == 0
    store = ObjectStore(where)
    names = store.names()
    assert sorted(names) == sorted(p.name for p in local.iterdir())  # shards, reports, SHA256SUMS, index
    for name in names:  # the converter is deterministic: the same bytes as the local conversion
        if name.endswith(".tar"):
            assert store.read(name) == (local / name).read_bytes(), name
    capsys.readouterr()
    assert main([*args, "--max-resolution", "64", "--workers", "1"]) == 0  # the same conversion: left alone
    assert "already holds this conversion" in capsys.readouterr().out
    assert main([*args, "--max-resolution", "48", "--workers", "1"]) == 2  # another one: needs --overwrite
    assert "--overwrite replaces it" in capsys.readouterr().err


def test_a_shard_deleted_mid_run_is_one_line_from_a_loader_worker_too(s3_ids, tmp_path):
    local, _ = s3_ids
    where = S3Location(BUCKET, "ids/deleted-later")
    upload_dataset(local, where)
    src = _source(where.url(), cache=CacheSettings(str(tmp_path / "cache"), 10**9, prefetch=1, group=GROUP))
    ObjectStore(where).delete("train-000004.tar")  # after the start-up check: found by the read that needs it
    loader = TrainLoader(src, world_size=1, rank=0, batch_size=4, workers=2, shard_sizes=src.shard_sizes)
    with pytest.raises(ValueError) as err:
        list(loader)
    _one_line(err, f"{where.url('train-000004.tar')}: no such object")  # not torch's "Caught ... Traceback"
    loader.close()


def test_a_failed_conversion_leaves_shards_uploaded_as_they_closed_but_no_index(s3_server, corpus, capsys):
    from swat_dist.cli import main

    where = S3Location(BUCKET, "strict")
    args = ["data", "convert", str(corpus[0]), where.url(), "--format", "wds", "--strict", "--workers", "1"]
    assert main([*args, "--shard-size-mb", str(16384 / 2**20), "--max-resolution", "64"]) == 1  # skips a bad file
    names = ObjectStore(where).names()
    assert any(n.startswith("train-") and n.endswith(".tar") for n in names)  # uploaded while converting ...
    assert "index.json" not in names  # ... and nothing that looks complete


def test_the_servers_variables_last_only_as_long_as_a_test_that_asks_for_them(s3_server_session):
    """Run after the tests above (file order), which set them through s3_server / s3_ids: a test that does
    not ask sees none of them, so no test passes or fails by the order it runs in."""
    assert all(os.environ.get(k) != v for k, v in s3_server_session.env().items())
