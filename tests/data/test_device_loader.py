"""``data.augment_on: device`` on real data (photo-digits as a JPEG folder and as wds shards): the workers hand
over bytes and plans that depend on (seed, epoch, sample id, position) alone - any worker count, any layout
of one global batch, after a resume - non-JPEG members are decoded on the worker and join the batch, and a
short training run on them learns with a finite loss."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.loader import TrainLoader
from swat_dist.data.pixels.device_pipeline import DevicePipeline, EncodedBatch
from swat_dist.data.pixels.device_plan import BatchPlan, Planner, Recipe
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sets.photo_digits import write_photo_digits
from swat_dist.data.sources.folder import FolderSource
from swat_dist.data.sources.wds import ShardSink, WdsSource, scan_shard

CPU = torch.device("cpu")
RECIPE = Recipe(img_size=32, num_classes=10, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.8, cutmix=1.0)
TF, EVAL_TF = train_transform(32, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.0), eval_transform(32, 1.0)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """photo-digits (64 px, 48 train) as PNGs, the same re-saved as JPEG files, and as wds shards (several)."""
    root = tmp_path_factory.mktemp("device")
    write_photo_digits(root / "png", train=48, val=10, size=64)
    shutil.rmtree(root / "png" / "val")  # 10 random digits miss some classes: val holds one train image per class
    for cls in (root / "png" / "train").iterdir():
        (root / "png" / "val" / cls.name).mkdir(parents=True)
        shutil.copy(min(cls.iterdir()), root / "png" / "val" / cls.name)
    for png in (root / "png").rglob("*.png"):
        jpg = root / "jpeg" / png.relative_to(root / "png").with_suffix(".jpg")
        jpg.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(jpg, quality=90)
    assert convert(root / "png", root / "wds", ConvertOptions(fmt="wds", workers=1, shard_bytes=20 * 1024)) == 0
    return {"folder": root / "jpeg", "wds": root / "wds", "root": root}


def _source(sets: dict[str, Path], fmt: str) -> FolderSource | WdsSource:
    if fmt == "folder":
        return FolderSource(sets["folder"], "train", TF, EVAL_TF)
    return WdsSource(sets["wds"], "train", TF, EVAL_TF)


def _loader(
    src: FolderSource | WdsSource, workers: int = 0, world: int = 1, rank: int = 0, batch: int = 8
) -> TrainLoader:
    return TrainLoader(
        src, world_size=world, rank=rank, batch_size=batch, workers=workers, seed=3, planner=Planner(RECIPE),
        shard_sizes=getattr(src, "shard_sizes", None), shard_group=2,
    )  # fmt: skip


def _plan_tensors(plan: BatchPlan) -> list[object]:
    steps = [(s.name, s.bicubic, s.index.tolist(), s.args.tolist()) for s in plan.steps]
    fields = (plan.crop_hw, plan.bicubic, plan.flip, plan.erase_index, plan.erase, plan.noise_seed)
    return [plan.sizes, plan.crops, plan.groups, steps, [f.tolist() for f in fields], plan.mix]


def _same(a: tuple[EncodedBatch, torch.Tensor], b: tuple[EncodedBatch, torch.Tensor]) -> None:
    (ea, ya), (eb, yb) = a, b
    assert torch.equal(ya, yb)
    assert [j.tolist() for j in ea.jpegs] == [j.tolist() for j in eb.jpegs]
    assert ea.decoded.keys() == eb.decoded.keys() and all(torch.equal(ea.decoded[k], eb.decoded[k]) for k in ea.decoded)
    assert _plan_tensors(ea.plan) == _plan_tensors(eb.plan)


@pytest.mark.parametrize("fmt", ["folder", "wds"])
def test_workers_hand_over_the_same_bytes_and_plans_for_any_worker_count(sets, fmt):
    src = _source(sets, fmt)
    one, two = _loader(src), _loader(src, workers=2)
    a, b = list(one), list(two)
    two.close()
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        _same(x, y)
    enc, labels = a[0]
    assert isinstance(enc, EncodedBatch) and labels.dtype == torch.int64 and len(enc.jpegs) == 8
    assert all(j[:2].tolist() == [0xFF, 0xD8] for j in enc.jpegs) and not enc.decoded  # JPEGs go to the device
    crops = {c for x, _ in a for c in x.plan.crops}
    assert len(crops) > 40  # a crop per sample, not one per batch


def test_each_plan_is_drawn_from_its_samples_seed_as_the_loader_path_seeds_its_transform(sets):
    """The contract with timm's path: sample i's plan is what the planner draws right after
    ``seed_everything(sample_seed(seed, epoch, i))`` (device_plan's tests tie those draws to timm's)."""
    from swat_dist.data.loaders.encoded import mix_seed
    from swat_dist.data.loaders.seeds import sample_seed, seed_everything

    src = _source(sets, "folder")
    loader = _loader(src)
    loader.set_epoch(2)
    ids = loader.plan().batch(1).tolist()
    (_, _), (enc, _), *_ = list(loader)
    planner, wants = Planner(RECIPE), []
    for i in ids:
        seed_everything(sample_seed(3, 2, i))
        wants.append(planner.sample(64, 64))
    # and the batch's mixup from its global position: step 1 of 1 rank x 8 starts at sample 8
    assert _plan_tensors(enc.plan) == _plan_tensors(planner.batch(wants, mix_seed(3, 2, 8)))


def test_two_ranks_give_what_one_rank_with_accumulation_gives_at_the_same_positions(sets):
    """2 ranks x B at step s = 1 rank x B at steps 2s and 2s + 1: plans, mixup included, and the pipeline's pixels."""
    src = _source(sets, "wds")
    single = list(_loader(src))
    ranks = [list(_loader(src, world=2, rank=r)) for r in (0, 1)]
    pipeline = DevicePipeline(RECIPE)
    mixes = set()
    for s in range(3):
        for r in (0, 1):
            _same(ranks[r][s], single[2 * s + r])
            mixes.add(repr(single[2 * s + r][0].plan.mix))
    for s in (2, 0):  # run out of order: the pixels may depend on the plan alone, not on earlier calls
        x1, t1 = pipeline(*single[2 * s + 1], CPU)
        x2, t2 = pipeline(*ranks[1][s], CPU)
        assert torch.equal(x1, x2) and torch.equal(t1, t2)
        assert x1.shape == (8, 3, 32, 32) and t1.shape == (8, 10) and torch.isfinite(x1).all()
    assert len(mixes) > 1  # each micro-batch position draws its own lambda


def test_resume_mid_epoch_hands_over_exactly_the_remaining_batches(sets):
    src = _source(sets, "folder")
    whole = _loader(src)
    whole.set_epoch(1)
    expected = list(whole)
    first = _loader(src, workers=2)
    first.set_epoch(1)
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    first.close()
    resumed = _loader(src, workers=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    resumed.close()
    assert len(rest) == len(expected) - 2
    for x, y in zip(rest, expected[2:], strict=True):
        _same(x, y)


def _mixed_folder(root: Path) -> Path:
    """A folder set whose images take every route: RGB and greyscale JPEGs (bytes to the device), a CMYK
    JPEG, an RGBA PNG and a palette GIF (decoded on the worker)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 1)):
        for k in range(2):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rgb = Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8))
                rgb.save(folder / f"{i}_rgb.jpg", quality=90)
                rgb.convert("L").save(folder / f"{i}_grey.jpg", quality=90)
                rgb.convert("CMYK").save(folder / f"{i}_cmyk.jpg", quality=90)
                rgb.convert("RGBA").save(folder / f"{i}_alpha.png")
                rgb.convert("P").save(folder / f"{i}_palette.gif")
    return root


def test_non_jpeg_members_are_decoded_on_the_worker_as_the_source_decodes_them(tmp_path):
    src = FolderSource(_mixed_folder(tmp_path / "mixed"), "train", TF, EVAL_TF)
    loader = _loader(src, batch=40)
    ids = loader.plan().batch(0).tolist()
    (enc, labels), *_ = list(loader)
    for at, i in enumerate(ids):
        path = src.samples[i][0]
        on_device = path.endswith(("_rgb.jpg", "_grey.jpg"))
        assert (at not in enc.decoded) == on_device and (len(enc.jpegs[at]) > 0) == on_device, path
        if not on_device:  # exactly what FolderSource.load decodes: PIL's convert("RGB")
            want = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
            assert torch.equal(enc.decoded[at], want), path
    x, target = DevicePipeline(RECIPE)(enc, labels, CPU)
    assert x.shape == (40, 3, 32, 32) and torch.isfinite(x).all() and torch.allclose(target.sum(1), torch.ones(40))


def test_a_file_that_does_not_open_is_one_line_naming_it(tmp_path):
    root = _mixed_folder(tmp_path / "bad")
    bad = root / "train" / "c0" / "0_rgb.jpg"
    bad.write_bytes(b"not a jpeg")
    src = FolderSource(root, "train", TF, EVAL_TF)
    for workers in (0, 2):
        with pytest.raises(ValueError) as info:
            list(_loader(src, batch=40, workers=workers))
        assert str(info.value) == f"{bad}: does not decode (not an image)"


def test_a_segmentation_shard_read_for_classification_says_so(tmp_path):
    sink = ShardSink(tmp_path, "train", 10**6)
    sink.write_members("00000000_a", {"jpg": b"\xff\xd8", "png": b"\x89PNG"})
    sink.close()
    with pytest.raises(ValueError) as info:
        scan_shard(tmp_path / "train-000000.tar")
    shard = tmp_path / "train-000000.tar"
    assert str(info.value) == f"{shard}: a segmentation set (image + mask members): use task: segment"
    assert tarfile.is_tarfile(tmp_path / "train-000000.tar")  # a real shard, refused for what it holds


def test_build_wires_the_device_pipeline_for_training_only(sets):
    from swat_dist.config import load_config
    from swat_dist.data.loaders.build import build_loaders
    from swat_dist.tasks import build_task

    def built(mode: str) -> tuple[object, object, object]:
        cfg = load_config([], [f"data.path={sets['wds']}", "data.format=wds", f"data.augment_on={mode}",
                               "data.batch_size=8", "data.workers=0", "model.num_classes=10"])  # fmt: skip
        loaders = build_loaders(cfg.data, {"input_size": (3, 32, 32)}, world_size=1, rank=0, seed=0, num_classes=10)
        task = build_task(cfg, loaders.augment)
        return next(iter(loaders.train)), task.batch(*next(iter(loaders.train)), CPU, train=True), loaders

    (enc, _), (x, soft), loaders = built("device")
    assert isinstance(enc, EncodedBatch) and x.shape == (8, 3, 32, 32) and soft.shape == (8, 10)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    images, _ = next(iter(loaders.val))  # val loaders are the loader path's in both modes
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    (plain, _), (x_loader, _), _ = built("loader")
    assert plain.dtype == torch.uint8 and x_loader.shape == x.shape  # loader mode: uint8 batches, as before


@pytest.mark.slow
def test_a_short_run_trains_on_the_device_pipeline_with_a_finite_loss(tmp_path):
    from tests.train.test_train_runs import losses, overrides, spawn

    root = _mixed_folder(tmp_path / "mixed")
    run = tmp_path / "run"
    args = overrides(run, "data.format=folder", f"data.path={root}", "data.augment_on=device", "data.batch_size=8",
                     "data.reprob=0.25", "data.mixup=0.8", "data.cutmix=1.0", "max_steps=6",
                     "checkpoint.every_steps=null", "ema.enabled=false")  # fmt: skip
    summary = spawn(1, args, tmp_path)
    loss = losses(run)
    assert sorted(loss) == list(range(1, 7)) and all(math.isfinite(v) for v in loss.values()), loss
    assert summary["steps"] == 6
