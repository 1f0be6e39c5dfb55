"""Segmentation loaders: the mmseg pipeline's crops do not depend on the worker count, validation sees
every image exactly once across ranks whatever its size, and the metric on 2 gloo ranks equals 1 rank's."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from swat_dist.config import load_config
from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.loaders.seg_build import build_seg_loaders
from swat_dist.data.pixels.seg_pipeline import IGNORE, SegTrain, SegVal, reduce_zero_label
from swat_dist.data.sets.seg_digits import write_seg_digits
from swat_dist.data.sources.seg_pairs import SegFolderSource
from swat_dist.tasks.segment import SegmentationTask
from swat_dist.train.evaluate import evaluate

VAL = 13  # odd, and the seg-digits sides vary: ranks get differently sized images and one padding batch


@pytest.fixture(scope="module")
def seg_digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segdigits")
    write_seg_digits(root, train=24, val=VAL, size=64, seed=3)
    return root


def _source(root: Path, split: str) -> SegFolderSource:
    return SegFolderSource(root, split, SegTrain(crop=32, scale=(128, 32)), SegVal(scale=(128, 32)))


def test_train_crops_are_identical_for_0_1_and_2_workers(seg_digits):
    runs = []
    for workers in (0, 1, 2):
        loader = TrainLoader(_source(seg_digits, "train"), world_size=1, rank=0, batch_size=4, workers=workers, seed=7)
        loader.set_epoch(1)
        runs.append([(x.clone(), y.clone()) for x, y in loader])
        loader.close()
    assert len(runs[0]) == 6
    for other in runs[1:]:
        for (xa, ya), (xb, yb) in zip(runs[0], other):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = runs[0][0]
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)
    assert y.dtype == torch.int16 and y.shape == (4, 32, 32)
    assert set(torch.unique(y).tolist()) <= {*range(11), IGNORE}  # reduce_zero_label: raw 1..11 -> 0..10


def test_a_resumed_loader_continues_with_the_same_crops(seg_digits):
    full = TrainLoader(_source(seg_digits, "train"), world_size=1, rank=0, batch_size=4, seed=7)
    want = [y.clone() for _, y in full]
    cut = TrainLoader(_source(seg_digits, "train"), world_size=1, rank=0, batch_size=4, seed=7)
    it = iter(cut)
    first = [next(it)[1].clone() for _ in range(2)]
    resumed = TrainLoader(_source(seg_digits, "train"), world_size=1, rank=0, batch_size=4, seed=7)
    resumed.load_state_dict(cut.state_dict())
    rest = [y.clone() for _, y in resumed]
    assert len(first + rest) == len(want) and all(torch.equal(a, b) for a, b in zip(first + rest, want))


def test_val_masks_keep_their_original_size_and_the_image_is_resized_to_fit(seg_digits):
    src = _source(seg_digits, "val")
    for i in range(len(src)):
        image, mask = src.load(i, train=False)
        h, w = mask.shape
        assert min(image.shape[-2:]) == 32 or max(image.shape[-2:]) == 128  # fits (128, 32) keeping its ratio
        assert abs(image.shape[-1] / image.shape[-2] - w / h) < 0.1


def test_reduce_zero_label_maps_ade_labels():
    raw = torch.tensor([0, 1, 2, 150, 255], dtype=torch.uint8)
    assert reduce_zero_label(raw).tolist() == [IGNORE, 0, 1, 149, IGNORE]


def _pointwise_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Conv2d(3, 11, 1))  # logits at stride 4


def _evaluate(root: Path, world: int, rank: int) -> dict[str, float]:
    val = ValLoader(_source(root, "val"), world_size=world, rank=rank, batch_size=1)
    model = _pointwise_model().eval()
    return evaluate(model, val, SegmentationTask(11), torch.device("cpu"))


def _rank(rank: int, world: int, port: int, root: str, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = _evaluate(Path(root), world, rank)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        tdist.destroy_process_group()


def test_metric_on_two_ranks_equals_one_rank_each_image_exactly_once(seg_digits, tmp_path):
    one = _evaluate(seg_digits, 1, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two.json"
    mp.spawn(_rank, args=(2, port, str(seg_digits), str(out)), nprocs=2, join=True)
    two = json.loads(out.read_text())
    assert one["samples"] == two["samples"] == VAL
    for key in ("mIoU", "mAcc", "aAcc"):
        assert two[key] == pytest.approx(one[key], abs=1e-9), key
    assert 0 < one["aAcc"] < 100


def test_build_seg_loaders_from_the_config(seg_digits):
    args = ["task=segment", "data.format=folder", f"data.path={seg_digits}", "data.batch_size=4", "data.workers=0",
            "seg.crop_size=32", "seg.scale=[128,32]", "model.num_classes=11"]  # fmt: skip
    cfg = load_config([], args)
    loaders = build_seg_loaders(cfg.data, cfg.seg, world_size=2, rank=1, seed=0, num_classes=11)
    assert loaders.train.steps_per_epoch == 24 // 8 and len(loaders.val) == 7  # 13 images over 2 ranks: 7 batches
    assert loaders.img_size == 32 and len(loaders.classes) == 11
