"""Two gloo processes with two loader workers each: exactly-once train epochs and val across real ranks."""

from __future__ import annotations

import json
import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.folder import FolderSource

from .helpers import colour_id, write_id_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        src = FolderSource(root, "train", train_transform(16, color_jitter=0.0), eval_transform(16, 1.0))
        val = FolderSource(root, "val", train_transform(16), eval_transform(16, 1.0))
        loader = TrainLoader(src, world_size=world, rank=rank, batch_size=3, workers=2, seed=11)
        mine = {}
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            mine[epoch] = [colour_id(x[:, 8, 8].numpy()) for xb, _ in loader for x in xb]
        val_ids = [
            colour_id(x[:, 8, 8].numpy())
            for xb, yb in ValLoader(val, world_size=world, rank=rank, batch_size=2, workers=2)
            for x, y in zip(xb, yb)
            if y >= 0
        ]
        gathered: list = [None] * world
        dist.all_gather_object(gathered, dict(train=mine, val=val_ids, steps=loader.steps_per_epoch))
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_two_workers_exactly_once(tmp_path):
    ids = write_id_folder(tmp_path / "d", classes=2, per_class={"train": 10, "val": 5})
    out = tmp_path / "result.json"
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path / "d"), str(out)), nprocs=2, join=True)
    ranks = json.loads(out.read_text())
    assert ranks[0]["steps"] == ranks[1]["steps"] == 20 // 6
    for epoch in ("0", "1"):
        seen = ranks[0]["train"][epoch] + ranks[1]["train"][epoch]
        assert len(seen) == len(set(seen)) == 18 and set(seen) <= set(ids["train"])
    assert ranks[0]["train"]["0"] != ranks[0]["train"]["1"]
    val = ranks[0]["val"] + ranks[1]["val"]
    assert sorted(val) == sorted(ids["val"])
