"""Walk a source folder: an ImageNet-style one into labelled files (``--task classify``), an
ADEChallengeData2016-style one into (image, mask) pairs (``--task segment``).

Classification: ``SRC/{train,val}/<class>/**`` -> classes and labelled files. Classes are the sorted folder
names of ``train/`` (every sub-folder, as torchvision's ``ImageFolder`` counts them, so class indices agree
with a folder loader); ``val/`` must hold exactly the same ones. Every file below a class folder, at any
depth, is a candidate - the decoder decides what is an image. Files lying directly in a split folder belong
to no class and are reported as skipped.

Segmentation: ``SRC/images/{training,validation}/**`` and ``SRC/annotations/{training,validation}/**``; an
image and its mask share their path below the split folder up to the extension (``images/training/a/x.jpg``
<-> ``annotations/training/a/x.png``). ADE's ``training`` / ``validation`` become our ``train`` / ``val``.
Pairing problems are skips with a reason, not errors: an image without a mask, a mask without an image,
several images (or masks) for one stem, a mask file that is not ``.png``.

Walking is ``os.scandir`` only (no stat per file beyond the directory entry): ImageNet's 1.33M files
take seconds on a local disk. Problems with the layout are one-line ``ValueError``s.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..pixels.masks import class_names

SPLITS = ("train", "val")


@dataclass(frozen=True, slots=True)  # slots: ImageNet holds 1.33M of these
class SourceFile:
    rel: str  # path relative to SRC, with "/" separators: what the report and the index show
    label: int


@dataclass
class Source:
    root: Path
    classes: list[str]
    files: dict[str, list[SourceFile]]  # split -> files, sorted by path
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


def _files_below(folder: str) -> list[str]:
    """Every non-directory entry below ``folder`` (symlinked files included), sorted, as full paths."""
    found: list[str] = []
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    found.append(entry.path)
    return sorted(found)


def _class_folders(split_dir: Path) -> tuple[list[str], list[str]]:
    """(sorted class folder names, stray files directly in the split folder)."""
    classes: list[str] = []
    stray: list[str] = []
    with os.scandir(split_dir) as entries:
        for entry in entries:
            (classes if entry.is_dir() else stray).append(entry.name)
    return sorted(classes), sorted(stray)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def scan(src: str | Path) -> Source:
    """Read the layout of ``src``; raise ``ValueError`` for anything that is not a usable dataset."""
    root = Path(src).expanduser().resolve()
    if not root.exists():
        raise ValueError(f"{src}: source folder does not exist")
    if not root.is_dir():
        raise ValueError(f"{src}: source is not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise ValueError(f"{src}: source folder is not readable")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        folders = " or ".join(f"{s}/" for s in missing)
        raise ValueError(f"{src}: no {folders} folder (expected train/<class>/*, val/<class>/*)")

    per_split = {s: _class_folders(root / s) for s in SPLITS}
    classes = per_split["train"][0]
    if not classes:
        raise ValueError(f"{root / 'train'}: no class folders")
    val_classes = per_split["val"][0]
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        raise ValueError(
            f"{src}: val classes differ from train classes"
            + (f"; only in train: {_names(only_train)}" if only_train else "")
            + (f"; only in val: {_names(only_val)}" if only_val else "")
        )

    source = Source(root, classes, {})
    for split in SPLITS:
        source.skipped += [{"path": f"{split}/{n}", "reason": "not inside a class folder"} for n in per_split[split][1]]
        files: list[SourceFile] = []
        for label, name in enumerate(classes):
            found = _files_below(str(root / split / name))
            if not found:
                raise ValueError(f"{root / split / name}: empty class folder (every class needs files in every split)")
            files += [SourceFile(Path(p).relative_to(root).as_posix(), label) for p in found]
        source.files[split] = files
    return source


# -- segmentation: (image, mask) pairs ------------------------------------------------------------------

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
