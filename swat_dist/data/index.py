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
      "skipped": [{"path": "train/cls/x.jpg", "reason": "not an image"}, ...]
    }

Paths in ``files`` are relative to DST. Every writer in this package goes through :func:`~swat_dist.files.atomic_write`
or a staging folder renamed into place, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write

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


@dataclass(frozen=True)
class DatasetIndex:
    format: str
    classes: list[str]
    splits: dict[str, SplitInfo]
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetIndex:
        splits = {
            name: SplitInfo(s["samples"], list(s["per_class"]), [ShardInfo(**f) for f in s["files"]])
            for name, s in raw["splits"].items()
        }
        return cls(
            format=raw["format"],
            classes=list(raw["classes"]),
            splits=splits,
            options=dict(raw.get("options", {})),
            source=raw.get("source", ""),
            skipped=list(raw.get("skipped", [])),
            version=int(raw.get("version", VERSION)),
        )


def read_index(root: str | Path) -> DatasetIndex:
    """Load ``root/index.json``; a missing or malformed index is a one-line ``ValueError``."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise ValueError(f"{root}: no {INDEX_NAME} - not a converted dataset, or its conversion did not finish")
    try:
        raw = json.loads(path.read_text())
        index = DatasetIndex.from_dict(raw)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed index ({err.__class__.__name__}: {err})") from None
    if index.version != VERSION:
        raise ValueError(f"{path}: index version {index.version}, this swat_dist reads version {VERSION}")
    return index


def write_index(root: str | Path, index: DatasetIndex) -> None:
    """Write the index last, atomically: its presence marks the dataset complete."""
    atomic_write(Path(root) / INDEX_NAME, index.to_json())
