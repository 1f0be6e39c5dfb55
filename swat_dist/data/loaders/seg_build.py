"""``build_seg_loaders``: one rank's segmentation loaders (``task: segment``), over the same planned loaders
as classification, so exactly-once, equal steps per rank, worker-independent crops and exact mid-epoch
resume hold as they do there. Val: one image per rank per batch (images keep their own sizes); a rank's
padding batch is a mask of -1 that the metric never counts.
"""

from __future__ import annotations

from pathlib import Path

from ...config import DataConfig, SegConfig
from ..pixels.seg_pipeline import SegTrain, SegVal
from .batches import Source
from .build import Loaders
from .loader import TrainLoader, ValLoader


def _reduce_zero_label(data: DataConfig, seg: SegConfig) -> bool:
    """The config's choice, else the index's (wds), else ADE's convention (true)."""
    stored = None
    if data.format == "wds" and data.path is not None:  # read_index reads s3:// indexes too
        from ..sources.index import read_index

        stored = getattr(read_index(data.path), "reduce_zero_label", None)
    if seg.reduce_zero_label is None:
        return True if stored is None else bool(stored)
    if stored is not None and seg.reduce_zero_label != stored:
        raise ValueError(
            f"seg.reduce_zero_label={seg.reduce_zero_label} but {data.path} was converted with "
            f"reduce_zero_label={stored} (its classes are counted that way): drop the setting"
        )
    return seg.reduce_zero_label


def _sources(data: DataConfig, seg: SegConfig) -> tuple[Source, Source, list[str] | None]:
    reduce = _reduce_zero_label(data, seg)
    train_tf = SegTrain(
        seg.crop_size, seg.scale, seg.ratio_range, seg.cat_max_ratio, data.hflip, seg.photometric, reduce
    )
    val_tf = SegVal(seg.scale, reduce)
    assert data.path is not None  # DataConfig checks it
    if data.format == "wds":  # a local folder or s3://bucket/prefix (DataConfig allows URLs for wds only)
        from ..sources.location import CacheSettings
        from ..sources.seg_pairs import SegWdsSource

        cache = CacheSettings(data.cache_dir, int(data.cache_gb * 1e9), data.prefetch, data.shard_group)
        train = SegWdsSource(data.path, "train", train_tf, val_tf, cache)
        return train, SegWdsSource(data.path, "val", train_tf, val_tf, cache), train.classes
    if data.format == "folder":
        from ..sources.seg_pairs import SegFolderSource

        if not (Path(data.path) / "images").is_dir():
            raise ValueError(f"data.path {data.path}: no images/ folder (expected the ADEChallengeData2016 layout)")
        return (
            SegFolderSource(data.path, "train", train_tf, val_tf),
            SegFolderSource(data.path, "val", train_tf, val_tf),
            None,
        )
    raise ValueError(f"data.format {data.format!r} holds no segmentation masks (use wds or folder)")


def build_seg_loaders(
    data: DataConfig, seg: SegConfig, *, world_size: int, rank: int, seed: int, num_classes: int
) -> Loaders:
    train_src, val_src, classes = _sources(data, seg)
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"{data.path} has {len(classes)} classes but model.num_classes is {num_classes}")
    train = TrainLoader(
        train_src, world_size=world_size, rank=rank, batch_size=data.batch_size, workers=data.workers, seed=seed,
        shard_sizes=getattr(train_src, "shard_sizes", None), shard_group=data.shard_group,
    )  # fmt: skip
    val = ValLoader(val_src, world_size=world_size, rank=rank, batch_size=1, workers=data.workers)
    names = classes if classes is not None else [str(c) for c in range(num_classes)]
    return Loaders(train=train, val=val, augment=None, classes=names, img_size=seg.crop_size)
