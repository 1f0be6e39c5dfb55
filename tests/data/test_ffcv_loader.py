"""data.format=ffcv: FFCV's pipeline driven by our plan - exactly-once, resume, worker-count independence.

FFCV runs with its JIT off here (``set_jit(False)``): numba compiles each pipeline in 10-30 s on this
machine, the same code runs as Python in milliseconds on tiny data. One slow test checks that the
compiled pipeline gives the same pixels.
"""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from swat_dist.config import DataConfig
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.build import build_loaders
from swat_dist.data.loaders.ffcv_loader import BetonSplit, FfcvTrainLoader, FfcvValLoader
from swat_dist.data.pixels.ffcv_crop import centre_crop, random_resized_crop, sample_keys
from swat_dist.data.pixels.transforms import colour_transform
from swat_dist.data.sources.ffcv import set_jit

from .helpers import colour_id, write_id_folder

RAND = "rand-m9-mstd0.5-inc1"


def _convert(src, dst):
    # half JPEG, half raw: both storage modes go through the loader
    opts = ConvertOptions(fmt="ffcv", workers=1, max_resolution=96, compress_probability=0.5)
    assert convert(src, dst, opts) == 0
    return dst


pytestmark = pytest.mark.usefixtures("no_jit")  # conftest.py


@pytest.fixture(scope="module")
def ids_data(tmp_path_factory):
    """Flat images whose colour names the sample (crops and flips keep it)."""
    root = tmp_path_factory.mktemp("ffcvids")
    ids = write_id_folder(root / "src", classes=3, per_class={"train": 10, "val": 4})
    return _convert(root / "src", root / "ffcv"), ids


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    """Noise images of several sizes and aspect ratios: every crop and flip changes the pixels."""
    root = tmp_path_factory.mktemp("ffcvnoise")
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (64, 30), (48, 48), (33, 70), (80, 44)]
    for split, n in (("train", 8), ("val", 3)):
        for k in range(2):
            (root / "src" / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                h, w = sizes[(i + k) % len(sizes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "src" / split / f"c{k}" / f"{i}.png")
    return _convert(root / "src", root / "ffcv")


def _ids(x: torch.Tensor) -> list[int]:
    return [colour_id(img[:, 8, 8].numpy()) for img in x]


def _train(root, size=16, **kw):
    args = dict(world_size=1, rank=0, batch_size=4, workers=0, seed=3) | kw
    return FfcvTrainLoader(BetonSplit(root, "train"), size=size, **args)


def test_two_ranks_exactly_once_labels_match_and_epochs_differ(ids_data):
    root, ids = ids_data
    per_rank = []
    for rank in range(2):
        loader = _train(root, world_size=2, rank=rank, workers=2)
        epochs = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            epochs.append([(_ids(x), y.tolist()) for x, y in loader])
        per_rank.append(epochs)
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == 30 // 8
    for epoch in (0, 1):
        seen = [i for rank in per_rank for batch, _ in rank[epoch] for i in batch]
        assert len(seen) == len(set(seen)) == 24 and set(seen) <= set(ids["train"])
        for rank in per_rank:  # ids were written class by class, 10 per class
            assert all(labels == [i // 10 for i in batch] for batch, labels in rank[epoch])
    assert per_rank[0][0] != per_rank[0][1]


def test_val_every_sample_exactly_once_padding_marked(ids_data):
    root, ids = ids_data
    seen, passes = [], []
    for rank in range(5):  # 12 samples over 5 ranks: shares of 2 and 3, padded to equal batches
        loader = FfcvValLoader(
            BetonSplit(root, "val"), world_size=5, rank=rank, batch_size=2, size=16, crop_pct=0.875, workers=2
        )
        batches = list(loader)
        passes.append(len(batches))
        assert len(loader) == len(batches)
        for x, y in batches:
            real = [(i, label) for i, label in zip(_ids(x), y.tolist()) if label >= 0]
            assert all(label == (i - 30) // 4 for i, label in real)
            seen += [i for i, _ in real]
            assert int(x[y < 0].sum()) == 0  # padding is blank
    assert len(set(passes)) == 1 and sorted(seen) == sorted(ids["val"])


def test_same_pixels_for_any_worker_count_and_ranks_sharing_the_global_batch(noise_data):
    colour = colour_transform(24, RAND, 0.0)
    runs = []
    for workers in (0, 1, 2):
        loader = _train(noise_data, size=24, workers=workers, colour=colour, batch_size=4)
        loader.set_epoch(2)
        runs.append([x for x, _ in loader])
        loader.close()  # its RandAugment processes
    assert len(runs[0]) == 4
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))
    # one rank with batch 4 or two ranks with batch 2: same global batches, so the same pixel per sample
    halves = [_train(noise_data, size=24, world_size=2, rank=r, batch_size=2, colour=colour) for r in range(2)]
    for h in halves:
        h.set_epoch(2)
    joined = [torch.cat([a, b]) for (a, _), (b, _) in zip(*halves)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], joined))


def test_mid_epoch_resume_gives_exactly_the_remaining_batches(noise_data):
    colour = colour_transform(24, RAND, 0.0)
    full = _train(noise_data, size=24, seed=5, colour=colour)
    full.set_epoch(1)
    reference = [(x, y) for x, y in full]

    first = _train(noise_data, size=24, seed=5, colour=colour)
    first.set_epoch(1)
    it = iter(first)
    head = [next(it) for _ in range(2)][-1][0]  # stop mid-epoch, FFCV's thread still running ahead
    state = first.state_dict()
    it.close()
    assert state["step"] == 2 and torch.equal(head, reference[1][0])

    resumed = _train(noise_data, size=24, seed=5, colour=colour, workers=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = list(resumed)
    resumed.close()
    assert len(rest) == len(reference) - 2
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(rest, reference[2:]))
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["step"] == 0
    # labels are the source's, for the planned ids
    labels = BetonSplit(noise_data, "train").labels
    assert all(y.tolist() == labels[full.plan(1).batch(s)].tolist() for s, (_, y) in enumerate(reference))


def test_crop_parameters_follow_torchvision_semantics():
    ids = np.arange(4000)
    heights, widths = np.full(4000, 300), np.full(4000, 400)
    p = random_resized_crop(sample_keys(0, 0, ids), heights, widths, (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    top, left, h, w, flip = p.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 300).all() and (left + w <= 400).all()
    area = h * w / (300 * 400)
    assert area.min() >= 0.07 and area.max() <= 1.0 and abs(np.log(w / h)).max() <= math.log(4 / 3) + 0.02
    assert 0.45 < flip.mean() < 0.55 and 0.4 < area.mean() < 0.6  # the area fraction is ~U(0.08, 1)
    # per sample, not per batch position: a sample's crop is the same in any batch; epochs differ
    again = random_resized_crop(sample_keys(0, 0, ids[::-1]), heights, widths, (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    assert (again[::-1] == p).all()
    other = random_resized_crop(sample_keys(0, 1, ids), heights, widths, (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    assert (other != p).any(axis=1).mean() > 0.99
    # nothing fits a 1000:1 strip at ratio 1: torchvision's fallback, the centred square
    strip = random_resized_crop(sample_keys(0, 0, ids[:5]), np.full(5, 2), np.full(5, 2000), (0.9, 1.0), (1, 1), 0)
    assert (strip == [0, 999, 2, 2, 0]).all()
    # eval: the centre square that Resize(floor(size / crop_pct)) + CenterCrop(size) keeps
    assert centre_crop(np.array([256]), np.array([512]), 224, 0.875).tolist() == [[16, 144, 224, 224, 0]]


def test_build_loaders_for_ffcv_and_bad_paths(ids_data, tmp_path):
    root, _ = ids_data
    data = DataConfig(format="ffcv", path=str(root), batch_size=4, workers=0, mixup=0, cutmix=0)
    loaders = build_loaders(data, {"input_size": (3, 16, 16)}, world_size=1, rank=0, seed=0, num_classes=3)
    assert loaders.classes == ["c0", "c1", "c2"] and loaders.train.steps_per_epoch == 30 // 4
    x, y = next(iter(loaders.train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert loaders.val.num_samples == 12
    with pytest.raises(ValueError, match=r"no index\.json"):
        BetonSplit(tmp_path, "train")
    index = json.loads((root / "index.json").read_text())
    for name, fmt in (("wds", "wds"), ("nobeton", "ffcv")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.json").write_text(json.dumps(index | {"format": fmt}))
    with pytest.raises(ValueError, match="a wds dataset, not ffcv"):
        BetonSplit(tmp_path / "wds", "train")
    with pytest.raises(FileNotFoundError, match=r"train\.beton: missing"):
        BetonSplit(tmp_path / "nobeton", "train")
    with pytest.raises(ValueError, match="no test split"):
        BetonSplit(root, "test")
    (tmp_path / "nobeton" / "train.beton").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=r"train\.beton: not a readable \.beton"):
        BetonSplit(tmp_path / "nobeton", "train")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, root: str, out: str) -> None:
    set_jit(False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loader = _train(root, world_size=world, rank=rank, batch_size=3, workers=2, seed=11)
        mine = {}
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            mine[epoch] = [i for x, _ in loader for i in _ids(x)]
        val = FfcvValLoader(
            BetonSplit(root, "val"), world_size=world, rank=rank, batch_size=2, size=16, crop_pct=1.0, workers=2
        )
        val_ids = [i for x, y in val for i, label in zip(_ids(x), y.tolist()) if label >= 0]
        gathered: list = [None] * world
        dist.all_gather_object(gathered, dict(train=mine, val=val_ids, steps=len(loader.plan().batches())))
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_two_workers_exactly_once(ids_data, tmp_path):
    root, ids = ids_data
    out = tmp_path / "result.json"
    mp.spawn(_rank_main, args=(2, _free_port(), str(root), str(out)), nprocs=2, join=True)
    ranks = json.loads(out.read_text())
    assert ranks[0]["steps"] == ranks[1]["steps"] == 30 // 6
    for epoch in ("0", "1"):
        seen = ranks[0]["train"][epoch] + ranks[1]["train"][epoch]
        assert len(seen) == len(set(seen)) == 30 and set(seen) == set(ids["train"])
    assert ranks[0]["train"]["0"] != ranks[0]["train"]["1"]
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == sorted(ids["val"])


@pytest.mark.slow
def test_compiled_pipeline_gives_the_same_pixels(noise_data):
    def batches():
        loader = _train(noise_data, size=24, workers=2, seed=8)
        return [x for x, _ in loader]

    python = batches()
    set_jit(True)
    try:
        compiled = batches()  # numba compiles the pipeline here: 10-30 s
    finally:
        set_jit(False)
    assert len(python) == len(compiled) and all(torch.equal(a, b) for a, b in zip(python, compiled))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_error_in_the_pipeline_raises_instead_of_hanging(noise_data):
    loader = _train(noise_data, size=24)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("stage failed")

    loader._crop = broken  # runs inside FFCV's thread, whose own iterator would then wait forever
    with pytest.raises(RuntimeError, match="thread died"):
        next(iter(loader))


def test_no_colour_stage_without_colour_work():
    """color_jitter=0 without RandAugment adds nothing to do per image, so no batch may be sent through the
    colour processes (timm's no-op ColorJitter(0, 0, 0) once halved FFCV's throughput that way)."""
    assert colour_transform(32, None, 0.0) is None
    assert colour_transform(32, None, 0.4) is not None
    assert colour_transform(32, RAND, 0.0) is not None
