"""The planned loaders over real WebDataset shards written by our converter."""

from __future__ import annotations

import pytest
import torch

from swat_dist.config import DataConfig
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.build import build_loaders
from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.wds import WdsSource

from .helpers import colour_id, write_id_folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wdsids")
    ids = write_id_folder(root / "src", classes=3, per_class={"train": 10, "val": 3})
    # ~2 KB per sample in the tar, 16 KB shards (the converter's minimum): 30 samples span several shards
    opts = ConvertOptions(fmt="wds", workers=1, shard_bytes=16384, max_resolution=64)
    assert convert(root / "src", root / "wds", opts) == 0
    return root, ids


def _source(root, split="train"):
    return WdsSource(root / "wds", split, train_transform(16, color_jitter=0.0), eval_transform(16, 1.0))


def _ids(x: torch.Tensor) -> list[int]:
    return [colour_id(img[:, 8, 8].numpy()) for img in x]


def test_source_reads_every_sample_with_its_label(shards):
    root, ids = shards
    src = _source(root)
    assert len(src.shard_sizes) > 2 and sum(src.shard_sizes) == len(src) == 30
    seen = {}
    for i in range(len(src)):
        img, label = src.load(i, train=False)
        seen[colour_id(img[:, 8, 8].numpy())] = label
    assert sorted(seen) == sorted(ids["train"])
    assert all(label == i // 10 for i, label in seen.items())  # ids were written class by class, 10 each


def test_two_ranks_exactly_once_and_resume_equal(shards):
    root, ids = shards
    src = _source(root)
    kw = dict(world_size=2, batch_size=4, seed=9, shard_sizes=src.shard_sizes, shard_group=2)
    per_rank = []
    for rank in range(2):
        loader = TrainLoader(src, rank=rank, workers=2, **kw)
        per_rank.append([x for x, _ in loader])
    seen = [i for rank in per_rank for x in rank for i in _ids(x)]
    assert len(per_rank[0]) == len(per_rank[1]) == 30 // 8
    assert len(seen) == len(set(seen)) == 24 and set(seen) <= set(ids["train"])

    first = TrainLoader(src, rank=1, workers=0, **kw)
    it = iter(first)
    next(it)
    resumed = TrainLoader(src, rank=1, workers=2, **kw)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(a, b) for a, (b, _) in zip(per_rank[1][1:], resumed))


def test_val_exactly_once(shards):
    root, ids = shards
    src = _source(root, "val")
    seen = []
    for rank in range(2):
        for x, y in ValLoader(src, world_size=2, rank=rank, batch_size=4):
            seen += [i for i, label in zip(_ids(x), y.tolist()) if label >= 0]
    assert sorted(seen) == sorted(ids["val"])


def test_build_loaders_for_wds_uses_the_shard_plan(shards):
    root, _ = shards
    data = DataConfig(
        format="wds", path=str(root / "wds"), batch_size=4, workers=0, auto_augment=None, mixup=0, cutmix=0
    )
    loaders = build_loaders(data, {"input_size": (3, 16, 16)}, world_size=1, rank=0, seed=0, num_classes=3)
    assert loaders.train.shard_sizes == _source(root).shard_sizes and loaders.classes == ["c0", "c1", "c2"]
    x, y = next(iter(loaders.train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.int64


def test_wrong_format_is_a_clear_error(shards, tmp_path):
    root, _ = shards
    with pytest.raises(ValueError, match=r"no index\.json"):
        WdsSource(tmp_path, "train", None, None)
    with pytest.raises(ValueError, match="no test split"):
        WdsSource(root / "wds", "test", None, None)


def test_plan_command_reports_equal_steps_and_refuses_an_empty_layout(shards, capsys):
    from swat_dist.cli import main

    root, _ = shards
    assert main(["data", "plan", str(root / "wds"), "--world-size", "2", "--batch-size", "4", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "30 train / 9 val" in out and "3 steps per epoch on every rank; 6 samples left out" in out
    assert "samples per rank [4, 5]" in out
    assert main(["data", "plan", str(root / "wds"), "--world-size", "4", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 steps" in err[0]
