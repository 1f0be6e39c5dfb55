"""wds datasets in an S3-compatible store (a real SeaweedFS on 127.0.0.1): the loader yields exactly the
batches of the same shards on local disk, across gloo ranks, workers and a mid-epoch resume; the cache
stays within its bound; every wrong setting is one line before any batch."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mpc
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swat_dist.config import DataConfig
from swat_dist.config_types import ConfigError
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.build import build_loaders
from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.loaders.plan import ShardOrder, shard_group_permutation
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.location import CacheSettings, S3Location
from swat_dist.data.sources.object_store import ObjectStore
from swat_dist.data.sources.wds import WdsSource

from .helpers import colour_id, write_id_folder
from .s3server import BUCKET, free_port, restart, upload_dataset

GROUP = 2  # shards per group: batches straddle groups, and prefetch runs ahead by whole groups


@pytest.fixture(scope="module")
def dataset(s3_server, tmp_path_factory):
    """(local folder, its s3:// URL): 60 train samples in ~9 shards of <= 16 KB, 9 val samples."""
    root = tmp_path_factory.mktemp("s3ids")
    write_id_folder(root / "src", classes=3, per_class={"train": 20, "val": 3})
    opts = ConvertOptions(fmt="wds", workers=1, shard_bytes=16384, max_resolution=64)
    assert convert(root / "src", root / "wds", opts) == 0
    upload_dataset(root / "wds", S3Location(BUCKET, "ids/v1"))
    return root / "wds", f"s3://{BUCKET}/ids/v1"


def _tfs():
    return train_transform(16, color_jitter=0.0), eval_transform(16, 1.0)


def _source(path, split="train", cache=None):
    return WdsSource(path, split, *_tfs(), cache)


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, y) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def _rank_main(rank: int, world: int, port: int, local: str, url: str, cache_dir: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        settings = CacheSettings(cache_dir, 10**9, prefetch=1, group=GROUP)
        kw = dict(world_size=world, rank=rank, batch_size=3, seed=5, shard_group=GROUP)
        local_src, remote_src = _source(local), _source(url, cache=settings)
        assert remote_src.shard_sizes == local_src.shard_sizes
        sizes = local_src.shard_sizes
        on_disk = TrainLoader(local_src, workers=0, shard_sizes=sizes, **kw)  # type: ignore[arg-type]
        remote = TrainLoader(remote_src, workers=2, shard_sizes=sizes, **kw)  # type: ignore[arg-type]
        same, ids = [], {}
        for epoch in (0, 1):
            on_disk.set_epoch(epoch)
            remote.set_epoch(epoch)
            want, got = _batches(on_disk), _batches(remote)
            same.append(_same(want, got))
            ids[epoch] = [colour_id(img[:, 8, 8].numpy()) for x, _ in got for img in x]
        # mid-epoch resume: a fresh remote loader (fresh workers) from the state after step 2 of epoch 1
        # workers=0 reads in this process: no prefetch thread here, since the loaders below fork workers from
        # it (a fork while a thread is inside a download could copy a held lock into the child)
        no_thread = _source(url, cache=CacheSettings(cache_dir, 10**9, prefetch=0, group=GROUP))
        first = TrainLoader(no_thread, workers=0, shard_sizes=sizes, **kw)  # type: ignore[arg-type]
        first.set_epoch(1)
        it = iter(first)
        next(it), next(it)
        resumed = TrainLoader(_source(url, cache=settings), workers=2, shard_sizes=sizes, **kw)  # type: ignore[arg-type]
        resumed.load_state_dict(first.state_dict())
        on_disk.set_epoch(1)
        same.append(_same(_batches(on_disk)[2:], _batches(resumed)))
        val_local = _batches(ValLoader(_source(local, "val"), world_size=world, rank=rank, batch_size=2))
        val_remote = _batches(
            ValLoader(_source(url, "val", settings), world_size=world, rank=rank, batch_size=2, workers=2)
        )
        same.append(_same(val_local, val_remote))
        for loader in (remote, resumed):
            loader.close()
        gathered: list = [None] * world
        dist.all_gather_object(gathered, dict(same=same, ids=ids, steps=len(on_disk.plan().batches(0))))
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_two_workers_read_s3_as_local_disk_with_resume(dataset, tmp_path):
    local, url = dataset
    out = tmp_path / "result.json"
    cache = tmp_path / "cache"  # one node: both ranks and their workers share it
    mp.spawn(_rank_main, args=(2, free_port(), str(local), url, str(cache), str(out)), nprocs=2, join=True)
    ranks = json.loads(out.read_text())
    for rank in ranks:  # epoch 0, epoch 1, resumed epoch 1, val: batch for batch, bit for bit
        assert rank["same"] == [True, True, True, True]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 60 // 6
    for epoch in ("0", "1"):
        seen = ranks[0]["ids"][epoch] + ranks[1]["ids"][epoch]
        assert len(seen) == len(set(seen)) == 60
    shards = sorted(p.name for p in (cache / BUCKET / "ids" / "v1").iterdir() if not p.name.startswith("."))
    assert shards and all(name.endswith(".tar") for name in shards)  # whole files only, no leftovers


def _cache_bytes(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):  # evicted or renamed between listing and stat
            total += entry.stat().st_size if entry.is_file() else 0
    return total


def test_cache_stays_within_its_bound_and_batches_stay_exact(dataset, tmp_path):
    local, url = dataset
    sizes = sorted((p.stat().st_size for p in local.glob("train-*.tar")), reverse=True)
    bound = sum(sizes[: (1 + 2) * 1])  # prefetch 1 + 2 groups of 1 shard: the least the cache accepts
    assert sum(sizes) > 2 * bound  # the dataset does not fit: shards must be evicted and fetched again
    settings = CacheSettings(str(tmp_path / "cache"), bound, prefetch=1, group=1)
    remote = _source(url, cache=settings)
    folder = settings.root(S3Location(BUCKET, "ids/v1"))
    peak, stop = [0], threading.Event()

    def watch() -> None:  # measured, not computed: every file in the folder, .part files included
        while not stop.is_set():
            peak[0] = max(peak[0], _cache_bytes(folder))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        kw = dict(world_size=1, rank=0, batch_size=4, seed=3, shard_group=1, shard_sizes=remote.shard_sizes)
        on_disk = TrainLoader(_source(local), workers=0, **kw)  # type: ignore[arg-type]
        loader = TrainLoader(remote, workers=2, **kw)  # type: ignore[arg-type]
        for epoch in (0, 1):
            on_disk.set_epoch(epoch)
            loader.set_epoch(epoch)
            assert _same(_batches(on_disk), _batches(loader))
        loader.close()
    finally:
        stop.set()
        watcher.join()
    assert 0 < peak[0] <= bound
    with pytest.raises(ValueError, match=r"data.cache_gb .* needs") as err:  # below the least: refused at start
        _source(url, cache=CacheSettings(str(tmp_path / "c2"), bound - 1, prefetch=1, group=1))
    assert "\n" not in str(err.value)


def _one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(err.value)
    assert "\n" not in text and all(p in text for p in parts), text


def _data(path: str, **kw) -> DataConfig:
    return DataConfig(format="wds", path=path, batch_size=4, workers=0, **kw)


def _build(data: DataConfig):
    return build_loaders(data, {}, world_size=1, rank=0, seed=0, num_classes=3, img_size=16)


def test_wrong_settings_are_one_line_before_any_batch(dataset, tmp_path, monkeypatch):
    _, url = dataset
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError) as err:  # a prefix that holds no dataset
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


def test_a_deleted_shard_is_one_line_naming_the_object(dataset, tmp_path):
    local, _ = dataset
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
    with pytest.raises(ConfigError) as err:  # s3 is for wds only: a folder dataset reads local files
        DataConfig(format="folder", path="s3://b/x")
    _one_line(err, "data.format 'folder' reads local files")
    from swat_dist.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["data", "convert", str(tmp_path), f"{scheme}://b/x", "--format", "wds"]) == 2
    assert main(["data", "verify", "s3://b/x"]) == 2  # verify reads local files only (refused before any request)
    assert main(["data", "digits", "s3://b/x"]) == 2
    assert not list(tmp_path.iterdir())  # never written as a local folder named "gs:" or "s3:"


def test_shard_order_is_the_order_the_plan_reads_shards():
    sizes = [3, 5, 2, 4, 4, 1, 6]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for epoch in range(4):
        order = shard_group_permutation(sizes, seed=7, epoch=epoch, group=3)
        shard_of = np.searchsorted(starts, order, side="right") - 1
        read = list(dict.fromkeys(shard_of.tolist()))  # shards as the plan first reads them
        given = ShardOrder(len(sizes), 7)(epoch)
        assert sorted(given) == list(range(len(sizes)))
        # the same groups, in the same order (within a group, samples and so first reads are shuffled)
        assert [set(given[i : i + 3]) for i in range(0, 7, 3)] == [set(read[i : i + 3]) for i in range(0, 7, 3)]


def test_prefetch_fetches_the_next_groups_of_the_plan_and_no_further(dataset, tmp_path):
    _, url = dataset
    prefetch, group = 2, 2
    settings = CacheSettings(str(tmp_path / "cache"), 10**9, prefetch=prefetch, group=group)
    src = _source(url, cache=settings)
    loader = TrainLoader(
        src, world_size=1, rank=0, batch_size=2, seed=4, shard_sizes=src.shard_sizes, shard_group=group
    )
    next(iter(loader))  # the first batch: reads group 0, and starts the prefetch thread
    order = ShardOrder(len(src.shard_sizes), 4)(0)
    want = {src.paths[k].rsplit("/", 1)[1] for k in order[: (prefetch + 1) * group]}
    folder = settings.root(S3Location(BUCKET, "ids/v1"))
    deadline = time.monotonic() + 20
    while not want <= {p.name for p in folder.glob("*.tar")} and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # were it to run further ahead, it would have by now
    assert {p.name for p in folder.glob("*.tar")} == want  # groups 0..prefetch, nothing beyond


def _fetch_all(url: str, cache_dir: str, barrier, out) -> None:
    src = _source(url, cache=CacheSettings(cache_dir, 10**9, prefetch=0, group=GROUP))
    barrier.wait()  # all at once, on an empty cache
    assert src.cache is not None
    out.put({k: src.cache.path(k).stat().st_ino for k in range(len(src.paths))})


def test_one_download_per_node_whatever_the_readers(dataset, tmp_path):
    local, url = dataset
    ctx = mpc.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_fetch_all, args=(url, str(tmp_path / "cache"), barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    seen = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    # a second download of a shard would have renamed a new file (a new inode) over one a reader already had
    assert all(s == seen[0] for s in seen) and len(seen[0]) == len(list(local.glob("train-*.tar")))
    assert not [p for p in (tmp_path / "cache").rglob(".*.part")]


def test_a_store_down_for_10_s_mid_epoch_costs_time_not_samples(dataset, s3_server, tmp_path):
    local, url = dataset
    settings = CacheSettings(str(tmp_path / "cache"), 10**9, prefetch=0, group=1)  # every shard read when due
    kw = dict(world_size=1, rank=0, batch_size=4, seed=8, shard_group=1)
    remote = _source(url, cache=settings)
    want = _batches(TrainLoader(_source(local), shard_sizes=remote.shard_sizes, **kw))  # type: ignore[arg-type]
    got, down = [], 0.0
    for step, batch in enumerate(TrainLoader(remote, shard_sizes=remote.shard_sizes, **kw)):  # type: ignore[arg-type]
        got.append(batch)
        if step == 2:
            s3_server.stop()
            back = threading.Timer(10.0, restart, args=(s3_server,))
            back.start()
            start = time.monotonic()
        if step == 3:
            down = time.monotonic() - start
    back.join()
    assert down >= 9.0  # the next shard waited for the store (retried with backoff) ...
    assert _same(want, got)  # ... and nothing was lost or repeated


def test_plan_command_reads_the_index_from_the_store(dataset, capsys):
    from swat_dist.cli import main

    _, url = dataset
    assert main(["data", "plan", url, "--world-size", "2", "--batch-size", "3"]) == 0
    assert "60 train / 9 val samples" in capsys.readouterr().out


def test_convert_to_the_store_uploads_the_local_conversion_index_last(dataset, tmp_path, capsys):
    from swat_dist.cli import main

    local, _ = dataset
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


def test_segmentation_pairs_over_s3_are_those_on_disk(s3_server, tmp_path):
    from swat_dist.data.pixels.seg_pipeline import SegTrain, SegVal
    from swat_dist.data.sets.seg_digits import write_seg_digits
    from swat_dist.data.sources.seg_pairs import SegWdsSource

    write_seg_digits(tmp_path / "src", train=16, val=4, size=48, seed=2)
    opts = ConvertOptions(fmt="wds", task="segment", num_classes=11, workers=1, shard_bytes=16384)
    assert convert(tmp_path / "src", tmp_path / "wds", opts) == 0
    where = S3Location(BUCKET, "seg")
    upload_dataset(tmp_path / "wds", where)
    tfs = SegTrain(crop=32, scale=(64, 32)), SegVal(scale=(64, 32))
    local = SegWdsSource(tmp_path / "wds", "train", *tfs)
    remote = SegWdsSource(where.url(), "train", *tfs, CacheSettings(str(tmp_path / "cache"), 10**9, 1, 2))
    assert len(local.shard_sizes) > 2 and remote.shard_sizes == local.shard_sizes
    kw = dict(world_size=1, rank=0, batch_size=4, seed=6, shard_sizes=local.shard_sizes, shard_group=2)
    want = _batches(TrainLoader(local, **kw))  # type: ignore[arg-type]
    assert _same(want, _batches(TrainLoader(remote, workers=2, **kw)))  # type: ignore[arg-type]


def test_a_shard_deleted_mid_run_is_one_line_from_a_loader_worker_too(dataset, tmp_path):
    local, _ = dataset
    where = S3Location(BUCKET, "ids/deleted-later")
    upload_dataset(local, where)
    src = _source(where.url(), cache=CacheSettings(str(tmp_path / "cache"), 10**9, prefetch=1, group=GROUP))
    ObjectStore(where).delete("train-000004.tar")  # after the start-up check: found by the read that needs it
    loader = TrainLoader(src, world_size=1, rank=0, batch_size=4, workers=2, shard_sizes=src.shard_sizes)
    with pytest.raises(ValueError) as err:
        _batches(loader)
    _one_line(err, f"{where.url('train-000004.tar')}: no such object")  # not torch's "Caught ... Traceback"
    loader.close()
