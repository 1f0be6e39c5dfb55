"""``build_loaders(cfg.data, ...)``: the train and val loaders of one rank, for any backend.

The model's pretrained cfg fills what the data config leaves open (input size, crop_pct, mean/std,
eval interpolation), so an eval transform always matches the model by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import DataConfig
from ..pixels.transforms import DeviceAugment, colour_transform, eval_transform, train_transform
from .batches import Source
from .loader import TrainLoader, ValLoader


@dataclass
class Loaders:
    train: TrainLoader
    val: ValLoader
    augment: DeviceAugment | None  # classification's device-side augmentation (segmentation: in the task)
    classes: list[str]
    img_size: int


def resolve_eval(data: DataConfig, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Eval transform settings: the data config's, else the model's pretrained cfg."""
    return dict(
        crop_pct=data.crop_pct if data.crop_pct is not None else model_cfg.get("crop_pct", 0.875),
        interpolation=data.interpolation or model_cfg.get("interpolation", "bicubic"),
        mean=tuple(data.mean or model_cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(data.std or model_cfg.get("std", (0.229, 0.224, 0.225))),
    )


def _sources(data: DataConfig, img_size: int, ev: dict[str, Any], num_classes: int, seed: int) -> tuple[Any, Any]:
    train_tf = train_transform(
        img_size,
        scale=data.scale,
        ratio=data.ratio,
        hflip=data.hflip,
        interpolation=data.train_interpolation,
        auto_augment=data.auto_augment,
        color_jitter=data.color_jitter,
        mean=ev["mean"],
    )
    eval_tf = eval_transform(img_size, ev["crop_pct"], ev["interpolation"])
    if data.format == "synthetic":
        from ..sources.synthetic import SyntheticSource

        classes = data.synthetic_classes or num_classes
        val_samples = max(data.synthetic_samples // 5, 1)
        return (
            SyntheticSource(data.synthetic_samples, classes, img_size, seed),
            SyntheticSource(val_samples, classes, img_size, seed + 1),
        )
    if data.format == "folder":
        from ..sources.folder import FolderSource

        assert data.path is not None  # DataConfig checks it
        return FolderSource(data.path, "train", train_tf, eval_tf), FolderSource(data.path, "val", train_tf, eval_tf)
    if data.format == "wds":
        from ..sources.location import CacheSettings
        from ..sources.wds import WdsSource

        assert data.path is not None
        cache = CacheSettings(data.cache_dir, int(data.cache_gb * 1e9), data.prefetch, data.shard_group)
        return (
            WdsSource(data.path, "train", train_tf, eval_tf, cache),
            WdsSource(data.path, "val", train_tf, eval_tf, cache),
        )
    raise ValueError(f"data.format {data.format!r} has no loader (available: folder, synthetic, wds, ffcv)")


def _ffcv_loaders(
    data: DataConfig, size: int, ev: dict[str, Any], num_classes: int, world_size: int, rank: int, seed: int
) -> tuple[TrainLoader, ValLoader, list[str]]:
    """FFCV's own decode/crop pipeline with our plan and seeds (:mod:`.ffcv_loader`); colour ops as timm's,
    or (``data.augment_on: device``) planned here and run on the device."""
    from .ffcv_loader import BetonSplit, FfcvTrainLoader, FfcvValLoader

    assert data.path is not None
    train_split, val_split = BetonSplit(data.path, "train"), BetonSplit(data.path, "val")
    colour = planner = None
    if data.augment_on == "device":
        from ..pixels.device_plan import Planner

        planner = Planner(recipe(data, size, ev, num_classes))
    else:
        colour = colour_transform(size, data.auto_augment, data.color_jitter, data.train_interpolation, ev["mean"])
    train = FfcvTrainLoader(
        train_split,
        world_size=world_size,
        rank=rank,
        batch_size=data.batch_size,
        size=size,
        workers=data.workers,
        seed=seed,
        scale=data.scale,
        ratio=data.ratio,
        hflip=data.hflip,
        colour=colour,
        planner=planner,
    )
    val = FfcvValLoader(
        val_split,
        world_size=world_size,
        rank=rank,
        batch_size=data.val_batch_size or data.batch_size,
        size=size,
        crop_pct=ev["crop_pct"],
        workers=data.workers,
    )
    return train, val, train_split.classes


def recipe(data: DataConfig, size: int, ev: dict[str, Any], num_classes: int) -> Any:
    """The device pipeline's :class:`~swat_dist.data.pixels.device_plan.Recipe` of ``data`` (augment_on: device)."""
    from ..pixels.device_plan import Recipe

    return Recipe(
        img_size=size, scale=data.scale, ratio=data.ratio, hflip=data.hflip, interpolation=data.train_interpolation,
        auto_augment=data.auto_augment, mean=ev["mean"], std=ev["std"], reprob=data.reprob, mixup=data.mixup,
        cutmix=data.cutmix, mixup_prob=data.mixup_prob, switch_prob=data.mixup_switch_prob,
        smoothing=data.smoothing, num_classes=num_classes, color_jitter=data.color_jitter,
    )  # fmt: skip


def _planned_loaders(
    data: DataConfig, size: int, ev: dict[str, Any], num_classes: int, world_size: int, rank: int, seed: int
) -> tuple[TrainLoader, ValLoader, list[str]]:
    """torch DataLoaders over a :class:`.loader.Source` (folder, wds, synthetic)."""
    train_src, val_src = _sources(data, size, ev, num_classes, seed)
    planner = None
    if data.augment_on == "device":  # workers read bytes and plan; the device decodes and executes
        from ..pixels.device_plan import Planner

        planner = Planner(recipe(data, size, ev, num_classes))
    source: Source = train_src
    train = TrainLoader(
        source,
        world_size=world_size,
        rank=rank,
        batch_size=data.batch_size,
        workers=data.workers,
        seed=seed,
        # sharded sources read a few shards per batch instead of all of them (plan.shard_group_permutation)
        shard_sizes=getattr(train_src, "shard_sizes", None),
        shard_group=data.shard_group,
        planner=planner,
    )
    val = ValLoader(
        val_src,
        world_size=world_size,
        rank=rank,
        batch_size=data.val_batch_size or data.batch_size,
        workers=data.workers,
    )
    return train, val, list(train_src.classes)


def build_loaders(
    data: DataConfig,
    model_cfg: dict[str, Any],
    *,
    world_size: int,
    rank: int,
    seed: int,
    num_classes: int,
    img_size: int | None = None,
) -> Loaders:
    """This rank's loaders and the device-side augmentation for ``data`` (see :mod:`swat_dist.data.loaders.plan`)."""
    size = img_size or int(model_cfg.get("input_size", (3, 224, 224))[-1])
    ev = resolve_eval(data, model_cfg)
    if data.format == "ffcv":
        train, val, classes = _ffcv_loaders(data, size, ev, num_classes, world_size, rank, seed)
    else:
        train, val, classes = _planned_loaders(data, size, ev, num_classes, world_size, rank, seed)
    if len(classes) > num_classes:
        raise ValueError(f"the data has {len(classes)} classes but model.num_classes is {num_classes}")
    pipeline = None
    if data.augment_on == "device":
        from ..pixels.device_pipeline import DevicePipeline

        pipeline = DevicePipeline(recipe(data, size, ev, num_classes))
    loaders = Loaders(
        train=train,
        val=val,
        augment=DeviceAugment(
            num_classes,
            mean=ev["mean"],
            std=ev["std"],
            reprob=data.reprob,
            mixup=data.mixup,
            cutmix=data.cutmix,
            mixup_prob=data.mixup_prob,
            switch_prob=data.mixup_switch_prob,
            smoothing=data.smoothing,
            pipeline=pipeline,
        ),
        classes=classes,
        img_size=size,
    )
    return loaders
