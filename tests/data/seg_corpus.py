"""A tiny ADEChallengeData2016-layout source with good pairs and every kind of bad one.

``write_seg_corpus`` returns the manifest: each good pair (its raw mask labels, its image's upright size)
and each bad file with the substring its skip reason must hold. Labels are checked against
``NUM_CLASSES`` with reduce_zero_label: raw 0..5 and 255 are valid.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .corpus import exif_rotated

NUM_CLASSES = 5


@dataclass(frozen=True)
class Good:
    image: str  # relative to SRC
    mask: str
    labels: np.ndarray  # the raw labels the stored mask must hold, (H, W)
    note: str | None = None  # expected substring of the report note

    @property
    def split(self) -> str:
        return {"training": "train", "validation": "val"}[self.image.split("/")[1]]


@dataclass(frozen=True)
class Bad:
    path: str  # the file the report names
    reason: str  # expected substring of its reason


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, **kw)
    return out.getvalue()


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _labels(seed: int, w: int, h: int, top: int = NUM_CLASSES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, top + 1, (h, w)).astype(np.uint8)
    labels[0, 0] = 255  # ignore is always valid
    return labels


def _photo(seed: int, w: int = 24, h: int = 20) -> bytes:
    rng = np.random.default_rng(100 + seed)
    return _jpeg(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))


def write_seg_corpus(root: Path) -> tuple[list[Good], list[Bad]]:
    files: dict[str, bytes] = {}
    good: list[Good] = []
    bad: list[Bad] = []

    def pair(stem: str, split: str = "training", seed: int = 0) -> None:
        labels = _labels(seed, 24, 20)
        files[f"images/{split}/{stem}.jpg"] = _photo(seed)
        files[f"annotations/{split}/{stem}.png"] = _png(Image.fromarray(labels))
        good.append(Good(f"images/{split}/{stem}.jpg", f"annotations/{split}/{stem}.png", labels))

    pair("ADE_train_0001", seed=1)
    pair("café ü", seed=2)  # non-ASCII and a space
    pair("sub/deep", seed=3)
    pair("ADE_val_0001", "validation", seed=4)
    pair("ADE_val_0002", "validation", seed=5)
    palette = Image.fromarray(_labels(6, 24, 20)).convert("P")  # P: the indices are the labels
    files["images/training/palette.jpg"] = _photo(6)
    files["annotations/training/palette.png"] = _png(palette)
    good.append(Good("images/training/palette.jpg", "annotations/training/palette.png", np.asarray(palette)))
    upright = _labels(7, 24, 48)  # exif_rotated(): stored 48x24, EXIF orientation 6, upright 24x48
    files["images/training/exif.jpg"] = exif_rotated()
    files["annotations/training/exif.png"] = _png(Image.fromarray(upright))
    good.append(Good("images/training/exif.jpg", "annotations/training/exif.png", upright, "EXIF orientation 6"))

    def bad_pair(stem: str, image: bytes | None, mask: bytes | None, at_fault: str, reason: str) -> None:
        if image is not None:
            files[f"images/training/{stem}.jpg"] = image
        if mask is not None:
            files[f"annotations/training/{stem}.png"] = mask
        bad.append(Bad(f"{at_fault}/training/{stem}.{'jpg' if at_fault == 'images' else 'png'}", reason))

    ok_mask = _png(Image.fromarray(_labels(8, 24, 20)))
    bad_pair("no_mask", _photo(8), None, "images", "no mask")
    bad_pair("orphan", None, ok_mask, "annotations", "mask without an image")
    bad_pair(
        "wrong_size",
        _photo(9),
        _png(Image.fromarray(_labels(9, 20, 20))),
        "annotations",
        "mask is 20x20, image is 24x20",
    )
    rgb = Image.fromarray(np.repeat(_labels(10, 24, 20)[:, :, None], 3, axis=2))
    bad_pair("rgb_mask", _photo(10), _png(rgb), "annotations", "rgb mask refused")
    deep = Image.fromarray(_labels(11, 24, 20).astype(np.uint16))
    bad_pair("deep_mask", _photo(11), _png(deep), "annotations", "16-bit mask")
    high = _labels(12, 24, 20)
    high[5, 5] = NUM_CLASSES + 1
    bad_pair("high_label", _photo(12), _png(Image.fromarray(high)), "annotations", f"labels {NUM_CLASSES + 1} above")
    bad_pair("cut_image", _photo(13)[:300], ok_mask, "images", "truncated")
    bad_pair("cut_mask", _photo(14), ok_mask[: len(ok_mask) // 2], "annotations", "mask does not decode")
    exif_mask = _png(Image.fromarray(_labels(15, 48, 24)))  # annotated on the stored pixels: ambiguous
    bad_pair("exif_stored", exif_rotated(), exif_mask, "annotations", "exif-rotated")
    files["images/training/lossy.jpg"] = _photo(16)
    files["annotations/training/lossy.jpg"] = _photo(16)
    bad += [Bad("annotations/training/lossy.jpg", "not .png"), Bad("images/training/lossy.jpg", "no mask")]
    files["images/validation/v_high.jpg"] = _photo(17)
    val_high = _labels(17, 24, 20)
    val_high[1, 1] = 200
    files["annotations/validation/v_high.png"] = _png(Image.fromarray(val_high))
    bad.append(Bad("annotations/validation/v_high.png", "labels 200 above"))

    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return good, bad
