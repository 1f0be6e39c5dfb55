"""``swat-dist data digits``: scikit-learn's 1,797 handwritten digits as an ImageNet-style folder.

Real images that need no download (they ship inside scikit-learn) and that a small model learns on a CPU
in minutes: the data set for smoke runs and for tests that need labels worth learning.

Layout: ``DST/train/<d>/<i>.png`` and ``DST/val/<d>/<i>.png``, ``d`` in ``0``..``9`` (sorted folder order
== label), ``i`` the five-digit index into ``load_digits()``, so every file names its source image.

Pixels: sklearn's ink values 0..16 scaled to 0..255, white ink on black (sklearn's own polarity, and
MNIST's), R = G = B. Upscaled from 8x8 by nearest neighbour: a model sees exactly sklearn's 64 samples and
a file can be checked against its source; bicubic would invent grey ramps and ring between them, and at
the default 32 px the 4x4 blocks read fine. PNG because it is lossless; ``data convert`` makes the JPEGs.

Written once through :func:`..convert.staging.write_once` (staging folder, completion marker, options check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..convert.staging import write_once


def split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Stratified split: a bool "is val" mask taking ``round(n * val_fraction)`` of each class (1..n-1).

    One seeded generator shuffles the classes in label order, so a seed fixes the split on a given numpy
    (numpy keeps ``Generator`` streams stable in practice, though NEP 19 does not promise it across releases).
    """
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_val = min(max(int(len(members) * val_fraction + 0.5), 1), len(members) - 1)
        is_val[rng.permutation(members)[:n_val]] = True
    return is_val


def upscale(img_hw: np.ndarray, size: int) -> np.ndarray:
    """Nearest neighbour: each output pixel takes the source pixel under its centre (any ``size``)."""
    src = (2 * np.arange(size) + 1) * img_hw.shape[0] // (2 * size)
    return img_hw[np.ix_(src, src)]


def _fill(root: Path, size: int, val_fraction: float, seed: int) -> dict[str, Any]:
    from sklearn.datasets import load_digits  # ~1 s to import; only this command needs it

    digits = load_digits()
    labels = np.asarray(digits.target)
    gray_N88 = np.rint(np.asarray(digits.images) * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    is_val = split(labels, val_fraction, seed)
    for i, (img, label, val) in enumerate(zip(gray_N88, labels, is_val)):
        folder = root / ("val" if val else "train") / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        rgb = np.repeat(upscale(img, size)[:, :, None], 3, axis=2)
        Image.fromarray(rgb, "RGB").save(folder / f"{i:05d}.png", format="PNG")
    return {"train": int((~is_val).sum()), "val": int(is_val.sum()), "classes": int(labels.max()) + 1}


def write_digits(dst: str | Path, *, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> int:
    """Write the digits to ``dst`` (see the module doc); a complete ``dst`` with these options is a no-op."""
    if size < 8:
        raise ValueError(f"--size {size}: must be at least 8 (the digits are 8x8 and are only upscaled)")
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction {val_fraction}: must be between 0 and 1 (exclusive)")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    options = {"size": size, "val_fraction": val_fraction, "seed": seed}
    summary, written = write_once(dst, "digits", options, lambda root: _fill(root, size, val_fraction, seed))
    what = "wrote" if written else "already complete:"
    print(f"digits: {what} {summary['train']} train + {summary['val']} val PNGs ({size} px, 10 classes) in {dst}")
    return 0
