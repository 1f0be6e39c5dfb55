"""Walk an ADEChallengeData2016-style source folder into (image, mask) pairs per split.

Layout: ``SRC/images/{training,validation}/**`` and ``SRC/annotations/{training,validation}/**``; an image
and its mask share their path below the split folder up to the extension (``images/training/a/x.jpg`` <->
``annotations/training/a/x.png``). ADE's ``training`` / ``validation`` become our ``train`` / ``val``.

Pairing problems are skips with a reason, not errors: an image without a mask, a mask without an image,
several images (or masks) for one stem, a mask file that is not ``.png``. A missing split folder is a
one-line ``ValueError``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..pixels.masks import class_names
from .scan import SPLITS, _files_below

ADE_SPLITS = {"train": "training", "val": "validation"}  # our split name -> ADE's folder name


@dataclass(frozen=True, slots=True)
class Pair:
    image: str  # relative to SRC, "/" separators
    mask: str


@dataclass
class SegSource:
    root: Path
    classes: list[str]  # the model's classes after the label mapping (see masks.class_names)
    files: dict[str, list[Pair]]  # split -> pairs, sorted by image path
    skipped: list[dict[str, str]] = field(default_factory=list)


def split_of(rel: str) -> str:
    """Our split name for a path relative to SRC (``images/training/x.jpg`` -> ``train``)."""
    parts = rel.split("/")
    folder = parts[1] if len(parts) > 1 else ""
    return next((ours for ours, ade in ADE_SPLITS.items() if ade == folder), folder)


def _by_stem(root: Path, folder: str) -> dict[str, list[str]]:
    """{path below the split folder without extension: [paths relative to root]}."""
    found: dict[str, list[str]] = defaultdict(list)
    base = root / folder
    for full in _files_below(str(base)):
        rel = Path(full).relative_to(root).as_posix()
        below = Path(full).relative_to(base).as_posix()
        found[below.rsplit(".", 1)[0] if "." in Path(below).name else below].append(rel)
    return found


def _pair_split(root: Path, split: str, source: SegSource) -> None:
    ade = ADE_SPLITS[split]
    images, masks = _by_stem(root, f"images/{ade}"), _by_stem(root, f"annotations/{ade}")
    pairs: list[Pair] = []
    skip = source.skipped
    for stem in sorted(set(images) | set(masks)):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        not_png = [m for m in msks if not m.lower().endswith(".png")]
        skip += [{"path": m, "reason": "mask file is not .png (masks must be lossless PNGs)"} for m in not_png]
        msks = [m for m in msks if m not in not_png]
        if len(imgs) > 1 or len(msks) > 1:
            shared = f"{len(imgs)} images and {len(msks)} masks share the stem {stem!r}"
            skip += [{"path": rel, "reason": shared} for rel in imgs + msks]
        elif imgs and msks:
            pairs.append(Pair(imgs[0], msks[0]))
        elif imgs:
            skip.append({"path": imgs[0], "reason": f"no mask (expected annotations/{ade}/{stem}.png)"})
        elif msks:
            skip.append({"path": msks[0], "reason": f"mask without an image (no images/{ade}/{stem}.*)"})
    source.files[split] = sorted(pairs, key=lambda p: p.image)


def scan_segment(src: str | Path, num_classes: int, reduce_zero_label: bool) -> SegSource:
    """Pair every image with its mask; raise ``ValueError`` for a layout that is not ADE's."""
    root = Path(src).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{src}: source folder does not exist or is not a folder")
    folders = [f"{top}/{ADE_SPLITS[s]}" for s in SPLITS for top in ("images", "annotations")]
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise ValueError(
            f"{src}: no {', '.join(f + '/' for f in missing)} folder "
            "(expected the ADEChallengeData2016 layout: images/{training,validation}/*.jpg, "
            "annotations/{training,validation}/*.png)"
        )
    if not os.access(root, os.R_OK | os.X_OK):
        raise ValueError(f"{src}: source folder is not readable")
    source = SegSource(root, class_names(num_classes, reduce_zero_label), {})
    for split in SPLITS:
        _pair_split(root, split, source)
    return source
