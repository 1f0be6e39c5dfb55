"""wds datasets in an S3-compatible store (a real SeaweedFS on 127.0.0.1): the loader yields exactly the
batches of the same shards on local disk, across gloo ranks, workers, a mid-epoch resume and a store
that goes away for 10 s; the cache stays within its bound, downloads each shard once per node and
prefetches what the plan reads next. Wrong settings and the commands: test_s3_checks.py."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mpc
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.loaders.plan import ShardOrder, shard_group_permutation
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.location import CacheSettings, S3Location
from swat_dist.data.sources.wds import WdsSource

from .helpers import colour_id
from .s3server import BUCKET, free_port, restart, upload_dataset

GROUP = 2  # shards per group: batches straddle groups, and prefetch runs ahead by whole groups


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


def test_two_gloo_ranks_two_workers_read_s3_as_local_disk_with_resume(s3_ids, tmp_path):
    local, url = s3_ids
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


def test_cache_stays_within_its_bound_and_batches_stay_exact(s3_ids, tmp_path):
    local, url = s3_ids
    sizes = sorted((p.stat().st_size for p in local.glob("train-*.tar")), reverse=True)
    bound = sum(sizes[: (1 + 2) * 1])  # prefetch 1 + 2 groups of 1 shard: the least the cache accepts
    assert sum(sizes) > 2 * bound  # the s3_ids does not fit: shards must be evicted and fetched again
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


def test_prefetch_fetches_the_next_groups_of_the_plan_and_no_further(s3_ids, tmp_path):
    _, url = s3_ids
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


def test_one_download_per_node_whatever_the_readers(s3_ids, tmp_path):
    local, url = s3_ids
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


def test_a_store_down_for_10_s_mid_epoch_costs_time_not_samples(s3_ids, s3_server, tmp_path):
    local, url = s3_ids
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


def test_a_download_that_died_with_its_process_gives_its_space_back(s3_ids, tmp_path):
    local, url = s3_ids
    size = max(p.stat().st_size for p in local.glob("train-*.tar"))
    settings = CacheSettings(str(tmp_path / "cache"), 3 * size, prefetch=1, group=1)  # the least accepted
    src = _source(url, cache=settings)
    folder = settings.root(S3Location(BUCKET, "ids/v1"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    for k in range(3):  # three dead downloads reserve the whole bound
        (folder / f".{src.paths[k].rsplit('/', 1)[1]}@{socket.gethostname()}@{dead.pid}.part").write_bytes(b"x")
    assert src.load(5, train=False)[1] == _source(local).load(5, train=False)[1]  # fits: they were cleared
    assert not list(folder.glob(".*.part"))
