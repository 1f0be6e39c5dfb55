"""``swat-dist data photo-digits``: a classification set on which SWAT and its baseline can differ, offline.

On the digits demo SWAT DeiT-micro reaches 98.6% top-1: too near the ceiling to measure a gain by. Here one of
scikit-learn's handwritten digits (8x8) is pasted in a bright colour (a random hue at full value), at a
random scale (a half to three quarters of the side) and position, onto a random crop of one of the two real
photos scikit-learn ships (china.jpg, flower.jpg) dimmed to half its brightness, so a model has to read a
digit's shape through photo clutter. It shares seg-digits' generator (:mod:`.seg_digits`: the photo crop,
the glyph's opacity and the digit split), so the two sets look alike.

Why these numbers (measured 2026-12-01, docs/results.md "Is photo-digits neither trivial nor hopeless?"):
with seg-digits' own paste (a quarter to a half of the side, any colour, the photo at full contrast) a
micro DeiT stayed at chance for 750 steps of batch 64, at lr 5e-4 to 3e-3, and so did a micro Swin; digits
of a half to three quarters of the side in a colour brighter than the dimmed photo start to be read within
~200 steps (a linear probe on the pixels: 18.6% val top-1, chance 10%).

Layout (as ``data digits``, ImageNet-style, so ``data convert`` reads it): ``DST/{train,val}/<d>/<i>.png``,
``d`` in ``0``..``9``, ``i`` the image's index in its split; square, ``--size`` 32 or 64 px.

Defaults (12,000 train + 2,000 val at 32 px: ~56 MB on disk, mostly file-system blocks of small PNGs,
~12 s to write on one core): with a batch of 64 that is ~190 steps per epoch, a few minutes of a micro
model on CPU per run. Deterministic: image
``i`` of a split draws from ``default_rng([seed, 100 + split, i])``; train and val paste disjoint digit
samples (the stratified split of ``data digits``); the two photos are shared (only two ship).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..convert.staging import write_once
from .seg_digits import PHOTO_GAIN, bright_colour, crop_photo, glyph_alpha, load_glyphs, load_photos

SIZES = (32, 64)
SIDE = (0.5, 0.75)  # the digit's side, as a fraction of the image's
# Written into the set's options, so a set made by an earlier recipe is not taken for complete.
RECIPE = "bright-digit-on-dimmed-photo"


def compose(rng: np.random.Generator, photos: list[np.ndarray], glyphs: Any, size: int) -> tuple[np.ndarray, int]:
    """One ``uint8 (size, size, 3)`` image and its digit (see the module doc)."""
    photo = crop_photo(rng, photos[int(rng.integers(len(photos)))], size, size).astype(np.float32) * PHOTO_GAIN
    i = int(rng.integers(len(glyphs.digit)))
    side = int(rng.integers(round(SIDE[0] * size), round(SIDE[1] * size) + 1))
    alpha = glyph_alpha(glyphs.ink_N88[i], side)[:, :, None]
    colour = bright_colour(rng)
    y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
    region = photo[y : y + side, x : x + side]
    photo[y : y + side, x : x + side] = region * (1 - alpha) + colour * alpha
    return np.rint(photo).astype(np.uint8), int(glyphs.digit[i])


def _fill(root: Path, counts: dict[str, int], size: int, seed: int) -> dict[str, Any]:
    photos = load_photos()
    per_class: dict[str, list[int]] = {}
    for s, (split, n) in enumerate(counts.items()):
        glyphs = load_glyphs(split, seed)
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
        hist = [0] * 10
        for i in range(n):
            rgb, digit = compose(np.random.default_rng([seed, 100 + s, i]), photos, glyphs, size)
            Image.fromarray(rgb, "RGB").save(root / split / str(digit) / f"{i:05d}.png", format="PNG")
            hist[digit] += 1
        per_class[split] = hist
    return {**counts, "classes": 10, "per_class": per_class}


def write_photo_digits(dst: str | Path, *, train: int = 12000, val: int = 2000, size: int = 32, seed: int = 0) -> int:
    """Write the set to ``dst`` (see the module doc); a complete ``dst`` with these options is a no-op."""
    if size not in SIZES:
        raise ValueError(f"--size {size}: must be 32 or 64 (the micro models' input sizes)")
    if train < 10 or val < 10:
        raise ValueError(f"--train {train} --val {val}: each split needs at least 10 images (one per digit)")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    options = {"train": train, "val": val, "size": size, "seed": seed, "recipe": RECIPE}
    counts = {"train": train, "val": val}
    summary, written = write_once(dst, "photo-digits", options, lambda root: _fill(root, counts, size, seed))
    what = "wrote" if written else "already complete:"
    print(
        f"photo-digits: {what} {summary['train']} train + {summary['val']} val PNGs ({size} px, 10 classes: "
        f"a digit on a photo crop) in {dst}\nconvert: swat-dist data convert {dst} OUT --format wds"
    )
    return 0
