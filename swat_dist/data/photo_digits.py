"""``swat-dist data photo-digits``: a classification set on which SWAT and its baseline can differ, offline.

The digits demo saturates (98.6% top-1 for both models), so it cannot tell them apart. Here one of
scikit-learn's handwritten digits (8x8) is pasted at a random scale (a quarter to a half of the side),
position and colour onto a random crop of one of the two real photos scikit-learn ships (china.jpg,
flower.jpg), so a model has to find a small, thin, coloured shape in photo clutter: harder than the plain
digits, still learnable by a micro model in minutes. It shares seg-digits' generator
(:mod:`.seg_digits`: the photo crop, the glyph paste and the digit split), so the two sets look alike.

Layout (as ``data digits``, ImageNet-style, so ``data convert`` reads it): ``DST/{train,val}/<d>/<i>.png``,
``d`` in ``0``..``9``, ``i`` the image's index in its split; square, ``--size`` 32 or 64 px.

Defaults (12,000 train + 2,000 val at 32 px: ~56 MB on disk, mostly file-system blocks of small PNGs,
~30 s to write on one core): with a batch of 64 that is ~190 steps per epoch, a few minutes of a micro
model on CPU per run. Deterministic: image
``i`` of a split draws from ``default_rng([seed, 100 + split, i])``; train and val paste disjoint digit
samples (the stratified split of ``data digits``); the two photos are shared (only two ship).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .seg_digits import FIRST_DIGIT, _crop, _paste, load_glyphs, load_photos
from .staging import write_once

SIZES = (32, 64)


def compose(rng: np.random.Generator, photos: list[np.ndarray], glyphs: Any, size: int) -> tuple[np.ndarray, int]:
    """One ``uint8 (size, size, 3)`` image and its digit (seg-digits' crop and paste, one digit, square)."""
    rgb = _crop(rng, photos[int(rng.integers(len(photos)))], size, size).copy()
    mask = np.zeros((size, size), np.uint8)  # the paste's label map; only the digit is kept
    i = int(rng.integers(len(glyphs.digit)))
    _paste(rng, rgb, mask, glyphs.ink_N88[i], int(glyphs.digit[i]))
    assert (mask >= FIRST_DIGIT).any(), "the pasted digit left no stroke"
    return rgb, int(glyphs.digit[i])


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
    options = {"train": train, "val": val, "size": size, "seed": seed}
    counts = {"train": train, "val": val}
    summary, written = write_once(dst, "photo-digits", options, lambda root: _fill(root, counts, size, seed))
    what = "wrote" if written else "already complete:"
    print(
        f"photo-digits: {what} {summary['train']} train + {summary['val']} val PNGs ({size} px, 10 classes: "
        f"a digit on a photo crop) in {dst}\nconvert: swat-dist data convert {dst} OUT --format wds"
    )
    return 0
