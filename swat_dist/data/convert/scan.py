"""Walk an ImageNet-style source folder: ``SRC/{train,val}/<class>/**`` -> classes and labelled files.

Classes are the sorted folder names of ``train/`` (every sub-folder, as torchvision's ``ImageFolder``
counts them, so class indices agree with a folder loader); ``val/`` must hold exactly the same ones.
Every file below a class folder, at any depth, is a candidate - the decoder decides what is an image.
Files lying directly in a split folder belong to no class and are reported as skipped.

Walking is ``os.scandir`` only (no stat per file beyond the directory entry): ImageNet's 1.33M files
take seconds on a local disk. Problems with the layout are one-line ``ValueError``s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
