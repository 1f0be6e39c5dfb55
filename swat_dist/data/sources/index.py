"""The dataset index: what a converted dataset holds, written last so its presence means "complete".

``DST/index.json`` (one per converted dataset)::

    {
      "version": 1,
      "format": "wds" | "ffcv",
      "classes": ["n01440764", ...],          # class index = position (sorted class folder names)
      "splits": {
        "train": {"samples": 1281167, "per_class": [1300, ...],
                  "files": [{"path": "train-000000.tar", "samples": 1203, "bytes": 104857600}, ...]},
        "val":   {...}
      },
      "options": {...},                       # converter options (shard size, jpeg quality, ...)
      "source": "/abs/path/of/SRC",
      "skipped": [{"path": "train/cls/x.jpg", "reason": "not an image"}, ...],
      "task": "classify" | "segment",         # absent in older indexes: "classify"
      "num_classes": 1000                     # == len(classes), written for readers' convenience
    }

A segmentation index (``task: "segment"``, wds only) adds ``ignore_index`` (255) and ``reduce_zero_label``
(bool); its ``classes`` are the model's classes after the label mapping (see docs/data.md), each split's
``per_class`` counts the *images* whose mask holds that class, and ``label_pixels`` (256 ints) counts the
pixels of each raw value stored in the masks.

Paths in ``files`` are relative to DST. Every writer in this package goes through :func:`~swat_dist.files.atomic_write`
or a staging folder renamed into place, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...files import atomic_write

INDEX_NAME = "index.json"
VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset folder
    samples: int
    bytes: int


@dataclass(frozen=True)
class SplitInfo:
    samples: int
    per_class: list[int]
    files: list[ShardInfo]
    label_pixels: list[int] | None = None  # segment: pixels per raw mask value 0..255


@dataclass(frozen=True)
class DatasetIndex:
    format: str
    classes: list[str]
    splits: dict[str, SplitInfo]
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)
    version: int = VERSION
    task: str = "classify"
    ignore_index: int | None = None  # segment: the label value every loss and metric ignores
    reduce_zero_label: bool | None = None  # segment: raw 0 -> ignore, raw l -> l - 1 (ADE's convention)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        raw = asdict(self)
        for split in raw["splits"].values():
            if split["label_pixels"] is None:
                del split["label_pixels"]
        raw = {k: v for k, v in raw.items() if v is not None}  # classification keeps its old keys
        raw["num_classes"] = self.num_classes
        return json.dumps(raw, indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetIndex:
        splits = {
            name: SplitInfo(
                s["samples"],
                list(s["per_class"]),
                [ShardInfo(**f) for f in s["files"]],
                list(s["label_pixels"]) if "label_pixels" in s else None,
            )
            for name, s in raw["splits"].items()
        }
        index = cls(
            format=raw["format"],
            classes=list(raw["classes"]),
            splits=splits,
            options=dict(raw.get("options", {})),
            source=raw.get("source", ""),
            skipped=list(raw.get("skipped", [])),
            version=int(raw.get("version", VERSION)),
            task=raw.get("task", "classify"),
            ignore_index=raw.get("ignore_index"),
            reduce_zero_label=raw.get("reduce_zero_label"),
        )
        if raw.get("num_classes", index.num_classes) != index.num_classes:
            raise TypeError(f"num_classes {raw['num_classes']} but {index.num_classes} classes")
        if index.task not in ("classify", "segment"):
            raise TypeError(f"unknown task {index.task!r}")
        return index


def read_index(root: str | Path) -> DatasetIndex:
    """Load ``root/index.json`` (a folder, or ``s3://bucket/prefix``); a missing or malformed index is a
    one-line ``ValueError``, and so is a URL scheme we do not read."""
    from .location import parse_location

    where = parse_location(str(root))
    if not isinstance(where, str):
        from .object_store import ObjectStore  # boto3: imported only for a dataset in an object store

        return parse_index(ObjectStore(where).read(INDEX_NAME).decode(), where.url(INDEX_NAME))
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise ValueError(f"{root}: no {INDEX_NAME} - not a converted dataset, or its conversion did not finish")
    return parse_index(path.read_text(), str(path))


def parse_index(text: str, where: str) -> DatasetIndex:
    """An index from its JSON text (a local file's or an object's); ``where`` names it in the one-line errors."""
    try:
        index = DatasetIndex.from_dict(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{where}: malformed index ({err.__class__.__name__}: {err})") from None
    if index.version != VERSION:
        raise ValueError(f"{where}: index version {index.version}, this swat_dist reads version {VERSION}")
    return index


def write_index(root: str | Path, index: DatasetIndex) -> None:
    """Write the index last, atomically: its presence marks the dataset complete."""
    atomic_write(Path(root) / INDEX_NAME, index.to_json())
