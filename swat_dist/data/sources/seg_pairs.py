"""Random access to (image, mask) pairs for the planned loaders (:mod:`..loaders.loader`): WebDataset shards
written by ``data convert --task segment`` (``<key>.jpg`` + ``<key>.png``), or an ADEChallengeData2016
folder read as it is (``images/{training,validation}/*.jpg`` + ``annotations/.../*.png``: the reference).

``load(i, train)`` decodes the pair (the image upright: EXIF orientation applied, as the converter does)
and hands the uint8 image (3, H, W) and raw uint8 mask (H, W) to the pipeline (:mod:`..pixels.seg_pipeline`).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..pixels import masks
from .index import DatasetIndex
from .location import CacheSettings
from .shard_set import ShardSet

Pipeline = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
ADE_SPLITS = {"train": "training", "val": "validation"}


def decode_pair(image_bytes: bytes, mask_bytes: bytes, what: str) -> tuple[Tensor, Tensor]:
    with Image.open(io.BytesIO(image_bytes)) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    try:
        labels = masks.decode(mask_bytes)  # the converter's own checks: 8-bit single-channel PNG
    except masks.BadMask as err:
        raise ValueError(f"{what}: {err}") from None
    if labels.shape != (rgb.height, rgb.width):
        raise ValueError(f"{what}: mask {labels.shape[1]}x{labels.shape[0]} but image {rgb.width}x{rgb.height}")
    image = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()
    return image, torch.from_numpy(labels.copy())


class SegFolderSource:
    """An ADEChallengeData2016-layout folder: pairs by stem, sorted; an unpaired file is a one-line error."""

    def __init__(self, root: str | Path, split: str, train_tf: Pipeline, eval_tf: Pipeline) -> None:
        sub = ADE_SPLITS.get(split, split)
        images = {p.stem: p for p in sorted((Path(root) / "images" / sub).glob("*.jpg"))}
        masks = {p.stem: p for p in sorted((Path(root) / "annotations" / sub).glob("*.png"))}
        if not images:
            raise ValueError(f"{root}: no images/{sub}/*.jpg (expected the ADEChallengeData2016 layout)")
        lonely = sorted(set(images) ^ set(masks))
        if lonely:
            raise ValueError(f"{root}/{sub}: {lonely[0]} has an image or a mask but not both ({len(lonely)} such)")
        self.pairs = [(images[k], masks[k]) for k in sorted(images)]
        self.train_tf, self.eval_tf = train_tf, eval_tf

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int, train: bool) -> tuple[Tensor, Tensor]:
        image, mask = self.pairs[index]
        pair = decode_pair(image.read_bytes(), mask.read_bytes(), str(image))
        return (self.train_tf if train else self.eval_tf)(*pair)


def scan_seg_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(jpg offsets, jpg sizes, png offsets, png sizes) in stored order, from the tar headers only."""
    found: dict[str, list[tuple[str, int, int]]] = {"jpg": [], "png": []}
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.rpartition("/")[2].partition(".")
            if ext in found:
                found[ext].append((key, member.offset_data, member.size))
    jpg, png = found["jpg"], found["png"]
    if [k for k, _, _ in jpg] != [k for k, _, _ in png]:
        raise ValueError(f"{path}: .jpg and .png members do not pair up - not a swat_dist segmentation shard")
    col = lambda rows, i: np.asarray([r[i] for r in rows], np.int64)  # noqa: E731
    return col(jpg, 1), col(jpg, 2), col(png, 1), col(png, 2)


class SegWdsSource:
    """The pairs of a split's segmentation shards, read by byte offset (as :class:`.wds.WdsSource`; also from
    ``s3://bucket/prefix`` through the node-local cache, :mod:`.shard_set`)."""

    def __init__(
        self, root: str | Path, split: str, train_tf: Pipeline, eval_tf: Pipeline, cache: CacheSettings | None = None
    ) -> None:
        def check(index: DatasetIndex) -> None:
            if index.format != "wds" or getattr(index, "task", "classify") != "segment":
                raise ValueError(
                    f"{root}: not a segmentation wds dataset (convert it with --task segment --format wds)"
                )

        self.shards = ShardSet(root, split, cache, check=check, scan=scan_seg_shard, what="pairs")
        index = self.shards.index
        self.classes = list(index.classes)
        self.reduce_zero_label = bool(getattr(index, "reduce_zero_label", True))
        self.paths, self.shard_sizes, self.shard_of = self.shards.paths, self.shards.shard_sizes, self.shards.shard_of
        self.cache, self.follow, self.reading = self.shards.cache, self.shards.follow, self.shards.reading
        self.train_tf, self.eval_tf = train_tf, eval_tf

    def __len__(self) -> int:
        return len(self.shards)

    def load(self, index: int, train: bool) -> tuple[Tensor, Tensor]:
        shard, (jpg_at, jpg_len, png_at, png_len), at = self.shards.locate(index)
        image = self.shards.read(shard, int(jpg_at[at]), int(jpg_len[at]))
        mask = self.shards.read(shard, int(png_at[at]), int(png_len[at]))
        pair = decode_pair(image, mask, f"{self.paths[shard]} sample {index}")
        return (self.train_tf if train else self.eval_tf)(*pair)
