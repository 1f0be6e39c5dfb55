"""The conversion report: what was written, how fast, and every skipped file with its reason.

Saved as ``report.json`` (everything, for tools) and ``report.txt`` (everything, for people) inside the
dataset; the printed summary is the same text with long lists cut (ImageNet has 1,000 classes).

Segmentation reports (``task: "segment"``) count per class the images whose mask holds it, add the raw
label values seen per split (``label_pixels``) and the notes on converted-but-changed files (EXIF rotation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...files import atomic_write
from ..sources.index import SplitInfo
from .scan import SegSource, Source, split_of

SHOWN = 20  # classes / skipped files printed before "see report.txt"


def build(
    source: Source | SegSource,
    splits: dict[str, SplitInfo],
    skipped: list[dict[str, str]],
    fmt: str,
    options: dict[str, Any],
    seconds: float,
    dst: Path,
) -> dict[str, Any]:
    images = sum(s.samples for s in splits.values())
    segment = isinstance(source, SegSource)
    split_rows: dict[str, dict[str, Any]] = {
        name: {
            "samples": s.samples,
            "skipped": sum(1 for k in skipped if (split_of(k["path"]) if segment else k["path"].split("/")[0]) == name),
            "files": len(s.files),
            "bytes": sum(f.bytes for f in s.files),
            "per_class": dict(zip(source.classes, s.per_class)),
        }
        for name, s in splits.items()
    }
    for name, s in splits.items():
        if s.label_pixels is not None:  # raw mask value -> pixels, values that occur only
            split_rows[name]["label_pixels"] = {str(v): n for v, n in enumerate(s.label_pixels) if n}
    return {
        "source": str(source.root),
        "destination": str(dst),
        "format": fmt,
        "options": options,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 1) if seconds > 0 else None,
        "bytes_written": sum(row["bytes"] for row in split_rows.values()),
        "splits": split_rows,
        "skipped": sorted(skipped, key=lambda k: k["path"]),
    }


def problem(rep: dict[str, Any], *, strict: bool) -> str | None:
    """Why this result must not be published, or ``None``."""
    for name, row in rep["splits"].items():
        if rep.get("task") == "segment":  # a class may be absent from a split; an empty split may not
            if row["samples"] == 0:
                return f"no usable image + mask pair in {name}"
            continue
        empty = [c for c, n in row["per_class"].items() if n == 0]
        if empty:
            shown = ", ".join(repr(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
            return f"{len(empty)} classes have no usable image in {name}: {shown}"
    if strict and rep["skipped"]:
        first = rep["skipped"][0]
        return f"--strict: {len(rep['skipped'])} files skipped, first {first['path']}: {first['reason']}"
    return None


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def render(rep: dict[str, Any], *, full: bool) -> str:
    splits = rep["splits"]
    files = sum(row["files"] for row in splits.values())
    lines = [
        f"{rep['source']} -> {rep['destination']} ({rep['format']}): {rep['images']:,} images "
        f"in {rep['seconds']:.1f} s ({rep['images_per_second']} images/s), "
        f"{_mib(rep['bytes_written'])} MiB in {files} files",
        f"{'split':<8}{'images':>10}{'skipped':>9}{'files':>7}{'MiB':>10}",
    ]
    lines += [
        f"{name:<8}{row['samples']:>10,}{row['skipped']:>9,}{row['files']:>7,}{_mib(row['bytes']):>10}"
        for name, row in splits.items()
    ]
    classes = list(next(iter(splits.values()))["per_class"]) if splits else []
    for name, row in splits.items():
        if "label_pixels" in row:
            values = list(row["label_pixels"])
            lines.append(f"raw mask values in {name}: {', '.join(values)}")
    if full or len(classes) <= SHOWN:
        width = max([len(c) for c in classes] + [5]) + 2
        lines.append("images holding each class:" if rep.get("task") == "segment" else "images per class:")
        lines.append(f"  {'class':<{width}}" + "".join(f"{name:>10}" for name in splits))
        for c in classes:
            lines.append(f"  {c:<{width}}" + "".join(f"{row['per_class'][c]:>10,}" for row in splits.values()))
    else:
        for name, row in splits.items():
            counts = row["per_class"]
            lo, hi = min(counts, key=counts.get), max(counts, key=counts.get)
            lines.append(f"images per class in {name}: {counts[lo]:,} ({lo}) to {counts[hi]:,} ({hi})")
    skipped = rep["skipped"]
    lines.append(f"skipped {len(skipped)} files" + (":" if skipped else ""))
    shown = skipped if full else skipped[:SHOWN]
    lines += [f"  {k['path']}: {k['reason']}" for k in shown]
    if len(shown) < len(skipped):
        lines.append(f"  ... and {len(skipped) - len(shown)} more (all in report.txt / report.json)")
    notes = rep.get("notes", [])
    if notes:
        lines.append(f"converted with changes, {len(notes)} files:")
        lines += [f"  {k['path']}: {k['note']}" for k in (notes if full else notes[:SHOWN])]
        if not full and len(notes) > SHOWN:
            lines.append(f"  ... and {len(notes) - SHOWN} more (all in report.txt / report.json)")
    return "\n".join(lines)


def to_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=1, ensure_ascii=False)


def save(folder: Path, rep: dict[str, Any]) -> None:
    atomic_write(folder / "report.json", to_json(rep))
    atomic_write(folder / "report.txt", render(rep, full=True) + "\n")
