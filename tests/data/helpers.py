"""Tiny real image folders whose pixels say which sample they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def id_colour(i: int) -> tuple[int, int, int]:
    """A colour that encodes sample id ``i`` (< 4096) in steps of 16, robust to resampling of a flat image."""
    return (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 16 * (i // 256) + 8)


def colour_id(rgb: np.ndarray) -> int:
    r, g, b = (round((int(c) - 8) / 16) for c in rgb)
    return r + 16 * g + 256 * b


def write_id_folder(root: Path, classes: int, per_class: dict[str, int], size: int = 24) -> dict[str, list[int]]:
    """``root/<split>/c<k>/<id>.png`` flat images coloured by a global id; returns the ids per split."""
    ids: dict[str, list[int]] = {}
    next_id = 0
    for split, n in per_class.items():
        ids[split] = []
        for k in range(classes):
            (root / split / f"c{k}").mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                Image.new("RGB", (size, size), id_colour(next_id)).save(root / split / f"c{k}" / f"{next_id:05d}.png")
                ids[split].append(next_id)
                next_id += 1
    return ids
