"""The segmentation writer (``data convert --task segment --format wds``): (image, mask) pairs -> WebDataset shards.

Each sample is ``<key>.jpg`` (the image, decoded by :mod:`..pixels.images` - colour modes, EXIF orientation - and
re-encoded at ``--jpeg-quality``, as for classification, but never resized: it must stay pixel-aligned with
its mask) and ``<key>.png`` (the mask's raw labels, re-encoded losslessly as a single-channel 8-bit PNG).
Keys are ``<n:08d>_<stem>``, ``n`` the pair's position in the split's sorted list.

Per pair, in the worker processes: decode the image (upright), decode and check the mask (:mod:`..pixels.masks`),
check their sizes agree, encode both. A pair that fails any step is skipped with its reason (the path named
is the file at fault). EXIF orientation is applied to the image, as PIL/OpenCV-based readers (mmseg's
included) apply it when training; the mask must match the *upright* size. A mask that matches only the
stored (unrotated) size is skipped, since it is unknowable which orientation was annotated; the mask is
never rotated. Applied rotations are listed as report notes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path

import numpy as np

from ..pixels import masks
from ..pixels.images import ImageOptions, load_full, reason
from ..sources.index import SplitInfo
from ..sources.wds import ShardSink
from .base import ConvertOptions, Mapper, Written, progress_bar, shuffled
from .scan import SPLITS, Pair, SegSource

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # as wds.sample_key: no dots, ASCII only
NO_RESIZE = 2**30  # ImageOptions.max_resolution for segmentation: larger than any image


@dataclass(frozen=True)
class SegEncoded:
    jpeg: bytes
    png: bytes
    hist: np.ndarray  # pixels per raw mask value, (256,)
    note: str | None  # what was done to the image (EXIF rotation), for the report


def seg_key(number: int, rel: str) -> str:
    stem = _UNSAFE.sub("_", Path(rel).name.split(".")[0])[:40].strip("_") or "x"
    return f"{number:08d}_{stem}"


def encode_pair(
    root: str, opts: ImageOptions, num_classes: int, reduce_zero_label: bool, pair: Pair
) -> SegEncoded | tuple[str, str]:
    """The encoded sample, or (path at fault, reason)."""
    try:
        img, stored, orientation = load_full(os.path.join(root, pair.image), opts)
    except Exception as err:
        return pair.image, reason(err)
    try:
        labels_HW = masks.decode(os.path.join(root, pair.mask))
    except (masks.BadMask, OSError) as err:
        return pair.mask, str(err)
    mask_size = (labels_HW.shape[1], labels_HW.shape[0])
    if mask_size != img.size:
        if orientation != 1 and mask_size == stored:
            return pair.mask, (
                f"mask is {mask_size[0]}x{mask_size[1]}, the image's stored size, but the image is EXIF-rotated "
                f"to {img.width}x{img.height}: unknown which orientation was annotated; skipped, nothing rotated"
            )
        return pair.mask, f"mask is {mask_size[0]}x{mask_size[1]}, image is {img.width}x{img.height}"
    hist = masks.histogram(labels_HW)
    problem = masks.label_problem(hist, num_classes, reduce_zero_label)
    if problem:
        return pair.mask, problem
    note = None
    if orientation != 1:
        note = (
            f"EXIF orientation {orientation} applied to the image (stored {stored[0]}x{stored[1]}, upright "
            f"{img.width}x{img.height}); the mask matched the upright size and was not changed"
        )
    out = BytesIO()
    img.save(out, "JPEG", quality=opts.jpeg_quality)
    return SegEncoded(out.getvalue(), masks.encode(labels_HW), hist, note)


def write_wds(source: SegSource, out: Path, opts: ConvertOptions, imap: Mapper, written: Written) -> None:
    image_opts = ImageOptions(NO_RESIZE, opts.jpeg_quality, opts.max_pixels)
    fn = partial(encode_pair, str(source.root), image_opts, opts.num_classes, opts.reduce_zero_label)
    for split in SPLITS:
        order = shuffled(source.files[split], opts.seed, split)
        sink = ShardSink(out, split, opts.shard_bytes, on_close=opts.on_shard)
        per_class = np.zeros(len(source.classes), np.int64)
        pixels = np.zeros(masks.LEVELS, np.int64)
        with progress_bar(len(order), f"{split} (wds, segment)") as bar:
            for (n, pair), result in zip(order, imap(fn, [p for _, p in order])):
                bar.update()
                if isinstance(result, tuple):
                    written.skipped.append({"path": result[0], "reason": result[1]})
                    continue
                sink.write_members(seg_key(n, pair.image), {"jpg": result.jpeg, "png": result.png})
                per_class[masks.classes_present(result.hist, opts.num_classes, opts.reduce_zero_label)] += 1
                pixels += result.hist
                if result.note:
                    written.notes.append({"path": pair.image, "note": result.note})
        shards = sink.close()
        written.sha256.update(sink.sha256)
        samples = sum(s.samples for s in shards)
        written.splits[split] = SplitInfo(samples, per_class.tolist(), shards, pixels.tolist())
