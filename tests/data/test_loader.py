"""Planned loaders over a real image folder: exactly-once, worker-count independence, mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swat_dist.data.loaders.loader import TrainLoader, ValLoader
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sources.folder import FolderSource

from .helpers import colour_id, write_id_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    ids = write_id_folder(root, classes=3, per_class={"train": 9, "val": 4})
    return root, ids


def _source(root, split="train", auto_augment=None):
    # no colour jitter: crops and flips of a flat image keep the colour that names the sample
    train_tf = train_transform(16, auto_augment=auto_augment, color_jitter=0.0)
    return FolderSource(root, split, train_tf, eval_transform(16, 1.0))


def _ids(images: torch.Tensor) -> list[int]:
    return [colour_id(img[:, 8, 8].numpy()) for img in images]


def _run(loader, epochs=(0,)):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out += [(_ids(x), y.tolist()) for x, y in loader]
    return out


def test_two_ranks_see_each_sample_once_with_equal_steps(folder):
    root, ids = folder
    src = _source(root)
    per_rank = [_run(TrainLoader(src, world_size=2, rank=r, batch_size=4, workers=0, seed=3)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 27 // 8
    seen = [i for rank in per_rank for batch, _ in rank for i in batch]
    assert len(seen) == len(set(seen)) == 24 and set(seen) <= set(ids["train"])
    for rank in per_rank:  # labels travel with their images: class = position in sorted class list
        for batch, labels in rank:
            assert labels == [src.samples[ids["train"].index(i)][1] for i in batch]


def test_same_batches_and_pixels_for_any_worker_count(folder):
    root, _ = folder
    src = _source(root, auto_augment="rand-m9-mstd0.5-inc1")
    runs = []
    for workers in (0, 2):
        loader = TrainLoader(src, world_size=1, rank=0, batch_size=5, workers=workers, seed=1)
        loader.set_epoch(2)
        runs.append([x for x, _ in loader])
    assert len(runs[0]) == len(runs[1]) == 5
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_mid_epoch_resume_gives_exactly_the_remaining_batches(folder):
    root, _ = folder
    src = _source(root, auto_augment="rand-m9-mstd0.5-inc1")
    full = TrainLoader(src, world_size=1, rank=0, batch_size=4, workers=0, seed=5)
    full.set_epoch(1)
    reference = [x for x, _ in full]

    first = TrainLoader(src, world_size=1, rank=0, batch_size=4, workers=0, seed=5)
    first.set_epoch(1)
    it = iter(first)
    head = [next(it) for _ in range(2)][-1][0]
    state = first.state_dict()
    assert state["step"] == 2 and torch.equal(head, reference[1])

    resumed = TrainLoader(src, world_size=1, rank=0, batch_size=4, workers=2, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # a no-op for the epoch it resumed into
    rest = [x for x, _ in resumed]
    assert len(rest) == len(reference) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, reference[2:]))
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["step"] == 0


def test_resume_on_another_world_size_keeps_the_global_batches(folder):
    root, _ = folder
    src = _source(root)
    one = TrainLoader(src, world_size=1, rank=0, batch_size=8, seed=2)
    it = iter(one)
    next(it)
    state = one.state_dict()
    rest_one = [sorted(_ids(x)) for x, _ in it]
    two = [TrainLoader(src, world_size=2, rank=r, batch_size=4, seed=2) for r in range(2)]
    for loader in two:
        loader.load_state_dict(state)
    rest_two = [sorted(_ids(a) + _ids(b)) for (a, _), (b, _) in zip(*two)]
    assert rest_one == rest_two and len(rest_one) == 2
    bad = TrainLoader(src, world_size=2, rank=0, batch_size=8, seed=2)
    with pytest.raises(ValueError, match="same global batch"):
        bad.load_state_dict(state)


def test_val_every_sample_exactly_once_padding_marked(folder):
    root, ids = folder
    src = _source(root, "val")
    seen, passes = [], []
    for rank in range(5):  # 12 samples over 5 ranks: shares of 2 and 3
        loader = ValLoader(src, world_size=5, rank=rank, batch_size=2, workers=0)
        batches = list(loader)
        passes.append(len(batches))
        for x, y in batches:
            seen += [i for i, label in zip(_ids(x), y.tolist()) if label >= 0]
    assert len(set(passes)) == 1
    assert sorted(seen) == sorted(ids["val"])


def test_epochs_differ_and_repeat_by_seed(folder):
    root, _ = folder
    src = _source(root)
    a = _run(TrainLoader(src, world_size=1, rank=0, batch_size=4, seed=7), epochs=(0, 1))
    b = _run(TrainLoader(src, world_size=1, rank=0, batch_size=4, seed=7), epochs=(0, 1))
    assert a == b
    n = len(a) // 2
    assert [x for x, _ in a[:n]] != [x for x, _ in a[n:]]
    assert np.unique([i for batch, _ in a[:n] for i in batch]).size == 4 * n


def test_randaugment_posterize_at_full_magnitude_works_as_in_training():
    # The SWAT recipe's RandAugment is m15, clipped to 10: PosterizeIncreasing then keeps 0 bits. Pillow 13
    # raises on that (pyproject pins pillow<13); Pillow <= 12 returns black, the behaviour the recipe had.
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    ra = rand_augment_transform("rand-m15-n2-mstd1.0-inc1", dict(img_mean=(124, 116, 104)))
    op = next(o for o in ra.ops if o.name == "PosterizeIncreasing")
    op.prob, op.magnitude_std = 1.0, 0.0
    out = np.asarray(op(Image.new("RGB", (8, 8), (200, 120, 40))))
    assert out.max() == 0
