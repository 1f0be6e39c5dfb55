"""``swat-dist data seg-digits``: a small real segmentation set in the ADEChallengeData2016 layout, offline.

scikit-learn's handwritten digits (8x8) are upscaled to a random size, given a bright colour (a random hue
at full value) and pasted at random positions onto random crops of the two photos scikit-learn ships
(china.jpg, flower.jpg, 427x640) dimmed to half their brightness - photo-digits' paste (:mod:`.photo_digits`),
so that a backbone pretrained there reads these digits too (the segmentation demo's two stages). Nothing
is downloaded.

Layout (ADE's, so the real converter runs on it): ``DST/images/{training,validation}/<stem>.jpg`` and
``DST/annotations/{training,validation}/<stem>.png``, ``<stem>`` = ``segdigits_{train,val}_<i:05d>``; masks are
single-channel 8-bit PNGs. Labels follow ADE: 0 = unlabelled (a band of one pixel or so around every
stroke: the anti-aliased edge, whose pixels are part photo part digit), 1 = background (the photo),
2..11 = digits 0..9 - 11 classes once ``reduce_zero_label`` drops 0 (``convert --num-classes 11``).

Defaults (1,000 train + 100 val, sides drawn in [36, 48] px, 1-2 digits of a half to three quarters of
the shorter side) take a few seconds to write: resized to a 32 px short side, a digit is 16-24 px, the
size photo-digits shows a micro model at 32 px. Sides vary per image (as ADE's do), so loaders meet
variable-sized image + mask pairs. The first recipe (any colour on full-contrast photos, a quarter to a
half of the side, 96-128 px) left a from-scratch or digits-pretrained backbone at the background-only
score (docs/benchmarks.md).

Deterministic: image ``i`` of a split draws from ``default_rng([seed, split, i])``, whatever else is
written. Train and val paste disjoint digit samples (the stratified split of ``data digits``); the two
photos are shared (only two ship). Written once through :func:`..convert.staging.write_once`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..convert.scan import ADE_SPLITS
from ..convert.staging import write_once
from .digits import split as digit_split

UNLABELLED, BACKGROUND, FIRST_DIGIT = 0, 1, 2
NUM_CLASSES = 11  # after reduce_zero_label: background + 10 digits
PHOTO_GAIN = 0.5  # the photo's brightness is halved, so that a full-value colour always stands out
SIDE = (0.5, 0.75)  # a digit's side, as a fraction of the image's shorter side
# Written into the set's options, so a set made by an earlier recipe is not taken for complete.
RECIPE = "bright-digits-on-dimmed-photo"


@dataclass(frozen=True)
class Glyphs:
    """Digit shapes to paste: ink in [0, 1] as ``float32 (N, 8, 8)``, and their digit."""

    ink_N88: np.ndarray
    digit: np.ndarray


def load_photos() -> list[np.ndarray]:
    """scikit-learn's sample photos as ``uint8 (H, W, 3)`` arrays."""
    from sklearn.datasets import load_sample_images  # ~1 s to import; only the generators need it

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def load_glyphs(split: str, seed: int) -> Glyphs:
    """The digits of one split of ``data digits``' stratified split (val 0.2), so splits share no sample."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray(digits.target)
    is_val = digit_split(labels, 0.2, seed)
    pick = is_val if split == "val" else ~is_val
    return Glyphs((np.asarray(digits.images)[pick] / 16.0).astype(np.float32), labels[pick])


def _dilate(mask_HW: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    padded = np.pad(mask_HW, 1)
    h, w = mask_HW.shape
    out = np.zeros_like(mask_HW)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def crop_photo(rng: np.random.Generator, photo: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop of ``photo`` (zoomed 1x-3x out), resized to ``h x w``, flipped half the time."""
    ph, pw = photo.shape[:2]
    scale = rng.uniform(1.0, max(1.0, min(ph / h, pw / w, 3.0)))
    ch, cw = min(ph, round(h * scale)), min(pw, round(w * scale))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BILINEAR)
    rgb = np.asarray(crop, dtype=np.uint8)
    return rgb[:, ::-1] if rng.random() < 0.5 else rgb


def glyph_alpha(ink_88: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 glyph's ink upscaled to ``side x side`` as an opacity in [0, 1]: a soft edge, 0.5 at ink 0.5."""
    ink = np.asarray(Image.fromarray(ink_88).resize((side, side), Image.Resampling.BILINEAR))
    return np.clip((ink - 0.25) * 2.0, 0.0, 1.0)


def bright_colour(rng: np.random.Generator) -> np.ndarray:
    """A random hue at full value (``float32 (3,)``): always brighter than a photo dimmed by :data:`PHOTO_GAIN`."""
    colour = rng.integers(1, 256, 3).astype(np.float32)
    return colour * (255.0 / colour.max())


def _paste(
    rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, ink_88: np.ndarray, digit: int,
    side_range: tuple[float, float],
) -> None:  # fmt: skip
    """Paste one glyph onto ``rgb`` (float32, the dimmed photo) and label it in ``mask``."""
    h, w = mask.shape
    short = min(h, w)
    side = int(rng.integers(max(8, round(side_range[0] * short)), max(9, round(side_range[1] * short) + 1)))
    alpha = glyph_alpha(ink_88, side)
    stroke = alpha >= 0.5
    band = (_dilate(stroke) | (alpha > 0)) & ~stroke
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    a = alpha[:, :, None]
    rgb[y : y + side, x : x + side] = rgb[y : y + side, x : x + side] * (1 - a) + bright_colour(rng) * a
    window = mask[y : y + side, x : x + side]
    window[stroke] = FIRST_DIGIT + digit
    window[band] = UNLABELLED


def compose(
    rng: np.random.Generator, photos: list[np.ndarray], glyphs: Glyphs, size: int, digits: tuple[int, int] = (1, 2)
) -> tuple[np.ndarray, np.ndarray]:
    """One image + mask: ``uint8 (H, W, 3)`` and ``uint8 (H, W)`` (labels as in the module doc).

    Sides are drawn in [3/4 size, size]; ``digits`` bounds how many are pasted (later ones on top), each
    with a side of :data:`SIDE` times the image's shorter side.
    """
    h, w = (int(v) for v in rng.integers(3 * size // 4, size + 1, 2))
    rgb = crop_photo(rng, photos[int(rng.integers(len(photos)))], h, w).astype(np.float32) * PHOTO_GAIN
    mask = np.full((h, w), BACKGROUND, np.uint8)
    for _ in range(int(rng.integers(digits[0], digits[1] + 1))):
        i = int(rng.integers(len(glyphs.digit)))
        _paste(rng, rgb, mask, glyphs.ink_N88[i], int(glyphs.digit[i]), SIDE)
    return np.rint(rgb).astype(np.uint8), mask


def _fill(root: Path, counts: dict[str, int], size: int, seed: int) -> dict[str, Any]:
    photos = load_photos()
    pixels = np.zeros(256, np.int64)
    for s, (split, n) in enumerate(counts.items()):
        glyphs = load_glyphs(split, seed)
        images, annotations = root / "images" / ADE_SPLITS[split], root / "annotations" / ADE_SPLITS[split]
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for i in range(n):
            rgb, mask = compose(np.random.default_rng([seed, s, i]), photos, glyphs, size)
            stem = f"segdigits_{split}_{i:05d}"
            Image.fromarray(rgb).save(images / f"{stem}.jpg", "JPEG", quality=95)
            Image.fromarray(mask).save(annotations / f"{stem}.png", "PNG")
            pixels += np.bincount(mask.reshape(-1), minlength=256)
    return {**counts, "num_classes": NUM_CLASSES, "label_pixels": {str(v): int(n) for v, n in enumerate(pixels) if n}}


def write_seg_digits(dst: str | Path, *, train: int = 1000, val: int = 100, size: int = 48, seed: int = 0) -> int:
    """Write the set to ``dst`` (see the module doc); a complete ``dst`` with these options is a no-op."""
    if not 32 <= size <= 427:
        raise ValueError(f"--size {size}: must be in [32, 427] (digits need 8 px; the photos are 427 px high)")
    if train < 1 or val < 1:
        raise ValueError(f"--train {train} --val {val}: each split needs at least 1 image")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    options = {"train": train, "val": val, "size": size, "seed": seed, "recipe": RECIPE}
    counts = {"train": train, "val": val}
    summary, written = write_once(dst, "seg-digits", options, lambda root: _fill(root, counts, size, seed))
    what = "wrote" if written else "already complete:"
    print(
        f"seg-digits: {what} {summary['train']} train + {summary['val']} val image/mask pairs (sides "
        f"{3 * size // 4}-{size} px; mask 0 unlabelled, 1 background, 2..11 digits 0..9) in {dst}\n"
        f"convert: swat-dist data convert {dst} OUT --task segment --format wds --num-classes {NUM_CLASSES}"
    )
    return 0
